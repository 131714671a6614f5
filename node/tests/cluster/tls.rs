//! TLS with real processes: `--check-config` on the TLS files, clients that do not speak TLS
//! or do not trust the cluster's CA, callers of the Raft service without a node certificate,
//! a node whose certificate comes from another CA, and certificates rotated under load.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_client::{Client, ClientConfig, Error, EventData, ExpectedRevision};
use cairn_node::certs::{Ca, LOCAL_NAMES};
use cairn_node::network::proto::raft_internal_client::RaftInternalClient;
use cairn_node::network::proto::RaftBytes;
use cairn_node::tls::{TlsPaths, PLAIN_TEXT_REFUSAL, TLS_RELOAD_CHECK_INTERVAL_MS};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::harness::{cairn_exe, runtime, TestCluster};
use crate::load::{check_history, read_all, Load};
use crate::observability::scrape;

/// Writers of the rotation test's load.
const ROTATION_WRITERS: usize = 4;
/// How long the load runs before, and after, the files are replaced.
const ROTATION_PHASE: Duration = Duration::from_secs(2);

fn write_node_files(ca: &Ca, dir: &Path, days: i64) -> TlsPaths {
    std::fs::create_dir_all(dir).expect("mkdir");
    let paths = TlsPaths {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    };
    ca.issue_node(&LOCAL_NAMES, days)
        .expect("issue")
        .write(&paths.cert, &paths.key)
        .expect("write");
    std::fs::write(&paths.ca, ca.pem()).expect("write ca");
    paths
}

/// `cairn node --check-config` with the TLS files `tls`, the rest valid.
fn check_config(data: &Path, tls: &[(&str, &Path)]) -> std::process::Output {
    let mut command = Command::new(cairn_exe());
    command
        .args([
            "node",
            "--check-config",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:2113",
        ])
        .args(["--peers", "1=127.0.0.1:2113", "--data-dir"])
        .arg(data)
        .env_clear();
    for (flag, path) in tls {
        command.arg(flag).arg(path);
    }
    // With TLS an admin secret is required too: a good one, unless the case names its own.
    if !tls.iter().any(|(flag, _)| *flag == "--admin-token-file") {
        let secret = data.join("admin.token");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write secret");
        command.arg("--admin-token-file").arg(secret);
    }
    command.output().expect("run cairn")
}

#[test]
fn check_config_checks_the_tls_files_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA", 30).expect("ca");
    let good = write_node_files(&ca, &dir.path().join("good"), 30);
    let expired = write_node_files(&ca, &dir.path().join("expired"), -1);
    let other_ca = Ca::new("another CA", 30).expect("ca");
    let foreign = write_node_files(&other_ca, &dir.path().join("foreign"), 30);
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = dir.path().join("missing.pem");
    let files = |cert: &Path, key: &Path, ca: &Path| -> Vec<(&'static str, std::path::PathBuf)> {
        vec![
            ("--tls-cert", cert.to_path_buf()),
            ("--tls-key", key.to_path_buf()),
            ("--tls-ca", ca.to_path_buf()),
        ]
    };
    let run = |tls: Vec<(&'static str, std::path::PathBuf)>| {
        let tls: Vec<(&str, &Path)> = tls.iter().map(|(f, p)| (*f, p.as_path())).collect();
        check_config(dir.path(), &tls)
    };

    let ok = run(files(&good.cert, &good.key, &good.ca));
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let summary = String::from_utf8_lossy(&ok.stdout);
    assert!(summary.contains("tls cert "), "{summary}");
    assert!(summary.contains("admin token file "), "{summary}");
    let short_secret = dir.path().join("short.token");
    std::fs::write(&short_secret, "short").expect("write");
    let with_secret = |secret: &Path| {
        let mut tls = files(&good.cert, &good.key, &good.ca);
        tls.push(("--admin-token-file", secret.to_path_buf()));
        tls
    };

    let cases = vec![
        (
            files(&expired.cert, &expired.key, &good.ca),
            "the certificate has expired",
        ),
        (
            files(&foreign.cert, &foreign.key, &good.ca),
            "not signed by the CA of --tls-ca",
        ),
        (
            files(&good.cert, &foreign.key, &good.ca),
            "the key of --tls-key does not match the certificate",
        ),
        (
            files(&not_pem, &good.key, &good.ca),
            "holds no PEM certificate",
        ),
        (files(&good.cert, &not_pem, &good.ca), "no PEM private key"),
        (files(&missing, &good.key, &good.ca), "--tls-cert"),
        (
            vec![("--tls-cert", good.cert.clone())],
            "--tls-key (CAIRN_TLS_KEY) is required",
        ),
        (
            with_secret(&short_secret),
            "the secret is 5 bytes; it must be 16 to 512",
        ),
        (with_secret(&missing), "admin token file"),
    ];
    for (tls, message) in cases {
        let shown = format!("{tls:?}");
        let output = run(tls);
        assert_eq!(output.status.code(), Some(2), "{shown}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: "), "{shown}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{shown}: {stderr}");
        assert!(
            stderr.contains(message),
            "{shown}: {stderr:?} lacks {message:?}"
        );
    }
}

