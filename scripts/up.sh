#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole stack locally with a
# demo flow (prefect-k8s up). Extra arguments go to `prefect-k8s up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --bins
exec cargo run -q --bin prefect-k8s -- up "$@"
