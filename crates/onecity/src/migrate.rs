//! `onecity log export | import | checksum`: moving a log between backends (e.g. from
//! the embedded sled log to JetStream) with order, versions and positions preserved,
//! verified by a checksum of the log.
//!
//! Export file: the line `onecity-log-export v1\n`, then every event as a
//! length-delimited protobuf `onecity.v1.RecordedEvent`, in position order.
//!
//! The file holds residents' data, so export creates it readable by its owner only (0600).
//! Import reads the whole file once before writing anything, with every length prefix
//! bounded, so a corrupt or hostile file is refused with the target log untouched.
//!
//! The file carries each event's `appended_by` and hash-chain link as stored. Import
//! recomputes the file's chain ([`onecity_eventlog::chain::Verifier`]) while it reads the
//! file through, so a file with a broken link is refused before anything is written.
//! The target then builds its own chain: it stamps its own commit time, which the chain
//! covers, so the target's hashes differ from the file's.
//!
//! The checksum is SHA-256 over every event's protobuf encoding *without* `recorded_at`,
//! `appended_by`, the chain and the metadata (position, ids, case, version, type, actor, causation,
//! payload, commit id): the target log stamps its own commit time and chain, everything
//! else must be identical. Import keeps each commit's `appended_by` on a sled or
//! JetStream target ([`EventLog::append_as`]); through a `remote:` target the serving
//! process stamps the importing token's principal instead, which is why the checksum
//! leaves the stamp out.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use onecity_eventlog::chain::{self, Intact, Verifier};
use onecity_eventlog::{EventLog, Expected, NewEvent, RecordedEvent};
use onecity_proto::prost::Message;
use onecity_proto::v1 as pb;
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"onecity-log-export v1\n";
const PAGE: usize = 5_000;
/// Largest event an export may hold: the log's largest payload
/// ([`onecity_eventlog::Limits`]) with room for the envelope. A larger length prefix is
/// corruption, refused before anything is allocated for it.
const MAX_EXPORTED_EVENT_BYTES: u64 = 2 * 1024 * 1024;

/// Running checksum of a log.
#[derive(Debug, Default, Clone)]
pub struct LogChecksum {
    hasher: Sha256,
    /// Events hashed so far.
    pub events: u64,
}

impl LogChecksum {
    /// Adds the next event (in position order).
    pub fn add(&mut self, e: &RecordedEvent) {
        let mut p = pb::RecordedEvent::from(e);
        p.recorded_at = None;
        p.appended_by.clear();
        // How the event was traced, not what it is (docs/eventlog.md).
        p.metadata.clear();
        p.prev_hash.clear();
        p.commit_hash.clear();
        let bytes = p.encode_to_vec();
        self.hasher.update((bytes.len() as u64).to_be_bytes());
        self.hasher.update(&bytes);
        self.events += 1;
    }

