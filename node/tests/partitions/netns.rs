//! A private network for one test cluster: a namespace for the harness (its clients) with a
//! bridge, and one namespace per node joined to that bridge by a veth pair. Everything is made
//! inside namespaces of our own, so the host's interfaces, routes and firewall rules are never
//! touched, and deleting the namespaces deletes every link, address and rule with them. Links
//! are cut with iptables in a node's namespace and degraded there with tc.
//!
//! Cleanup: [`Net`]'s `Drop` deletes its namespaces (also on panic); [`sweep_leftovers`] kills
//! the processes of, and deletes, namespaces that a test process which no longer exists left
//! behind (killed before its `Drop` ran). Every name starts with [`NAMESPACE_PREFIX`] and the
//! owner's pid.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every namespace the partition tests make is named `cairn-pt-PID-SEQ-…`.
pub const NAMESPACE_PREFIX: &str = "cairn-pt-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The private subnet inside the namespaces (never on the host): nodes are .1, .2, ...
const SUBNET: &str = "10.213.0";
/// The harness's (clients') address on the bridge.
const HARNESS_HOST: u8 = 254;
/// The port every node listens on (each has its own address).
pub const NODE_PORT: u16 = 2113;

/// Why the partition tests cannot run here, if they cannot: they need root and the `ip`,
/// `iptables` and `tc` commands (Debian packages iproute2 and iptables; `./test.sh` installs
/// them when it runs as root).
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need root".into());
    }
    let missing: Vec<&str> = ["ip", "iptables", "tc"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg(if *tool == "iptables" {
                    "--version"
                } else {
                    "-V"
                })
                .output()
                .map_or(true, |out| !out.status.success())
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {}: install Debian packages iproute2 and iptables (./test.sh does, as root)",
            missing.join(", ")
        )
    })
}

/// Runs a command; its stderr as the error if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        panic!("network set-up: {e}");
    }
}

/// Deletes a namespace after killing whatever still runs in it.
fn delete_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: signalling a process left in our own test namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = run("ip", &["netns", "del", name]);
}

/// Deletes the namespaces of partition-test processes that no longer run (killed before
/// their `Drop` could clean up), with anything left running inside them.
pub fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let owner_alive =
            owner.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !owner_alive {
            eprintln!("partition tests: removing leftover namespace {name}");
            delete_namespace(&name);
        }
    }
}

/// A fault applied to the network, for the history and the test's output.
pub type FaultText = String;

/// The network of one test cluster of `nodes` nodes (ids 1..=nodes).
pub struct Net {
    prefix: String,
    nodes: u64,
}

