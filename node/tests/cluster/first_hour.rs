//! What a new user meets in the first hour (issue 14): `cairn dev`'s life cycle, finding the
//! cluster without flags, large and binary data from the command line, and mistakes said in
//! the user's terms, on one line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dev_process::{alive, cli, signal, wait_gone, Dev, NODES_GONE_WAIT};
use crate::harness::{free_port, runtime, TestCluster};

/// What "fails fast" means for an unreachable endpoint (the client's retries took 7.7 s).
const FAST: Duration = Duration::from_secs(2);

fn one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "stderr should be one line: {stderr:?}"
    );
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    stderr
}

#[test]
fn cairn_dev_ends_its_nodes_however_it_ends() {
    for (name, sig) in [
        ("SIGTERM", libc::SIGTERM),
        ("SIGHUP", libc::SIGHUP),
        ("SIGKILL", libc::SIGKILL),
    ] {
        let mut dev = Dev::start(1);
        let pids: Vec<u32> = dev.node_pids().into_values().collect();
        assert_eq!(pids.len(), 1, "{:?}", dev.lines());
        assert!(pids.iter().all(|&p| alive(p)));
        signal(dev.pid(), sig);
        assert!(
            dev.wait_exit(NODES_GONE_WAIT).is_some(),
            "{name}: cairn dev did not end"
        );
        assert_eq!(
            wait_gone(&pids, NODES_GONE_WAIT),
            Vec::<u32>::new(),
            "{name}: nodes outlived cairn dev"
        );
    }
}

#[test]
fn a_second_cairn_dev_is_refused_in_one_line_and_the_first_keeps_serving() {
    let dev = Dev::start(1);
    let node = dev.node_pids()[&1];
    // The printed commands work from anywhere: absolute paths.
    let by_hand = dev
        .wait_line(|l| l.contains("by hand"), Duration::ZERO)
        .expect("a by-hand command line");
    let data_dir = by_hand
        .split("--data-dir ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("--data-dir in the command");
    assert!(data_dir.starts_with('/'), "{by_hand}");
    let export = dev
        .wait_line(|l| l.starts_with("export CAIRN_PROFILE=/"), Duration::ZERO)
        .expect("an export line with an absolute path");

    // The same data directory, another port: its lock says so.
    let started = Instant::now();
    let same_dir = cli(dev.dir.path())
        .args(["dev", "--nodes", "1", "--port", &free_port().to_string()])
        .output()
        .expect("second dev");
    assert_eq!(same_dir.status.code(), Some(1), "{same_dir:?}");
    assert!(
        one_line_error(&same_dir).contains("another cairn dev"),
        "{same_dir:?}"
    );
    // Another data directory, the same port: the port is taken.
    let other = tempfile::tempdir().expect("tempdir");
    let same_port = cli(other.path())
        .args(["dev", "--nodes", "1", "--port", &dev.port.to_string()])
        .output()
        .expect("second dev");
    assert_eq!(same_port.status.code(), Some(1), "{same_port:?}");
    assert!(
        one_line_error(&same_port).contains(&format!("127.0.0.1:{}", dev.port)),
        "{same_port:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !other.path().join("cairn-data").join("node-1").exists(),
        "nothing was started"
    );

    // The first one is untouched and found from another directory through CAIRN_PROFILE.
    assert!(alive(node));
    let profile = export.trim_start_matches("export CAIRN_PROFILE=");
    let status = cli(other.path())
        .args(["status", "--json"])
        .env("CAIRN_PROFILE", profile)
        .output()
        .expect("status");
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["members"][0]["reachable"], true, "{status}");
}

#[test]
fn unreachable_endpoints_fail_fast_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nobody = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["append", "s", "--data", "{}"],
        vec!["read", "s"],
        vec!["read-all"],
        vec!["status"],
        vec!["subscribe", "$all"],
    ] {
        let started = Instant::now();
        let output = cli(dir.path())
            .args(&args)
            .args(["--endpoints", &nobody])
            .output()
            .expect("cairn");
        let took = started.elapsed();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let error = one_line_error(&output);
        assert!(
            error.contains("no node reachable") && error.contains("cairn dev"),
            "{args:?}: {error}"
        );
        assert!(took < FAST, "{args:?} took {took:?}");
    }
    // A profile that names a stopped cluster: the same, saying where the endpoints came from.
    let profile = dir.path().join("client-profile.toml");
    std::fs::write(&profile, format!("endpoints = [\"{nobody}\"]\n")).expect("profile");
    let output = cli(dir.path())
        .args(["read", "s", "--profile"])
        .arg(&profile)
        .output()
        .expect("cairn");
    assert!(one_line_error(&output).contains("client-profile.toml"));
}

