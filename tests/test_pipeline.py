"""The Kubeflow pipeline: the compiled spec (as a cluster would read it), a local end-to-end run
with kfp.local on FSDD, and `submit` against a local HTTP server speaking the KFP REST API."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tympan.errors import ConfigError, TympanError

REPO = Path(__file__).resolve().parents[1]

CLUSTER = {
    "parallelism": 3,
    "train": {
        "accelerator": {"type": "nvidia.com/gpu", "count": 2},
        "resources": {"cpu_request": "3", "cpu_limit": "6", "memory_request": "12G", "memory_limit": "24G"},
        "node_selector": {"pool": "gpu-a100", "tier": "training"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}],
    },
    "cpu": {"resources": {"cpu_limit": "1500m", "memory_limit": "3G"}},
    "secrets": [
        {"name": "s3-creds", "env": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}},
        {"name": "mlflow-creds", "env": {"MLFLOW_TRACKING_TOKEN": "token"}, "optional": True},
    ],
    "deploy": {"namespace": "audio"},
}

# component -> (inputs, outputs): artifact name -> schema title
ARTIFACTS = {
    "fetch": ({}, {"raw": "system.Dataset", "report": "system.Markdown"}),
    "preprocess": ({"raw": "system.Dataset"}, {"features": "system.Dataset"}),
    "train": ({"features": "system.Dataset"}, {"model": "system.Model"}),
    "collect": (
        {"runs": "system.Model"},
        {
            "report": "system.Markdown",
            "report_html": "system.HTML",
            "metrics": "system.Metrics",
            "confusion": "system.ClassificationMetrics",
            "best": "system.Model",
        },
    ),
    "register": ({"best": "system.Model"}, {"registered": "system.Model"}),
    "deploy": ({}, {"manifest": "system.Artifact"}),
}


def _images() -> dict[str, str]:
    """images/images.env read independently of components/images.py."""
    env = {}
    for line in (REPO / "images/images.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return {k: f"{env['REGISTRY']}/{env[k]}:{env['TAG']}" for k in ("BASE_IMAGE", "TRAIN_IMAGE", "SERVE_IMAGE")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The pipeline compiled with CLUSTER, parsed strictly with the KFP protobuf messages."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipelines import run

    tmp = tmp_path_factory.mktemp("compile")
    (tmp / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    path = run.compile_pipeline(tmp / "training.yaml", tmp / "cluster.yaml")
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "the kfp-kubernetes settings make a second YAML document"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())  # unknown keys raise
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    return path, spec, platform


def _executor(platform, name: str):
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s

    executors = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"]
    return json_format.ParseDict(executors[name], k8s.KubernetesExecutorConfig())


def test_compiled_spec_loads_back_with_its_parameters(compiled):
    from kfp import components

    path, spec, _ = compiled
    assert spec.pipeline_info.name == "tympan-training"
    loaded = components.load_component_from_file(str(path))
    params = set(loaded.component_spec.inputs)
    assert {"config", "grid", "mlflow_uri", "s3_endpoint", "threshold", "model_name", "metric", "direction"} <= params
    assert loaded.component_spec.outputs["Output"].type == "system.Model@0.0.1"


def test_every_stage_declares_typed_artifacts(compiled):
    _, spec, _ = compiled
    for name, (inputs, outputs) in ARTIFACTS.items():
        component = spec.components[f"comp-{name}"]
        for artifact, title in inputs.items():
            assert component.input_definitions.artifacts[artifact].artifact_type.schema_title == title, (name, artifact)
        for artifact, title in outputs.items():
            assert component.output_definitions.artifacts[artifact].artifact_type.schema_title == title, (
                name,
                artifact,
            )
    assert spec.components["comp-collect"].input_definitions.artifacts["runs"].is_artifact_list


def test_train_requests_gpus_and_limits_from_the_cluster_file(compiled):
    from google.protobuf import json_format

    _, spec, platform = compiled
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "2"
    assert train["resources"]["resourceCpuLimit"] == "6"
    assert train["resources"]["resourceMemoryRequest"] == "12G"
    config = _executor(platform, "exec-train")
    assert dict(config.node_selector.labels) == {"pool": "gpu-a100", "tier": "training"}
    [toleration] = config.tolerations
    assert (toleration.key, toleration.operator, toleration.value, toleration.effect) == (
        "dedicated",
        "Equal",
        "gpu",
        "NoExecute",
    )
    # CPU tasks: their own limits, no GPU, no GPU pool
    fetch = executors["exec-fetch"]["container"]
    assert "accelerator" not in fetch["resources"] and fetch["resources"]["resourceCpuLimit"] == "1500m"
    assert not _executor(platform, "exec-fetch").node_selector.labels
    # the grid runs at most `parallelism` trainings at once
    loops = [t for t in spec.root.dag.tasks.values() if t.HasField("parameter_iterator")]
    assert [t.iterator_policy.parallelism_limit for t in loops] == [3]


def _env(spec) -> dict[str, dict[str, str]]:
    from google.protobuf import json_format

    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    return {n: {e["name"]: e["value"] for e in x["container"].get("env", [])} for n, x in executors.items()}


def test_each_task_sizes_its_threads_from_its_cpu_limit(compiled, tmp_path):
    from pipelines import cluster, run

    _, spec, _ = compiled
    env = _env(spec)
    assert env["exec-train"]["OMP_NUM_THREADS"] == "6"  # cpu_limit "6"
    assert {e["OMP_NUM_THREADS"] for n, e in env.items() if n != "exec-train"} == {"1"}  # "1500m": whole cores
    limits = {"500m": 1, "2500m": 2, "1.5": 1, "4": 4, None: None}
    assert {k: cluster.Resources(cpu_limit=k).threads() for k in limits} == limits

    # without a limit the task sizes itself from its cgroup quota and affinity: no variable is set
    (tmp_path / "none.yaml").write_text("train: {accelerator: null}\n")
    bare = yaml.safe_load_all(run.compile_pipeline(tmp_path / "bare.yaml", tmp_path / "none.yaml").read_text())
    executors = next(bare)["deploymentSpec"]["executors"]
    assert not [n for n, x in executors.items() if "OMP_NUM_THREADS" in str(x["container"].get("env"))]
    (tmp_path / "bad.yaml").write_text("cpu: {resources: {cpu_limit: 2 cores}}\n")
    with pytest.raises(ConfigError, match=r"cpu.resources.cpu_limit: .*'2 cores' is not a CPU quantity"):
        run.compile_pipeline(tmp_path / "out.yaml", tmp_path / "bad.yaml")


def test_secrets_come_from_kubernetes_secrets_not_parameters(compiled):
    _, spec, platform = compiled
    for name in spec.deployment_spec["executors"]:
        secrets = {s.secret_name: s for s in _executor(platform, name).secret_as_env}
        assert set(secrets) == {"s3-creds", "mlflow-creds"}, name
        mapping = {m.env_var: m.secret_key for m in secrets["s3-creds"].key_to_env}
        assert mapping == {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
        assert secrets["mlflow-creds"].optional and not secrets["s3-creds"].optional
    params = set(spec.root.input_definitions.parameters)
    assert not {p for p in params if "secret" in p.lower() or "key" in p.lower() or "password" in p.lower()}


def test_images_caching_and_no_runtime_pip(compiled):
    from google.protobuf import json_format

    _, spec, _ = compiled
    images = _images()
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    assert executors["exec-train"]["container"]["image"] == images["TRAIN_IMAGE"]
    for name, executor in executors.items():
        container = executor["container"]
        if name != "exec-train":
            assert container["image"] == images["BASE_IMAGE"], name
        command = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip" not in command, f"{name} installs packages at run time"
    tasks = spec.root.dag.tasks
    assert tasks["fetch"].caching_options.enable_cache and tasks["preprocess"].caching_options.enable_cache
    condition = next(c for n, c in spec.components.items() if n.startswith("comp-condition"))
    assert not condition.dag.tasks["deploy"].caching_options.enable_cache
    assert not condition.dag.tasks["register"].caching_options.enable_cache
    # the deploy task serves with the serving image, fixed at compile time
    deploy_image = condition.dag.tasks["deploy"].inputs.parameters["image"].runtime_value.constant
    assert deploy_image.string_value == images["SERVE_IMAGE"]
    # the gate is the champion task's verdict, from collect's score, metric and direction at run time
    gate = next(t for t in tasks.values() if t.component_ref.name == "comp-condition-2")
    assert "champion-Output" in gate.trigger_policy.condition
    inputs = tasks["champion"].inputs.parameters
    assert {inputs[k].task_output_parameter.producer_task for k in ("score", "metric", "direction")} == {"collect"}


def test_bad_cluster_file_names_the_key_and_writes_nothing(tmp_path):
    from pipelines import run

    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump({"train": {"accelerator": {"count": 0}, "node_selectr": {"a": "b"}}}))
    with pytest.raises(ConfigError, match=r"train.accelerator.count.*train.node_selectr: unknown key"):
        run.compile_pipeline(tmp_path / "out.yaml", bad)
    assert not list(tmp_path.glob("*out.yaml*"))


def test_cli_compile_writes_the_yaml(tmp_path, capsys):
    from tympan import cli

    assert cli.main(["pipeline", "compile", "--output", str(tmp_path / "p.yaml")]) == 0
    assert "p.yaml" in capsys.readouterr().out
    assert yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert cli.main(["pipeline", "compile", "--output", str(tmp_path / "p.json")]) == 1
    assert "name it *.yaml" in capsys.readouterr().err


def test_plan_expands_the_grid_and_refuses_data_keys():
    from tympan import stages

    text = (REPO / "pipelines/tiny.yaml").read_text()
    plan = stages.plan(text)
    lrs = [yaml.safe_load(r)["optimizer"]["args"]["lr"] for r in plan["runs"]]
    assert lrs == [0.01, 0.003]
    assert list(yaml.safe_load(plan["features"])) == ["dataset", "features"]
    assert len(stages.plan(text, "seed: [1, 2, 3]\noptimizer.args.lr: [0.1]")["runs"]) == 3
    with pytest.raises(ConfigError, match="features.args.n_mels"):
        stages.plan(text, "features.args.n_mels: [32, 64]")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        stages.plan("- just a list")


# ---- the whole pipeline on this machine ------------------------------------------------------


def _outputs(task_dir: Path) -> dict:
    return json.loads((task_dir / "executor_output.json").read_text())


def test_local_run_registers_the_best_run_with_the_cli_results(fsdd_mirror, tiny_workspace, tmp_path, monkeypatch):
    import mlflow

    from pipelines import run
    from tympan import cli

    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(fsdd_mirror))
    root = tmp_path / "pipe"
    result = run.run_local(str(REPO / "pipelines/tiny.yaml"), root, model_name="tiny-kfp")
    best = result["best"]
    [pipeline_run] = list((root / "kfp").glob("tympan-training-*"))
    summaries = [json.loads(p.read_text()) for p in pipeline_run.glob("for-loop-*/train/model/summary.json")]
    assert len(summaries) == 2
    best_summary = json.loads((best / "summary.json").read_text())
    assert best_summary["dev"]["accuracy"] == max(s["dev"]["accuracy"] for s in summaries)

    # typed outputs of collect: metrics, and a confusion matrix whose diagonal is the dev accuracy
    collected = _outputs(pipeline_run / "collect")
    assert collected["parameterValues"] == {
        "score": best_summary["dev"]["accuracy"],
        "metric": "dev.accuracy",
        "direction": "max",
    }
    [metrics] = collected["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["test.accuracy"] == best_summary["test"]["accuracy"]
    [confusion] = collected["artifacts"]["confusion"]["artifacts"]
    rows = [r["row"] for r in confusion["metadata"]["confusionMatrix"]["rows"]]
    total = sum(map(sum, rows))
    assert total == 500  # yweweler: 10 digits x 50 takes
    assert sum(rows[i][i] for i in range(len(rows))) / total == pytest.approx(best_summary["dev"]["accuracy"])
    assert "# Runs in" in (pipeline_run / "collect/report").read_text()
    # the fetch step's data report, and its counts on the raw artifact
    assert (pipeline_run / "fetch/report").read_text().startswith("# Data report: fsdd")
    [raw] = _outputs(pipeline_run / "fetch")["artifacts"]["raw"]["artifacts"]
    assert raw["metadata"]["samples_per_split"]["dev"] == 500

    # registered in MLflow and made champion; the deploy step wrote (not applied) the manifest
    client = mlflow.MlflowClient(result["tracking_uri"])
    version = client.get_model_version_by_alias("tiny-kfp", "champion")
    assert str(version.version) == "1"
    assert float(version.tags["dev.accuracy"]) == best_summary["dev"]["accuracy"]
    manifest = yaml.safe_load((pipeline_run / "deploy/manifest").read_text())
    assert manifest["kind"] == "InferenceService"
    assert "models:/tiny-kfp/1" in manifest["spec"]["predictor"]["containers"][0]["args"]

    # the same resolved config through the CLI gives the same results
    workspace, _ = tiny_workspace
    config = yaml.safe_load((best / "config.yaml").read_text())
    config["dataset"]["root"] = str(workspace / "data/raw")
    config["features"]["root"] = str(workspace / "data/features")
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(tmp_path / "best.yaml"), "--run-dir", str(tmp_path / "cli")]) == 0
    cli_summary = json.loads((tmp_path / "cli/summary.json").read_text())
    assert {k: cli_summary[k] for k in ("dev", "test")} == {k: best_summary[k] for k in ("dev", "test")}

    # a second run with a one-run grid: fetch and preprocess come from the cache (they ran no
    # task, so wrote no directory); the threshold is out of reach, so the gate keeps the champion
    grid = "optimizer.args.lr: [0.01]"
    run.run_local(str(REPO / "pipelines/tiny.yaml"), root, grid=grid, model_name="tiny-kfp", threshold=1.0)
    second = max((root / "kfp").glob("tympan-training-*"))
    assert second != pipeline_run
    assert not (second / "fetch").exists() and not (second / "preprocess").exists()
    assert "1 runs, 1 finished" in (second / "collect/report").read_text()
    assert (second / "champion").is_dir() and not (second / "register").exists()
    assert len(client.search_model_versions("name='tiny-kfp'")) == 1


def test_local_run_of_a_regression_ranks_and_gates_on_the_lowest_mae(tmp_path):
    """Runs that track dev.mae (lower is better): collect picks the lowest, its metrics artifacts
    carry no confusion matrix, and the champion gate reads the threshold as a ceiling."""
    import mlflow

    from tests.conftest import TOY_REGRESSION
    from tympan import cli, stages

    (tmp_path / "tones.yaml").write_text(
        yaml.safe_dump({**TOY_REGRESSION, "grid": {"optimizer.args.lr": [0.01, 0.003]}})
    )
    root = tmp_path / "pipe"
    argv = ["pipeline", "run-local", str(tmp_path / "tones.yaml"), "--root", str(root), "--model-name", "tones"]
    assert cli.main([*argv, "--threshold", "1000"]) == 0  # a mean absolute error below 1000 Hz/ms
    [pipeline_run] = list((root / "kfp").glob("tympan-training-*"))
    summaries = [json.loads(p.read_text()) for p in pipeline_run.glob("for-loop-*/train/model/summary.json")]
    maes = sorted(s["dev"]["mae"] for s in summaries)
    assert len(maes) == 2 and maes[0] < maes[1]

    collected = _outputs(pipeline_run / "collect")
    assert collected["parameterValues"] == {"score": maes[0], "metric": "dev.mae", "direction": "min"}
    [metrics] = collected["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["dev.mae"] == maes[0] and "test.mae" in metrics["metadata"]
    [confusion] = collected["artifacts"]["confusion"]["artifacts"]
    assert "confusionMatrix" not in confusion.get("metadata", {})
    [best] = collected["artifacts"]["best"]["artifacts"]
    assert (best["metadata"]["tympan.metric"], best["metadata"]["tympan.direction"]) == ("dev.mae", "min")
    assert "ranked on dev.mae (lower is better)" in (pipeline_run / "collect/report").read_text()
    assert _outputs(pipeline_run / "champion")["parameterValues"]["Output"] is True
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = mlflow.MlflowClient(uri).get_model_version_by_alias("tones", "champion")
    assert (version.tags["tympan.metric"], float(version.tags["dev.mae"])) == ("dev.mae", maes[0])

    # the gate: strictly below the champion's mae, and below the threshold when one is set
    def beats(score, threshold=None, metric="dev.mae", direction="min"):
        return stages.beats_champion(score, "tones", metric, direction, threshold, uri=uri)

    assert beats(maes[0] - 1) and not beats(maes[0]) and not beats(maes[0] + 1)
    assert beats(maes[0] - 1, threshold=maes[0] - 0.5) and not beats(maes[0] - 1, threshold=maes[0] - 2)
    assert stages.beats_champion(1e6, "no-champion-yet", "dev.mae", "min", uri=uri)
    with pytest.raises(ConfigError, match="tones@champion .* has no metric 'dev.accuracy'"):
        beats(0.99, metric="dev.accuracy", direction="max")


def test_local_run_of_a_multilabel_task_collects_its_metrics_and_registers_on_map(tmp_path):
    """A multi-label run through kfp.local: collect ranks on dev.mAP (higher is better), logs the
    task's scalar metrics and no confusion matrix, and the registered version is tagged with it."""
    import mlflow

    from tests.conftest import TOY_REGRESSION
    from tympan import cli

    raw = {**TOY_REGRESSION, "experiment": "toy-multilabel", "dataset": {"preset": "ToyMultiLabel"}}
    raw["task"] = {"preset": "multilabel"}
    raw["augmentation"] = [{"target": "tympan.augmentations:MixUp"}]
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(raw))
    root = tmp_path / "pipe"
    argv = ["pipeline", "run-local", str(tmp_path / "mix.yaml"), "--root", str(root), "--model-name", "mix"]
    assert cli.main(argv) == 0
    [pipeline_run] = list((root / "kfp").glob("tympan-training-*"))
    [summary] = [json.loads(p.read_text()) for p in pipeline_run.glob("**/train/model/summary.json")]
    collected = _outputs(pipeline_run / "collect")
    assert collected["parameterValues"] == {"score": summary["dev"]["mAP"], "metric": "dev.mAP", "direction": "max"}
    [metrics] = collected["artifacts"]["metrics"]["artifacts"]
    assert {"dev.mAP", "dev.micro_f1", "dev.macro_f1"} <= set(metrics["metadata"])
    [confusion] = collected["artifacts"]["confusion"]["artifacts"]
    assert "confusionMatrix" not in confusion.get("metadata", {})
    version = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_model_version_by_alias("mix", "champion")
    assert (version.tags["tympan.metric"], version.tags["tympan.direction"]) == ("dev.mAP", "max")


