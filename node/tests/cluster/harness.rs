//! Test clusters: `cairn node` processes on free loopback ports with temporary data
//! directories. Every child is killed when the `TestCluster` is dropped, even on panic.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use cairn_node::local::LocalCluster;

/// How long a test waits for a leader (or for nodes to agree) before it fails.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

pub fn cairn_exe() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

pub fn free_port() -> u16 {
    cairn_node::local::free_port().expect("a free port")
}

pub struct TestCluster {
    cluster: LocalCluster,
    // Dropped after the cluster (fields drop in order), so nodes die before their files.
    _dir: tempfile::TempDir,
}

impl Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

impl TestCluster {
    pub fn start(nodes: usize) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster =
            LocalCluster::on_free_ports(cairn_exe(), dir.path(), nodes).expect("ports");
        cluster.start_all().expect("start nodes");
        TestCluster { cluster, _dir: dir }
    }

    /// `start`, with the cluster set up by `configure` first (launchers, initial members).
    pub fn start_with(
        nodes: usize,
        configure: impl FnOnce(LocalCluster) -> LocalCluster,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = LocalCluster::on_free_ports(cairn_exe(), dir.path(), nodes).expect("ports");
        let mut cluster = configure(cluster);
        cluster.start_all().expect("start nodes");
        TestCluster { cluster, _dir: dir }
    }

    /// Like [`TestCluster::start`], the nodes with TLS (a throwaway CA, mutual TLS between
    /// nodes); endpoints are `https://` and clients trust the CA.
    pub fn start_with_tls(nodes: usize) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = LocalCluster::on_free_ports(cairn_exe(), dir.path(), nodes)
            .expect("ports")
            .with_tls()
            .expect("certificates");
        cluster.start_all().expect("start nodes");
        TestCluster { cluster, _dir: dir }
    }

    pub fn restart(&mut self, id: u64) {
        self.cluster.start_node(id).expect("restart node");
    }

    pub fn client(&self) -> cairn_client::Client {
        self.cluster.client().expect("client")
    }

    pub fn node_client(&self, id: u64) -> cairn_client::Client {
        self.cluster.node_client(id).expect("client")
    }

    pub async fn wait_for_leader(&self) -> u64 {
        match self.cluster.wait_for_leader(CLUSTER_WAIT).await {
            Some(leader) => leader,
            None => panic!(
                "no leader within {CLUSTER_WAIT:?}; logs in {:?}",
                self.cluster.data_root()
            ),
        }
    }

    pub async fn wait_until_converged(&self) -> u64 {
        match self.cluster.wait_until_converged(CLUSTER_WAIT).await {
            Some(position) => position,
            None => panic!(
                "nodes did not converge within {CLUSTER_WAIT:?}; logs in {:?}",
                self.cluster.data_root()
            ),
        }
    }
}

impl TestCluster {
    /// Waits until node `id` knows a leader and has applied `$all` up to `position` (taken from
    /// the node's own status); panics after [`CLUSTER_WAIT`].
    pub async fn wait_caught_up(&self, id: u64, position: Option<u64>) {
        let deadline = std::time::Instant::now() + CLUSTER_WAIT;
        let client = self.node_client(id);
        let mut last = None;
        while std::time::Instant::now() < deadline {
            if let Ok(status) = client.status().await {
                let own = status.members.iter().find(|m| m.id == id);
                let applied = own.map(|m| m.applied_position);
                if status.leader_id.is_some() && applied > position {
                    return;
                }
                last = Some((status.leader_id, applied));
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "node {id} did not catch up to position {position:?} within {CLUSTER_WAIT:?} (last seen: leader, applied = {last:?}); logs in {:?}",
            self.data_root()
        );
    }

    /// The members (id, role name) as node `id` sees them, sorted by id.
    pub async fn members_seen_by(&self, id: u64) -> Vec<(u64, &'static str)> {
        use cairn_client::proto::Role;
        let status = self.node_client(id).status().await.expect("status");
        let mut members: Vec<(u64, &'static str)> = status
            .members
            .iter()
            .map(|m| {
                let role = match Role::try_from(m.role) {
                    Ok(Role::Leader) => "leader",
                    Ok(Role::Follower) => "follower",
                    Ok(Role::Learner) => "learner",
                    Ok(Role::Candidate) => "candidate",
                    Ok(Role::Removed) => "removed",
                    _ => "unknown",
                };
                (m.id, role)
            })
            .collect();
        members.sort();
        members
    }
}

/// Pause between polls of a node's status.
const POLL: Duration = Duration::from_millis(100);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