/// Runs `cairn ARGS` against `endpoints` with `stdin` as standard input.
fn cairn_with_input(endpoints: &str, args: &[&str], stdin: &[u8]) -> Output {
    let dir = std::env::temp_dir();
    let mut child = cli(&dir)
        .args(args)
        .env("CAIRN_ENDPOINTS", endpoints)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("cairn");
    let _ = writer.join();
    output
}

fn cairn(endpoints: &str, args: &[&str]) -> Output {
    cairn_with_input(endpoints, args, b"")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn large_binary_and_piped_data_and_mistakes_in_the_users_terms() {
    let mut cluster = TestCluster::start(3);
    runtime().block_on(cluster.wait_for_leader());
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("tempdir");

    // 200 KB of JSON from a file (too long for an argument), and JSON from standard input.
    let big = serde_json::json!({ "blob": "x".repeat(200_000) });
    let file = dir.path().join("big.json");
    std::fs::write(&file, big.to_string()).expect("write");
    let at_file = format!("@{}", file.display());
    let written = cairn(&endpoints, &["append", "big", "--data", &at_file, "--json"]);
    assert_eq!(written.status.code(), Some(0), "{written:?}");
    let piped = cairn_with_input(
        &endpoints,
        &["append", "big", "--data", "-", "--json"],
        br#"{"piped": true}"#,
    );
    assert_eq!(piped.status.code(), Some(0), "{piped:?}");
    // Bytes that are not JSON, as application/octet-stream.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let binary = cairn_with_input(
        &endpoints,
        &[
            "append",
            "big",
            "--data",
            "-",
            "--content-type",
            "application/octet-stream",
        ],
        &bytes,
    );
    assert_eq!(binary.status.code(), Some(0), "{binary:?}");
    let read = cairn(&endpoints, &["read", "big", "--json"]);
    let events = json_lines(&read);
    assert_eq!(events.len(), 3, "{read:?}");
    assert_eq!(events[0]["data"], big);
    assert_eq!(events[1]["data"]["piped"], true);
    assert_eq!(events[2]["data_base64"], true);
    // Not JSON without --content-type: refused, saying what to do.
    let not_json = cairn_with_input(&endpoints, &["append", "big", "--data", "-"], &bytes);
    assert_eq!(not_json.status.code(), Some(2));
    assert!(one_line_error(&not_json).contains("--content-type application/octet-stream"));
    // Over the 1 MiB event limit: one line, nothing written.
    let huge = dir.path().join("huge.bin");
    std::fs::write(&huge, vec![7u8; 1024 * 1024 + 1]).expect("write");
    let too_large = cairn(
        &endpoints,
        &[
            "append",
            "big",
            "--content-type",
            "application/octet-stream",
            "--data",
            &format!("@{}", huge.display()),
        ],
    );
    assert_eq!(too_large.status.code(), Some(2), "{too_large:?}");
    assert!(one_line_error(&too_large).contains("1 MiB"));
    let missing = cairn(&endpoints, &["append", "big", "--data", "@/no/such/file"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(one_line_error(&missing).contains("/no/such/file"));
    assert_eq!(
        json_lines(&cairn(&endpoints, &["read", "big", "--json"])).len(),
        3
    );

    // Mistakes, each one line in the user's terms.
    let empty = cairn(&endpoints, &["read", "big", "--endpoints", ""]);
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    assert!(one_line_error(&empty).contains("--endpoints is empty"));
    let http = cluster.http_endpoint(1).expect("an HTTP endpoint");
    let wrong_port = cairn(&http, &["read", "big"]);
    assert_eq!(wrong_port.status.code(), Some(1), "{wrong_port:?}");
    assert!(one_line_error(&wrong_port).contains("HTTP port"));
    let bad_id = cairn(
        &endpoints,
        &["append", "s", "--data", "{}", "--id", "not-a-uuid"],
    );
    assert_eq!(bad_id.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("is not a UUID"));
    let blank = cairn(&endpoints, &["append", " ", "--data", "{}"]);
    assert_eq!(blank.status.code(), Some(2), "{blank:?}");
    assert!(one_line_error(&blank).contains("whitespace"));
    let regex = cairn(&endpoints, &["subscribe", "$all", "--type-regex", "("]);
    assert_eq!(regex.status.code(), Some(2), "{regex:?}");
    assert!(one_line_error(&regex).contains("--type-regex"));

    // Help says what each argument is.
    let help = String::from_utf8_lossy(&cairn(&endpoints, &["read", "--help"]).stdout).into_owned();
    for text in ["The stream to read", "Newest first", "Most events to print"] {
        assert!(help.contains(text), "read --help lacks {text:?}: {help}");
    }
    let help =
        String::from_utf8_lossy(&cairn(&endpoints, &["read-all", "--help"]).stdout).into_owned();
    for text in ["Newest first", "Most events to print"] {
        assert!(
            help.contains(text),
            "read-all --help lacks {text:?}: {help}"
        );
    }

    // Node logs written to files carry no colour codes.
    for id in 1..=3 {
        let log = std::fs::read(cluster.log_path(id)).expect("log");
        assert!(!log.is_empty());
        assert!(!log.contains(&0x1b), "node {id}'s log has ANSI escapes");
    }

    // `--from` beyond the end warns.
    let beyond = subscription(&endpoints, &["subscribe", "$all", "--from", "99999"]);
    assert!(
        beyond.wait_for(|l| l.starts_with("warning: --from 99999 is beyond the end")),
        "{:?}",
        beyond.lines()
    );
    beyond.stop();

    // A resubscription elsewhere after the serving node died prints no second `caught up`.
    // The subscription goes to the first endpoint: node 1.
    let small = cairn(&endpoints, &["append", "small", "--data", "{}"]);
    assert_eq!(small.status.code(), Some(0), "{small:?}");
    let sub = subscription(&endpoints, &["subscribe", "small"]);
    assert!(
        sub.wait_for(|l| l.starts_with("-- caught up")),
        "{:?}",
        sub.lines()
    );
    cluster.kill(1);
    let resubscribed = runtime().block_on(async {
        let client = cluster.client();
        let event = cairn_client::EventData::json("After", &serde_json::json!({})).expect("json");
        client
            .append("small", cairn_client::ExpectedRevision::Any, vec![event])
            .await
    });
    resubscribed.expect("an append after the kill");
    assert!(sub.wait_for(|l| l.contains("After")), "{:?}", sub.lines());
    let lines = sub.stop();
    let caught_up = lines.iter().filter(|l| l.contains("caught up")).count();
    assert_eq!(caught_up, 1, "{lines:?}");

    // An unreachable member in `status --json`: nulls and an error, not zeros.
    let status = cairn(&endpoints, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let status = &json_lines(&status)[0];
    let node1 = &status["members"][0];
    assert_eq!(node1["id"], 1, "{status}");
    assert_eq!(node1["reachable"], false, "{status}");
    assert_eq!(node1["error"], "unreachable", "{status}");
    for field in ["term", "role", "last_applied_index", "applied_position"] {
        assert!(node1[field].is_null(), "{field}: {status}");
    }
}

/// A running `cairn subscribe`, its stdout and stderr lines collected.
struct Running {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn subscription(endpoints: &str, args: &[&str]) -> Running {
    let mut child = cli(&std::env::temp_dir())
        .args(args)
        .env("CAIRN_ENDPOINTS", endpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn subscribe");
    let lines = Arc::new(Mutex::new(Vec::new()));
    for out in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    Running { child, lines }
}

impl Running {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, matches: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| matches(l)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Ctrl-C; every line it printed.
    fn stop(mut self) -> Vec<String> {
        signal(self.child.id(), libc::SIGINT);
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.lines()
    }
}

#[test]
fn a_data_directory_in_use_is_said_in_plain_words_by_node_and_dev() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("cairn-data").join("node-1");
    let node_args = |port: u16| {
        let addr = format!("127.0.0.1:{port}");
        vec![
            "node".to_owned(),
            "--id".into(),
            "1".into(),
            "--listen".into(),
            addr.clone(),
            "--peers".into(),
            format!("1={addr}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--insecure".into(),
        ]
    };
    let mut first = cli(dir.path())
        .args(node_args(free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("first node");
    let store = data_dir.join("store").join("lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let second = cli(dir.path())
        .args(node_args(free_port()))
        .output()
        .expect("second node");
    let dev = cli(dir.path())
        .args(["dev", "--nodes", "1", "--port"])
        .arg(crate::dev_process::consecutive_free_ports(1).to_string())
        .output()
        .expect("dev");
    let _ = first.kill();
    let _ = first.wait();

    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let error = one_line_error(&second);
    assert!(error.contains("in use by another process"), "{error}");
    assert!(!error.contains("WouldBlock"), "{error}");
    assert_eq!(dev.status.code(), Some(1), "{dev:?}");
    let error = one_line_error(&dev);
    assert!(error.contains("node 1's data directory"), "{error}");
}
