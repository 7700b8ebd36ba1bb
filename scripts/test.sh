#!/usr/bin/env bash
# Runs every test of the project against the real parts (nats-server, the
# Prefect server from .venv, the Kubernetes API emulator), after installing
# whatever is missing. This is the command the README and .ci/run give.
#
# A failing test binary does not stop the run (--no-fail-fast): every binary
# runs, and the run ends with the totals and the names of the failed ones.
# Extra arguments go to `cargo test` (e.g. `./scripts/test.sh -p reporter`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PREFECT_K8S_VENV=${PREFECT_K8S_VENV:-$PWD/.venv}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

log=$(mktemp "${TMPDIR:-/tmp}/prefect-k8s-test.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
# Two cores: integration tests start servers; keep parallelism modest.
if [ $# -eq 0 ]; then set -- --workspace; fi
cargo test --no-fail-fast "$@" -- --test-threads=2 2>&1 | tee "$log" || status=$?

# Totals over every test binary's "test result:" line.
awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^(passed|failed|ignored);?$/) { n[$(i)] += $(i-1) }
    }
    binaries++
  }
  END {
    printf "\n==> %d passed, %d failed, %d ignored across %d test binaries\n",
      n["passed;"], n["failed;"], n["ignored;"], binaries
  }' "$log"
if [ "$status" -ne 0 ]; then
  echo "==> FAILED (cargo test exit $status):"
  sed -n '/^error: [0-9]* targets\{0,1\} failed/,$p' "$log" | sed 's/^/    /'
fi
exit "$status"
