//! `cairn dev` as a user runs it: a real process in a temporary directory (its working
//! directory, so `./cairn-data/client-profile.toml` is found as from a repository root), and
//! the `cairn` command line run from there with no `CAIRN_*` variables.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::cairn_exe;

/// How long `cairn dev` may take to print `cluster ready`.
pub const DEV_READY_WAIT: Duration = Duration::from_secs(40);
/// How long nodes may take to end after `cairn dev` ends (its stop grace is 5 s).
pub const NODES_GONE_WAIT: Duration = Duration::from_secs(12);

/// `cairn ARGS` run from `dir`, with no endpoints or profile from the environment.
pub fn cli(dir: &Path) -> Command {
    let mut command = Command::new(cairn_exe());
    command
        .current_dir(dir)
        .env_remove("CAIRN_ENDPOINTS")
        .env_remove("CAIRN_PROFILE")
        .stdin(Stdio::null());
    command
}

/// A port P such that P..P+count are free on 127.0.0.1 now.
pub fn consecutive_free_ports(count: u16) -> u16 {
    for _ in 0..100 {
        let first = crate::harness::free_port();
        if first.checked_add(count).is_none() {
            continue;
        }
        let all_free =
            (first..first + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {count} consecutive free ports");
}

/// Whether `pid` is a live process (a zombie is not: it has ended, unreaped).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive; the ones still alive after `timeout`.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(pid: u32, signal: i32) {
    // SAFETY: sending a signal to a process this test started (or its child).
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A running `cairn dev`.
pub struct Dev {
    child: Child,
    /// Every line it printed on stdout and stderr so far.
    lines: Arc<Mutex<Vec<String>>>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Dev {
    /// `cairn dev --nodes N --port P` in a fresh directory, waited for until `cluster ready`.
    pub fn start(nodes: u16) -> Dev {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = consecutive_free_ports(nodes);
        let dev = Dev::spawn(dir, nodes, port);
        dev.wait_line(|l| l.starts_with("cluster ready"), DEV_READY_WAIT)
            .unwrap_or_else(|| panic!("cairn dev not ready: {:?}", dev.lines()));
        dev
    }

    /// Starts `cairn dev` in `dir` without waiting.
    pub fn spawn(dir: tempfile::TempDir, nodes: u16, port: u16) -> Dev {
        let mut child = cli(dir.path())
            .args([
                "dev",
                "--nodes",
                &nodes.to_string(),
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn dev");
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
        Dev {
            child,
            lines,
            port,
            dir,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line (from the start) that `matches`, waiting up to `timeout`.
    pub fn wait_line(&self, matches: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| matches(l)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Each node's latest pid, from `node N: pid P ...` and `node N restarted: pid P`.
    pub fn node_pids(&self) -> BTreeMap<u64, u32> {
        let mut pids = BTreeMap::new();
        for line in self.lines() {
            let Some(rest) = line.strip_prefix("node ") else {
                continue;
            };
            let Some((id, rest)) = rest.split_once(':') else {
                continue;
            };
            let id = id.trim_end_matches(" restarted");
            let pid = rest
                .trim()
                .strip_prefix("pid ")
                .and_then(|r| r.split_whitespace().next());
            if let (Ok(id), Some(Ok(pid))) = (id.parse::<u64>(), pid.map(str::parse::<u32>)) {
                pids.insert(id, pid);
            }
        }
        pids
    }

    /// Waits up to `timeout` for `cairn dev` itself to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.node_pids().into_values().collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The nodes die with it (parent-death signal); make sure even if that broke.
        for pid in pids {
            if alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}
