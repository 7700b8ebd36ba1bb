"""Render a Kubernetes Job manifest with prefect-kubernetes' own code.

Reads a JSON case, or a list of cases, on stdin and prints {"manifest": ..., "namespace": ...}
(or a list of them, in order) on stdout.
Used by the job-manifest crate's reference comparison test; needs a virtualenv with
prefect==3.9.1 and prefect-kubernetes==0.8.0. No Prefect server and no Kubernetes
cluster are contacted: the flow run, flow, deployment and work pool are built locally
and a stub client answers the two reads `resolve_for_flow_run` makes.

Input fields:
  base_job_template            work pool template; null = the worker's default template
  deployment_job_variables     object or null (null = the run has no deployment)
  flow_run_job_variables       object
  flow_run  {id, name, flow_id}
  flow      {id, name}
  deployment {id, name, updated}   (ignored when deployment_job_variables is null)
  work_pool {id, name}
  worker_name
  api_key_secret      {name, key} or null   replace PREFECT_API_KEY by a secretKeyRef
  auth_string_secret  {name, key} or null   replace PREFECT_API_AUTH_STRING likewise
A case {"slugify": [text, ...]} instead returns, for each text, prefect-kubernetes'
[_slugify_name(text), _slugify_label_key(text), _slugify_label_value(text)].

The Prefect settings to forward (PREFECT_API_URL, PREFECT_API_KEY, ...) come from the
process environment, exactly as for a real worker.
"""

import asyncio
import json
import sys
import uuid

from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect_kubernetes.utilities import (
    _slugify_label_key,
    _slugify_label_value,
    _slugify_name,
)
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration


class LocalClient:
    """Answers the reads resolve_for_flow_run makes, from the case itself."""

    def __init__(self, deployment, flow):
        self._deployment = deployment
        self._flow = flow

    async def read_deployment(self, deployment_id):
        return self._deployment

    async def read_flow(self, flow_id):
        return self._flow


async def render(case):
    if "slugify" in case:
        return [
            [_slugify_name(text), _slugify_label_key(text), _slugify_label_value(text)]
            for text in case["slugify"]
        ]
    base_job_template = case.get("base_job_template") or (
        KubernetesWorker.get_default_base_job_template()
    )
    work_pool = WorkPool(
        id=uuid.UUID(case["work_pool"]["id"]),
        name=case["work_pool"]["name"],
        type="kubernetes",
        base_job_template=base_job_template,
    )
    flow = Flow(id=uuid.UUID(case["flow"]["id"]), name=case["flow"]["name"])

    deployment = None
    deployment_id = None
    if case.get("deployment_job_variables") is not None:
        spec = case["deployment"]
        deployment_id = uuid.UUID(spec["id"])
        deployment = DeploymentResponse(
            id=deployment_id,
            name=spec["name"],
            flow_id=flow.id,
            updated=spec.get("updated"),
            job_variables=case["deployment_job_variables"],
        )

    flow_run = FlowRun(
        id=uuid.UUID(case["flow_run"]["id"]),
        name=case["flow_run"]["name"],
        flow_id=flow.id,
        deployment_id=deployment_id,
        job_variables=case.get("flow_run_job_variables") or {},
    )

    configuration = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
        flow_run,
        client=LocalClient(deployment, flow),
        work_pool=work_pool,
        worker_name=case["worker_name"],
        deployment=deployment,
    )

    # The secret substitutions KubernetesWorker._create_job performs before the
    # Kubernetes call; they only touch the manifest (no Kubernetes access needed).
    if case.get("api_key_secret"):
        await KubernetesWorker._replace_env_variable_with_secret(
            None,
            env_variable_name="PREFECT_API_KEY",
            configuration=configuration,
            secret_name=case["api_key_secret"]["name"],
            secret_key=case["api_key_secret"]["key"],
        )
    if case.get("auth_string_secret"):
        await KubernetesWorker._replace_env_variable_with_secret(
            None,
            env_variable_name="PREFECT_API_AUTH_STRING",
            configuration=configuration,
            secret_name=case["auth_string_secret"]["name"],
            secret_key=case["auth_string_secret"]["key"],
        )

    return {
        "manifest": configuration.job_manifest,
        "namespace": configuration.namespace,
    }


def main():
    cases = json.load(sys.stdin)

    async def render_all():
        if isinstance(cases, list):
            return [await render(case) for case in cases]
        return await render(cases)

    result = asyncio.run(render_all())
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
