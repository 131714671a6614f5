//! deploy/ without Docker or Kubernetes: `deploy/validate.sh` validates the Kubernetes
//! manifests against the Kubernetes schemas (kubernetes-validate from PyPI, installed into a
//! venv by the script; without PyPI the first run fails, it never skips) and runs
//! `cairn node --check-config` on every node configuration of the Dockerfile, compose.yaml and
//! the manifests (deploy/check_configs.py).

use std::path::Path;
use std::process::Command;

use crate::harness::cairn_exe;

/// Node configurations deploy/ describes: three compose services and three pods.
const NODE_CONFIGURATIONS: usize = 6;

#[test]
fn deploy_manifests_validate_and_every_node_configuration_passes_check_config() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let exe = Path::new(cairn_exe());
    let venv = exe
        .parent()
        .expect("the binary is in a directory")
        .join("deploy-validate-venv");
    let output = Command::new("bash")
        .arg(deploy.join("validate.sh"))
        .arg(exe)
        .arg(&venv)
        .output()
        .expect("run bash deploy/validate.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy/validate.sh failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let log = format!("{stdout}{stderr}");
    for resource in [
        "statefulset/cairn",
        "service/cairn-peers",
        "service/cairn",
        "poddisruptionbudget/cairn",
        "configmap/cairn",
    ] {
        assert!(
            log.contains(&format!("passed for resource {resource} ")),
            "{resource} was not validated:\n{log}"
        );
    }
    assert!(
        stdout.contains(&format!(
            "checked {NODE_CONFIGURATIONS} node configurations"
        )),
        "{stdout}"
    );
}
