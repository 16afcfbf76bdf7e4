//! The key layout of the log's sled tree (see the table in the crate docs) and the
//! encodings of the small values: positions, and the legacy `K` commit records.

use onecity_eventlog::{Appended, Error, Result};
use uuid::Uuid;

use crate::commit_index::CommitRecord;

pub(crate) const EVENT: u8 = b'E';
pub(crate) const CASE: u8 = b'C';
pub(crate) const COMMIT: u8 = b'K';
pub(crate) const CHECKPOINT: u8 = b'P';
pub(crate) const META_HEAD: &[u8] = b"Mhead";
pub(crate) const META_INDEXED: &[u8] = b"Mindexed";
/// Present once the store keeps its commit-id index in `commits/` rather than `K` keys.
pub(crate) const META_COMMIT_RUNS: &[u8] = b"Mcommitruns";
/// The commit-id index's directory inside the data dir (see `commit_index`).
pub(crate) const COMMIT_DIR: &str = "commits";

pub(crate) fn be_u64(v: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = v
        .try_into()
        .map_err(|_| Error::Storage(format!("expected 8 bytes, found {}", v.len())))?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn event_key(position: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = EVENT;
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

pub(crate) fn case_key(case_id: Uuid, version: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = CASE;
    k[1..17].copy_from_slice(case_id.as_bytes());
    k[17..].copy_from_slice(&version.to_be_bytes());
    k
}

pub(crate) fn commit_key(commit_id: Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = COMMIT;
    k[1..].copy_from_slice(commit_id.as_bytes());
    k
}

pub(crate) fn checkpoint_key(consumer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(consumer.len() + 1);
    k.push(CHECKPOINT);
    k.extend_from_slice(consumer.as_bytes());
    k
}

/// The value of a legacy `K` key (stores now only read them; tests write them).
#[cfg(test)]
pub(crate) fn encode_commit(r: &CommitRecord) -> [u8; 48] {
    let mut v = [0u8; 48];
    v[..16].copy_from_slice(r.case_id.as_bytes());
    let a = &r.appended;
    for (i, n) in [
        a.first_version,
        a.last_version,
        a.first_position,
        a.last_position,
    ]
    .into_iter()
    .enumerate()
    {
        v[16 + i * 8..24 + i * 8].copy_from_slice(&n.to_be_bytes());
    }
    v
}

pub(crate) fn decode_commit(v: &[u8]) -> Result<CommitRecord> {
    if v.len() != 48 {
        return Err(Error::Storage(format!(
            "corrupt commit record of {} bytes",
            v.len()
        )));
    }
    let n = |i: usize| be_u64(&v[16 + i * 8..24 + i * 8]);
    Ok(CommitRecord {
        case_id: Uuid::from_slice(&v[..16]).map_err(|e| Error::Storage(e.to_string()))?,
        appended: Appended {
            case_id: Uuid::from_slice(&v[..16]).map_err(|e| Error::Storage(e.to_string()))?,
            first_version: n(0)?,
            last_version: n(1)?,
            first_position: n(2)?,
            last_position: n(3)?,
            deduplicated: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_record_roundtrips() {
        let r = CommitRecord {
            case_id: Uuid::now_v7(),
            appended: Appended {
                case_id: Uuid::nil(),
                first_version: 3,
                last_version: 5,
                first_position: 100,
                last_position: 102,
                deduplicated: false,
            },
        };
        let back = decode_commit(&encode_commit(&r)).unwrap();
        assert_eq!(back.case_id, r.case_id);
        assert_eq!(
            back.appended,
            Appended {
                case_id: r.case_id,
                ..r.appended
            }
        );
        assert!(decode_commit(&[0; 47]).is_err());
    }

    #[test]
    fn keys_sort_by_number() {
        assert!(event_key(255) < event_key(256));
        let c = Uuid::now_v7();
        assert!(case_key(c, 9) < case_key(c, 10));
    }
}
