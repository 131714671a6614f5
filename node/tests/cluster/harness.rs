//! Starts and stops `cairn node` processes for tests. Every child is killed when the
//! `TestCluster` is dropped, even if the test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::{Client, ClientConfig};

/// How long a test waits for a leader (or for nodes to agree) before it fails.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

pub fn cairn_exe() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// A free port on 127.0.0.1 (the OS picks it; another process could take it before we bind,
/// which is unlikely enough on a test machine).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    children: Vec<Option<Child>>,
}

impl TestCluster {
    pub fn start(nodes: usize) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<String> = (0..nodes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut cluster = TestCluster {
            dir,
            addrs,
            children: (0..nodes).map(|_| None).collect(),
        };
        for id in 1..=nodes as u64 {
            cluster.start_node(id);
        }
        cluster
    }

    fn peers(&self) -> String {
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts (or restarts) node `id` with the same flags as before.
    pub fn start_node(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("log file");
        let child = Command::new(cairn_exe())
            .args([
                "node",
                "--id",
                &id.to_string(),
                "--listen",
                &self.addrs[id as usize - 1],
            ])
            .args(["--peers", &self.peers(), "--data-dir"])
            .arg(self.data_dir(id))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn cairn node");
        self.children[id as usize - 1] = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.addrs[id as usize - 1])
    }

    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.addrs.len() as u64)
            .map(|id| self.endpoint(id))
            .collect()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.endpoints()).expect("client")
    }

    /// A client that talks to one node only.
    pub fn node_client(&self, id: u64) -> Client {
        Client::with_config(ClientConfig {
            endpoints: vec![self.endpoint(id)],
            ..ClientConfig::default()
        })
        .expect("client")
    }

    /// Waits until some node reports a leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        let client = self.client();
        let started = Instant::now();
        loop {
            if let Ok(status) = client.status().await {
                if let Some(leader) = status.leader_id {
                    let leader_status = self.node_client(leader).status().await;
                    if leader_status.is_ok_and(|s| s.leader_id == Some(leader)) {
                        return leader;
                    }
                }
            }
            assert!(
                started.elapsed() < CLUSTER_WAIT,
                "no leader within {CLUSTER_WAIT:?}; logs in {:?}",
                self.dir.path()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node has applied the same number of events; returns it.
    pub async fn wait_until_converged(&self) -> u64 {
        let started = Instant::now();
        loop {
            let mut positions = Vec::new();
            for id in 1..=self.addrs.len() as u64 {
                let status = self.node_client(id).status().await;
                let own = status
                    .ok()
                    .and_then(|s| s.members.into_iter().find(|m| m.id == id))
                    .map(|m| m.applied_position);
                positions.push(own);
            }
            if let Some(Some(first)) = positions.first() {
                if positions.iter().all(|p| *p == Some(*first)) {
                    return *first;
                }
            }
            assert!(
                started.elapsed() < CLUSTER_WAIT,
                "nodes did not converge: {positions:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
