//! The sled backend's commit-id index: which commit id was appended where, for
//! idempotent appends with no time window.
//!
//! Why not a sled key per commit (as stores before this one did): commit ids are random,
//! so every insert copies a different sled leaf, and under concurrent appends those
//! inserts cost the log a large share of its throughput (docs/performance.md). Lookups are the hot part (one per
//! append, nearly always a miss), writes only need to be durable eventually, because a
//! commit's id is also in its events and anything not yet durable here is re-read from
//! them on open. That is the shape of a small log-structured merge index:
//!
//! - a **memtable** (`HashMap`) takes the indexer's commits;
//! - at [`FLUSH_ENTRIES`] it is written, sorted, to an immutable **run file**
//!   (`<data>/commits/<n>.run`), `fdatasync`ed, then listed in the **manifest** with the
//!   new **watermark**: every commit whose last position is at or below it is in a run;
//! - a background **compactor** merges runs of similar size (a binary counter: a run is
//!   merged into its older neighbour once that one is no larger), so there are about
//!   log2(commits / FLUSH_ENTRIES) runs and each entry is rewritten that many times;
//! - a lookup checks the memtable, then each run newest first: a blocked Bloom filter
//!   (one cache line per probe) answers most misses from memory, and a hit reads one
//!   block of [`BLOCK`] entries, checked against its CRC.
//!
//! Run file: entries (sorted by commit id, [`ENTRY`] bytes each), then one fence per
//! block (first commit id, CRC-32 of the block), then the Bloom filter, then a trailer
//! (counts, highest position, CRC-32 of fences, filter and trailer, magic). Only fences
//! and filter are held in memory (the filter's bits plus one fence per block of commits).
//!
//! Manifest: written to `MANIFEST.tmp`, `fdatasync`ed, renamed over `MANIFEST`, then the
//! directory is synced, so it is always one whole version. Files it does not list (a run
//! written before a crash, runs merged away) are deleted on open.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use onecity_eventlog::{Appended, Error, Result};

/// Where a commit went: enough to answer a retry exactly as the original append was
/// answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitRecord {
    pub(crate) case_id: Uuid,
    pub(crate) appended: Appended,
}

/// Memtable size at which the indexer writes a run. A crash loses at most this many
/// commits' index entries, which `open` re-reads from the events.
pub(crate) const FLUSH_ENTRIES: usize = 65_536;

/// Entries per block: one fence and one CRC per block; a hit reads one block.
const BLOCK: usize = 64;

/// commit(16) case(16) first version(8) first position(8) events(4), little-endian.
const ENTRY: usize = 52;

const FENCE: usize = 20;
const TRAILER: usize = 40;
const RUN_MAGIC: &[u8; 8] = b"OCKRUN01";
const MANIFEST_MAGIC: &[u8; 8] = b"OCKMAN01";
const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";

/// Bloom filter: 10 bits per commit in 512-bit blocks, 7 probes in one block: ~1 %
/// false positives, one cache miss per run looked at.
const BLOOM_BITS_PER_ENTRY: u64 = 10;
const BLOOM_PROBES: u32 = 7;

/// The commit-id index of one data directory. Lookups may run on any thread; inserts and
/// flushes come from the log's indexer thread, merges from [`CommitIndex::compact`].
#[derive(Debug)]
pub(crate) struct CommitIndex {
    dir: PathBuf,
    state: RwLock<State>,
    /// Serialises manifest writes; each one writes the state as it is once it holds this.
    manifest: Mutex<()>,
    /// Set when the log closes, so that a long merge is abandoned rather than waited for.
    stopping: AtomicBool,
    /// The store was written before run files existed: older commits have sled `K`
    /// keys, which the caller looks up when this index misses.
    legacy: bool,
}

#[derive(Debug, Default)]
struct State {
    memtable: HashMap<Uuid, CommitRecord>,
    /// The memtable being written to a run: still visible to lookups until the run is.
    frozen: Option<Arc<HashMap<Uuid, CommitRecord>>>,
    /// Oldest first.
    runs: Arc<Vec<Arc<Run>>>,
    watermark: u64,
    next_file: u64,
}