# ---- submit to a Kubeflow Pipelines server ---------------------------------------------------


class FakeKfp(BaseHTTPRequestHandler):
    """The KFP v2beta1 REST endpoints kfp.Client uses to start runs, with in-memory state."""

    experiments: dict = {}
    requests: list = []

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        self.requests.append(("GET", url.path, urllib.parse.parse_qs(url.query)))
        if url.path == "/apis/v2beta1/healthz":
            return self._reply(200, {"commit_sha": "test", "tag_name": "2.5.0", "multi_user": False})
        if url.path == "/apis/v2beta1/experiments":
            query = urllib.parse.parse_qs(url.query)
            wanted = [p.get("stringValue", p.get("string_value")) for p in json.loads(query["filter"][0])["predicates"]]
            found = [e for e in self.experiments.values() if e["display_name"] in wanted]
            return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
        self._reply(404, {"error": f"not implemented: {url.path}", "code": 5})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            experiment = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[experiment["experiment_id"]] = experiment
            return self._reply(200, experiment)
        if self.path == "/apis/v2beta1/runs":
            return self._reply(200, {**body, "run_id": "run-42", "state": "PENDING"})
        if self.path == "/apis/v2beta1/recurringruns":
            return self._reply(200, {**body, "recurring_run_id": "job-7", "status": "ENABLED"})
        self._reply(404, {"error": f"not implemented: {self.path}", "code": 5})


