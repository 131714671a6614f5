//! TLS for the node's one gRPC port, and mutual TLS between nodes (rustls, ring provider).
//!
//! Clients of the public API present no certificate; a peer must present one signed by the
//! cluster's CA (`--tls-ca`) that names a member's host, or the Raft service refuses it
//! ([`require_peer_certificate`], [`MemberHosts`]); the public API takes such a caller for a
//! node (`auth::layer`).
//! Both sides of the handshake take their configuration from [`TlsFiles`], which re-reads the
//! three files when their modification times change (checked at most every
//! [`TLS_RELOAD_CHECK_INTERVAL_MS`], on the next handshake): cert-manager's rotation needs no
//! restart. A reload that fails (half-written files, an expired replacement) is logged and the
//! last good configuration stays in use. Every failed handshake is logged with rustls' reason
//! and counted ([`TlsFiles::handshake_failures`], `cairn_tls_handshake_failures_total`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Uri};

use crate::network::{peer_endpoint, Connector};

/// The files are looked at (one `stat` each) at most this often, on a handshake.
pub const TLS_RELOAD_CHECK_INTERVAL_MS: u64 = 1_000;
/// A handshake that has not finished by then is dropped (a client that connects and says
/// nothing holds no slot longer).
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Handshakes in progress at once on the server side; a connection beyond it is closed at
/// once (and counted as a failed handshake), so a flood of idle connections cannot grow memory.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the gRPC server to take them; when full, handshakes wait.
pub const ACCEPTED_QUEUE_CONNECTIONS: usize = 64;
/// Largest certificate, key or CA file read: PEM files are a few KiB.
pub const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;
/// The only application protocol: gRPC is HTTP/2 (clients such as grpc-python insist on it).
const ALPN_H2: &[u8] = b"h2";

/// The three files of a node's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The node's certificate chain (PEM), end entity first.
    pub cert: PathBuf,
    /// The node certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster's CA certificate(s) (PEM): peers must present a certificate it signed.
    pub ca: PathBuf,
}

/// Why the TLS files cannot be used; each says which file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: {reason}")]
    File {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error("--tls-cert {cert}: {reason}")]
    Certificate { cert: String, reason: String },
}

/// What one reading of the files produced.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    stamps: [Option<SystemTime>; 3],
}

struct Current {
    loaded: Arc<Loaded>,
    checked_at: Instant,
    /// The modification times of files that could not be used: not read again (nor logged
    /// again) until they change once more.
    rejected: Option<[Option<SystemTime>; 3]>,
}

/// A node's TLS configuration, reloaded from its files when they change.
pub struct TlsFiles {
    paths: TlsPaths,
    current: Mutex<Current>,
    accept_failures: AtomicU64,
    connect_failures: AtomicU64,
}

