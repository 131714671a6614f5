//! The nodes a client talks to, one lazily connected channel each, and the last known leader.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::credentials::{AddCredentials, AuthChannel};

use crate::error::Error;
use crate::read::NodePreference;

/// Most endpoints a client holds, configured plus learned from leader hints: a confused or
/// hostile server cannot make the client open channels without bound. A hint beyond the limit
/// is ignored (the client keeps cycling through the endpoints it has).
pub const MAX_ENDPOINTS: usize = 64;

/// Longest wait for a TCP connection, capped further by the request timeout. Short, so a dead
/// node costs little of an append's retry budget.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Bound on each attempt of a membership change (add or remove a node). Above the server's
/// own bounds on it: adding waits for the new node to catch up (30 s at most per attempt) and
/// then for two commits (10 s each); removing the leader first hands leadership over.
pub const MEMBERSHIP_REQUEST_TIMEOUT_MS: u64 = 60_000;

/// How often HTTP/2 pings go out while a call is open. A live subscription can be silent for
/// hours; without pings a node that vanished without closing the connection (power loss,
/// partition) would hold it forever instead of letting it move to another node.
pub const KEEPALIVE_INTERVAL_MS: u64 = 10_000;

/// How long a ping may go unanswered before the connection counts as dead (its calls fail with
/// a transport error, which a subscription answers by resubscribing elsewhere).
pub const KEEPALIVE_TIMEOUT_MS: u64 = 5_000;

/// Builds a channel for an endpoint. The default is [`Endpoint::connect_lazy`]; the
/// simulation passes one that connects over its own network.
pub type ChannelFactory = dyn Fn(&Endpoint) -> Channel + Send + Sync;

pub(crate) struct Node {
    /// Normalised URL (no trailing slash), to match leader hints against.
    pub(crate) url: String,
    endpoint: Endpoint,
    /// Built on first use, inside the runtime: building a channel spawns a task.
    channel: OnceLock<Channel>,
    /// For membership changes, which may outlast the request timeout (a channel's timeout caps
    /// every call on it): built on first use, if ever.
    membership_channel: OnceLock<Channel>,
}

pub(crate) struct Endpoints {
    nodes: Mutex<Vec<Arc<Node>>>,
    leader: Mutex<Option<Arc<Node>>>,
    /// Where a call starts when no leader is known: the node after the last one that failed,
    /// so that a dead first endpoint does not swallow the first attempt of every call.
    fallback: Mutex<Option<Arc<Node>>>,
    factory: Arc<ChannelFactory>,
    request_timeout: Duration,
    /// For `https://` endpoints (all or none are); leader hints, which nodes give as
    /// `http://HOST:PORT`, are followed over TLS too then.
    tls: Option<ClientTlsConfig>,
    /// Added to every call on every channel (`credentials`).
    credentials: AddCredentials,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is a plain list or pointer, valid even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds `default_scheme://` when the scheme is missing and drops trailing slashes, so
/// `host:port`, `http://host:port` and `http://host:port/` name the same node.
fn normalise(url: &str, default_scheme: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or((default_scheme, url));
    format!("{scheme}://{}", rest.trim_end_matches('/'))
}

/// The TLS settings for `https://` endpoints: the CA in `ca_pem` (PEM), or the system's roots.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<ClientTlsConfig, Error> {
    let config = ClientTlsConfig::new().assume_http2(true);
    match ca_pem {
        Some(pem) => {
            if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::InvalidArgument(
                    "TLS CA: holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
                ));
            }
            Ok(config.ca_certificate(Certificate::from_pem(pem)))
        }
        None => Ok(config.with_native_roots()),
    }
}

