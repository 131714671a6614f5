//! README's walkthrough, run as written: every `$ ` command of its code blocks against a real
//! `cairn dev`, from the directory `cairn dev` runs in (so the CLI finds the cluster through
//! its client profile, with no flags), and each output checked against the README's lines.
//!
//! The README's expected lines are shapes, not literal text, where a run cannot repeat them:
//! `...` inside a line matches anything, a line `...` any number of lines; node ids, terms,
//! applied indexes, event counts in `status`, pids and ports match any number (which node
//! leads is an election's outcome), and the role column any role. Revisions, positions, types
//! and data are literal. `kill -9 <pid of the leader>` kills the leader's process (found with
//! `cairn status --json`), and `cairn dev restart N` restarts the node that was killed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::dev_process::{cli, signal, wait_gone, Dev, NODES_GONE_WAIT};
use crate::harness::cairn_exe;

const README: &str = include_str!("../../../README.md");
/// Longest a walkthrough command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `subscribe` step runs at most while its lines are awaited.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(15);

/// One `$ command` of the README with the lines it shows after it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The `$ ` commands of the Walkthrough section's code blocks, in order.
fn walkthrough_steps(readme: &str) -> Vec<Step> {
    let start = readme
        .find("\n## Walkthrough")
        .expect("a Walkthrough section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_owned());
        }
    }
    // Lines of a block before its first `$ ` (like the alias) belong to no step.
    steps
}

/// A README output line as a regex (see the module doc); `None` for a `...` line.
fn line_pattern(line: &str) -> Option<Regex> {
    if line.trim() == "..." {
        return None;
    }
    let mut pattern = line
        .split("...")
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*");
    for (from, to) in [
        (r"node \d+", r"node \d+"),
        (r"term \d+", r"term \d+"),
        (r"applied index \d+", r"applied index \d+"),
        // A follower may not have applied the last append yet when status asks.
        (r"events \d+", r"events \d+"),
        (r"pid \d+", r"pid \d+"),
        (r"127\\.0\\.0\\.1:\d+", r"127\.0\.0\.1:\d+"),
        (
            r"(leader|follower|candidate|learner) +",
            r"(leader|follower|candidate|learner) +",
        ),
        ("  +", " +"),
    ] {
        pattern = Regex::new(from)
            .expect("pattern")
            .replace_all(&pattern, to)
            .into_owned();
    }
    Some(Regex::new(&format!("^{pattern}$")).expect("line pattern"))
}

/// Whether `actual` has the shape of `expected` (lines; `...` lines match any run of lines).
fn matches_shape(expected: &[Option<Regex>], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((None, rest)) => (0..=actual.len()).any(|skip| matches_shape(rest, &actual[skip..])),
        Some((Some(line), rest)) => actual
            .split_first()
            .is_some_and(|(first, more)| line.is_match(first) && matches_shape(rest, more)),
    }
}

fn assert_shape(step: &Step, actual: &[String]) {
    let expected: Vec<Option<Regex>> = step.expected.iter().map(|l| line_pattern(l)).collect();
    assert!(
        matches_shape(&expected, actual),
        "`{}` printed\n{}\nwhich does not have the README's shape\n{}",
        step.command,
        actual.join("\n"),
        step.expected.join("\n")
    );
}