/// rustls with *ring*: builds with a C compiler alone (aws-lc-rs wants cmake). rustls 0.23.48
/// marks it deprecated for lacking post-quantum key exchange; moving to aws-lc-rs is a
/// feature switch (tonic `tls-aws-lc`, tokio-rustls `aws-lc-rs`) and this function.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_bounded(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError::File {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_TLS_FILE_BYTES {
        return Err(fail(format!(
            "{} bytes, at most {MAX_TLS_FILE_BYTES}: not a PEM file",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_bounded(flag, path)?;
    let fail = |reason: String| TlsError::File {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Says in words what rustls found wrong with a certificate.
fn certificate_problem(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the certificate has expired ({e})")
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the certificate is not valid yet ({e})")
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the certificate is not signed by the CA of --tls-ca ({e})")
        }
        rustls::Error::InconsistentKeys(_) => {
            format!("the key of --tls-key does not match the certificate ({e})")
        }
        _ => e.to_string(),
    }
}

impl Loaded {
    fn read(paths: &TlsPaths) -> Result<Loaded, TlsError> {
        let stamps = [stamp(&paths.cert), stamp(&paths.key), stamp(&paths.ca)];
        let chain = certificates("--tls-cert", &paths.cert)?;
        let key_bytes = read_bounded("--tls-key", &paths.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::File {
            flag: "--tls-key",
            path: paths.key.display().to_string(),
            reason: format!("no PEM private key: {e}"),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("--tls-ca", &paths.ca)? {
            roots.add(ca).map_err(|e| TlsError::File {
                flag: "--tls-ca",
                path: paths.ca.display().to_string(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let cert_problem = |e: rustls::Error| TlsError::Certificate {
            cert: paths.cert.display().to_string(),
            reason: certificate_problem(&e),
        };
        let build_problem = |e: &dyn std::fmt::Display| TlsError::File {
            flag: "--tls-ca",
            path: paths.ca.display().to_string(),
            reason: e.to_string(),
        };
        // Peers are optional on the handshake (clients of the public API have no certificate);
        // one that is presented must chain to the CA. The Raft service then insists on one.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| build_problem(&e))?;
        // The node's own certificate, checked as its peers will: signed by the CA, in date, fit
        // for client authentication (nodes are each other's clients).
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(cert_problem)?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| build_problem(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(cert_problem)?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| build_problem(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(cert_problem)?;
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Loaded {
            server: Arc::new(server),
            client: Arc::new(client),
            stamps,
        })
    }
}

impl TlsFiles {
    /// Reads and checks the files: readable, a certificate and its key that match, in date and
    /// signed by the CA. What `--check-config` and the start of a node run.
    pub fn load(paths: TlsPaths) -> Result<Arc<TlsFiles>, TlsError> {
        let loaded = Loaded::read(&paths)?;
        Ok(Arc::new(TlsFiles {
            paths,
            current: Mutex::new(Current {
                loaded: Arc::new(loaded),
                checked_at: Instant::now(),
                rejected: None,
            }),
            accept_failures: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }))
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// The configuration in force, re-read first if the files changed since it was read.
    fn current(&self) -> Arc<Loaded> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let due =
            current.checked_at.elapsed() >= Duration::from_millis(TLS_RELOAD_CHECK_INTERVAL_MS);
        if due {
            current.checked_at = Instant::now();
            let stamps = [
                stamp(&self.paths.cert),
                stamp(&self.paths.key),
                stamp(&self.paths.ca),
            ];
            if stamps != current.loaded.stamps && Some(stamps) != current.rejected {
                match Loaded::read(&self.paths) {
                    Ok(loaded) => {
                        tracing::info!(cert = %self.paths.cert.display(), "TLS files changed: reloaded");
                        current.loaded = Arc::new(loaded);
                        current.rejected = None;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS files changed but cannot be used; keeping the previous ones");
                        current.rejected = Some(stamps);
                    }
                }
            }
        }
        current.loaded.clone()
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// Failed handshakes so far: (accepted connections, connections to peers).
    pub fn handshake_failures(&self) -> (u64, u64) {
        (
            self.accept_failures.load(Ordering::Relaxed),
            self.connect_failures.load(Ordering::Relaxed),
        )
    }
}

/// The accepted connections of `listener`, after their TLS handshake. Handshakes run
/// concurrently (bounded by [`MAX_PENDING_HANDSHAKES`] and [`TLS_HANDSHAKE_TIMEOUT_MS`]), so a
/// slow or hostile client does not hold up the others. Ends when the receiver is dropped.
pub fn accept(
    listener: TcpListener,
    tls: Arc<TlsFiles>,
) -> ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_CONNECTIONS);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: pass, and try again shortly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
                        continue;
                    }
                },
            };
            // See `cairn node`: Nagle off on accepted connections.
            let _ = stream.set_nodelay(true);
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tls.accept_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, MAX_PENDING_HANDSHAKES, "too many TLS handshakes in progress: connection closed");
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
                if speaks_plain_http2(&stream, deadline).await {
                    tls.accept_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "a plain-text gRPC client on the TLS port: told to use TLS");
                    refuse_plain_text(stream, deadline).await;
                    return;
                }
                let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
                drop(permit);
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tls.accept_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, error = %e, "TLS handshake with a client or peer failed");
                    }
                    Err(_) => {
                        tls.accept_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, TLS_HANDSHAKE_TIMEOUT_MS, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// What a plain-text gRPC client gets from the TLS port: the status of every call it makes.
pub const PLAIN_TEXT_REFUSAL: &str = "this node requires TLS: use https:// endpoints and trust the cluster's CA (--tls-ca, CAIRN_TLS_CA or the profile's tls_ca)";

/// Whether the connection opens with HTTP/2's plain-text preface (`PRI * HTTP/2.0`) instead of
/// a TLS ClientHello: a client configured without TLS. Looks without consuming.
async fn speaks_plain_http2(stream: &TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut first = [0u8; 4];
    let peeked = tokio::time::timeout_at(deadline, async {
        // peek returns what has arrived so far; wait for the four bytes (or the end).
        loop {
            match stream.peek(&mut first).await {
                Ok(n) if n >= first.len() || n == 0 => return n,
                Ok(_) => tokio::time::sleep(Duration::from_millis(PEEK_PAUSE_MS)).await,
                Err(_) => return 0,
            }
        }
    })
    .await;
    matches!(peeked, Ok(n) if n == first.len()) && &first == b"PRI "
}

/// Pause between looks at a connection whose first bytes are still arriving.
const PEEK_PAUSE_MS: u64 = 5;

/// Answers every call on a plain-text HTTP/2 connection with UNAUTHENTICATED and
/// [`PLAIN_TEXT_REFUSAL`], until the client closes it or the deadline: a clear error in the
/// client instead of a broken connection.
async fn refuse_plain_text(stream: TcpStream, deadline: tokio::time::Instant) {
    let refuse = hyper::service::service_fn(|_request| async {
        hyper::Response::builder()
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header(
                "grpc-status",
                (tonic::Code::Unauthenticated as i32).to_string(),
            )
            .header("grpc-message", PLAIN_TEXT_REFUSAL)
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
    });
    let connection = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), refuse);
    let _ = tokio::time::timeout_at(deadline, connection).await;
}

/// Pause after a failed `accept` (out of file descriptors) before the next.
const ACCEPT_RETRY_PAUSE_MS: u64 = 50;

/// The hosts a node certificate may name: those of the members' addresses (from the Raft
/// membership, which add-node and remove-node change) and of `--peers` (what a node waiting
/// to be added knows before it has any membership).
pub struct MemberHosts {
    raft: cairn_raft_store::Raft,
    configured: Vec<String>,
}

/// `HOST` of `HOST:PORT` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl MemberHosts {
    pub fn new(raft: cairn_raft_store::Raft, peers: impl IntoIterator<Item = String>) -> Self {
        MemberHosts {
            raft,
            configured: peers.into_iter().map(|a| host_of(&a).to_owned()).collect(),
        }
    }

    fn hosts(&self) -> Vec<String> {
        use openraft::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let mut hosts: Vec<String> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(_, node)| host_of(&node.addr).to_owned())
            .collect();
        hosts.extend(self.configured.iter().cloned());
        hosts
    }

    /// Whether the peer's certificate (end entity first; the handshake already checked that
    /// it chains to the cluster's CA) names a member's host, as DNS name or IP address.
    pub fn names_a_member(&self, certs: &[CertificateDer<'_>]) -> bool {
        let Some(end) = certs.first() else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(end) else {
            return false;
        };
        self.hosts().iter().any(|host| {
            ServerName::try_from(host.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

/// Refuses a Raft call from a connection whose certificate is not a node's: none, or one (of
/// the cluster's CA, the handshake checked that) that names no member's host: a certificate
/// the CA issued for something else cannot vote, replicate or send a snapshot.
#[allow(clippy::result_large_err)]
pub fn require_peer_certificate(
    request: tonic::Request<()>,
    members: &MemberHosts,
) -> Result<tonic::Request<()>, tonic::Status> {
    match request.peer_certs() {
        Some(certs) if members.names_a_member(&certs) => Ok(request),
        Some(certs) if !certs.is_empty() => {
            tracing::warn!(
                remote = ?request.remote_addr(),
                "Raft call refused: the caller's certificate names no member of the cluster"
            );
            Err(tonic::Status::unauthenticated(
                "the Raft service is for cluster members: this certificate names no member's host",
            ))
        }
        _ => {
            tracing::warn!(
                remote = ?request.remote_addr(),
                "Raft call refused: the caller presented no node certificate"
            );
            Err(tonic::Status::unauthenticated(
                "the Raft service is for cluster members: present a node certificate signed by the cluster's CA",
            ))
        }
    }
}

/// Channels to peers over mutual TLS with the node's own certificate, the configuration taken
/// afresh (reloaded if the files changed) on every new connection.
pub struct TlsConnector {
    pub tls: Arc<TlsFiles>,
}

impl Connector for TlsConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let tls = self.tls.clone();
        let connect = tower::service_fn(move |uri: Uri| connect(tls.clone(), uri));
        Ok(peer_endpoint(addr)?.connect_with_connector_lazy(connect))
    }

    fn scheme(&self) -> &'static str {
        "https"
    }
}

async fn connect(
    tls: Arc<TlsFiles>,
    uri: Uri,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{uri}: no host")))?;
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid(format!("{uri}: no port")))?;
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| invalid(format!("{host}: not a name for TLS: {e}")))?;
    let stream = TcpStream::connect((name, port)).await?;
    let _ = stream.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(tls.client_config());
    let handshake = tokio::time::timeout(
        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
        connector.connect(server_name, stream),
    )
    .await;
    let failed = |e: std::io::Error| {
        tls.connect_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %uri, error = %e, "TLS handshake with a peer failed");
        e
    };
    match handshake {
        Ok(Ok(stream)) => Ok(hyper_util::rt::TokioIo::new(stream)),
        Ok(Err(e)) => Err(failed(e)),
        Err(_) => Err(failed(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        ))),
    }
}
