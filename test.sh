#!/usr/bin/env bash
# Every test: the Rust workspace (cargo test --workspace; as root it first installs what the
# partition tests need), then the Python client's tests
# against real clusters (clients/python/run-tests.sh). Both always run; it closes with the
# totals of both ("N passed, M failed") and exits non-zero if either failed.
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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: a failing test binary must not hide the results of the ones after it.
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== Python client (clients/python/run-tests.sh)"
# Bounded: a Python test that hangs (a thread left waiting keeps the interpreter from exiting)
# fails the run with a message instead of holding CI until its time limit.
PYTHON_TESTS_LIMIT_S=1200
timeout --kill-after=30 "$PYTHON_TESTS_LIMIT_S" clients/python/run-tests.sh 2>&1 | tee -a "$log"
case "${PIPESTATUS[0]}" in
    0) ;;
    124 | 137) echo "1 failed in ${PYTHON_TESTS_LIMIT_S}s: the Python tests did not end in time (stopped)" | tee -a "$log"; status=1 ;;
    *) status=1 ;;
esac
# cargo prints one "test result" line per test binary, the last often an empty crate's
# doctests, and pytest one summary line ("3 failed, 40 passed, 1 error in 61.2s"); close with
# the totals of all of them (a pytest error counts as a failure).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^(=+ )?[0-9]+ (passed|failed|error|errors|skipped|deselected)[ ,]/ && / in [0-9.]+s/ {
       for (i = 2; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^(failed|error|errors),?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
