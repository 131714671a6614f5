#!/usr/bin/env bash
# Every test: the Rust workspace (cargo test --workspace; as root it first installs what the
# partition tests need), then the Python client's tests
# against real clusters (clients/python/run-tests.sh). Both always run; the exit status is
# non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")"
status=0
# The partition tests (node/tests/partitions) need `ip`, `tc` and `iptables`: as root (CI),
# install the Debian packages that bring them when one is missing. Without them, or without
# root, those tests print that they were skipped.
if [ "$(id -u)" -eq 0 ] && ! { command -v ip && command -v tc && command -v iptables; } >/dev/null; then
    echo "== installing iproute2 and iptables for the partition tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables; } \
        || echo "could not install iproute2/iptables: the partition tests will be skipped"
fi
cargo test --workspace || status=$?
echo "== Python client (clients/python/run-tests.sh)"
clients/python/run-tests.sh || status=$?
exit "$status"