/// An endpoint to node `id`'s Raft service over TLS, trusting the cluster's CA, with
/// `identity` as the client certificate if any.
fn raft_endpoint(cluster: &TestCluster, id: u64, identity: Option<Identity>) -> Endpoint {
    let ca = cluster.client_tls_ca().expect("a TLS cluster");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(cluster.endpoint(id))
        .expect("endpoint")
        .timeout(Duration::from_secs(5))
        .tls_config(tls)
        .expect("tls config")
}

#[test]
fn a_tls_cluster_refuses_plain_text_clients_untrusting_clients_and_raft_calls_without_a_node_certificate(
) {
    let cluster = TestCluster::start_with_tls(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let client = cluster.client();
        client
            .append(
                "secured",
                ExpectedRevision::NoStream,
                vec![EventData::json("Tested", &serde_json::json!({"n": 0})).expect("json")],
            )
            .await
            .expect("an append over TLS");

        // Plain text to a TLS node: refused at once, told to use TLS, and nothing written.
        let plain: Vec<String> = (1..=3)
            .map(|id| format!("http://{}", cluster.addr(id)))
            .collect();
        let plain = Client::with_config(ClientConfig {
            endpoints: plain,
            max_append_attempts: 2,
            ..ClientConfig::default()
        })
        .expect("client");
        let refused = plain
            .append(
                "secured",
                ExpectedRevision::Any,
                vec![EventData::json("Tested", &serde_json::json!({"n": 1})).expect("json")],
            )
            .await
            .expect_err("a plain-text append to a TLS node");
        assert_eq!(
            refused,
            Error::Unauthenticated(PLAIN_TEXT_REFUSAL.to_owned()),
            "{refused}"
        );

        // A client that trusts another CA: refused before it sends anything.
        let stranger = Client::with_config(ClientConfig {
            endpoints: cluster.endpoints(),
            tls_ca: Some(
                Ca::new("another CA", 1)
                    .expect("ca")
                    .pem()
                    .as_bytes()
                    .to_vec(),
            ),
            max_append_attempts: 2,
            ..ClientConfig::default()
        })
        .expect("client");
        let refused = stranger.status().await.expect_err("status without trust");
        assert!(
            refused
                .to_string()
                .contains("not signed by a CA this client trusts"),
            "{refused}"
        );

        // The command line says the same, exit status 6 (not authenticated).
        let cli = Command::new(cairn_exe())
            .args(["append", "secured", "--data", "{}", "--endpoints"])
            .arg(format!("http://{}", cluster.addr(1)))
            .env_clear()
            .output()
            .expect("run cairn");
        assert_eq!(cli.status.code(), Some(6), "{cli:?}");
        let stderr = String::from_utf8_lossy(&cli.stderr);
        assert!(stderr.contains(PLAIN_TEXT_REFUSAL), "{stderr}");

        // The Raft service wants a node certificate: a TLS caller without one is refused on
        // every node, whatever it sends.
        for id in 1..=3 {
            let channel = raft_endpoint(&cluster, id, None)
                .connect()
                .await
                .expect("connect");
            let mut raft = RaftInternalClient::new(channel);
            let vote = raft
                .vote(RaftBytes {
                    payload: vec![0; 16],
                })
                .await;
            let append = raft.append_entries(RaftBytes { payload: vec![] }).await;
            for (rpc, answer) in [("vote", vote), ("append_entries", append)] {
                let status = answer.expect_err("a Raft call without a node certificate");
                assert_eq!(
                    status.code(),
                    tonic::Code::Unauthenticated,
                    "{rpc}: {status:?}"
                );
            }
        }

        // A certificate from the cluster's own CA that names no member's host (issued for
        // something else) is not a node's: the Raft service refuses it, and on the public API
        // it counts for nothing (no token: not authenticated).
        let issued = cluster
            .tls()
            .expect("tls")
            .ca()
            .issue_node(&["stranger.example"], 30)
            .expect("issue");
        let stranger = Identity::from_pem(&issued.cert_pem, &issued.key_pem);
        for id in 1..=3 {
            let channel = raft_endpoint(&cluster, id, Some(stranger.clone()))
                .connect()
                .await
                .expect("connect: the CA signed it");
            let vote = RaftInternalClient::new(channel.clone())
                .vote(RaftBytes {
                    payload: vec![0xff; 32],
                })
                .await
                .expect_err("a Raft call with a certificate naming no member");
            assert_eq!(vote.code(), tonic::Code::Unauthenticated, "{vote:?}");
            assert!(vote.message().contains("names no member"), "{vote:?}");
            let append = cairn_client::proto::streams_client::StreamsClient::new(channel)
                .append(cairn_client::proto::AppendRequest {
                    stream: "secured".into(),
                    ..Default::default()
                })
                .await
                .expect_err("an append as a certificate holder without a token");
            assert_eq!(append.code(), tonic::Code::Unauthenticated, "{append:?}");
        }

        // Nothing but the first append was written; every node still agrees.
        cluster.wait_until_converged().await;
        for id in 1..=3 {
            let all = read_all(&cluster.node_client(id)).await;
            assert_eq!(all.len(), 1, "node {id}: {all:?}");
        }
        let failures = scrape(&cluster, 1).value(
            "cairn_tls_handshake_failures_total",
            &[("side", "accepted")],
        );
        assert!(
            failures >= 1.0,
            "the stranger's handshakes were not counted"
        );
    });
}

