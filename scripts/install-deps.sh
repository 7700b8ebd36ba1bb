#!/usr/bin/env bash
# Installs what the stack and its tests need and is missing on a fresh
# machine: nats-server and kubectl from Debian, and a project-local
# virtualenv (.venv) with the pinned Prefect server and prefect-kubernetes.
# Safe to run again: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFECT_VERSION=3.9.1
PREFECT_KUBERNETES_VERSION=0.8.0
VENV=${PREFECT_K8S_VENV:-$PWD/.venv}

say() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 1; }
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
command -v kubectl >/dev/null || apt_install kubernetes-client
# A real Prometheus scrapes the services in prefect-k8s/tests/observability.rs.
command -v prometheus >/dev/null || apt_install prometheus
command -v python3 >/dev/null || apt_install python3 python3-venv

if [ ! -x "$VENV/bin/prefect" ] \
   || ! "$VENV/bin/python" -c "import prefect, prefect_kubernetes, sys; sys.exit(0 if prefect.__version__ == '$PREFECT_VERSION' else 1)" 2>/dev/null; then
  say "creating $VENV with prefect==$PREFECT_VERSION prefect-kubernetes==$PREFECT_KUBERNETES_VERSION"
  python3 -m venv "$VENV" || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "prefect==$PREFECT_VERSION" "prefect-kubernetes==$PREFECT_KUBERNETES_VERSION"
fi
# Offline validation of the install manifests against the Kubernetes schemas
# (prefect-k8s/tests); jsonschema and PyYAML come with prefect.
if ! "$VENV/bin/python" -c "import kubernetes_validate" 2>/dev/null; then
  say "installing kubernetes-validate into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==1.37.0"
fi
# Real Helm for the chart tests (prefect-k8s/tests/helm_chart.rs): Helm v4's
# Go library, bundled by helm-sdkpy. It declares Python >= 3.12 but loads on 3.11.
if ! "$VENV/bin/python" -c "import helm_sdkpy, sys; sys.exit(0 if helm_sdkpy.__version__ == '0.1.32' else 1)" 2>/dev/null; then
  say "installing helm-sdkpy into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --ignore-requires-python "helm-sdkpy==0.1.32"
fi
say "dependencies present: nats-server, kubectl, prometheus, $VENV (prefect $PREFECT_VERSION)"
