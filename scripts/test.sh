#!/usr/bin/env bash
# Runs every test of the project against the real parts (nats-server, the
# Prefect server from .venv, the Kubernetes API emulator), after installing
# whatever is missing. This is the command the README and .ci/run give.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PREFECT_K8S_VENV=${PREFECT_K8S_VENV:-$PWD/.venv}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Two cores: integration tests start servers; keep parallelism modest.
cargo test --workspace -- --test-threads=2
