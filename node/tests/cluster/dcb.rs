//! Multi-stream appends and Dynamic Consistency Boundaries on real processes: the dcb.events
//! examples (a unique user name, a course's capacity) give exactly the allowed number of
//! successes among many concurrent clients, also across a SIGKILL of the leader; a
//! multi-stream append is all or nothing under conflict; bad input is refused, writing
//! nothing; the CLI's append-batch and dcb commands.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{
    AppendCondition, Client, Error, EventData, ExpectedRevision, Query, QueryItem, ReadOptions,
    RecordedEvent, StreamAppend,
};
use tokio_stream::StreamExt;

use crate::harness::{cairn_exe, runtime, TestCluster};

/// Concurrent clients registering one user name.
const REGISTRANTS: usize = 12;
/// Seats in each course, and the students who want one.
const CAPACITY: usize = 5;
const STUDENTS: usize = 16;
/// Attempts a client makes before the test calls it stuck (each attempt is a read and an
/// append; a conflict or an election costs one).
const MAX_ATTEMPTS: usize = 300;

async fn read_query(client: &Client, query: &Query) -> Vec<RecordedEvent> {
    let mut events = client
        .read_query(query, ReadOptions::forwards().linearizable())
        .await
        .expect("read query");
    let mut out = Vec::new();
    while let Some(event) = events.next().await {
        out.push(event.expect("event"));
    }
    out
}

fn course_query(course: &str) -> Query {
    Query::of(vec![QueryItem::types([
        "CourseDefined",
        "StudentSubscribed",
    ])
    .with_tags([format!("course:{course}")])])
}

/// One student's try for a seat: read the course, decide, append with the read's position
/// as `after`; a failed condition means someone else got in first, so read again. The event
/// keeps its id across attempts, so an append whose outcome was unknown (an election) is
/// retried safely. True when the student holds a seat.
async fn subscribe_student(client: Client, course: String, student: usize) -> bool {
    let tag = format!("student:{student}");
    let event = EventData::json(
        "StudentSubscribed",
        &serde_json::json!({ "student": student }),
    )
    .expect("json")
    .with_tags([format!("course:{course}"), tag.clone()]);
    for _ in 0..MAX_ATTEMPTS {
        let Ok(mut events) = client
            .read_query(
                &course_query(&course),
                ReadOptions::forwards().linearizable(),
            )
            .await
        else {
            continue;
        };
        let mut seen = Vec::new();
        let mut failed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => seen.push(event),
                Err(_) => failed = true,
            }
        }
        if failed {
            continue;
        }
        if seen.iter().any(|e| e.tags.contains(&tag)) {
            return true;
        }
        let taken = seen
            .iter()
            .filter(|e| e.event_type == "StudentSubscribed")
            .count();
        if taken >= CAPACITY {
            return false;
        }
        let condition = AppendCondition {
            fail_if_events_match: course_query(&course),
            after: seen.last().map(|e| e.position),
        };
        match client
            .dcb_append(vec![event.clone()], Some(condition))
            .await
        {
            Ok(_) => return true,
            Err(Error::ConditionFailed { .. }) | Err(Error::Unavailable(_)) => continue,
            Err(e) => panic!("student {student}: {e}"),
        }
    }
    panic!(
        "student {student} neither got a seat nor saw the course full in {MAX_ATTEMPTS} attempts"
    );
}

/// One registrant's try for a user name: fails if anyone registered it at all.
async fn register(client: Client, name: &'static str, n: usize) -> bool {
    let event = EventData::json("UserRegistered", &serde_json::json!({ "by": n }))
        .expect("json")
        .with_tags([format!("username:{name}")]);
    let condition = AppendCondition {
        fail_if_events_match: Query::of(vec![
            QueryItem::types(["UserRegistered"]).with_tags([format!("username:{name}")])
        ]),
        after: None,
    };
    for _ in 0..MAX_ATTEMPTS {
        match client
            .dcb_append(vec![event.clone()], Some(condition.clone()))
            .await
        {
            Ok(_) => return true,
            Err(Error::ConditionFailed { .. }) => return false,
            Err(Error::Unavailable(_)) => continue,
            Err(e) => panic!("registrant {n}: {e}"),
        }
    }
    panic!("registrant {n} got no verdict in {MAX_ATTEMPTS} attempts");
}

async fn define_course(client: &Client, course: &str) {
    let event = EventData::json(
        "CourseDefined",
        &serde_json::json!({ "capacity": CAPACITY }),
    )
    .expect("json")
    .with_tags([format!("course:{course}")]);
    client.dcb_append(vec![event], None).await.expect("define");
}

/// Runs the students of `course` concurrently; returns how many got a seat.
async fn fill_course(cluster: &TestCluster, course: &str) -> usize {
    let mut tasks = Vec::new();
    for student in 0..STUDENTS {
        tasks.push(tokio::spawn(subscribe_student(
            cluster.client(),
            course.to_owned(),
            student,
        )));
    }
    let mut seats = 0;
    for task in tasks {
        seats += usize::from(task.await.expect("student"));
    }
    seats
}

