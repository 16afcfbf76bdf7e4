//! Durability of sled's files: what `flush` leaves to the page cache, synced.

use std::fs::File;
use std::path::{Path, PathBuf};

use onecity_eventlog::Result;

use crate::{sled_err, storage};

/// Makes sled's writes survive power loss: `flush` (which on Linux ends in
/// `sync_file_range`, pushing pages to the device but not its cache or the file's
/// metadata), then `fdatasync` on the data file, and on any blob file sled wrote
/// (values and pages too large for a log segment go to `blobs/`, which sled never syncs).
#[derive(Debug)]
pub(crate) struct FileSyncer {
    data_file: File,
    blob_dir: PathBuf,
    /// On Linux, inotify reports each blob file sled has finished writing (sled writes a
    /// blob whole and closes it before the log entry that points at it can be flushed),
    /// so a sync touches only those instead of listing a directory that can hold
    /// thousands of files. `None` where inotify is unavailable: then every sync lists.
    #[cfg(target_os = "linux")]
    watch: Option<inotify::Inotify>,
    /// The next sync lists the directory (first sync, or the event queue overflowed).
    list_next: bool,
    /// Every blob a listing has reported is named below this.
    listed_below: u64,
}

impl FileSyncer {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        let data_file =
            File::open(dir.join("db")).map_err(|e| storage("open sled data file", e))?;
        // The directory entries themselves (db, conf, blobs/) must survive too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage("sync data dir", e))?;
        let blob_dir = dir.join("blobs");
        Ok(FileSyncer {
            data_file,
            #[cfg(target_os = "linux")]
            watch: watch_blobs(&blob_dir),
            blob_dir,
            list_next: true,
            listed_below: 0,
        })
    }

    pub(crate) fn sync(&mut self, db: &sled::Db) -> Result<()> {
        db.flush().map_err(sled_err)?;
        self.data_file
            .sync_data()
            .map_err(|e| storage("fdatasync sled data file", e))?;
        let new_blobs = self.new_blobs()?;
        let mut synced = 0;
        for name in new_blobs {
            match File::open(self.blob_dir.join(&name)) {
                Ok(f) => f
                    .sync_data()
                    .map_err(|e| storage("fdatasync sled blob", e))?,
                // sled garbage-collects blobs concurrently; a vanished one needs no sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage("open sled blob", e)),
            }
            synced += 1;
        }
        if synced > 0 {
            File::open(&self.blob_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| storage("sync blob dir", e))?;
        }
        Ok(())
    }

    /// Blob files written since the last sync (every file, when listing).
    fn new_blobs(&mut self) -> Result<Vec<std::ffi::OsString>> {
        #[cfg(target_os = "linux")]
        if let Some(watch) = self.watch.as_mut() {
            let mut names = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match watch.read_events(&mut buf) {
                    Ok(events) => {
                        for e in events {
                            if e.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                                self.list_next = true;
                            } else if let Some(name) = e.name {
                                names.push(name.to_owned());
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "blob watch failed, listing blobs from now on");
                        self.watch = None;
                        self.list_next = true;
                        break;
                    }
                }
            }
            if !self.list_next {
                return Ok(names);
            }
        }
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage("list sled blobs", e)),
        };
        // sled names a blob by the log sequence number that wrote it, so the files an
        // earlier listing saw are the ones below `listed_below`; only newer ones are new.
        let mut listed = Vec::new();
        let mut below = self.listed_below;
        for entry in entries.flatten() {
            let name = entry.file_name();
            match name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                Some(lsn) if lsn < self.listed_below => {}
                Some(lsn) => {
                    below = below.max(lsn + 1);
                    listed.push(name);
                }
                None => {}
            }
        }
        self.listed_below = below;
        // With a watch, one listing catches up; without one, every sync lists.
        #[cfg(target_os = "linux")]
        {
            self.list_next = self.watch.is_none();
        }
        Ok(listed)
    }
}

/// A watch for blob files closed after writing; `None` (and a warning) if the kernel
/// refuses one, e.g. when the inotify watch limit is reached.
#[cfg(target_os = "linux")]
fn watch_blobs(blob_dir: &Path) -> Option<inotify::Inotify> {
    let watch = inotify::Inotify::init().and_then(|i| {
        std::fs::create_dir_all(blob_dir)?;
        i.watches()
            .add(blob_dir, inotify::WatchMask::CLOSE_WRITE)
            .map(|_| i)
    });
    match watch {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no inotify watch on sled blobs, listing them after every flush");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_blob_watch_reports_exactly_the_blobs_written_since_the_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        let mut syncer = FileSyncer::new(dir.path()).unwrap();
        assert!(syncer.watch.is_some());
        syncer.sync(&db).unwrap();
        assert!(
            !syncer.list_next,
            "the first sync lists once, then the watch takes over"
        );
        // Small values stay in the log segments: nothing to sync.
        db.insert(b"small", vec![1u8; 100]).unwrap();
        db.flush().unwrap();
        assert!(syncer.new_blobs().unwrap().is_empty());
        // A value over sled's blob threshold (segment / 4) gets its own file.
        db.insert(b"large", vec![2u8; 300 * 1024]).unwrap();
        db.flush().unwrap();
        let new = syncer.new_blobs().unwrap();
        let listed: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(listed.contains(&new[0]), "{new:?} not in {listed:?}");
        assert!(syncer.new_blobs().unwrap().is_empty(), "reported twice");
        syncer.sync(&db).unwrap();
    }
}