/// What `open` found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A manifest: commits up to this position are indexed.
    Manifest(u64),
    /// No manifest (new store, a store from before run files, or a lost directory).
    Nothing,
}

impl CommitIndex {
    /// Opens the index in `dir` (created if missing). Without a manifest, `legacy`
    /// decides what the store is: `Some(w)` for a store from before run files whose sled
    /// `K` keys cover commits up to `w`, `None` for an index starting empty at 0.
    pub(crate) fn open(dir: &Path, legacy: Option<u64>) -> Result<(Self, Found)> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("create commit index dir", e))?;
            // The directory's own entry must survive power loss, or a store could come back
            // without its index (which `open`'s caller would then rebuild from every event).
            if let Some(parent) = dir.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io("sync data dir", e))?;
            }
        }
        let manifest = read_manifest(dir)?;
        let found = match &manifest {
            Some(m) => Found::Manifest(m.watermark),
            None => Found::Nothing,
        };
        let m = manifest.unwrap_or(Manifest {
            watermark: legacy.unwrap_or(0),
            legacy: legacy.is_some(),
            next_file: 1,
            files: Vec::new(),
        });
        let mut runs = Vec::with_capacity(m.files.len());
        for &n in &m.files {
            runs.push(Arc::new(Run::open(dir, n)?));
        }
        let mut next_file = m.next_file;
        for entry in std::fs::read_dir(dir).map_err(|e| io("list commit index", e))? {
            let entry = entry.map_err(|e| io("list commit index", e))?;
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(parse_run_name) else {
                continue;
            };
            next_file = next_file.max(n + 1);
            if !m.files.contains(&n) {
                // A run written before a crash, or one merged away: nothing refers to it.
                std::fs::remove_file(entry.path()).map_err(|e| io("remove stale run", e))?;
            }
        }
        let index = CommitIndex {
            dir: dir.to_path_buf(),
            state: RwLock::new(State {
                runs: Arc::new(runs),
                watermark: m.watermark,
                next_file,
                ..State::default()
            }),
            manifest: Mutex::new(()),
            stopping: AtomicBool::new(false),
            legacy: m.legacy,
        };
        if found == Found::Nothing {
            index.write_manifest()?;
        }
        Ok((index, found))
    }

    /// Whether misses must also be looked up in sled's legacy `K` keys.
    pub(crate) fn legacy(&self) -> bool {
        self.legacy
    }

    /// Every commit whose last position is at or below this is durable in a run.
    pub(crate) fn watermark(&self) -> u64 {
        self.read().watermark
    }

    /// The record of `commit_id`, if this index has it.
    pub(crate) fn get(&self, commit_id: Uuid) -> Result<Option<CommitRecord>> {
        let runs = {
            let s = self.read();
            if let Some(r) = s.memtable.get(&commit_id) {
                return Ok(Some(*r));
            }
            if let Some(r) = s.frozen.as_ref().and_then(|f| f.get(&commit_id)) {
                return Ok(Some(*r));
            }
            Arc::clone(&s.runs)
        };
        let h = hash(&commit_id);
        for run in runs.iter().rev() {
            if let Some(r) = run.get(commit_id, h)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Adds commits (already durable in the log) to the memtable.
    pub(crate) fn insert(&self, commits: &[(Uuid, CommitRecord)]) {
        let mut s = self.write();
        s.memtable.reserve(commits.len());
        for (id, rec) in commits {
            s.memtable.insert(*id, *rec);
        }
    }

    /// Memtable entries not yet in a run.
    pub(crate) fn pending(&self) -> usize {
        self.read().memtable.len()
    }

    /// Writes the memtable to a run and moves the watermark to `watermark` (the last
    /// position the caller has inserted through). `true` when a run was written.
    pub(crate) fn flush(&self, watermark: u64) -> Result<bool> {
        let (frozen, file_no) = {
            let mut s = self.write();
            if s.memtable.is_empty() {
                return Ok(false);
            }
            let frozen = Arc::new(std::mem::take(&mut s.memtable));
            s.frozen = Some(Arc::clone(&frozen));
            let n = s.next_file;
            s.next_file += 1;
            (frozen, n)
        };
        let mut entries: Vec<(Uuid, CommitRecord)> =
            frozen.iter().map(|(id, r)| (*id, *r)).collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        let mut w = RunWriter::create(&self.dir, file_no, entries.len() as u64)?;
        for (id, rec) in &entries {
            w.push(*id, rec)?;
        }
        let run = w.finish(watermark)?;
        {
            let mut s = self.write();
            let mut runs = Vec::clone(&s.runs);
            runs.push(Arc::new(run));
            s.runs = Arc::new(runs);
            s.frozen = None;
            s.watermark = s.watermark.max(watermark);
        }
        self.write_manifest()?;
        Ok(true)
    }

    /// Asks a running [`CommitIndex::compact`] to give up (at its next block).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Merges runs while there is a pair to merge: the newest run whose older neighbour
    /// is no larger than it. Returns how many merges it made; stops early (leaving every
    /// run valid) when [`CommitIndex::stop`] is called.
    pub(crate) fn compact(&self) -> Result<usize> {
        let mut merges = 0;
        loop {
            let (older, newer, file_no) = {
                let mut s = self.write();
                let Some(i) = (1..s.runs.len())
                    .rev()
                    .find(|&i| s.runs[i - 1].count <= s.runs[i].count)
                else {
                    return Ok(merges);
                };
                let pair = (Arc::clone(&s.runs[i - 1]), Arc::clone(&s.runs[i]));
                let n = s.next_file;
                s.next_file += 1;
                (pair.0, pair.1, n)
            };
            let Some(merged) = self.merge(&older, &newer, file_no)? else {
                return Ok(merges);
            };
            {
                let mut s = self.write();
                let mut runs = Vec::with_capacity(s.runs.len());
                let mut merged = Some(Arc::new(merged));
                for r in s.runs.iter() {
                    if Arc::ptr_eq(r, &older) {
                        runs.extend(merged.take());
                    } else if !Arc::ptr_eq(r, &newer) {
                        runs.push(Arc::clone(r));
                    }
                }
                s.runs = Arc::new(runs);
            }
            self.write_manifest()?;
            // Only once a manifest without them is durable.
            for r in [older, newer] {
                if let Err(e) = std::fs::remove_file(run_path(&self.dir, r.file_no)) {
                    tracing::warn!(error = %e, "could not remove a merged commit index run");
                }
            }
            merges += 1;
        }
    }

    /// Every entry, memtable and runs, in no particular order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(Uuid, CommitRecord)> {
        let s = self.read();
        let mut out: Vec<_> = s.memtable.iter().map(|(id, r)| (*id, *r)).collect();
        for run in s.runs.iter() {
            out.extend(run.entries().map(|e| e.unwrap()));
        }
        out
    }

    /// Entries per run, oldest first.
    #[cfg(test)]
    fn shape(&self) -> Vec<u64> {
        self.read().runs.iter().map(|r| r.count).collect()
    }

    fn merge(&self, older: &Run, newer: &Run, file_no: u64) -> Result<Option<Run>> {
        let mut w = RunWriter::create(&self.dir, file_no, older.count + newer.count)?;
        let mut a = older.entries().peekable();
        let mut b = newer.entries().peekable();
        loop {
            if self.stopping.load(Ordering::Acquire) {
                drop(w);
                let _ = std::fs::remove_file(run_path(&self.dir, file_no));
                return Ok(None);
            }
            let take_a = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(Err(_)), _) => true,
                (_, Some(Err(_))) => false,
                (Some(Ok((x, _))), Some(Ok((y, _)))) => {
                    if x == y {
                        // Cannot happen (an id is indexed once), but if it did the newer
                        // run is the one lookups would have found.
                        a.next();
                        false
                    } else {
                        x < y
                    }
                }
            };
            let next = if take_a { a.next() } else { b.next() };
            if let Some(item) = next {
                let (id, rec) = item?;
                w.push(id, &rec)?;
            }
        }
        w.finish(older.max_position.max(newer.max_position))
            .map(Some)
    }

    fn write_manifest(&self) -> Result<()> {
        let _serial = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        let m = {
            let s = self.read();
            Manifest {
                watermark: s.watermark,
                legacy: self.legacy,
                next_file: s.next_file,
                files: s.runs.iter().map(|r| r.file_no).collect(),
            }
        };
        let tmp = self.dir.join(MANIFEST_TMP);
        let mut f = File::create(&tmp).map_err(|e| io("create commit index manifest", e))?;
        f.write_all(&m.encode())
            .and_then(|()| f.sync_data())
            .map_err(|e| io("write commit index manifest", e))?;
        std::fs::rename(&tmp, self.dir.join(MANIFEST))
            .map_err(|e| io("install commit index manifest", e))?;
        // Makes the rename durable, and with it the names of the run files it lists.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync commit index dir", e))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every mutation under the lock is a single assignment or insert, so a panic
        // elsewhere cannot leave the state half-changed.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    watermark: u64,
    legacy: bool,
    next_file: u64,
    files: Vec<u64>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40 + self.files.len() * 8);
        v.extend_from_slice(MANIFEST_MAGIC);
        v.extend_from_slice(&self.watermark.to_le_bytes());
        v.extend_from_slice(&u64::from(self.legacy).to_le_bytes());
        v.extend_from_slice(&self.next_file.to_le_bytes());
        v.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
        for f in &self.files {
            v.extend_from_slice(&f.to_le_bytes());
        }
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Storage(format!("commit index manifest is damaged: {why}"));
        if v.len() < 44 || &v[..8] != MANIFEST_MAGIC {
            return Err(bad("no header"));
        }
        let (body, crc) = v.split_at(v.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        let word = |i: usize| le_u64(&body[8 + i * 8..16 + i * 8]);
        let n = word(3);
        if body.len() as u64 != 40 + n.saturating_mul(8) {
            return Err(bad("length mismatch"));
        }
        Ok(Manifest {
            watermark: word(0),
            legacy: word(1) != 0,
            next_file: word(2),
            files: (0..n as usize).map(|i| word(4 + i)).collect(),
        })
    }
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    match std::fs::read(dir.join(MANIFEST)) {
        Ok(v) => Manifest::decode(&v).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read commit index manifest", e)),
    }
}