#[test]
fn a_node_with_a_certificate_from_another_ca_cannot_join_or_disturb_the_cluster() {
    let mut cluster = TestCluster::start_with_tls(3);
    runtime().block_on(async {
        let leader = cluster.wait_for_leader().await;
        // Node 4, with a certificate and CA of its own: it starts (its files are consistent)
        // and reaches for the members, which refuse it, and it refuses them.
        let rogue_id = cluster.add_joiner().expect("joiner slot");
        let rogue_ca = Ca::new("rogue CA", 30).expect("ca");
        let rogue_dir = cluster.data_root().join("rogue");
        let rogue = write_node_files(&rogue_ca, &rogue_dir, 30);
        cluster
            .tls_mut()
            .expect("a TLS cluster")
            .set_node_files(rogue_id, rogue.clone());
        cluster.restart(rogue_id);

        // Adding it fails: the leader cannot talk to it.
        let added = cluster
            .client()
            .add_node(rogue_id, cluster.addr(rogue_id))
            .await;
        assert!(
            added.is_err(),
            "a node with a foreign certificate was added: {added:?}"
        );

        // Its Raft calls carry a certificate the members do not trust: refused at the
        // handshake, a high-term vote request included.
        let identity = Identity::from_pem(
            std::fs::read(&rogue.cert).expect("cert"),
            std::fs::read(&rogue.key).expect("key"),
        );
        for id in 1..=3 {
            let refused = raft_endpoint(&cluster, id, Some(identity.clone()))
                .connect()
                .await
                .map(RaftInternalClient::new);
            if let Ok(mut raft) = refused {
                let vote = raft
                    .vote(RaftBytes {
                        payload: vec![0xff; 32],
                    })
                    .await;
                assert!(
                    vote.is_err(),
                    "node {id} answered a rogue vote request: {vote:?}"
                );
            }
        }

        // The cluster keeps its leader and its members, and takes writes.
        let client = cluster.client();
        for n in 0..20 {
            client
                .append(
                    "undisturbed",
                    ExpectedRevision::Any,
                    vec![EventData::json("Tested", &serde_json::json!({ "n": n })).expect("json")],
                )
                .await
                .unwrap_or_else(|e| panic!("append {n} with a rogue node about: {e}"));
        }
        assert_eq!(
            cluster.wait_for_leader().await,
            leader,
            "the leader changed"
        );
        let members: Vec<u64> = cluster
            .members_seen_by(leader)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(members, vec![1, 2, 3]);
        let failures = scrape(&cluster, leader).value(
            "cairn_tls_handshake_failures_total",
            &[("side", "accepted")],
        ) + scrape(&cluster, leader).value(
            "cairn_tls_handshake_failures_total",
            &[("side", "outgoing")],
        );
        assert!(failures >= 1.0, "the rogue's handshakes were not counted");
        let log = std::fs::read_to_string(cluster.log_path(leader)).expect("leader log");
        assert!(
            log.contains("TLS handshake"),
            "no handshake failure logged:\n{log}"
        );
    });
}

