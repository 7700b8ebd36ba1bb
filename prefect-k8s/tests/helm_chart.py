"""Drives real Helm (Helm v4's Go library, bundled by PyPI's helm-sdkpy) for
the chart tests in prefect-k8s/tests/helm_chart.rs.

Usage:
  helm_chart.py lint CHART
  helm_chart.py install|upgrade KUBECONFIG NAMESPACE RELEASE CHART VALUES_JSON_FILE
  helm_chart.py uninstall KUBECONFIG NAMESPACE RELEASE
  helm_chart.py status KUBECONFIG NAMESPACE RELEASE

lint prints {"messages": [{"severity", "path"}]} (severity: Helm's name,
INFO, WARNING or ERROR). install and upgrade print the release as JSON
(its "manifest" is what Helm rendered and applied); they do not wait for
readiness (the emulator runs no Deployment controller). A Helm error is
printed on stderr with exit code 1; a missing helm-sdkpy exits 2.
"""

import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile

# Helm's own settings come from here, never from the host's (~/.config/helm,
# HELM_NAMESPACE, HELM_KUBECONTEXT, ...): set before the Go library loads,
# which reads the environment once.
for name in [name for name in os.environ if name.startswith("HELM_")]:
    del os.environ[name]
_HELM_HOME = tempfile.mkdtemp(prefix="prefect-k8s-helm-")
atexit.register(shutil.rmtree, _HELM_HOME, ignore_errors=True)
for name in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
    os.environ[name] = os.path.join(_HELM_HOME, name[len("HELM_"):].lower())
os.environ["HELM_DRIVER"] = "secret"

try:
    import helm_sdkpy as helm
except ImportError:
    print(
        "missing Python package: helm-sdkpy (run scripts/install-deps.sh)",
        file=sys.stderr,
    )
    sys.exit(2)

# pkg/lint/support: Helm's severities.
SEVERITIES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def configuration(kubeconfig, namespace):
    return helm.Configuration(namespace=namespace, kubeconfig=kubeconfig)


def read_values(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


async def run(argv):
    action = argv[0]
    if action == "lint":
        # Lint reads no cluster; an empty in-memory kubeconfig is not needed.
        result = await helm.Lint(helm.Configuration()).run(argv[1])
        messages = [
            {"severity": SEVERITIES.get(m["Severity"], m["Severity"]), "path": m["Path"]}
            for m in result.get("Messages") or []
        ]
        errors = [str(e) for e in result.get("Errors") or []]
        return {"charts": result.get("TotalChartsLinted"), "messages": messages, "errors": errors}
    kubeconfig, namespace, release = argv[1], argv[2], argv[3]
    config = configuration(kubeconfig, namespace)
    if action == "install":
        chart, values = argv[4], read_values(argv[5])
        return await helm.Install(config).run(
            release, chart, values=values, create_namespace=True, wait=False, timeout=120
        )
    if action == "upgrade":
        chart, values = argv[4], read_values(argv[5])
        return await helm.Upgrade(config).run(
            release, chart, values=values, wait=False, timeout=120
        )
    if action == "uninstall":
        return await helm.Uninstall(config).run(release, wait=False, timeout=120)
    if action == "status":
        return await helm.Status(config).run(release)
    raise SystemExit(f"unknown action {action}")


def main():
    try:
        result = asyncio.run(run(sys.argv[1:]))
    except helm.HelmError as error:
        print(f"helm: {error}", file=sys.stderr)
        sys.exit(1)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
