//! The conformance suite against the JetStream backend, on a nats-server that this test
//! process starts itself (see `onecity_eventlog_jetstream::testing`), plus what only
//! this backend has: the server checks at connect, several processes (here: several
//! `JetStreamLog`s) writing one log, and recovery of a commit whose writer died between
//! recording the attempt and publishing it.
//!
//! `cargo test -p onecity-eventlog-jetstream --test jetstream_conformance`

onecity_eventlog::conformance_suite!(onecity_eventlog_jetstream::testing::JetStreamBackend);

/// The same suite with three replicas on a three-node cluster (the production setting).
mod r3 {
    onecity_eventlog::conformance_suite!(
        onecity_eventlog_jetstream::testing::JetStreamClusterBackend
    );
}

mod jetstream_only {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;
    use onecity_eventlog::{Error, EventLog, Expected, Filter, NewEvent};
    use onecity_eventlog_jetstream::testing::{fresh_prefix, shared_server, NatsServer};
    use onecity_eventlog_jetstream::{JetStreamConfig, JetStreamLog};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use uuid::Uuid;

    fn evs(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent::new("onecity.test.Thing", "test", vec![i as u8]))
            .collect()
    }

    fn assert_chain_intact(all: Vec<onecity_eventlog::RecordedEvent>) {
        let n = all.len() as u64;
        let mut v = onecity_eventlog::chain::Verifier::new();
        for e in all {
            v.push(e).unwrap();
        }
        let intact = v.finish().unwrap();
        assert_eq!((intact.head, intact.chained_from), (n, Some(1)));
    }

    async fn url() -> String {
        tokio::task::spawn_blocking(|| shared_server().url())
            .await
            .unwrap()
    }

    async fn open(prefix: &str) -> JetStreamLog {
        JetStreamLog::connect(JetStreamConfig {
            url: url().await,
            prefix: prefix.into(),
            replicas: 1,
            ..JetStreamConfig::default()
        })
        .await
        .unwrap()
    }

    /// A fake NATS server that greets with `info` and answers pings, so the client's
    /// handshake completes and the backend's own checks decide.
    async fn fake_server(info: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let greeting = format!("INFO {info}\r\n");
                    if w.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.starts_with("PING") && w.write_all(b"PONG\r\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("nats://{addr}")
    }

    async fn connect_error(url: String) -> String {
        match JetStreamLog::connect(JetStreamConfig {
            url,
            prefix: "never".into(),
            replicas: 1,
            request_timeout: Duration::from_secs(2),
            ..JetStreamConfig::default()
        })
        .await
        {
            Ok(_) => panic!("connected to a server the backend must refuse"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn refuses_a_server_older_than_2_9() {
        let url = fake_server(
            r#"{"server_id":"fake","version":"2.8.4","proto":1,"headers":true,"max_payload":8388608,"jetstream":true}"#,
        )
        .await;
        let e = connect_error(url).await;
        assert!(
            e.contains("nats-server 2.8.4 is too old") && e.contains("2.9 or newer"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refuses_a_server_without_jetstream_or_with_a_small_max_payload() {
        let no_js = fake_server(
            r#"{"server_id":"fake","version":"2.9.10","proto":1,"headers":true,"max_payload":8388608,"jetstream":false}"#,
        )
        .await;
        let e = connect_error(no_js).await;
        assert!(e.contains("jetstream is not enabled"), "{e}");
        let small = fake_server(
            r#"{"server_id":"fake","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,"jetstream":true}"#,
        )
        .await;
        let e = connect_error(small).await;
        assert!(e.contains("max_payload 1048576"), "{e}");
    }

    #[tokio::test]
    async fn refuses_an_existing_stream_with_a_limit() {
        let prefix = fresh_prefix();
        let client = async_nats::connect(url().await).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: format!("{prefix}-log"),
            subjects: vec![format!("{prefix}.case.*"), format!("{prefix}.void")],
            max_messages: 10,
            ..Default::default()
        })
        .await
        .unwrap();
        let e = JetStreamLog::connect(JetStreamConfig {
            url: url().await,
            prefix,
            replicas: 1,
            ..JetStreamConfig::default()
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_msgs = 10") && e.contains("refusing"), "{e}");
    }

    /// Several writers on one log (as several processes would be): the server decides,
    /// every case stays gap-free, one commit id is written once, one of many racing
    /// `Exact` appends wins, and a retry through another writer long after the first
    /// write is recognised from the durable record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_writers_share_one_log() {
        let prefix = fresh_prefix();
        let logs: Vec<Arc<JetStreamLog>> = vec![
            Arc::new(open(&prefix).await),
            Arc::new(open(&prefix).await),
            Arc::new(open(&prefix).await),
        ];
        let case = Uuid::now_v7();
        logs[0]
            .append(case, Expected::NoStream, evs(1), Uuid::now_v7())
            .await
            .unwrap();
        let racers: Vec<_> = (0..12)
            .map(|i| {
                let log = Arc::clone(&logs[i % logs.len()]);
                tokio::spawn(async move {
                    log.append(case, Expected::Exact(1), evs(2), Uuid::now_v7())
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(a) => {
                    assert_eq!((a.first_version, a.last_version), (2, 3));
                    wins += 1;
                }
                Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 3),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(wins, 1);

        let commit = Uuid::now_v7();
        let retries: Vec<_> = (0..9)
            .map(|i| {
                let log = Arc::clone(&logs[i % logs.len()]);
                tokio::spawn(async move {
                    log.append(Uuid::now_v7(), Expected::Any, evs(3), commit)
                        .await
                })
            })
            .collect();
        let mut fresh = 0;
        let mut firsts = Vec::new();
        for r in retries {
            let a = r.await.unwrap().unwrap();
            fresh += usize::from(!a.deduplicated);
            firsts.push((a.case_id, a.first_position));
        }
        assert_eq!(fresh, 1, "one racer writes the commit");
        firsts.dedup();
        assert_eq!(firsts.len(), 1, "every racer reports the same commit");

        let cases: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let writers: Vec<_> = (0..48)
            .map(|i| {
                let log = Arc::clone(&logs[i % logs.len()]);
                let case = cases[i % cases.len()];
                tokio::spawn(async move {
                    log.append(case, Expected::Any, evs(1 + i % 3), Uuid::now_v7())
                        .await
                        .unwrap()
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        for log in &logs {
            let all = log.read_all(1, 10_000).await.unwrap();
            assert_eq!(all.len() as u64, log.head().await.unwrap());
            for (i, e) in all.iter().enumerate() {
                assert_eq!(e.position, i as u64 + 1);
            }
            // Writers in three processes' worth of handles chain onto each other.
            assert_chain_intact(all);
            for case in &cases {
                let stream = log.read_case(*case, 1, 10_000).await.unwrap();
                for (i, e) in stream.iter().enumerate() {
                    assert_eq!(e.version, i as u64 + 1);
                }
            }
        }

        // A writer that never saw the commit (a fresh process) still recognises it.
        let late = open(&prefix).await;
        let again = late
            .append(Uuid::now_v7(), Expected::NoStream, evs(1), commit)
            .await
            .unwrap();
        assert!(again.deduplicated);
        assert_eq!((again.case_id, again.first_position), firsts[0]);
    }

    /// A writer recorded an attempt and died before publishing it. A retry publishes it
    /// at the recorded sequence; a retry whose expected version no longer admits it
    /// closes the attempt with a void message (no position, no version) and reports the
    /// conflict; readers and subscribers never see the void.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_but_unpublished_attempt_is_completed_or_closed() {
        let prefix = fresh_prefix();
        let log = open(&prefix).await;
        let client = async_nats::connect(url().await).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let case = Uuid::now_v7();
        log.append(case, Expected::NoStream, evs(2), Uuid::now_v7())
            .await
            .unwrap();

        // The dead writer's record: it expected to take stream sequence 2.
        let commit = Uuid::now_v7();
        js.publish(
            format!("$KV.{prefix}-commits.{commit}"),
            format!("2 {case}").into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let a = log
            .append(case, Expected::Exact(2), evs(1), commit)
            .await
            .unwrap();
        assert!(!a.deduplicated);
        assert_eq!((a.first_version, a.first_position), (3, 3));
        let again = log
            .append(case, Expected::Exact(2), evs(1), commit)
            .await
            .unwrap();
        assert!(again.deduplicated);

        // Another dead writer, expecting sequence 3; its retry now conflicts.
        let doomed = Uuid::now_v7();
        js.publish(
            format!("$KV.{prefix}-commits.{doomed}"),
            format!("3 {case}").into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        match log.append(case, Expected::Exact(1), evs(1), doomed).await {
            Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 3),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let mut stream = js.get_stream(format!("{prefix}-log")).await.unwrap();
        assert_eq!(
            stream.info().await.unwrap().state.last_sequence,
            3,
            "the void took sequence 3"
        );
        assert_eq!(log.head().await.unwrap(), 3);

        // The log goes on after the void without a gap.
        let b = log
            .append(case, Expected::Exact(3), evs(2), Uuid::now_v7())
            .await
            .unwrap();
        assert_eq!((b.first_position, b.first_version), (4, 4));
        let all = log.read_all(1, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        // The void carried the chain on: the commit after it links to the one before.
        assert_chain_intact(all);
        assert_eq!(
            log.read_case(case, 1, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.version)
                .collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let mut sub = log.subscribe(3, Filter::all()).await.unwrap();
        for want in 3..=5 {
            let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(e.position, want);
        }
        // The doomed commit id is free again for a fresh attempt.
        let c = log
            .append(case, Expected::Any, evs(1), doomed)
            .await
            .unwrap();
        assert!(!c.deduplicated);
        assert_eq!(c.first_position, 6);
    }

    /// What was acknowledged is there for the next process: commits, dedup records,
    /// checkpoints.
    #[tokio::test]
    async fn a_reopened_log_has_everything() {
        let prefix = fresh_prefix();
        let case = Uuid::now_v7();
        let commit = Uuid::now_v7();
        {
            let log = open(&prefix).await;
            log.append(case, Expected::NoStream, evs(3), commit)
                .await
                .unwrap();
            log.save_checkpoint("projector", 2).await.unwrap();
            log.shutdown();
        }
        let log = open(&prefix).await;
        assert_eq!(log.head().await.unwrap(), 3);
        assert_eq!(log.load_checkpoint("projector").await.unwrap(), 2);
        let again = log
            .append(case, Expected::NoStream, evs(3), commit)
            .await
            .unwrap();
        assert!(again.deduplicated);
        assert_eq!(log.read_case(case, 2, 10).await.unwrap().len(), 2);
    }

    /// The server crashes (SIGKILL) and comes back: acknowledged commits are there, a
    /// subscription picks up where it was, and appends work again (a retry of a commit
    /// whose outcome was unknown is written once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_a_server_crash() {
        let mut server =
            tokio::task::spawn_blocking(|| NatsServer::start().unwrap_or_else(|e| panic!("{e}")))
                .await
                .unwrap();
        let log = JetStreamLog::connect(JetStreamConfig {
            url: server.url(),
            prefix: "crash".into(),
            replicas: 1,
            request_timeout: Duration::from_secs(2),
            ..JetStreamConfig::default()
        })
        .await
        .unwrap();
        let case = Uuid::now_v7();
        log.append(case, Expected::NoStream, evs(3), Uuid::now_v7())
            .await
            .unwrap();
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        for want in 1..=3 {
            assert_eq!(next(&mut sub).await, want);
        }
        let server = tokio::task::spawn_blocking(move || {
            server.restart().unwrap_or_else(|e| panic!("{e}"));
            server
        })
        .await
        .unwrap();
        assert_eq!(log.head().await.unwrap_or(3), 3);
        // The client reconnects by itself; until it has, appends are `Unavailable`.
        let commit = Uuid::now_v7();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let appended = loop {
            match log.append(case, Expected::Exact(3), evs(2), commit).await {
                Ok(a) => break a,
                Err(Error::Unavailable(e)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = e;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!((appended.first_position, appended.last_version), (4, 5));
        for want in 4..=5 {
            assert_eq!(next(&mut sub).await, want);
        }
        assert_eq!(log.head().await.unwrap(), 5);
        assert_eq!(log.read_case(case, 1, 100).await.unwrap().len(), 5);
        drop(log);
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .unwrap();
    }

    async fn next(sub: &mut onecity_eventlog::EventStream) -> u64 {
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended")
            .expect("subscription failed")
            .position
    }

    /// The log stream of `prefix` on the shared server, through a client of the test's own.
    async fn log_stream(prefix: &str) -> async_nats::jetstream::stream::Stream {
        let client = async_nats::connect(url().await).await.unwrap();
        async_nats::jetstream::new(client)
            .get_stream(format!("{prefix}-log"))
            .await
            .unwrap()
    }

    /// The names and descriptions of the consumers on `stream`.
    async fn consumers(stream: &async_nats::jetstream::stream::Stream) -> Vec<(String, String)> {
        let mut list = stream.consumers();
        let mut out = Vec::new();
        while let Some(c) = list.next().await {
            let c = c.unwrap();
            out.push((c.name, c.config.description.unwrap_or_default()));
        }
        out
    }

    /// A subscription whose consumer is deleted behind its back (as the server does
    /// after a restart, or an operator through the API) makes a new one and keeps
    /// delivering; the consumer's description names the subscription and the process.
    #[tokio::test]
    async fn a_subscription_outlives_the_deletion_of_its_consumer() {
        let prefix = fresh_prefix();
        let log = open(&prefix).await;
        let case = Uuid::now_v7();
        log.append(case, Expected::NoStream, evs(3), Uuid::now_v7())
            .await
            .unwrap();
        let mut sub = log
            .subscribe(1, Filter::prefixes(["onecity.test."]))
            .await
            .unwrap();
        for want in 1..=3 {
            assert_eq!(next(&mut sub).await, want);
        }
        let stream = log_stream(&prefix).await;
        let found = consumers(&stream).await;
        let [(name, description)] = found.as_slice() else {
            panic!("one consumer expected: {found:?}")
        };
        let pid = format!("pid {}", std::process::id());
        assert!(
            description.contains("onecity subscription from position 1 for onecity.test.")
                && description.contains(&pid),
            "{description}"
        );
        assert!(stream.delete_consumer(name).await.unwrap().success);
        log.append(case, Expected::Exact(3), evs(2), Uuid::now_v7())
            .await
            .unwrap();
        for want in 4..=5 {
            assert_eq!(next(&mut sub).await, want);
        }
        let found = consumers(&stream).await;
        assert!(
            found.iter().all(|(n, _)| n != name) && found.len() == 1,
            "{found:?}"
        );
    }

    /// A subscription whose consumer exists but delivers nothing (as one placed on a
    /// replica that stopped applying the stream) notices through the stream leader that
    /// it makes no progress, and recreates it: no error ends it, nothing is lost.
    #[tokio::test]
    async fn a_subscription_recreates_a_consumer_that_stopped_delivering() {
        let prefix = fresh_prefix();
        let log = open(&prefix).await;
        let case = Uuid::now_v7();
        log.append(case, Expected::NoStream, evs(3), Uuid::now_v7())
            .await
            .unwrap();
        log.stall_next_consumers(1);
        let started = std::time::Instant::now();
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        for want in 1..=3 {
            assert_eq!(next(&mut sub).await, want);
        }
        // Two empty pulls (a normal one, then a shorter recheck) before the recreation.
        assert!(
            started.elapsed() >= Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        log.append(case, Expected::Exact(3), evs(2), Uuid::now_v7())
            .await
            .unwrap();
        for want in 4..=5 {
            assert_eq!(next(&mut sub).await, want);
        }
    }

    /// The same for a `read_all` long enough to go through a consumer.
    #[tokio::test]
    async fn read_all_recreates_a_consumer_that_stopped_delivering() {
        let log = open(&fresh_prefix()).await;
        for _ in 0..20 {
            log.append(Uuid::now_v7(), Expected::NoStream, evs(2), Uuid::now_v7())
                .await
                .unwrap();
        }
        log.stall_next_consumers(1);
        let events = tokio::time::timeout(Duration::from_secs(30), log.read_all(1, 1000))
            .await
            .expect("read_all stalled")
            .unwrap();
        assert_eq!(events.len(), 40);
        assert_eq!(events.last().map(|e| e.position), Some(40));
    }

    /// A message whose numbering overlaps the one before it (only a fault could write
    /// one: here a raw copy of the first message) ends a subscription with an error
    /// instead of silently hiding its events.
    #[tokio::test]
    async fn a_subscription_reports_overlapping_numbering() {
        let prefix = fresh_prefix();
        let log = open(&prefix).await;
        let case = Uuid::now_v7();
        log.append(case, Expected::NoStream, evs(3), Uuid::now_v7())
            .await
            .unwrap();
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        for want in 1..=3 {
            assert_eq!(next(&mut sub).await, want);
        }
        let client = async_nats::connect(url().await).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(format!("{prefix}-log")).await.unwrap();
        let first = stream.get_raw_message(1).await.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in first.headers.iter() {
            // Without the server's checks (dedup id, expected sequences) it takes the copy.
            if AsRef::<str>::as_ref(name).starts_with("Nats-") {
                continue;
            }
            for v in values {
                headers.append(name.clone(), v.clone());
            }
        }
        js.publish_with_headers(first.subject.to_string(), headers, first.payload)
            .await
            .unwrap()
            .await
            .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("subscription stalled");
        match end {
            Some(Err(Error::Storage(e))) => assert!(e.contains("overlaps"), "{e}"),
            other => panic!("expected an overlap error, got {other:?}"),
        }
    }

    /// A subscription ends cleanly when the log shuts down.
    #[tokio::test]
    async fn subscriptions_end_on_shutdown() {
        let log = open(&fresh_prefix()).await;
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        log.shutdown();
        let end = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap();
        assert!(end.is_none(), "{end:?}");
        assert!(matches!(
            log.append(Uuid::now_v7(), Expected::Any, evs(1), Uuid::now_v7())
                .await,
            Err(Error::Unavailable(_))
        ));
    }

    /// Not a check: `--ignored --nocapture` prints append throughput against the test
    /// server (R1, loopback).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn append_throughput() {
        throughput(url().await, 1).await;
    }

    /// The same on the three-node test cluster with three replicas.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn append_throughput_r3() {
        let url = tokio::task::spawn_blocking(|| {
            onecity_eventlog_jetstream::testing::shared_cluster().url()
        })
        .await
        .unwrap();
        throughput(url, 3).await;
    }

    async fn throughput(url: String, replicas: usize) {
        let prefix = fresh_prefix();
        let config = JetStreamConfig {
            url: url.clone(),
            prefix: prefix.clone(),
            replicas,
            ..JetStreamConfig::default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let log = loop {
            match JetStreamLog::connect(config.clone()).await {
                Ok(log) => break Arc::new(log),
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let n = 2_000;
        // The floor: bare publishes with their acks, one at a time, on the same server.
        let first = url.split(',').next().unwrap().to_string();
        let js = async_nats::jetstream::new(async_nats::connect(first).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: format!("{prefix}-raw"),
            subjects: vec![format!("{prefix}.raw")],
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .unwrap();
        let t = std::time::Instant::now();
        for _ in 0..n {
            js.publish(format!("{prefix}.raw"), vec![0u8; 64].into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let raw = t.elapsed();
        println!("R{replicas}");
        println!(
            "bare jetstream publish+ack: {n} in {raw:?} = {:.0}/s",
            n as f64 / raw.as_secs_f64()
        );
        let t = std::time::Instant::now();
        let case = Uuid::now_v7();
        for _ in 0..n {
            log.append(case, Expected::Any, evs(1), Uuid::now_v7())
                .await
                .unwrap();
        }
        let seq = t.elapsed();
        println!(
            "sequential, one case: {n} commits in {seq:?} = {:.0} commits/s",
            n as f64 / seq.as_secs_f64()
        );
        let t = std::time::Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let case = Uuid::now_v7();
                    for _ in 0..n / 64 {
                        log.append(case, Expected::Any, evs(1), Uuid::now_v7())
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let par = t.elapsed();
        println!(
            "64 tasks, 64 cases: {} commits in {par:?} = {:.0} commits/s",
            n / 64 * 64,
            (n / 64 * 64) as f64 / par.as_secs_f64()
        );
        let t = std::time::Instant::now();
        let all = log.read_all(1, 10_000).await.unwrap();
        println!("read_all of {} events: {:?}", all.len(), t.elapsed());
        let t = std::time::Instant::now();
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        let mut got = 0;
        while got < all.len() {
            sub.next().await.unwrap().unwrap();
            got += 1;
        }
        println!("subscription catch-up of {got} events: {:?}", t.elapsed());
    }
}

/// The lease conformance suite on the log's KV bucket, one connection per view.
mod leases {
    onecity_eventlog::lease_conformance_suite!(
        onecity_eventlog_jetstream::testing::JetStreamLeaseBackend { cluster: false }
    );
}

/// The same with three replicas, where the compare-and-set must hold across the cluster.
mod leases_r3 {
    onecity_eventlog::lease_conformance_suite!(
        onecity_eventlog_jetstream::testing::JetStreamLeaseBackend { cluster: true }
    );
}
