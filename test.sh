#!/usr/bin/env bash
# Every test: the Rust workspace (cargo test --workspace), then the Python client's tests
# against real clusters (clients/python/run-tests.sh). Both always run; the exit status is
# non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")"
status=0
cargo test --workspace || status=$?
echo "== Python client (clients/python/run-tests.sh)"
clients/python/run-tests.sh || status=$?
exit "$status"
