#!/usr/bin/env bash
# Runs the benchmarks by hand (they are never part of the tests): starts
# PostgreSQL when it is absent (the Prefect server uses it here, as in
# production), builds in release mode and runs each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

if ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi

# The services run as separate processes, from the release binaries beside the benchmarks'.
cargo build --release -p poller -p dispatcher -p reporter -p benchmarks --bins
./target/release/submission "$@"