    /// The hex digest.
    pub fn hex(&self) -> String {
        self.hasher
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Reads the whole log in position order, calling `f` for each event.
async fn each_event(
    log: &dyn EventLog,
    bar: &ProgressBar,
    mut f: impl FnMut(&RecordedEvent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut next = 1;
    loop {
        let page = log.read_all(next, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        next = last.position + 1;
        for e in &page {
            f(e)?;
        }
        bar.inc(page.len() as u64);
    }
}

/// The checksum of a whole log.
pub async fn checksum(log: &dyn EventLog) -> anyhow::Result<LogChecksum> {
    let bar = bar(log.head().await?, "checksum");
    let mut sum = LogChecksum::default();
    each_event(log, &bar, |e| {
        sum.add(e);
        Ok(())
    })
    .await?;
    bar.finish_and_clear();
    Ok(sum)
}

/// Writes the whole log to `path`; returns its checksum.
pub async fn export(log: &dyn EventLog, path: &Path) -> anyhow::Result<LogChecksum> {
    let file = create_private(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    let bar = bar(log.head().await?, "export");
    let mut sum = LogChecksum::default();
    let mut expected = 1;
    each_event(log, &bar, |e| {
        if e.position != expected {
            bail!(
                "log has a gap: expected position {expected}, read {}",
                e.position
            );
        }
        expected += 1;
        sum.add(e);
        out.write_all(&pb::RecordedEvent::from(e).encode_length_delimited_to_vec())?;
        Ok(())
    })
    .await?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    Ok(sum)
}

/// Creates (or truncates) `path` readable and writable by its owner only, whatever the
/// umask and whatever mode an existing file had.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

fn read_event(input: &mut impl Read) -> anyhow::Result<Option<RecordedEvent>> {
    // A varint length prefix, then the message.
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let mut b = [0u8; 1];
        match input.read(&mut b)? {
            0 if shift == 0 => return Ok(None),
            0 => bail!("export file truncated inside a length prefix"),
            _ => {}
        }
        len |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("export file has a malformed length prefix");
        }
    }
    if len > MAX_EXPORTED_EVENT_BYTES {
        bail!("export file has a length prefix of {len} bytes, over the limit of {MAX_EXPORTED_EVENT_BYTES}: corrupt");
    }
    let mut buf = vec![0u8; usize::try_from(len)?];
    input
        .read_exact(&mut buf)
        .context("export file truncated inside an event")?;
    let p = pb::RecordedEvent::decode(buf.as_slice())?;
    Ok(Some(RecordedEvent::try_from(p)?))
}

/// Opens an export file and checks its first line.
fn open_export(path: &Path) -> anyhow::Result<(BufReader<File>, u64)> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let total = file.metadata()?.len();
    let mut input = BufReader::new(file);
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .context("not an onecity log export")?;
    if magic != MAGIC {
        bail!("{} is not an onecity log export (v1)", path.display());
    }
    Ok((input, total))
}

/// Reads every event of the export at `path` once, in order, and returns its checksum
/// and its chain: every length prefix bounded, every event decoded, positions gap-free
/// from 1, every chain link recomputed.
pub fn verify_export(path: &Path) -> anyhow::Result<(LogChecksum, Intact)> {
    let (mut input, _) = open_export(path)?;
    let mut sum = LogChecksum::default();
    let mut chain = Verifier::new();
    while let Some(e) = read_event(&mut input)? {
        if e.position != sum.events + 1 {
            bail!("export file is out of order at position {}", e.position);
        }
        sum.add(&e);
        chain
            .push(e)
            .context("the export file's hash chain is broken")?;
    }
    let intact = chain
        .finish()
        .context("the export file's hash chain is broken")?;
    Ok((sum, intact))
}

/// One line for an intact chain, as `log verify` and `log import` print it.
pub fn describe_intact(intact: &Intact) -> String {
    match intact.chained_from {
        None if intact.head == 0 => "intact: the log is empty".to_owned(),
        None => format!(
            "intact up to position {}: no commit is chained (all predate the hash chain)",
            intact.head
        ),
        Some(1) => format!(
            "intact up to position {}\nhead hash {}",
            intact.head,
            chain::hex(&intact.head_hash)
        ),
        Some(from) => format!(
            "intact up to position {} (chained from position {from}; the commits before predate the hash chain)\nhead hash {}",
            intact.head,
            chain::hex(&intact.head_hash)
        ),
    }
}

/// Appends every event of the export at `path` to the empty log `log`, commit by commit
/// in the original order, so positions and versions come out the same; then checks the
/// target's checksum against the file's. The file is read through once first
/// ([`verify_export`]), so a corrupt file is refused before anything is written.
pub async fn import(log: &dyn EventLog, path: &Path) -> anyhow::Result<(LogChecksum, Intact)> {
    if log.head().await? != 0 {
        bail!("the target log is not empty: import preserves positions, so it needs an empty log");
    }
    let (verified, file_chain) = verify_export(path)?;
    let (mut input, total) = open_export(path)?;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "import [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut sum = LogChecksum::default();
    let mut commit: Vec<RecordedEvent> = Vec::new();
    let mut read_bytes = MAGIC.len() as u64;
    loop {
        let next = read_event(&mut input)?;
        let ends_commit = match (&next, commit.first()) {
            (_, None) => false,
            (Some(e), Some(first)) => e.commit_id != first.commit_id,
            (None, Some(_)) => true,
        };
        if ends_commit {
            append_commit(log, &commit).await?;
            commit.clear();
        }
        let Some(e) = next else { break };
        if e.position != sum.events + 1 {
            bail!("export file is out of order at position {}", e.position);
        }
        let encoded = pb::RecordedEvent::from(&e).encoded_len() as u64;
        read_bytes += encoded + onecity_proto::prost::length_delimiter_len(encoded as usize) as u64;
        bar.set_position(read_bytes);
        sum.add(&e);
        commit.push(e);
    }
    bar.finish_and_clear();
    if sum.hex() != verified.hex() || sum.events != verified.events {
        bail!("the export file changed while it was imported");
    }
    let target = checksum(log).await?;
    if target.hex() != sum.hex() || target.events != sum.events {
        bail!(
            "checksum mismatch after import: file {} ({} events), log {} ({} events)",
            sum.hex(),
            sum.events,
            target.hex(),
            target.events
        );
    }
    Ok((sum, file_chain))
}

async fn append_commit(log: &dyn EventLog, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let first = &events[0];
    let new = events
        .iter()
        .map(|e| NewEvent {
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            actor: e.actor.clone(),
            causation_id: e.causation_id.clone(),
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
        })
        .collect();
    let a = log
        .append_as(
            &first.appended_by,
            first.case_id,
            Expected::Exact(first.version - 1),
            new,
            first.commit_id,
        )
        .await
        .with_context(|| {
            format!(
                "append commit {} at position {}",
                first.commit_id, first.position
            )
        })?;
    if a.first_position != first.position || a.first_version != first.version {
        bail!(
            "commit {} landed at position {} version {}, expected {} / {}",
            first.commit_id,
            a.first_position,
            a.first_version,
            first.position,
            first.version
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use onecity_eventlog::MemoryLog;
    use uuid::Uuid;

    use super::*;

    /// A log of three commits over two cases (four events).
    async fn source() -> MemoryLog {
        let log = MemoryLog::new();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ev = |t: &str| NewEvent::new(t, "test", vec![1, 2, 3]);
        for (case, events) in [
            (a, vec![ev("t.one")]),
            (b, vec![ev("t.two"), ev("t.three")]),
            (a, vec![ev("t.four")]),
        ] {
            let by = if case == a {
                "service:one"
            } else {
                "service:two"
            };
            log.append_as(by, case, Expected::Any, events, Uuid::now_v7())
                .await
                .unwrap();
        }
        log
    }

    #[tokio::test]
    async fn export_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.export");
        // An existing, world-readable file is narrowed too.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exported = export(&source().await, &path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(verify_export(&path).unwrap().0.hex(), exported.hex());
        let target = MemoryLog::new();
        let (imported, chain) = import(&target, &path).await.unwrap();
        assert_eq!(imported.hex(), exported.hex());
        assert_eq!((chain.head, chain.chained_from), (4, Some(1)));
        assert_eq!(target.head().await.unwrap(), 4);
        // The stamp travels with the commits.
        let stamps: Vec<String> = target
            .read_all(1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.appended_by)
            .collect();
        assert_eq!(
            stamps,
            ["service:one", "service:two", "service:two", "service:one"]
        );
    }

    /// A corrupt file is refused before anything is written: the target stays empty.
    #[tokio::test]
    async fn a_corrupt_export_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        export(&source().await, &good).await.unwrap();
        let bytes = std::fs::read(&good).unwrap();

        // Cut inside the last event: the first commits are valid, the file is not.
        let truncated = dir.path().join("truncated");
        std::fs::write(&truncated, &bytes[..bytes.len() - 2]).unwrap();
        // A length prefix far over any event, after the valid ones.
        let huge = dir.path().join("huge");
        let mut b = bytes.clone();
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
        std::fs::write(&huge, &b).unwrap();

        // One byte of a payload changed (the file still decodes): the chain names it.
        let edited = dir.path().join("edited");
        let mut b = bytes.clone();
        let at = b
            .windows(3)
            .rposition(|w| w == [1, 2, 3])
            .expect("a payload in the file");
        b[at + 2] ^= 0x01;
        std::fs::write(&edited, &b).unwrap();

        for (path, want) in [
            (&truncated, "truncated"),
            (&huge, "length prefix"),
            (&edited, "chain broken at position 4"),
        ] {
            let target = MemoryLog::new();
            let err = import(&target, path).await.unwrap_err();
            assert!(format!("{err:#}").contains(want), "{err:#}");
            assert_eq!(target.head().await.unwrap(), 0, "{want}: nothing written");
        }
    }
}