/// One immutable sorted run.
#[derive(Debug)]
struct Run {
    file_no: u64,
    file: File,
    count: u64,
    /// Per block: its first commit id and the CRC-32 of its bytes.
    fences: Vec<([u8; 16], u32)>,
    /// 512-bit blocks.
    bloom: Vec<[u64; 8]>,
    max_position: u64,
}

impl Run {
    fn open(dir: &Path, file_no: u64) -> Result<Self> {
        let path = run_path(dir, file_no);
        let bad = |why: &str| {
            Error::Storage(format!(
                "commit index run {} is damaged: {why}",
                path.display()
            ))
        };
        let file = File::open(&path).map_err(|e| io("open commit index run", e))?;
        let len = file
            .metadata()
            .map_err(|e| io("stat commit index run", e))?
            .len();
        if len < TRAILER as u64 {
            return Err(bad("too short"));
        }
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, len - TRAILER as u64)
            .map_err(|e| io("read commit index run", e))?;
        if &trailer[32..] != RUN_MAGIC {
            return Err(bad("no trailer"));
        }
        let count = le_u64(&trailer[..8]);
        let bloom_blocks = le_u64(&trailer[8..16]);
        let max_position = le_u64(&trailer[16..24]);
        let blocks = count.div_ceil(BLOCK as u64);
        let meta_len = blocks
            .checked_mul(FENCE as u64)
            .and_then(|f| bloom_blocks.checked_mul(64).and_then(|b| f.checked_add(b)))
            .ok_or_else(|| bad("sizes overflow"))?;
        let entries_len = count
            .checked_mul(ENTRY as u64)
            .ok_or_else(|| bad("sizes overflow"))?;
        if entries_len
            .checked_add(meta_len)
            .and_then(|x| x.checked_add(TRAILER as u64))
            != Some(len)
            || bloom_blocks == 0
        {
            return Err(bad("length mismatch"));
        }
        let mut meta = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut meta, entries_len)
            .map_err(|e| io("read commit index run", e))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta);
        crc.update(&trailer[..24]);
        if crc.finalize().to_le_bytes() != trailer[24..28] {
            return Err(bad("checksum mismatch"));
        }
        let (fence_bytes, bloom_bytes) = meta.split_at(blocks as usize * FENCE);
        let fences = fence_bytes
            .chunks_exact(FENCE)
            .map(|f| {
                let mut id = [0u8; 16];
                id.copy_from_slice(&f[..16]);
                (id, u32::from_le_bytes([f[16], f[17], f[18], f[19]]))
            })
            .collect();
        let bloom = bloom_bytes
            .chunks_exact(64)
            .map(|b| std::array::from_fn(|i| le_u64(&b[i * 8..i * 8 + 8])))
            .collect();
        Ok(Run {
            file_no,
            file,
            count,
            fences,
            bloom,
            max_position,
        })
    }

    fn get(&self, commit_id: Uuid, h: (u64, u64)) -> Result<Option<CommitRecord>> {
        if !bloom_contains(&self.bloom, h) {
            return Ok(None);
        }
        let id = *commit_id.as_bytes();
        // The last block starting at or before the id.
        let b = self.fences.partition_point(|(first, _)| *first <= id);
        if b == 0 {
            return Ok(None);
        }
        let block = self.block(b - 1)?;
        let found = block
            .chunks_exact(ENTRY)
            .find(|e| e[..16] == id)
            .map(decode_entry);
        Ok(found.map(|(_, r)| r))
    }

    /// Block `b`'s bytes, checked against its fence.
    fn block(&self, b: usize) -> Result<Vec<u8>> {
        let first = b * BLOCK;
        let n = (self.count as usize - first).min(BLOCK);
        let mut buf = vec![0u8; n * ENTRY];
        self.file
            .read_exact_at(&mut buf, (first * ENTRY) as u64)
            .map_err(|e| io("read commit index run", e))?;
        if crc32fast::hash(&buf) != self.fences[b].1 {
            return Err(Error::Storage(format!(
                "commit index run {} block {b} is damaged: checksum mismatch",
                self.file_no
            )));
        }
        Ok(buf)
    }

    /// Every entry in commit-id order.
    fn entries(&self) -> impl Iterator<Item = Result<(Uuid, CommitRecord)>> + '_ {
        (0..self.fences.len()).flat_map(move |b| match self.block(b) {
            Ok(buf) => buf
                .chunks_exact(ENTRY)
                .map(|e| Ok(decode_entry(e)))
                .collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    }
}

