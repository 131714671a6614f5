//! `cairn node --check-config`: flags and CAIRN_* environment checked without starting
//! anything; exit 0 with a one-line summary, or 2 with a one-line error.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::cairn_exe;

/// `cairn node --check-config ARGS` with only `env` in the environment.
fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(cairn_exe())
        .arg("node")
        .arg("--check-config")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run cairn")
}

fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(text.trim_end().lines().count(), 1, "not one line: {text:?}");
    text.trim_end().to_owned()
}

#[test]
fn check_config_accepts_a_good_configuration_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("not-yet/node-1");
    let data = data.to_str().expect("utf-8 path");
    let good = check(
        &[
            "--id",
            "1",
            "--listen",
            "0.0.0.0:2113",
            "--peers",
            "1=cairn-0.cairn-peers:2113,2=10.0.0.2:2113,3=[::1]:2113",
            "--data-dir",
            data,
            "--http",
            "[::]:2114",
            "--log-format",
            "json",
            "--insecure",
        ],
        &[],
    );
    assert_eq!(good.status.code(), Some(0), "{good:?}");
    let summary = one_line(&good.stdout);
    assert!(summary.starts_with("config ok: node 1 of 3"), "{summary}");
    assert!(summary.contains("will be created"), "{summary}");
    assert!(
        !Path::new(data).exists(),
        "--check-config created the data dir"
    );
    assert!(good.stderr.is_empty(), "{good:?}");

    // The same through the environment, the id from a StatefulSet pod name.
    let existing = dir.path().to_str().expect("utf-8 path");
    let from_env = Command::new(cairn_exe())
        .arg("node")
        .env_clear()
        .env("CAIRN_CHECK_CONFIG", "true")
        .env("CAIRN_ID_FROM_POD_NAME", "cairn-2")
        .env("CAIRN_LISTEN", "0.0.0.0:2113")
        .env("CAIRN_HTTP", "0.0.0.0:2114")
        .env("CAIRN_PEERS", "1=a:2113,2=b:2113,3=c:2113")
        .env("CAIRN_DATA_DIR", existing)
        .env("CAIRN_LOG_FORMAT", "text")
        .env("CAIRN_INSECURE", "true")
        .output()
        .expect("run cairn");
    assert_eq!(from_env.status.code(), Some(0), "{from_env:?}");
    let summary = one_line(&from_env.stdout);
    assert!(summary.starts_with("config ok: node 3 of 3"), "{summary}");
    assert!(summary.contains("(exists)"), "{summary}");
}

#[test]
fn check_config_rejects_each_bad_configuration_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").expect("write");
    let file = file.to_str().expect("utf-8 path");
    let under_file = format!("{file}/data");
    let base: Vec<(&str, &str)> = vec![
        ("CAIRN_ID", "1"),
        ("CAIRN_LISTEN", "127.0.0.1:2113"),
        ("CAIRN_PEERS", "1=127.0.0.1:2113,2=127.0.0.1:2123"),
        ("CAIRN_DATA_DIR", data),
        ("CAIRN_INSECURE", "1"),
    ];
    let with = |key: &'static str, value: &'static str| -> Vec<(&'static str, String)> {
        base.iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| (*k, v.to_string()))
            .chain((!value.is_empty()).then(|| (key, value.to_owned())))
            .collect()
    };
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            with("CAIRN_ID", ""),
            "--id (CAIRN_ID) or --id-from-pod-name",
        ),
        (with("CAIRN_ID", "one"), "is not a node id"),
        (with("CAIRN_ID", "3"), "node id 3 is not among --peers"),
        (with("CAIRN_ID_FROM_POD_NAME", "cairn-0"), "not both"),
        (
            with("CAIRN_LISTEN", ""),
            "--listen (CAIRN_LISTEN) is required",
        ),
        (
            with("CAIRN_LISTEN", "2113"),
            "--listen: \"2113\" is not HOST:PORT",
        ),
        (with("CAIRN_LISTEN", "host:99999"), "is not HOST:PORT"),
        (with("CAIRN_PEERS", ""), "--peers (CAIRN_PEERS) is required"),
        (with("CAIRN_PEERS", "1=a:1,1=b:1"), "node 1 appears twice"),
        (with("CAIRN_PEERS", "1=a:1,b:2"), "is not ID=HOST:PORT"),
        (
            with("CAIRN_PEERS", "1=a"),
            "--peers: \"a\" is not HOST:PORT",
        ),
        (
            with("CAIRN_HTTP", "nowhere"),
            "--http: \"nowhere\" is not HOST:PORT",
        ),
        (
            with("CAIRN_HTTP", "127.0.0.1:2113"),
            "the same address as --listen",
        ),
        (
            with("CAIRN_LOG_FORMAT", "xml"),
            "--log-format: \"xml\" is not one of",
        ),
        (
            with("CAIRN_DATA_DIR", ""),
            "--data-dir (CAIRN_DATA_DIR) is required",
        ),
        // Secure by default: no TLS files and no --insecure is refused.
        (with("CAIRN_INSECURE", ""), "TLS is required"),
        (with("CAIRN_INSECURE", "false"), "TLS is required"),
        (
            with("CAIRN_TLS_CA", "/ca.pem"),
            "--insecure (CAIRN_INSECURE) and --tls-ca (CAIRN_TLS_CA) together",
        ),
        (
            with("CAIRN_ADMIN_TOKEN_FILE", "/admin.token"),
            "--insecure (CAIRN_INSECURE) and --admin-token-file (CAIRN_ADMIN_TOKEN_FILE) together",
        ),
    ];
    let mut cases: Vec<(Vec<(&str, String)>, String)> = cases
        .into_iter()
        .map(|(env, message)| (env, message.to_owned()))
        .collect();
    // Secure by default: TLS without an admin secret is refused too.
    let mut tls_alone = with("CAIRN_INSECURE", "");
    for (key, value) in [
        ("CAIRN_TLS_CERT", "/cert.pem"),
        ("CAIRN_TLS_KEY", "/key.pem"),
        ("CAIRN_TLS_CA", "/ca.pem"),
    ] {
        tls_alone.push((key, value.to_owned()));
    }
    cases.push((tls_alone, "an admin secret is required".into()));
    let mut is_a_file = with("CAIRN_DATA_DIR", "");
    is_a_file.push(("CAIRN_DATA_DIR", file.to_owned()));
    cases.push((is_a_file, "is not a directory".into()));
    let mut below_a_file = with("CAIRN_DATA_DIR", "");
    below_a_file.push(("CAIRN_DATA_DIR", under_file));
    cases.push((below_a_file, "cannot be created".into()));

    for (env, message) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let output = check(&[], &env);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{env:?}: {output:?}");
        let error = one_line(&output.stderr);
        assert!(error.starts_with("error: "), "{error}");
        assert!(
            error.contains(&message),
            "{env:?}: {error:?} lacks {message:?}"
        );
    }
}
