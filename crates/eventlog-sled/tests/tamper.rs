//! Tamper evidence of the sled backend: the chain continues across a restart, and one
//! byte changed in a stored commit while the log is closed is reported at that commit.

use onecity_eventlog::chain::{Break, Intact, Verifier};
use onecity_eventlog::{EventLog, Expected, NewEvent, MAX_READ_LIMIT};
use onecity_eventlog_sled::{SledConfig, SledLog};
use uuid::Uuid;

async fn verify(log: &dyn EventLog) -> Result<Intact, Break> {
    let mut v = Verifier::new();
    let mut next = 1;
    loop {
        let page = log.read_all(next, MAX_READ_LIMIT).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        for e in page {
            v.push(e)?;
        }
    }
    v.finish()
}

/// Appends `n` one-event commits (small payloads, stored uncompressed) as `service:test`.
async fn append(log: &dyn EventLog, n: usize) {
    for i in 0..n {
        let e = NewEvent::new(
            "onecity.test.T",
            "actor",
            format!("payload {i}").into_bytes(),
        );
        log.append_as(
            "service:test",
            Uuid::now_v7(),
            Expected::NoStream,
            vec![e],
            Uuid::now_v7(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_chain_survives_a_restart_and_a_flipped_byte_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        append(&log, 3).await;
    }
    {
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        append(&log, 3).await;
        let intact = verify(&log).await.unwrap();
        assert_eq!((intact.head, intact.chained_from), (6, Some(1)));
        let all = log.read_all(1, 10).await.unwrap();
        assert_eq!(all[3].chain.unwrap().prev, all[2].chain.unwrap().hash);
        assert!(all.iter().all(|e| e.appended_by == "service:test"));
    }

    // The log is closed: change the last byte of position 4's record (its payload).
    {
        let db = sled::open(dir.path()).unwrap();
        let mut key = vec![b'E'];
        key.extend_from_slice(&4u64.to_be_bytes());
        let mut value = db.get(&key).unwrap().expect("event 4 is stored").to_vec();
        *value.last_mut().unwrap() ^= 0x01;
        db.insert(&key, value).unwrap();
        db.flush().unwrap();
    }

    let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
    let b = verify(&log).await.unwrap_err();
    assert_eq!(b.position, 4, "{b}");
    assert!(b.what.contains("does not match its hash"), "{b}");
    assert_eq!(b.case_id, log.read_all(4, 1).await.unwrap()[0].case_id);
}
