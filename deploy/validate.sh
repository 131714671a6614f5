#!/usr/bin/env bash
# Checks deploy/ on a machine without Docker or Kubernetes:
#  1. the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate from PyPI,
#     installed here into a virtual environment; strict: unknown fields are errors), for the
#     oldest and the newest Kubernetes version they are meant for;
#  2. every node configuration in the Dockerfile, compose.yaml and the manifests with
#     `cairn node --check-config` (check_configs.py).
# Usage: deploy/validate.sh PATH/TO/cairn [VENV_DIR]
# VENV_DIR defaults to target/deploy-validate-venv; it is reused while it holds the pinned
# kubernetes-validate, so PyPI is needed the first time only. Anything missing fails loudly.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSIONS=(1.27.0 1.37.0)

cairn=${1:?usage: deploy/validate.sh PATH/TO/cairn [VENV_DIR]}
[ -x "$cairn" ] || { echo "error: $cairn is not an executable" >&2; exit 1; }
deploy=$(cd "$(dirname "$0")" && pwd)
venv=${2:-$deploy/../target/deploy-validate-venv}

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "python3 cannot make virtual environments: installing python3-venv" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
        echo "error: python3 cannot make virtual environments; install python3-venv" >&2
        exit 1
    fi
fi

installed=$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)
if [ "$installed" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; then
        rm -rf "$venv"
        echo "error: cannot install kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI" >&2
        exit 1
    fi
fi

for version in "${KUBERNETES_VERSIONS[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" "$deploy"/k8s/*.yaml
done
"$venv/bin/python" "$deploy/check_configs.py" "$cairn"
echo "deploy/: all checks passed"
