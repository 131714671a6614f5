#!/usr/bin/env bash
# The Python client's tests, alone: builds `cairn` if needed, installs the package and its
# pinned test dependencies into a virtualenv under the cargo target directory, runs pytest
# against three-node clusters the tests start themselves. Ends with pytest's summary line.
#   clients/python/run-tests.sh [PYTEST ARGS...]      (PYTHON=python3.12 to choose Python)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/python-venv
python=${PYTHON:-python3}

missing() {
    echo "error: $1" >&2
    echo "The Python tests need Python 3.10 or newer with venv and pip (Debian/Ubuntu:" >&2
    echo "  apt-get install python3 python3-venv python3-pip); set PYTHON=... to choose one." >&2
    exit 1
}
command -v "$python" >/dev/null 2>&1 || missing "no $python on PATH"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    missing "$("$python" --version 2>&1) is too old: 3.10 or newer is needed"
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
    missing "$python has no working venv module (python3-venv is not installed)"

echo "== building cairn (cargo build -p cairn-node)"
(cd "$root" && cargo build -p cairn-node)

# A venv made by another Python (or half made) is made again.
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "== creating $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
echo "== installing clients/python with its pinned test dependencies"
# pip builds a local directory and reinstalls it on every run (in its isolated build env, with
# the grpcio-tools pinned in pyproject.toml), so the stubs come from the proto as it is now.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[test]"

echo "== pytest"
cd "$here"
CAIRN_BIN=$target/debug/cairn exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