fn parse(
    url: &str,
    request_timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<Node, Error> {
    let url = normalise(url, if tls.is_some() { "https" } else { "http" });
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|err| Error::InvalidArgument(format!("endpoint {url:?}: {err}")))?;
    let endpoint = match (endpoint.uri().scheme_str(), tls) {
        (Some("http"), None) => endpoint,
        (Some("https"), Some(tls)) => endpoint
            .tls_config(tls.clone())
            .map_err(|err| Error::InvalidArgument(format!("endpoint {url:?}: {err}")))?,
        (Some("http" | "https"), _) => {
            return Err(Error::InvalidArgument(format!(
                "endpoint {url:?}: endpoints mix http:// and https://; a cluster runs with TLS or without"
            )))
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "endpoint {url:?}: the scheme must be http or https"
            )))
        }
    };
    let uri = endpoint.uri();
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::InvalidArgument(format!("endpoint {url:?}: no host")));
    }
    // gRPC methods live at fixed paths; a path prefix would be silently dropped.
    if uri
        .path_and_query()
        .is_some_and(|path| path.as_str() != "/")
    {
        return Err(Error::InvalidArgument(format!(
            "endpoint {url:?}: only scheme, host and port are allowed"
        )));
    }
    let connect_timeout = request_timeout.min(Duration::from_millis(CONNECT_TIMEOUT_MS));
    // `timeout` bounds a call until its response headers only, so it does not cut a
    // subscription short; the keepalive is what notices a dead peer under an open stream.
    let endpoint = endpoint
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS));
    Ok(Node {
        url,
        endpoint,
        channel: OnceLock::new(),
        membership_channel: OnceLock::new(),
    })
}

impl Endpoints {
    /// `tls_ca`: PEM of the CA that signed the nodes' certificates. With it, endpoints without
    /// a scheme are `https://`; `https://` endpoints without it trust the system's roots.
    pub(crate) fn new(
        urls: &[String],
        request_timeout: Duration,
        tls_ca: Option<&[u8]>,
        credentials: Option<MetadataValue<Ascii>>,
        factory: Arc<ChannelFactory>,
    ) -> Result<Endpoints, Error> {
        if urls.is_empty() {
            return Err(Error::InvalidArgument(
                "endpoints: at least one is needed".to_owned(),
            ));
        }
        if urls.len() > MAX_ENDPOINTS {
            return Err(Error::InvalidArgument(format!(
                "endpoints: {} given, at most {MAX_ENDPOINTS}",
                urls.len()
            )));
        }
        let default_scheme = if tls_ca.is_some() { "https" } else { "http" };
        let tls = urls
            .iter()
            .any(|url| normalise(url, default_scheme).starts_with("https://"))
            .then(|| tls_config(tls_ca))
            .transpose()?;
        let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(urls.len());
        for url in urls {
            let node = parse(url, request_timeout, tls.as_ref())?;
            if !nodes.iter().any(|known| known.url == node.url) {
                nodes.push(Arc::new(node));
            }
        }
        Ok(Endpoints {
            nodes: Mutex::new(nodes),
            leader: Mutex::new(None),
            fallback: Mutex::new(None),
            factory,
            request_timeout,
            tls,
            credentials: AddCredentials::new(credentials),
        })
    }

    pub(crate) fn channel(&self, node: &Node) -> AuthChannel {
        let channel = node
            .channel
            .get_or_init(|| (self.factory)(&node.endpoint))
            .clone();
        InterceptedService::new(channel, self.credentials.clone())
    }

    /// A channel to `node` whose calls may take up to [`MEMBERSHIP_REQUEST_TIMEOUT_MS`].
    pub(crate) fn membership_channel(&self, node: &Node) -> AuthChannel {
        let channel = node
            .membership_channel
            .get_or_init(|| {
                let endpoint = node
                    .endpoint
                    .clone()
                    .timeout(Duration::from_millis(MEMBERSHIP_REQUEST_TIMEOUT_MS));
                (self.factory)(&endpoint)
            })
            .clone();
        InterceptedService::new(channel, self.credentials.clone())
    }

    /// Every node, configured ones first, in a snapshot that does not hold the lock.
    pub(crate) fn all(&self) -> Vec<Arc<Node>> {
        lock(&self.nodes).clone()
    }

    /// Where to start without a leader: past the last node that failed, else the first.
    pub(crate) fn first(&self) -> Arc<Node> {
        if let Some(node) = lock(&self.fallback).clone() {
            return node;
        }
        // `new` refuses an empty list and nodes are never removed.
        let nodes = lock(&self.nodes);
        Arc::clone(&nodes[0])
    }

    /// `node` failed without pointing elsewhere: forget it as leader, and start later calls
    /// from the node after it.
    fn failed(&self, node: &Arc<Node>) {
        self.forget_leader(node);
        let next = self.after(node);
        *lock(&self.fallback) = Some(next);
    }