/// Every node holds exactly `CAPACITY` subscriptions of the course.
async fn assert_course_full_on_every_node(cluster: &TestCluster, course: &str, upto: u64) {
    for id in 1..=3 {
        cluster.wait_caught_up(id, Some(upto)).await;
        let mut events = cluster
            .node_client(id)
            .read_query(&course_query(course), ReadOptions::forwards())
            .await
            .expect("read");
        let mut subscribed = 0;
        while let Some(event) = events.next().await {
            subscribed += usize::from(event.expect("event").event_type == "StudentSubscribed");
        }
        assert_eq!(subscribed, CAPACITY, "node {id}, course {course}");
    }
}

#[test]
fn dcb_examples_give_exactly_the_allowed_successes_also_across_a_sigkill_of_the_leader() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        let client = cluster.client();

        // Unique user name: of many concurrent registrations of one name, one succeeds.
        let mut tasks = Vec::new();
        for n in 0..REGISTRANTS {
            tasks.push(tokio::spawn(register(cluster.client(), "ada", n)));
        }
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.expect("registrant"));
        }
        assert_eq!(won, 1, "registrations of one name that succeeded");
        let users = Query::of(vec![QueryItem::types(["UserRegistered"])]);
        assert_eq!(read_query(&client, &users).await.len(), 1);

        // Course capacity, undisturbed.
        define_course(&client, "c1").await;
        assert_eq!(fill_course(&cluster, "c1").await, CAPACITY);

        // Course capacity while the leader is SIGKILLed mid-run.
        define_course(&client, "c2").await;
        let students = {
            let cluster: &TestCluster = &cluster;
            let course = "c2";
            let mut tasks = Vec::new();
            for student in 0..STUDENTS {
                tasks.push(tokio::spawn(subscribe_student(
                    cluster.client(),
                    course.to_owned(),
                    student,
                )));
            }
            tasks
        };
        // Kill the leader once the first seat is taken, while students are still trying.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while read_query(&client, &course_query("c2")).await.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no seat taken in c2");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.kill(leader);
        let running = students.iter().filter(|t| !t.is_finished()).count();
        assert!(running > 0, "every student had finished before the kill");
        let mut seats = 0;
        for task in students {
            seats += usize::from(task.await.expect("student"));
        }
        assert_eq!(seats, CAPACITY, "seats taken in c2 across the kill");
        cluster.restart(leader);
        let upto = client.last_position().unwrap_or(0);
        let upto = upto.max(cluster.wait_until_converged().await.saturating_sub(1));
        assert_course_full_on_every_node(&cluster, "c1", upto).await;
        assert_course_full_on_every_node(&cluster, "c2", upto).await;
    });
}

#[test]
fn a_multi_stream_append_is_all_or_nothing_under_conflict() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let writers = 8;
        let rounds = 6;
        let successes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = cluster.client();
            let successes = successes.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..rounds {
                    // A transfer: both accounts move together, each at the revision read.
                    let head = |s: &'static str| {
                        let client = client.clone();
                        async move {
                            let mut events = match client
                                .read_stream(
                                    s,
                                    ReadOptions::backwards().max_count(1).linearizable(),
                                )
                                .await
                            {
                                Ok(events) => events,
                                Err(Error::StreamNotFound { .. }) => {
                                    return ExpectedRevision::NoStream
                                }
                                Err(e) => panic!("{e}"),
                            };
                            match events.next().await {
                                Some(Ok(e)) => ExpectedRevision::Exact(e.revision),
                                _ => ExpectedRevision::NoStream,
                            }
                        }
                    };
                    let (a, b) = (head("acct-a").await, head("acct-b").await);
                    let event = |side: &str| {
                        EventData::json(
                            "Moved",
                            &serde_json::json!({ "w": w, "round": round, "side": side }),
                        )
                        .expect("json")
                    };
                    let parts = vec![
                        StreamAppend {
                            stream: "acct-a".into(),
                            expected: a,
                            events: vec![event("a")],
                        },
                        StreamAppend {
                            stream: "acct-b".into(),
                            expected: b,
                            events: vec![event("b")],
                        },
                    ];
                    match client.append_multi(parts, Vec::new(), None).await {
                        Ok(result) => {
                            assert_eq!(result.last_revisions.len(), 2);
                            successes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(Error::WrongExpectedVersion { stream, .. }) => {
                            assert!(stream == "acct-a" || stream == "acct-b", "{stream}");
                        }
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
        let successes = successes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(successes > 0);
        let client = cluster.client();
        let read = |s: &'static str| {
            let client = client.clone();
            async move {
                let mut events = client
                    .read_stream(s, ReadOptions::forwards().linearizable())
                    .await
                    .expect("read");
                let mut out = Vec::new();
                while let Some(e) = events.next().await {
                    out.push(e.expect("event"));
                }
                out
            }
        };
        let (a, b) = (read("acct-a").await, read("acct-b").await);
        assert_eq!(a.len(), successes, "one event on acct-a per success");
        assert_eq!(b.len(), successes, "one event on acct-b per success");
        for (ea, eb) in a.iter().zip(&b) {
            assert_eq!(
                eb.position,
                ea.position + 1,
                "each transfer lands contiguously"
            );
            assert_eq!(ea.revision, eb.revision);
        }
    });
}

