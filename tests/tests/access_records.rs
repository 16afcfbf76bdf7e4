//! Every read of residents' data leaves exactly one access record, naming the reader, the
//! method and the stated purpose, written before the answer (issue 13 item 6); and
//! `AdminService.ListAccess` answers "who looked at this household".

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, tokens, TestServer};
use pb::list_access_request::Subject;
use tonic::Code;

/// The access records of `subject`, oldest first.
async fn records(server: &TestServer, subject: Subject) -> Vec<pb::AccessRecord> {
    server
        .admin(tokens::ADMIN)
        .await
        .list_access(pb::ListAccessRequest {
            subject: Some(subject),
            ..Default::default()
        })
        .await
        .expect("list access")
        .into_inner()
        .records
}

/// `msg` with an `onecity-purpose` header.
fn with_purpose<T>(msg: T, purpose: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("onecity-purpose", purpose.parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_leaves_exactly_one_access_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let case_id = case.case_id.clone();
    let by_case = || records(&server, Subject::CaseId(case_id.clone()));
    let mut seen = by_case().await.len();
    // Reads the case's records since the last call and checks there are exactly `n` new
    // ones, the last by `method` of `principal`.
    let mut more = |n: usize, method: &'static str, principal: &'static str| {
        let before = seen;
        seen += n;
        async move {
            let now = by_case().await;
            assert_eq!(
                now.len(),
                before + n,
                "{method} left {} records",
                now.len() - before
            );
            let r = now.last().unwrap().clone();
            assert_eq!(r.method, method);
            assert!(
                r.principal.starts_with(principal),
                "{method} recorded {} as the reader",
                r.principal
            );
            r
        }
    };

    // A terminal's GetCase, with a stated purpose.
    let mut terminal = server.intake(tokens::TERMINAL).await;
    terminal
        .get_case(with_purpose(
            pb::GetCaseRequest {
                case_id: case_id.clone(),
            },
            "home visit 2026-12-04",
        ))
        .await
        .unwrap();
    let r = more(1, "onecity.v1.IntakeService/GetCase", "terminal:").await;
    assert_eq!(r.case_ids, std::slice::from_ref(&case_id));
    assert_eq!(r.purpose, "home visit 2026-12-04");
    let terminal_actor = r.principal.clone();

    // A terminal's WatchCase: recorded before its first response.
    let mut watch = terminal
        .watch_case(pb::WatchCaseRequest {
            case_id: case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.next().await.unwrap().unwrap();
    drop(watch);
    more(1, "onecity.v1.IntakeService/WatchCase", "terminal:").await;

    // A department's ListReferrals and StreamReferrals.
    let mut dept = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let listed = dept
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|r| r.case_id == case_id));
    more(
        1,
        "onecity.v1.HandoffService/ListReferrals",
        "department:civil-affairs@120103",
    )
    .await;
    let before_stream = by_case().await.len();
    let mut stream = dept
        .stream_referrals(pb::StreamReferralsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Every referral delivered is recorded before its delivery; those ready at once share
    // one record, so between one record and one per referral.
    for _ in &listed {
        let streamed = stream.next().await.unwrap().unwrap();
        assert_eq!(streamed.referral.unwrap().case_id, case_id);
    }
    drop(stream);
    let streamed: Vec<_> = by_case().await.split_off(before_stream);
    assert!(
        (1..=listed.len()).contains(&streamed.len()),
        "{} records for {} referrals",
        streamed.len(),
        listed.len()
    );
    for r in &streamed {
        assert_eq!(r.method, "onecity.v1.HandoffService/StreamReferrals");
        assert_eq!(r.principal, "department:civil-affairs@120103");
    }
    more(
        streamed.len(),
        "onecity.v1.HandoffService/StreamReferrals",
        "department:civil-affairs@120103",
    )
    .await;

    // An admin's reads of the raw log: one case, a range, a subscription.
    let mut log = server.log(tokens::ADMIN).await;
    let first = log
        .read_case(pb::ReadCaseRequest {
            case_id: case_id.clone(),
            from_version: 1,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .events[0]
        .position;
    more(1, "onecity.v1.EventLogService/ReadCase", "admin:").await;
    // A range that holds the case's first events (the log opens with other streams': the
    // policy versions, the person claims).
    log.read_all(pb::ReadAllRequest {
        from_position: first,
        limit: 5,
    })
    .await
    .unwrap();
    let r = more(1, "onecity.v1.EventLogService/ReadAll", "admin:").await;
    assert_eq!((r.from_position, r.to_position), (first, first + 4));
    let mut sub = log
        .subscribe(pb::SubscribeRequest {
            from_position: 1,
            event_type_prefixes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    sub.next().await.unwrap().unwrap();
    drop(sub);
    let r = more(1, "onecity.v1.EventLogService/Subscribe", "admin:").await;
    assert_eq!((r.from_position, r.to_position), (1, 0));

    // The services' own reads of the log serve callers recorded where they are answered.
    server
        .log(tokens::SERVICE)
        .await
        .read_case(pb::ReadCaseRequest {
            case_id: case_id.clone(),
            from_version: 1,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(by_case().await.len(), seen, "a service read was recorded");

    // A purpose that is not acceptable text is refused, and nothing is shown or recorded.
    let err = terminal
        .get_case(with_purpose(
            pb::GetCaseRequest {
                case_id: case_id.clone(),
            },
            &"x".repeat(201),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("onecity-purpose"),
        "{}",
        err.message()
    );
    assert_eq!(by_case().await.len(), seen);

    // By principal: the terminal's two reads, oldest first.
    let mine = records(&server, Subject::Principal(terminal_actor)).await;
    assert_eq!(
        mine.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        [
            "onecity.v1.IntakeService/GetCase",
            "onecity.v1.IntakeService/WatchCase"
        ]
    );
    // Another case's reads are not this case's.
    assert!(
        records(&server, Subject::CaseId(uuid::Uuid::now_v7().to_string()))
            .await
            .iter()
            .all(|r| r.from_position != 0)
    );

    // Only admins ask, and bad questions name the field.
    let mut not_admin = server.admin(tokens::TERMINAL).await;
    let err = not_admin
        .list_access(pb::ListAccessRequest {
            subject: Some(Subject::CaseId(case_id.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut admin = server.admin(tokens::ADMIN).await;
    for (req, field) in [
        (
            pb::ListAccessRequest {
                subject: Some(Subject::CaseId("nope".into())),
                ..Default::default()
            },
            "case_id",
        ),
        (
            pb::ListAccessRequest {
                subject: Some(Subject::CaseId(case_id.clone())),
                since: "yesterday".into(),
                ..Default::default()
            },
            "since",
        ),
        (pb::ListAccessRequest::default(), "subject"),
    ] {
        let err = admin.list_access(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    server.stop().await;
}