#[test]
fn certificates_rotate_under_load_without_a_failed_append_or_a_restart() {
    let mut cluster = TestCluster::start_with_tls(3);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let load = Load::start(&cluster.client(), "rotate", ROTATION_WRITERS);
        tokio::time::sleep(ROTATION_PHASE).await;

        let tls = cluster.tls().expect("a TLS cluster");
        let files = tls.shared_files().clone();
        // First a replacement that has expired: refused with an error in the log, the nodes
        // keep the certificate they have.
        tls.ca()
            .issue_node(&LOCAL_NAMES, -1)
            .expect("issue")
            .write(&files.cert, &files.key)
            .expect("write");
        tokio::time::sleep(Duration::from_millis(3 * TLS_RELOAD_CHECK_INTERVAL_MS)).await;
        // New connections make the nodes look at their files.
        for id in 1..=3 {
            cluster.node_client(id).status().await.expect("status");
        }
        // Then the real rotation (what cert-manager does): a new key and certificate.
        let rotated = tls.ca().issue_node(&LOCAL_NAMES, 30).expect("issue");
        rotated.write(&files.cert, &files.key).expect("write");
        tokio::time::sleep(Duration::from_millis(2 * TLS_RELOAD_CHECK_INTERVAL_MS)).await;
        tokio::time::sleep(ROTATION_PHASE).await;
        let history = load.stop().await;
        assert!(
            history.acked.len() > ROTATION_WRITERS,
            "the load barely ran"
        );
        assert!(
            history.unknown.is_empty(),
            "appends failed: {:?}",
            history.unknown
        );
        assert!(history.unexpected.is_empty(), "{:?}", history.unexpected);

        // Every node now presents the new certificate to new connections, without a restart.
        let rotated_der =
            rustls_pki_types::CertificateDer::from_pem_slice(rotated.cert_pem.as_bytes())
                .expect("pem");
        for id in 1..=3 {
            let presented = presented_certificate(cluster.addr(id), &files.ca).await;
            assert!(
                presented == rotated_der,
                "node {id} still presents the old certificate"
            );
            let log = std::fs::read_to_string(cluster.log_path(id)).expect("log");
            assert!(
                log.contains("has expired"),
                "node {id} did not log the expired replacement"
            );
            assert!(log.contains("reloaded"), "node {id} did not log the reload");
        }
        assert!(cluster.reap_exited().is_empty(), "a node exited");
        cluster.wait_until_converged().await;
        for id in 1..=3 {
            check_history(id, &read_all(&cluster.node_client(id)).await, &history);
        }
    });
}

use rustls_pki_types::pem::PemObject;

/// The certificate the node at `addr` presents in a fresh handshake.
async fn presented_certificate(addr: &str, ca: &Path) -> rustls_pki_types::CertificateDer<'static> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        #[allow(deprecated)]
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("certificates")[0]
        .clone()
        .into_owned()
}
