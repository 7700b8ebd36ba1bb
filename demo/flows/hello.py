"""The demo flow `prefect-k8s up` deploys and runs in a Kubernetes Job."""

from prefect import flow, get_run_logger, task


@task
def greet(name: str) -> str:
    return f"Hello, {name}, from a Kubernetes Job!"


@flow(log_prints=True)
def hello(name: str = "prefect-k8s") -> str:
    message = greet(name)
    get_run_logger().info(message)
    return message


if __name__ == "__main__":
    hello()
