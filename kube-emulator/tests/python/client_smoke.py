"""Drive the emulator with the official Python kubernetes client (and kubernetes_asyncio when
installed), the way the Prefect worker and its kopf observer do. Exits non-zero on failure."""

import asyncio
import sys

def sync_client(kubeconfig: str) -> None:
    from kubernetes import client, config, watch

    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    batch = client.BatchV1Api()
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system"} <= names, names
    groups = {g.name for g in client.ApisApi().get_api_versions().groups}
    assert "batch" in groups, groups
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "py-", "labels": {"prefect.io/flow-run-id": "abc"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"prefect.io/flow-run-id": "abc"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "prefect-job", "image": "busybox", "args": ["echo", "hello"]}],
                },
            },
        },
    }
    created = batch.create_namespaced_job("default", job)
    name = created.metadata.name
    assert name.startswith("py-") and len(name) == 8, name
    w = watch.Watch()
    phase = None
    for event in w.stream(core.list_namespaced_pod, "default", label_selector=f"job-name={name}", timeout_seconds=30):
        phase = event["object"].status.phase
        if phase in ("Succeeded", "Failed"):
            w.stop()
    assert phase == "Succeeded", phase
    pods = core.list_namespaced_pod("default", label_selector="prefect.io/flow-run-id=abc", limit=500)
    pod = pods.items[0].metadata.name
    log = core.read_namespaced_pod_log(pod, "default", container="prefect-job", tail_lines=500)
    assert "scripted container prefect-job" in log, log
    try:
        batch.read_namespaced_job("does-not-exist", "default")
        raise AssertionError("expected 404")
    except client.exceptions.ApiException as err:
        assert err.status == 404, err.status
    batch.delete_namespaced_job(name, "default", grace_period_seconds=30, propagation_policy="Foreground")
    print("sync client ok")


async def async_client(kubeconfig: str) -> None:
    from kubernetes_asyncio import client as aclient, config as aconfig, watch as awatch

    await aconfig.load_kube_config(config_file=kubeconfig)
    async with aclient.ApiClient() as api:
        batch = aclient.BatchV1Api(api)
        core = aclient.CoreV1Api(api)
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"generateName": "apy-"},
            # Prefect's base job template puts `completions` inside the pod spec; the server drops it.
            "spec": {"backoffLimit": 0, "template": {"spec": {"completions": 1, "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "fail", "args": ["x"]}]}}},
        }
        created = await batch.create_namespaced_job("default", job)
        name = created.metadata.name
        failed = False
        w = awatch.Watch()
        async for event in w.stream(batch.list_namespaced_job, "default", field_selector=f"metadata.name={name}", timeout_seconds=30):
            conditions = event["object"].status.conditions or []
            if any(c.type == "Failed" and c.status == "True" for c in conditions):
                failed = True
                w.stop()
        assert failed
        pods = await core.list_pod_for_all_namespaces(label_selector=f"job-name={name}", allow_watch_bookmarks=True)
        assert pods.items[0].status.phase == "Failed"
        pod = pods.items[0].metadata.name
        log = await core.read_namespaced_pod_log(pod, "default", container="c", tail_lines=500)
        assert "scripted container c" in log, log
        # Paging like the kopf observer's initial LIST.
        page = await core.list_namespaced_pod("default", limit=1)
        assert page.metadata.resource_version
        try:
            await batch.read_namespaced_job("does-not-exist", "default")
            raise AssertionError("expected 404")
        except aclient.exceptions.ApiException as err:
            assert err.status == 404, err.status
        await batch.delete_namespaced_job(name, "default", grace_period_seconds=30, propagation_policy="Foreground")
    print("async client ok")


if __name__ == "__main__":
    try:
        import kubernetes  # noqa: F401  (the sync client is optional)
        have_sync = True
    except ImportError:
        have_sync = False
    if have_sync:
        sync_client(sys.argv[1])
    else:
        print("sync kubernetes client not installed; only kubernetes_asyncio checked")
    asyncio.run(async_client(sys.argv[1]))