/// Writes one run file; [`RunWriter::finish`] makes it durable. Entries must come in
/// strictly increasing commit-id order.
struct RunWriter {
    file_no: u64,
    out: BufWriter<File>,
    count: u64,
    block: Vec<u8>,
    fences: Vec<([u8; 16], u32)>,
    bloom: Vec<[u64; 8]>,
}

impl RunWriter {
    /// `capacity`: at most this many entries will be pushed (sizes the Bloom filter).
    fn create(dir: &Path, file_no: u64, capacity: u64) -> Result<Self> {
        let path = run_path(dir, file_no);
        // Readable too: the finished run serves lookups through this handle.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io("create commit index run", e))?;
        let bits = capacity.max(1) * BLOOM_BITS_PER_ENTRY;
        Ok(RunWriter {
            file_no,
            out: BufWriter::with_capacity(256 * 1024, file),
            count: 0,
            block: Vec::with_capacity(BLOCK * ENTRY),
            fences: Vec::new(),
            bloom: vec![[0u64; 8]; bits.div_ceil(512) as usize],
        })
    }

    fn push(&mut self, id: Uuid, rec: &CommitRecord) -> Result<()> {
        bloom_insert(&mut self.bloom, hash(&id));
        if self.block.is_empty() {
            self.fences.push((*id.as_bytes(), 0));
        }
        encode_entry(&mut self.block, id, rec);
        self.count += 1;
        if self.block.len() == BLOCK * ENTRY {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> Result<()> {
        if let Some(f) = self.fences.last_mut() {
            f.1 = crc32fast::hash(&self.block);
        }
        self.out
            .write_all(&self.block)
            .map_err(|e| io("write commit index run", e))?;
        self.block.clear();
        Ok(())
    }

    fn finish(mut self, max_position: u64) -> Result<Run> {
        if !self.block.is_empty() {
            self.end_block()?;
        }
        let mut meta = Vec::with_capacity(self.fences.len() * FENCE + self.bloom.len() * 64);
        for (id, crc) in &self.fences {
            meta.extend_from_slice(id);
            meta.extend_from_slice(&crc.to_le_bytes());
        }
        for b in &self.bloom {
            for w in b {
                meta.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut trailer = Vec::with_capacity(TRAILER);
        trailer.extend_from_slice(&self.count.to_le_bytes());
        trailer.extend_from_slice(&(self.bloom.len() as u64).to_le_bytes());
        trailer.extend_from_slice(&max_position.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta);
        crc.update(&trailer);
        trailer.extend_from_slice(&crc.finalize().to_le_bytes());
        trailer.extend_from_slice(&[0; 4]);
        trailer.extend_from_slice(RUN_MAGIC);
        self.out
            .write_all(&meta)
            .and_then(|()| self.out.write_all(&trailer))
            .map_err(|e| io("write commit index run", e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io("write commit index run", e.into_error()))?;
        file.sync_data()
            .map_err(|e| io("fdatasync commit index run", e))?;
        Ok(Run {
            file_no: self.file_no,
            file,
            count: self.count,
            fences: self.fences,
            bloom: self.bloom,
            max_position,
        })
    }
}

fn encode_entry(out: &mut Vec<u8>, id: Uuid, r: &CommitRecord) {
    let a = &r.appended;
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(r.case_id.as_bytes());
    out.extend_from_slice(&a.first_version.to_le_bytes());
    out.extend_from_slice(&a.first_position.to_le_bytes());
    let n = (a.last_version - a.first_version + 1) as u32;
    out.extend_from_slice(&n.to_le_bytes());
}

fn decode_entry(e: &[u8]) -> (Uuid, CommitRecord) {
    let uuid = |b: &[u8]| Uuid::from_bytes(std::array::from_fn(|i| b[i]));
    let case_id = uuid(&e[16..32]);
    let first_version = le_u64(&e[32..40]);
    let first_position = le_u64(&e[40..48]);
    let n = u64::from(u32::from_le_bytes([e[48], e[49], e[50], e[51]]));
    (
        uuid(&e[..16]),
        CommitRecord {
            case_id,
            appended: Appended {
                case_id,
                first_version,
                last_version: first_version + n - 1,
                first_position,
                last_position: first_position + n - 1,
                deduplicated: false,
            },
        },
    )
}

/// Two independent 64-bit hashes of a commit id. Ids may be v7 (time in the first bytes)
/// or v5 (hashed), so both halves are mixed rather than trusted to be random.
fn hash(id: &Uuid) -> (u64, u64) {
    let (hi, lo) = id.as_u64_pair();
    let h1 = mix(hi ^ mix(lo));
    (h1, mix(h1 ^ 0x9e37_79b9_7f4a_7c15))
}

/// The finaliser of SplitMix64: a bijection with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bloom_bits(bloom: &[[u64; 8]], (h1, h2): (u64, u64)) -> (usize, impl Iterator<Item = u32>) {
    // Fast range reduction: the block from the high bits of a 128-bit product.
    let block = ((u128::from(h1) * bloom.len() as u128) >> 64) as usize;
    (
        block,
        (0..BLOOM_PROBES).map(move |i| ((h2 >> (i * 9)) & 511) as u32),
    )
}

fn bloom_insert(bloom: &mut [[u64; 8]], h: (u64, u64)) {
    let (b, bits) = bloom_bits(bloom, h);
    for bit in bits {
        bloom[b][(bit / 64) as usize] |= 1 << (bit % 64);
    }
}

fn bloom_contains(bloom: &[[u64; 8]], h: (u64, u64)) -> bool {
    let (b, mut bits) = bloom_bits(bloom, h);
    bits.all(|bit| bloom[b][(bit / 64) as usize] & (1 << (bit % 64)) != 0)
}

fn run_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016x}.run"))
}

fn parse_run_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".run")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|i| b[i]))
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Storage(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(i: u64) -> (Uuid, CommitRecord) {
        let case_id = Uuid::from_u64_pair(i.wrapping_mul(31), 7);
        let n = i % 5 + 1;
        (
            Uuid::now_v7(),
            CommitRecord {
                case_id,
                appended: Appended {
                    case_id,
                    first_version: i + 1,
                    last_version: i + n,
                    first_position: i * 10 + 1,
                    last_position: i * 10 + n,
                    deduplicated: false,
                },
            },
        )
    }

    fn batch(from: u64, n: u64) -> Vec<(Uuid, CommitRecord)> {
        (from..from + n).map(record).collect()
    }

    fn assert_finds(index: &CommitIndex, commits: &[(Uuid, CommitRecord)]) {
        for (id, rec) in commits {
            assert_eq!(index.get(*id).unwrap(), Some(*rec), "{id}");
        }
        for _ in 0..200 {
            assert_eq!(index.get(Uuid::now_v7()).unwrap(), None);
        }
    }

    fn run_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .and_then(parse_run_name)
                    .is_some()
            })
            .count()
    }

    #[test]
    fn commits_are_found_in_memory_in_runs_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (index, found) = CommitIndex::open(dir.path(), None).unwrap();
        assert_eq!(found, Found::Nothing);
        let commits = batch(0, 1000);
        index.insert(&commits[..600]);
        assert_finds(&index, &commits[..600]);
        assert!(index.flush(6000).unwrap());
        assert!(!index.flush(6000).unwrap(), "nothing left to flush");
        index.insert(&commits[600..]);
        assert_finds(&index, &commits);
        assert_eq!(index.watermark(), 6000);
        drop(index);
        let (index, found) = CommitIndex::open(dir.path(), None).unwrap();
        assert_eq!(found, Found::Manifest(6000));
        // The memtable was never flushed: those 400 are the ones `open`'s caller rebuilds.
        assert_finds(&index, &commits[..600]);
        assert_eq!(index.get(commits[700].0).unwrap(), None);
        assert!(!index.legacy());
    }

    #[test]
    fn merges_keep_every_entry_and_about_log2_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        let mut all = Vec::new();
        for i in 0..13 {
            let b = batch(i * 100, 100);
            index.insert(&b);
            all.extend(b);
            index.flush((i + 1) * 1000).unwrap();
            index.compact().unwrap();
        }
        // 13 flushes of 100 as a binary counter: 8 + 4 + 1.
        assert_eq!(index.shape(), vec![800, 400, 100]);
        assert_eq!(run_files(dir.path()), 3, "merged-away runs are deleted");
        assert_finds(&index, &all);
        drop(index);
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        assert_eq!(index.shape(), vec![800, 400, 100]);
        assert_finds(&index, &all);
    }

    #[test]
    fn a_stopped_merge_leaves_the_runs_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        let all = batch(0, 200);
        index.insert(&all[..100]);
        index.flush(1).unwrap();
        index.insert(&all[100..]);
        index.flush(2).unwrap();
        index.stop();
        assert_eq!(index.compact().unwrap(), 0);
        assert_eq!(index.shape(), vec![100, 100]);
        assert_eq!(run_files(dir.path()), 2);
        assert_finds(&index, &all);
    }

    #[test]
    fn runs_the_manifest_does_not_list_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        index.insert(&batch(0, 10));
        index.flush(1).unwrap();
        drop(index);
        std::fs::write(run_path(dir.path(), 99), b"half a run").unwrap();
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        assert_eq!(run_files(dir.path()), 1);
        // And its number is not reused.
        index.insert(&batch(10, 10));
        index.flush(2).unwrap();
        assert!(run_path(dir.path(), 100).exists());
    }

    #[test]
    fn damage_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        let commits = batch(0, 300);
        index.insert(&commits);
        index.flush(1).unwrap();
        drop(index);
        // A flipped bit in the entries: found by the block checksum on lookup.
        let path = run_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ENTRY * 3 + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (index, _) = CommitIndex::open(dir.path(), None).unwrap();
        let mut sorted = commits.clone();
        sorted.sort_by_key(|(id, _)| *id);
        match index.get(sorted[3].0) {
            Err(Error::Storage(m)) => assert!(m.contains("checksum"), "{m}"),
            other => panic!("damaged block served: {other:?}"),
        }
        assert_eq!(index.get(sorted[BLOCK].0).unwrap(), Some(sorted[BLOCK].1));
        drop(index);
        // In the fences or filter: found on open.
        let len = bytes.len();
        bytes[len - TRAILER - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            CommitIndex::open(dir.path(), None),
            Err(Error::Storage(m)) if m.contains("checksum")
        ));
        // In the manifest.
        std::fs::remove_file(&path).unwrap();
        let mf = dir.path().join(MANIFEST);
        let mut m = std::fs::read(&mf).unwrap();
        m[9] ^= 1;
        std::fs::write(&mf, &m).unwrap();
        assert!(matches!(
            CommitIndex::open(dir.path(), None),
            Err(Error::Storage(m)) if m.contains("manifest")
        ));
    }

    #[test]
    fn a_store_from_before_runs_starts_at_its_legacy_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (index, found) = CommitIndex::open(dir.path(), Some(42)).unwrap();
        assert_eq!(found, Found::Nothing);
        assert!(index.legacy());
        assert_eq!(index.watermark(), 42);
        drop(index);
        // The manifest remembers it, whatever the caller says next time.
        let (index, found) = CommitIndex::open(dir.path(), None).unwrap();
        assert_eq!(found, Found::Manifest(42));
        assert!(index.legacy());
    }

    #[test]
    fn the_bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let mut bloom = vec![[0u64; 8]; (10_000 * BLOOM_BITS_PER_ENTRY).div_ceil(512) as usize];
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            bloom_insert(&mut bloom, hash(id));
        }
        assert!(ids.iter().all(|id| bloom_contains(&bloom, hash(id))));
        let fp = (0..10_000)
            .filter(|_| bloom_contains(&bloom, hash(&Uuid::now_v7())))
            .count();
        assert!(fp < 300, "{fp} false positives in 10,000");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Flush,
        Compact,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..100).prop_map(Op::Insert),
            2 => Just(Op::Flush),
            1 => Just(Op::Compact),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against a map: whatever was flushed survives reopening; the memtable does not.
        #[test]
        fn behaves_like_a_map_of_what_was_flushed(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut index, _) = CommitIndex::open(dir.path(), None).unwrap();
            let mut durable: HashMap<Uuid, CommitRecord> = HashMap::new();
            let mut memory: HashMap<Uuid, CommitRecord> = HashMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Insert(n) => {
                        let b = batch(next, u64::from(n));
                        next += u64::from(n);
                        index.insert(&b);
                        memory.extend(b);
                    }
                    Op::Flush => {
                        index.flush(next).unwrap();
                        durable.extend(memory.drain());
                    }
                    Op::Compact => {
                        index.compact().unwrap();
                    }
                    Op::Reopen => {
                        drop(index);
                        index = CommitIndex::open(dir.path(), None).unwrap().0;
                        memory.clear();
                    }
                }
                for (id, rec) in durable.iter().chain(memory.iter()) {
                    prop_assert_eq!(index.get(*id).unwrap(), Some(*rec));
                }
                let shape = index.shape();
                prop_assert_eq!(shape.iter().sum::<u64>() as usize, durable.len());
                prop_assert_eq!(run_files(dir.path()), shape.len());
            }
        }
    }
}