impl Net {
    /// Makes the harness namespace with its bridge and one namespace per node.
    pub fn new(nodes: u64) -> Net {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(
            "{NAMESPACE_PREFIX}{}-{}-",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net { prefix, nodes };
        let harness = net.harness_namespace();
        must("ip", &["netns", "add", &harness]);
        must("ip", &["-n", &harness, "link", "set", "lo", "up"]);
        must(
            "ip",
            &["-n", &harness, "link", "add", "br0", "type", "bridge"],
        );
        let harness_addr = format!("{SUBNET}.{HARNESS_HOST}/24");
        must(
            "ip",
            &["-n", &harness, "addr", "add", &harness_addr, "dev", "br0"],
        );
        must("ip", &["-n", &harness, "link", "set", "br0", "up"]);
        for id in 1..=nodes {
            net.add_node_namespace(id);
        }
        net
    }

    fn add_node_namespace(&self, id: u64) {
        let harness = self.harness_namespace();
        let ns = self.node_namespace(id);
        let port = format!("v{id}");
        must("ip", &["netns", "add", &ns]);
        must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        must(
            "ip",
            &[
                "-n", &harness, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
        );
        must(
            "ip",
            &["-n", &harness, "link", "set", &port, "master", "br0"],
        );
        must("ip", &["-n", &harness, "link", "set", &port, "up"]);
        let addr = format!("{}/24", self.ip(id));
        must("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
    }

    pub fn harness_namespace(&self) -> String {
        format!("{}h", self.prefix)
    }

    pub fn node_namespace(&self, id: u64) -> String {
        format!("{}n{id}", self.prefix)
    }

    pub fn ip(&self, id: u64) -> String {
        format!("{SUBNET}.{id}")
    }

    /// Node `id`'s `HOST:PORT`.
    pub fn addr(&self, id: u64) -> String {
        format!("{}:{NODE_PORT}", self.ip(id))
    }

    /// The command that starts a node inside its namespace (it execs the node).
    pub fn launcher(&self, id: u64) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.node_namespace(id),
        ]
    }

    /// Moves the calling thread (and the threads it starts afterwards) into the harness's
    /// namespace, where the clients reach every node over the bridge.
    pub fn enter_harness(&self) {
        let path = format!("{NETNS_DIR}/{}", self.harness_namespace());
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a namespace file we just opened; it changes this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }

    fn iptables(&self, id: u64, rule: &[&str]) {
        let ns = self.node_namespace(id);
        let mut args = vec!["netns", "exec", &ns, "iptables", "-w"];
        args.extend_from_slice(rule);
        must("ip", &args);
    }

    /// Nothing from `from` reaches `to` (packets are dropped as `to` receives them).
    pub fn drop_from(&self, from: u64, to: u64) -> FaultText {
        let source = self.ip(from);
        self.iptables(to, &["-A", "INPUT", "-s", &source, "-j", "DROP"]);
        format!("drop {from}->{to}")
    }

    /// `a` and `b` cannot reach each other.
    pub fn cut(&self, a: u64, b: u64) -> FaultText {
        self.drop_from(a, b);
        self.drop_from(b, a);
        format!("cut {a}<->{b}")
    }

    /// `id` is cut from every other node; clients still reach it.
    pub fn isolate_from_peers(&self, id: u64) -> FaultText {
        for other in (1..=self.nodes).filter(|&o| o != id) {
            self.cut(id, other);
        }
        format!("isolate {id} from peers")
    }

    /// `id` is cut from everything: peers and clients.
    pub fn isolate(&self, id: u64) -> FaultText {
        self.iptables(id, &["-A", "INPUT", "-i", "eth0", "-j", "DROP"]);
        self.iptables(id, &["-A", "OUTPUT", "-o", "eth0", "-j", "DROP"]);
        format!("isolate {id}")
    }

    /// The two sides cannot reach each other; each side's nodes still talk among themselves
    /// and to the clients.
    pub fn split(&self, side: &[u64]) -> FaultText {
        for &a in side {
            for b in (1..=self.nodes).filter(|b| !side.contains(b)) {
                self.cut(a, b);
            }
        }
        format!("split {side:?} from the rest")
    }

    /// `id` drops `percent` % of the packets it receives and of those it sends, at random.
    pub fn lossy(&self, id: u64, percent: u32) -> FaultText {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            self.iptables(
                id,
                &[
                    "-A",
                    chain,
                    dir,
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            );
        }
        format!("lossy {id} {percent}%")
    }

    /// Adds `delay_ms` (± `jitter_ms`) to everything `id` sends, with tc netem; `Err` if the
    /// kernel has no netem (sch_netem).
    pub fn delay(&self, id: u64, delay_ms: u32, jitter_ms: u32) -> Result<FaultText, String> {
        let ns = self.node_namespace(id);
        let (delay, jitter) = (format!("{delay_ms}ms"), format!("{jitter_ms}ms"));
        run(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
                "delay", &delay, &jitter,
            ],
        )?;
        Ok(format!("delay {id} {delay_ms}±{jitter_ms} ms"))
    }

    /// Limits what `id` sends to `kbit` kbit/s with a token bucket (tc tbf): a slow link on
    /// which packets queue up to `queue_ms` before they are dropped.
    pub fn throttle(&self, id: u64, kbit: u32, queue_ms: u32) -> FaultText {
        let ns = self.node_namespace(id);
        let (rate, latency) = (format!("{kbit}kbit"), format!("{queue_ms}ms"));
        must(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
                "rate", &rate, "burst", "16kb", "latency", &latency,
            ],
        );
        format!("throttle {id} {kbit} kbit/s")
    }

    /// Removes every rule and queueing discipline from every node: the network is whole.
    pub fn heal(&self) {
        for id in 1..=self.nodes {
            self.iptables(id, &["-F"]);
            let ns = self.node_namespace(id);
            // Fails when there is no root qdisc of ours: nothing to remove.
            let _ = run(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                ],
            );
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for id in 1..=self.nodes {
            delete_namespace(&self.node_namespace(id));
        }
        delete_namespace(&self.harness_namespace());
    }
}