@pytest.fixture
def kfp_server():
    FakeKfp.experiments, FakeKfp.requests = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _posted(path: str) -> list[dict]:
    return [body for method, p, body in FakeKfp.requests if method == "POST" and p == path]


def test_submit_uploads_the_spec_and_the_run_parameters(kfp_server, tmp_path, capsys):
    from tympan import cli

    package = tmp_path / "training.yaml"
    assert cli.main(["pipeline", "compile", "--output", str(package)]) == 0
    config = REPO / "pipelines/tiny.yaml"
    argv = ["pipeline", "submit", "--host", kfp_server, "--config", str(config), "--package", str(package)]
    argv += ["--mlflow-uri", "http://mlflow:5000", "--s3-endpoint", "http://minio:9000", "--threshold", "0.8"]
    assert cli.main([*argv, "--run-name", "nightly-1"]) == 0
    out = capsys.readouterr().out
    assert "run_id: run-42" in out and "experiment_id: exp-1" in out
    [experiment] = _posted("/apis/v2beta1/experiments")
    assert experiment["display_name"] == "tympan"
    [run] = _posted("/apis/v2beta1/runs")
    assert run["display_name"] == "nightly-1" and run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]
    compiled = list(yaml.safe_load_all(package.read_text()))
    assert spec["pipeline_spec"] == compiled[0] and spec["platform_spec"] == compiled[1]
    params = run["runtime_config"]["parameters"]
    assert params["config"] == config.read_text()
    assert params["mlflow_uri"] == "http://mlflow:5000" and params["s3_endpoint"] == "http://minio:9000"
    assert params["threshold"] == "0.8"  # text: empty means no threshold
    assert not [k for k in params if "secret" in k or "key" in k]

    # a recurring run in the same (now existing) experiment, with a 6-field cron
    assert cli.main([*argv, "--cron", "0 0 2 * * *"]) == 0
    assert "recurring_run_id: job-7" in capsys.readouterr().out
    assert len(_posted("/apis/v2beta1/experiments")) == 1
    [job] = _posted("/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert job["experiment_id"] == "exp-1" and int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert job["runtime_config"]["parameters"]["threshold"] == "0.8"
    assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "tympan-training"


def test_submit_errors_are_one_clear_line(kfp_server, tmp_path, capsys):
    from tympan import cli

    config = str(REPO / "pipelines/tiny.yaml")
    assert cli.main(["pipeline", "submit", "--host", kfp_server, "--config", config, "--cron", "0 2 * * *"]) == 1
    assert "6 fields" in capsys.readouterr().err
    assert cli.main(["pipeline", "submit", "--host", kfp_server, "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "no such config file" in capsys.readouterr().err
    assert cli.main(["pipeline", "submit", config]) == 1
    assert "--host URL" in capsys.readouterr().err
    assert cli.main(["pipeline", "submit", config, "--host", "http://127.0.0.1:9"]) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_plan_reads_a_config_from_object_storage(s3_server, tmp_path, monkeypatch):
    import boto3

    from tympan import stages
    from tympan.storage import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    text = (REPO / "pipelines/tiny.yaml").read_text()
    boto3.client("s3").put_object(Bucket="tympan-test", Key="configs/tiny.yaml", Body=text.encode())
    assert stages.plan("s3://tympan-test/configs/tiny.yaml") == stages.plan(text)
    with pytest.raises(TympanError, match="configs/missing.yaml"):
        stages.plan("s3://tympan-test/configs/missing.yaml")


def test_pipeline_commands_need_the_checkout(tmp_path, monkeypatch, capsys):
    from tympan import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages/tympan/cli.py"))
    assert cli.main(["pipeline", "compile"]) == 1
    assert "needs the tympan repository" in capsys.readouterr().err


def test_run_local_refuses_a_bad_config_before_starting(tmp_path, capsys):
    from tympan import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "pipelines/tiny.yaml").read_text().replace("batch_size:", "batch_sise:"))
    assert cli.main(["pipeline", "run-local", str(bad), "--root", str(tmp_path / "root")]) == 1
    assert "training.batch_sise: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_deploy_writes_the_inference_service_and_applies_it_only_in_a_cluster(tmp_path, monkeypatch):
    from tympan import stages

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    service = stages.inference_service("Digits_v2", "3", _images()["SERVE_IMAGE"], "http://mlflow:5000", "audio")
    assert stages.deploy(service, tmp_path / "isvc.yaml") is False
    written = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert written["metadata"] == {
        "name": "digits-v2",
        "namespace": "audio",
        "labels": {"tympan/model": "digits-v2", "tympan/version": "3"},
    }
    [container] = written["spec"]["predictor"]["containers"]
    assert container["image"] == _images()["SERVE_IMAGE"]
    assert container["args"][0] == "models:/Digits_v2/3"  # after the image's `tympan serve` entrypoint
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]
