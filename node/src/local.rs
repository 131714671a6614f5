//! A cluster of `cairn node` child processes on 127.0.0.1: what `cairn dev`, `cairn bench
//! --spawn` and the real-process tests run. Children are killed when this is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cairn_client::{Client, ClientConfig};

use crate::certs::{Ca, DEV_CERTIFICATE_DAYS, LOCAL_NAMES};
use crate::tls::TlsPaths;

/// Pause between status polls while waiting for a cluster.
const POLL_INTERVAL_MS: u64 = 100;

pub struct LocalCluster {
    exe: PathBuf,
    data_root: PathBuf,
    addrs: Vec<String>,
    /// Each node's `--http` address, if it serves one.
    http_addrs: Vec<Option<String>>,
    children: Vec<Option<Child>>,
    /// Nodes 1..=initial form the cluster. Later ones ([`LocalCluster::add_joiner`]) list the
    /// initial members and themselves as peers, so they do not bootstrap: they wait to be added.
    initial: usize,
    /// Children get SIGKILL when the thread that started them ends (see
    /// [`LocalCluster::die_with_parent`]).
    die_with_parent: bool,
    /// Per node, a command that runs the node (see [`LocalCluster::with_launchers`]).
    launchers: Vec<Vec<String>>,
    /// TLS ([`LocalCluster::with_tls`]); without it nodes run `--insecure`.
    tls: Option<LocalTls>,
}

/// A local cluster's TLS: a throwaway CA, one node certificate for 127.0.0.1 and localhost
/// that every node uses unless given its own ([`LocalTls::set_node_files`]).
pub struct LocalTls {
    ca: Ca,
    ca_path: PathBuf,
    shared: TlsPaths,
    own: std::collections::BTreeMap<u64, TlsPaths>,
    /// The admin secret every node gets (`--admin-token-file`), and its file.
    admin_token: String,
    admin_token_path: PathBuf,
}

/// The admin secret's file in a local cluster's data directory.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";

impl LocalTls {
    /// Makes a new CA and node certificate and writes them under `data_root`: `ca.pem`, and
    /// `tls/node.pem` with its key `tls/node-key.pem`; and the admin secret `admin.token`,
    /// kept if it exists (the cluster's admin was made from it when the cluster began).
    pub fn create(data_root: &Path) -> std::io::Result<LocalTls> {
        let admin_token_path = data_root.join(ADMIN_TOKEN_FILE_NAME);
        let admin_token = match crate::auth::secrets::read_admin_secret(&admin_token_path) {
            Ok(secret) => secret,
            Err(_) => {
                let secret =
                    crate::auth::secrets::new_admin_secret().map_err(std::io::Error::other)?;
                std::fs::create_dir_all(data_root)?;
                write_private(&admin_token_path, secret.as_bytes())?;
                secret
            }
        };
        let ca = Ca::new("cairn local CA", DEV_CERTIFICATE_DAYS).map_err(std::io::Error::other)?;
        let dir = data_root.join("tls");
        std::fs::create_dir_all(&dir)?;
        let ca_path = data_root.join("ca.pem");
        crate::certs::write_replacing(&ca_path, ca.pem().as_bytes())?;
        let shared = TlsPaths {
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
            ca: ca_path.clone(),
        };
        ca.issue_node(&LOCAL_NAMES, DEV_CERTIFICATE_DAYS)
            .map_err(std::io::Error::other)?
            .write(&shared.cert, &shared.key)?;
        Ok(LocalTls {
            ca,
            ca_path,
            shared,
            own: Default::default(),
            admin_token,
            admin_token_path,
        })
    }

    /// The admin secret: a token of the bootstrapped admin.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn admin_token_path(&self) -> &Path {
        &self.admin_token_path
    }

    /// The CA: to issue replacement certificates (rotation).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The CA certificate's file: what clients trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The files every node uses unless it has its own.
    pub fn shared_files(&self) -> &TlsPaths {
        &self.shared
    }

    /// Node `id` starts (from its next start on) with these files instead of the shared ones.
    pub fn set_node_files(&mut self, id: u64, files: TlsPaths) {
        self.own.insert(id, files);
    }

    pub fn node_files(&self, id: u64) -> &TlsPaths {
        self.own.get(&id).unwrap_or(&self.shared)
    }
}