    /// Where a call with this preference goes, avoiding the nodes in `avoid` (those that failed
    /// lately) when another qualifies. Leader: the known leader; Follower: the first node from
    /// [`Endpoints::first`] on that is not the known leader; Any (and the fallback of the other
    /// two): the first node from there on. With every node avoided, [`Endpoints::first`].
    pub(crate) fn pick(&self, preference: NodePreference, avoid: &[Arc<Node>]) -> Arc<Node> {
        let leader = self.leader();
        let avoided = |node: &Arc<Node>| avoid.iter().any(|bad| Arc::ptr_eq(bad, node));
        let is_leader = |node: &Arc<Node>| leader.as_ref().is_some_and(|l| Arc::ptr_eq(l, node));
        if preference == NodePreference::Leader {
            if let Some(leader) = leader.as_ref().filter(|l| !avoided(l)) {
                return Arc::clone(leader);
            }
        }
        let start = self.first();
        let ring = {
            let nodes = lock(&self.nodes);
            let at = nodes
                .iter()
                .position(|known| Arc::ptr_eq(known, &start))
                .unwrap_or(0);
            let mut ring = nodes.clone();
            ring.rotate_left(at);
            ring
        };
        if preference == NodePreference::Follower {
            if let Some(node) = ring.iter().find(|n| !is_leader(n) && !avoided(n)) {
                return Arc::clone(node);
            }
        }
        ring.iter()
            .find(|node| !avoided(node))
            .cloned()
            .unwrap_or(start)
    }

    /// `node` failed without pointing elsewhere: [`Endpoints::failed`], and remember it in
    /// `tried` (the nodes [`Endpoints::pick`] should avoid). Once every node has failed, only
    /// `node` stays avoided, so the next round starts over from the others.
    pub(crate) fn avoid(&self, node: &Arc<Node>, tried: &mut Vec<Arc<Node>>) {
        self.failed(node);
        if !tried.iter().any(|known| Arc::ptr_eq(known, node)) {
            tried.push(Arc::clone(node));
        }
        if tried.len() >= lock(&self.nodes).len() {
            tried.clear();
            tried.push(Arc::clone(node));
        }
    }

    pub(crate) fn leader(&self) -> Option<Arc<Node>> {
        lock(&self.leader).clone()
    }

    pub(crate) fn leader_or_first(&self) -> Arc<Node> {
        self.leader().unwrap_or_else(|| self.first())
    }

    /// The node after `node`, wrapping around: where to go when there is no hint.
    pub(crate) fn after(&self, node: &Arc<Node>) -> Arc<Node> {
        let nodes = lock(&self.nodes);
        let next = nodes
            .iter()
            .position(|known| Arc::ptr_eq(known, node))
            .map_or(0, |index| (index + 1) % nodes.len());
        Arc::clone(&nodes[next])
    }

    pub(crate) fn set_leader(&self, node: &Arc<Node>) {
        *lock(&self.leader) = Some(Arc::clone(node));
    }

    /// Forgets `node` as leader (and only it: another task may have learned better meanwhile).
    pub(crate) fn forget_leader(&self, node: &Arc<Node>) {
        let mut leader = lock(&self.leader);
        if leader
            .as_ref()
            .is_some_and(|known| Arc::ptr_eq(known, node))
        {
            *leader = None;
        }
    }

    /// Records a leader hint and returns its node, adding it if new. `None` when the hint is
    /// not a usable URL or the endpoint limit is reached.
    pub(crate) fn follow_hint(&self, hint: &str) -> Option<Arc<Node>> {
        let url = match self.tls {
            Some(_) => {
                let url = normalise(hint, "https");
                match url.strip_prefix("http://") {
                    Some(rest) => format!("https://{rest}"),
                    None => url,
                }
            }
            None => normalise(hint, "http"),
        };
        let node = {
            let mut nodes = lock(&self.nodes);
            match nodes.iter().find(|known| known.url == url) {
                Some(known) => Arc::clone(known),
                None => {
                    if nodes.len() >= MAX_ENDPOINTS {
                        tracing::debug!(hint, MAX_ENDPOINTS, "leader hint ignored: endpoint limit");
                        return None;
                    }
                    let node = match parse(&url, self.request_timeout, self.tls.as_ref()) {
                        Ok(node) => Arc::new(node),
                        Err(err) => {
                            tracing::debug!(hint, %err, "leader hint ignored");
                            return None;
                        }
                    };
                    nodes.push(Arc::clone(&node));
                    node
                }
            }
        };
        self.set_leader(&node);
        Some(node)
    }
}
