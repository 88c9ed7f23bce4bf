"""The training pipeline; it reads like the diagram:

    plan -> fetch -> preprocess -> ParallelFor(grid) { train } -> collect (report, best run)
         -> champion (does the best beat the registered champion and the threshold?)
         -> If(it does) { register -> deploy }

Runs are ranked on their task's tracking metric in its direction (summary.json: dev.accuracy
higher is better, dev.mae lower is better), unless `metric` (and `direction`: max or min) name
another. `threshold` is a floor for a higher-is-better metric and a ceiling for a lower-is-better
one (a number as text; empty: none).

`build(cluster)` returns the pipeline function with the cluster settings (pipelines/cluster.py)
applied; the config, grid and endpoints are run-time parameters."""

from kfp import dsl, kubernetes

from components import stages as c
from pipelines.cluster import Cluster, Pool

NAME = "tympan-training"


def _place(task: dsl.PipelineTask, pool: Pool, cluster: Cluster) -> dsl.PipelineTask:
    """Resources, accelerator, node pool and secrets of one task, all from the cluster settings."""
    resources = pool.resources
    if resources.cpu_request:
        task.set_cpu_request(resources.cpu_request)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
        # torch, OpenMP and tympan size their threads from this, not from the node's cores
        task.set_env_variable("OMP_NUM_THREADS", str(resources.threads()))
    if resources.memory_request:
        task.set_memory_request(resources.memory_request)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if pool.accelerator:
        task.set_accelerator_type(pool.accelerator.type).set_accelerator_limit(pool.accelerator.count)
    for key, value in pool.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in pool.tolerations:
        kubernetes.add_toleration(task, **toleration.model_dump())
    for secret in cluster.secrets:
        kubernetes.use_secret_as_env(task, secret.name, {key: env for env, key in secret.env.items()}, secret.optional)
    return task


def build(cluster: Cluster):
    """The pipeline function for these cluster settings."""

    def cpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
        return _place(task, cluster.cpu, cluster)

    @dsl.pipeline(name=NAME, description="tympan: fetch, preprocess, train a grid, register the best, deploy")
    def training(
        config: str,
        grid: str = "",
        mlflow_uri: str = "",
        s3_endpoint: str = "",
        threshold: str = "",
        model_name: str = "tympan",
        metric: str = "",
        direction: str = "",
    ) -> dsl.Model:
        planned = cpu(c.plan(config=config, grid=grid)).set_caching_options(False)
        fetched = cpu(c.fetch(dataset_config=planned.outputs["dataset_config"], s3_endpoint=s3_endpoint))
        fetched.set_caching_options(True)
        features = cpu(c.preprocess(features_config=planned.outputs["features_config"], raw=fetched.outputs["raw"]))
        features.set_caching_options(True)
        with dsl.ParallelFor(planned.outputs["Output"], parallelism=cluster.parallelism, name="grid") as run:
            trained = _place(c.train(config=run, features=features.outputs["features"]), cluster.train, cluster)
            trained.set_caching_options(True).set_display_name("train")
        collected = cpu(c.collect(runs=dsl.Collected(trained.outputs["model"]), metric=metric, direction=direction))
        collected.set_caching_options(False)
        gate = cpu(
            c.champion(
                name=model_name,
                score=collected.outputs["score"],
                metric=collected.outputs["metric"],
                direction=collected.outputs["direction"],
                threshold=threshold,
                mlflow_uri=mlflow_uri,
                s3_endpoint=s3_endpoint,
            )
        ).set_caching_options(False)
        with dsl.If(gate.output == True, name="beats-champion"):  # noqa: E712 (a KFP condition, not Python's)
            registered = cpu(
                c.register(
                    best=collected.outputs["best"],
                    name=model_name,
                    metric=collected.outputs["metric"],
                    mlflow_uri=mlflow_uri,
                    s3_endpoint=s3_endpoint,
                )
            ).set_caching_options(False)
            deployed = cpu(
                c.deploy(
                    name=model_name,
                    version=registered.outputs["Output"],
                    mlflow_uri=mlflow_uri,
                    namespace=cluster.deploy.namespace,
                    image=c.SERVE_IMAGE,
                )
            )
            deployed.set_caching_options(False)
        return collected.outputs["best"]

    return training