/// Runs a README command line through `sh` in `dir`, `cairn` being the binary under test;
/// stdout and stderr together, in order. Its exit status and lines.
fn run_shell(dir: &Path, command: &str) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} 2>&1"))
        .current_dir(dir)
        .env("PATH", path_with_cairn())
        .env_remove("CAIRN_ENDPOINTS")
        .env_remove("CAIRN_PROFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status.code(), lines);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("`{command}` did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// PATH with the directory of the `cairn` under test first.
fn path_with_cairn() -> String {
    let dir = Path::new(cairn_exe())
        .parent()
        .expect("the binary's directory");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs a command that does not end by itself (`subscribe`) until its output has the README's
/// shape or [`SUBSCRIBE_WAIT`] passed, then interrupts it (Ctrl-C, as a user would).
fn run_until_shape(dir: &Path, step: &Step) -> Vec<String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {} 2>&1", step.command))
        .current_dir(dir)
        .env("PATH", path_with_cairn())
        .env_remove("CAIRN_ENDPOINTS")
        .env_remove("CAIRN_PROFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let expected: Vec<Option<Regex>> = step.expected.iter().map(|l| line_pattern(l)).collect();
    let deadline = Instant::now() + SUBSCRIBE_WAIT;
    while Instant::now() < deadline && !matches_shape(&expected, &lines.lock().unwrap()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), libc::SIGINT);
    let status = child.wait().expect("wait");
    let _ = reader.join();
    assert_eq!(status.code(), Some(0), "`{}` after Ctrl-C", step.command);
    let lines = lines.lock().unwrap().clone();
    lines
}

/// The current leader's id, as `cairn status --json` (through the profile) reports it.
fn leader_id(dir: &Path) -> u64 {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let output = cli(dir)
            .args(["status", "--json"])
            .output()
            .expect("status");
        let status: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(leader) = status["leader_id"].as_u64() {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader: {output:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readme_walkthrough_runs_as_written_against_cairn_dev() {
    let steps = walkthrough_steps(README);
    assert!(steps.len() >= 10, "{steps:?}");
    assert!(
        steps.iter().any(|s| s.command.starts_with("kill -9")),
        "the walkthrough kills the leader: {steps:?}"
    );
    let mut dev = Dev::start(3);
    let dir = dev.dir.path().to_path_buf();
    let mut killed = None;
    for step in &steps {
        let command = step.command.as_str();
        if command.starts_with("kill -9") {
            let leader = leader_id(&dir);
            let pid = dev.node_pids()[&leader];
            signal(pid, libc::SIGKILL);
            assert!(
                wait_gone(&[pid], NODES_GONE_WAIT).is_empty(),
                "node {leader} lives"
            );
            killed = Some(leader);
            continue;
        }
        if command.starts_with("cairn subscribe") {
            let lines = run_until_shape(&dir, step);
            assert_shape(step, &lines);
            continue;
        }
        let command = match (command.strip_prefix("cairn dev restart "), killed) {
            (Some(_), Some(id)) => format!("cairn dev restart {id}"),
            _ => command.to_owned(),
        };
        assert!(
            command.starts_with("cairn "),
            "a walkthrough step this test cannot run: {command}"
        );
        let (code, lines) = run_shell(&dir, &command);
        let failed = lines.first().is_some_and(|l| l.starts_with("error:"));
        if failed {
            assert_ne!(code, Some(0), "`{command}` printed an error: {lines:?}");
        } else {
            assert_eq!(code, Some(0), "`{command}`: {lines:?}");
        }
        assert_shape(step, &lines);
    }

    // Ctrl-C on `cairn dev` stops every node, the restarted one included.
    let pids: Vec<u32> = dev.node_pids().into_values().collect();
    assert_eq!(pids.len(), 3, "{:?}", dev.lines());
    signal(dev.pid(), libc::SIGINT);
    assert!(
        dev.wait_exit(NODES_GONE_WAIT).is_some(),
        "cairn dev did not end"
    );
    assert_eq!(wait_gone(&pids, NODES_GONE_WAIT), Vec::<u32>::new());
}

#[test]
fn readme_shapes_match_only_what_they_say() {
    let shape =
        |lines: &[&str]| -> Vec<Option<Regex>> { lines.iter().map(|l| line_pattern(l)).collect() };
    let own = |lines: &[&str]| -> Vec<String> { lines.iter().map(|l| l.to_string()).collect() };
    let status = shape(&[
        "leader: node 1 at http://127.0.0.1:2113 (term 1)",
        "...",
        "  node 3  http://127.0.0.1:2115  unreachable",
        "...",
    ]);
    assert!(matches_shape(
        &status,
        &own(&[
            "leader: node 2 at http://127.0.0.1:40001 (term 3)",
            "  node 1  http://127.0.0.1:40000  follower   term 3  applied index 9  events 3",
            "  node 3  http://127.0.0.1:40002  unreachable",
        ])
    ));
    let append = shape(&["appended to orders-1: revision 2, position 2"]);
    assert!(!matches_shape(
        &append,
        &own(&["appended to orders-1: revision 3, position 2"])
    ));
    assert!(!matches_shape(&append, &own(&[])));
}