/// Writes a file only its owner may read (a secret), replacing any.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A free port on 127.0.0.1, chosen by the OS (another process could take it before the node
/// binds it; rare enough for tests and benchmarks).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalCluster {
    /// Nodes 1..=addrs.len() listening on `addrs`, with data and logs under `data_root`.
    /// Nothing is started yet.
    pub fn new(exe: impl Into<PathBuf>, data_root: impl Into<PathBuf>, addrs: Vec<String>) -> Self {
        let children = addrs.iter().map(|_| None).collect();
        let http_addrs = addrs.iter().map(|_| None).collect();
        let initial = addrs.len();
        LocalCluster {
            exe: exe.into(),
            data_root: data_root.into(),
            addrs,
            http_addrs,
            children,
            initial,
            die_with_parent: false,
            launchers: Vec::new(),
            tls: None,
        }
    }

    /// Nodes run with TLS: a new CA and node certificate under the data root
    /// ([`LocalTls::create`]), endpoints `https://`, clients trusting that CA.
    pub fn with_tls(mut self) -> std::io::Result<Self> {
        self.tls = Some(LocalTls::create(&self.data_root)?);
        Ok(self)
    }

    pub fn tls(&self) -> Option<&LocalTls> {
        self.tls.as_ref()
    }

    pub fn tls_mut(&mut self) -> Option<&mut LocalTls> {
        self.tls.as_mut()
    }

    /// The admin's token, for a cluster with TLS (which checks users).
    pub fn admin_credentials(&self) -> Option<cairn_client::Credentials> {
        self.tls
            .as_ref()
            .map(|tls| cairn_client::Credentials::Token(tls.admin_token.clone()))
    }

    /// The PEM of the CA clients trust, when the cluster runs with TLS.
    pub fn client_tls_ca(&self) -> Option<Vec<u8>> {
        self.tls
            .as_ref()
            .map(|tls| tls.ca.pem().as_bytes().to_vec())
    }

    /// Children started from now on are killed (SIGKILL) when this process dies, however it
    /// dies (`prctl(PR_SET_PDEATHSIG)`, Linux): `cairn dev` killed with SIGKILL leaves no
    /// orphan holding ports and data directories. Acknowledged appends are durable, so SIGKILL
    /// loses nothing. Linux sends it when the *thread* that started the child ends, so start
    /// nodes from a thread that lives as long as the cluster (`cairn dev` uses its main thread).
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// Starts node N as `launchers[N - 1]` followed by the `cairn` command line, e.g. `ip netns
    /// exec NS` to run it in a network namespace of its own (the partition tests). The launcher
    /// must exec the node, so that the child's pid is the node's and a kill reaches it.
    pub fn with_launchers(mut self, launchers: Vec<Vec<String>>) -> Self {
        assert_eq!(launchers.len(), self.addrs.len(), "one launcher per node");
        self.launchers = launchers;
        self
    }

    /// Only nodes 1..=`initial` form the cluster; the others are started as joiners (like
    /// [`LocalCluster::add_joiner`]'s) that wait to be added.
    pub fn with_initial(mut self, initial: usize) -> Self {
        assert!(
            (1..=self.addrs.len()).contains(&initial),
            "1..=nodes initial members"
        );
        self.initial = initial;
        self
    }

    /// Gives node N the HTTP endpoint (`--http`) `http_addrs[N - 1]`.
    pub fn with_http(mut self, http_addrs: Vec<String>) -> Self {
        assert_eq!(
            http_addrs.len(),
            self.addrs.len(),
            "one HTTP address per node"
        );
        self.http_addrs = http_addrs.into_iter().map(Some).collect();
        self
    }

    /// `nodes` nodes on free ports, each with an HTTP endpoint on another free port.
    pub fn on_free_ports(
        exe: impl Into<PathBuf>,
        data_root: impl Into<PathBuf>,
        nodes: usize,
    ) -> std::io::Result<Self> {
        // Held open together so that no port is handed out twice.
        let listeners = (0..nodes * 2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<Vec<_>>>()?;
        drop(listeners);
        let http_addrs = ports.split_off(nodes);
        Ok(Self::new(exe, data_root, ports).with_http(http_addrs))
    }

    /// A slot for a node that joins the running cluster: the next id, on free ports (and an
    /// HTTP endpoint if node 1 has one). Not started; start it, then add it with
    /// `cairn cluster add-node` (or `Client::add_node`) at [`LocalCluster::addr`].
    pub fn add_joiner(&mut self) -> std::io::Result<u64> {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0")?;
        let http = std::net::TcpListener::bind("127.0.0.1:0")?;
        self.addrs.push(grpc.local_addr()?.to_string());
        let http = self.http_addrs[0]
            .is_some()
            .then(|| http.local_addr().map(|a| a.to_string()))
            .transpose()?;
        self.http_addrs.push(http);
        self.children.push(None);
        Ok(self.size())
    }

    /// Node `id`'s `HOST:PORT` (its `--listen` and its entry in `--peers`).
    pub fn addr(&self, id: u64) -> &str {
        &self.addrs[id as usize - 1]
    }

    pub fn size(&self) -> u64 {
        self.addrs.len() as u64
    }

    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.data_root.join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.data_root.join(format!("node-{id}.log"))
    }

    pub fn endpoint(&self, id: u64) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addrs[id as usize - 1])
    }

    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.size()).map(|id| self.endpoint(id)).collect()
    }

    /// Node `id`'s HTTP endpoint (health and metrics), if it has one.
    pub fn http_endpoint(&self, id: u64) -> Option<String> {
        self.http_addrs[id as usize - 1]
            .as_ref()
            .map(|addr| format!("http://{addr}"))
    }

    /// The flags node `id` runs with (the same on every restart).
    pub fn node_args(&self, id: u64) -> Vec<String> {
        let index = id as usize - 1;
        let peers = self
            .addrs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i < self.initial || i == index)
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            self.addrs[id as usize - 1].clone(),
            "--peers".into(),
            peers,
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
        ];
        match &self.tls {
            Some(tls) => {
                let files = tls.node_files(id);
                for (flag, path) in [
                    ("--tls-cert", &files.cert),
                    ("--tls-key", &files.key),
                    ("--tls-ca", &files.ca),
                ] {
                    args.extend([flag.into(), path.display().to_string()]);
                }
                args.extend([
                    "--admin-token-file".into(),
                    tls.admin_token_path.display().to_string(),
                ]);
            }
            None => args.push("--insecure".into()),
        }
        if let Some(http) = &self.http_addrs[id as usize - 1] {
            args.extend(["--http".into(), http.clone()]);
        }
        args
    }

    /// The command line to start node `id` by hand.
    pub fn command_line(&self, id: u64) -> String {
        format!("{} {}", self.exe.display(), self.node_args(id).join(" "))
    }

    /// Starts (or restarts) node `id`, logging to its log file.
    pub fn start_node(&mut self, id: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.data_root)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let mut command = match self.launchers.get(id as usize - 1) {
            Some(launcher) if !launcher.is_empty() => {
                let mut command = Command::new(&launcher[0]);
                command.args(&launcher[1..]).arg(&self.exe);
                command
            }
            _ => Command::new(&self.exe),
        };
        command
            .args(self.node_args(id))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: getpid before the fork; after it, only async-signal-safe calls (prctl,
            // getppid) before exec.
            let parent = unsafe { libc::getpid() };
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent died between fork and prctl: nobody will send the signal.
                    if libc::getppid() != parent {
                        return Err(std::io::Error::other("the parent process has exited"));
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn()?;
        self.children[id as usize - 1] = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> std::io::Result<()> {
        for id in 1..=self.size() {
            self.start_node(id)?;
        }
        Ok(())
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children[id as usize - 1].as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the node stops gracefully (a leader hands leadership over first). Does not
    /// wait; see [`LocalCluster::wait_exit`].
    pub fn terminate(&self, id: u64) {
        if let Some(child) = &self.children[id as usize - 1] {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `timeout` for node `id` to exit; its exit status, or `None` if it is still
    /// running (or was not).
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let slot = &mut self.children[id as usize - 1];
        loop {
            let status = slot.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                *slot = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS / 5)).await;
        }
    }

    /// Children that have exited since the last call, with their status.
    pub fn reap_exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut exited = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((i as u64 + 1, status));
                    *slot = None;
                }
            }
        }
        exited
    }

    /// SIGTERM to every node, then SIGKILL to those still running after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        for child in self.children.iter().flatten() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for slot in self.children.iter_mut() {
            if let Some(child) = slot {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            *slot = None;
        }
    }

    pub fn client(&self) -> Result<Client, cairn_client::Error> {
        Client::with_config(ClientConfig {
            endpoints: self.endpoints(),
            tls_ca: self.client_tls_ca(),
            credentials: self.admin_credentials(),
            ..ClientConfig::default()
        })
    }

    /// A client that talks to node `id` only.
    pub fn node_client(&self, id: u64) -> Result<Client, cairn_client::Error> {
        Client::with_config(ClientConfig {
            endpoints: vec![self.endpoint(id)],
            tls_ca: self.client_tls_ca(),
            credentials: self.admin_credentials(),
            ..ClientConfig::default()
        })
    }

    /// Waits until a node that says it is the leader is known to the others; its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let client = self.client().ok()?;
        while Instant::now() < deadline {
            if let Ok(status) = client.status().await {
                if let Some(leader) = status.leader_id {
                    let confirmed = match self.node_client(leader) {
                        Ok(c) => c.status().await.is_ok_and(|s| s.leader_id == Some(leader)),
                        Err(_) => false,
                    };
                    if confirmed {
                        return Some(leader);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
        None
    }

    /// Waits until every node reports the same applied position; that position.
    pub async fn wait_until_converged(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut positions = Vec::new();
            for id in 1..=self.size() {
                let own = match self.node_client(id) {
                    Ok(c) => c
                        .status()
                        .await
                        .ok()
                        .and_then(|s| s.members.into_iter().find(|m| m.id == id)),
                    Err(_) => None,
                };
                positions.push(own.map(|m| m.applied_position));
            }
            if let Some(Some(first)) = positions.first() {
                if positions.iter().all(|p| *p == Some(*first)) {
                    return Some(*first);
                }
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
        None
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
