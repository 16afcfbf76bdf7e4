//! `onecity log export | import | checksum`: a log moved to another backend keeps its
//! order, versions and positions, verified by checksum.

use std::sync::Arc;

use onecity::migrate;
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_eventlog_sled::{SledConfig, SledLog};
use uuid::Uuid;

async fn sample_log(path: &std::path::Path) -> Arc<SledLog> {
    let log = Arc::new(SledLog::open(path, SledConfig::default()).unwrap());
    let cases: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for round in 0..4u8 {
        for (i, case) in cases.iter().enumerate() {
            let events = (0..=(i % 3))
                .map(|k| {
                    NewEvent::new(
                        format!("onecity.test.E{k}"),
                        "test",
                        vec![round, i as u8, k as u8],
                    )
                    .caused_by("x")
                })
                .collect();
            log.append(*case, Expected::Any, events, Uuid::now_v7())
                .await
                .unwrap();
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_preserves_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let source = sample_log(&dir.path().join("a")).await;
    let file = dir.path().join("log.export");
    let exported = migrate::export(source.as_ref(), &file).await.unwrap();
    assert_eq!(exported.events, source.head().await.unwrap());

    let target = SledLog::open(dir.path().join("b"), SledConfig::default()).unwrap();
    let (imported, _) = migrate::import(&target, &file).await.unwrap();
    assert_eq!(imported.hex(), exported.hex());
    let a = source.read_all(1, 10_000).await.unwrap();
    let b = target.read_all(1, 10_000).await.unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.position, x.version, x.case_id, x.event_id, x.commit_id),
            (y.position, y.version, y.case_id, y.event_id, y.commit_id)
        );
        assert_eq!(
            (&x.event_type, &x.payload, &x.actor, &x.causation_id),
            (&y.event_type, &y.payload, &y.actor, &y.causation_id)
        );
    }
    assert_eq!(
        migrate::checksum(&target).await.unwrap().hex(),
        exported.hex()
    );

    // A non-empty target is refused (positions could not be preserved).
    let err = migrate::import(&target, &file).await.unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    // A truncated file is refused, not half-imported silently.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.export");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let fresh = SledLog::open(dir.path().join("c"), SledConfig::default()).unwrap();
    assert!(migrate::import(&fresh, &cut).await.is_err());
    // A different log has a different checksum.
    let other = sample_log(&dir.path().join("d")).await;
    assert_ne!(
        migrate::checksum(other.as_ref()).await.unwrap().hex(),
        exported.hex()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let source = sample_log(&dir.path().join("a")).await;
        migrate::checksum(source.as_ref()).await.unwrap().hex()
    };
    let run = |args: &[String]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_onecity"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = format!("sled:{}", dir.path().join("a").display());
    let b = format!("sled:{}", dir.path().join("b").display());
    let file = dir.path().join("x.export").display().to_string();
    let out = run(&[
        "log".into(),
        "export".into(),
        "--log".into(),
        a.clone(),
        file.clone(),
    ]);
    assert!(out.contains(&expected), "{out}");
    let out = run(&[
        "log".into(),
        "import".into(),
        "--log".into(),
        b.clone(),
        file,
    ]);
    assert!(out.contains("verified") && out.contains(&expected), "{out}");
    let out = run(&["log".into(), "checksum".into(), "--log".into(), b]);
    assert!(out.contains(&expected), "{out}");
}