#[test]
fn bad_dcb_and_batch_input_is_refused_clearly_and_writes_nothing_and_the_cli_reports_conflicts() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let client = cluster.client();
        let event = || EventData::json("T", &serde_json::json!({})).expect("json");
        client
            .append("seed", ExpectedRevision::Any, vec![event()])
            .await
            .expect("seed");
        let before = read_query(&client, &Query::all()).await.len();
        let refuse = |condition: AppendCondition| {
            let client = client.clone();
            async move {
                match client.dcb_append(vec![event()], Some(condition)).await {
                    Err(Error::InvalidArgument(message)) => message,
                    other => panic!("not refused: {other:?}"),
                }
            }
        };
        let empty_item = refuse(AppendCondition {
            fail_if_events_match: Query::of(vec![QueryItem::default()]),
            after: None,
        })
        .await;
        assert!(empty_item.contains("query.items[0]") && empty_item.contains("no type and no tag"), "{empty_item}");
        let too_many = refuse(AppendCondition {
            fail_if_events_match: Query::of(vec![QueryItem::types(["A"]); 17]),
            after: None,
        })
        .await;
        assert!(too_many.contains("17 items; the limit is 16"), "{too_many}");
        let reserved = client
            .append_multi(
                vec![
                    StreamAppend { stream: "fine".into(), expected: ExpectedRevision::Any, events: vec![event()] },
                    StreamAppend { stream: "$dcb".into(), expected: ExpectedRevision::Any, events: vec![event()] },
                ],
                Vec::new(),
                None,
            )
            .await;
        match reserved {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("streams[1]") && message.contains("reserved"), "{message}")
            }
            other => panic!("a $ stream was not refused: {other:?}"),
        }
        assert_eq!(read_query(&client, &Query::all()).await.len(), before, "nothing written");

        // The CLI: a batch over two streams, then a conflicting one (exit 3 naming the
        // stream); a DCB append whose condition fails (exit 3 naming the position).
        let endpoints = cluster.endpoints().join(",");
        let cairn = |args: &[&str], stdin: Option<&str>| {
            use std::io::Write;
            let mut child = Command::new(cairn_exe())
                .args(args)
                .env("CAIRN_ENDPOINTS", &endpoints)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run cairn");
            if let Some(text) = stdin {
                child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
            }
            drop(child.stdin.take());
            child.wait_with_output().expect("cairn output")
        };
        let batch = "{\"stream\":\"cart-1\",\"expected\":\"no-stream\",\"type\":\"Added\",\"data\":{\"sku\":1},\"tags\":[\"cart:1\"]}\n\
                     {\"stream\":\"cart-1\",\"type\":\"Added\",\"data\":{\"sku\":2}}\n\
                     {\"stream\":\"stock-1\",\"type\":\"Reserved\",\"data\":{}}\n";
        let out = cairn(&["append-batch", "-"], Some(batch));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("cart-1: revision 1") && stdout.contains("stock-1: revision 0"), "{stdout}");
        let out = cairn(&["append-batch", "-"], Some(batch.replace("\"expected\":\"no-stream\",", "").replace("stock-1\",", "stock-1\",\"expected\":5,").as_str()));
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("\"stock-1\"") && stderr.contains("expected 5, actual 0"), "{stderr}");

        let out = cairn(&["dcb", "append", "--type", "UserRegistered", "--data", "{}", "--tag", "username:bo", "--fail-if-type", "UserRegistered", "--fail-if-tag", "username:bo"], None);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let out = cairn(&["dcb", "append", "--type", "UserRegistered", "--data", "{}", "--tag", "username:bo", "--fail-if", "types=UserRegistered;tags=username:bo"], None);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let registered = read_query(&client, &Query::of(vec![QueryItem::types(["UserRegistered"])])).await;
        assert_eq!(registered.len(), 1);
        assert!(stderr.contains(&format!("position {}", registered[0].position)), "{stderr}");
        let out = cairn(&["dcb", "read", "--tag", "username:bo", "--json"], None);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        assert_eq!(line["stream"], "$dcb");
        assert_eq!(line["type"], "UserRegistered");
        let out = cairn(&["dcb", "append", "--type", "T", "--data", "{}", "--fail-if", "types="], None);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    });
}
