"""The Helm charts, rendered by the real Helm engine (helm-python-sdk) and checked object by object.

Core kinds go through kubernetes-validate (strict: unknown fields fail); the InferenceService through
the openAPIV3Schema of KServe's CRD (tests/data/kserve). Bad values must be refused by values.schema.json
with a message naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFERENCE = ROOT / "charts" / "tympan-inference"
PLATFORM = ROOT / "charts" / "tympan-platform"
CRD = Path(__file__).parent / "data" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
KUBE_VERSION = "1.33"  # the chart says kubeVersion >= 1.29; kubernetes-validate 1.37 ships schemas up to 1.37

# the least an install must set (nothing else): the model's location and credentials
INFERENCE_REQUIRED = {
    "model": {"storageUri": "s3://mlflow/mlflow/1/models/m-abc/artifacts"},
    "s3": {"accessKeyId": "tympan", "secretAccessKey": "tympan-secret"},
}
PLATFORM_REQUIRED = {
    "s3": {"accessKeyId": "tympan", "secretAccessKey": "tympan-secret"},
    "postgresql": {"password": "db-secret-1"},
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (kubectl's strict decoding does too)."""


def _mapping(loader, node, deep=False):
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(chart: Path, values: dict, name: str = "tympan-platform", namespace: str = "mlops") -> list[dict]:
    """Every object the chart renders (NOTES.txt left out), parsed strictly."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc]
    return objects


@pytest.fixture(scope="module")
def isvc_schema() -> dict:
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return version["schema"]["openAPIV3Schema"]


def validate(objects: list[dict], isvc_schema: dict) -> None:
    for obj in objects:
        if obj["kind"] == "InferenceService":
            assert obj["apiVersion"] == "serving.kserve.io/v1beta1"
            jsonschema.Draft7Validator(isvc_schema).validate(obj)
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def images_env() -> dict:
    lines = (ROOT / "images" / "images.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def pod_specs(objects: list[dict]) -> list[dict]:
    specs = [obj["spec"]["template"]["spec"] for obj in objects if obj["kind"] in ("Deployment", "StatefulSet", "Job")]
    return specs + [obj["spec"]["predictor"] for obj in by_kind(objects, "InferenceService")]


def assert_non_root(objects: list[dict]) -> None:
    specs = pod_specs(objects)
    assert specs
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


# ------------------------------------------------------------------ lint


@pytest.mark.parametrize(
    "chart, values",
    [
        (INFERENCE, INFERENCE_REQUIRED),
        (INFERENCE, yaml.safe_load((INFERENCE / "examples" / "values-gpu-canary.yaml").read_text())),
        (PLATFORM, PLATFORM_REQUIRED),
        (PLATFORM, yaml.safe_load((PLATFORM / "examples" / "values-external.yaml").read_text())),
    ],
    ids=["inference", "inference-gpu-canary", "platform", "platform-external"],
)
def test_helm_lint_strict_passes(chart, values):
    report = helm.lint(chart, values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], (problems, report["errors"])


def test_values_files_pass_yamllint():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig("extends: default\nrules: {line-length: {max: 120}, document-start: disable}")
    files = [INFERENCE / "values.yaml", PLATFORM / "values.yaml", *INFERENCE.glob("examples/*.yaml")]
    files += PLATFORM.glob("examples/*.yaml")
    for path in files:
        problems = list(linter.run(path.read_text(), config))
        assert not problems, f"{path}: {problems}"


@pytest.mark.parametrize("chart", [INFERENCE, PLATFORM], ids=["inference", "platform"])
def test_every_top_level_value_is_in_the_schema_and_commented(chart):
    schema = json.loads((chart / "values.schema.json").read_text())
    lines = (chart / "values.yaml").read_text().splitlines()
    keys = {line.split(":")[0] for line in lines if line and line[0].isalpha()}
    assert keys <= set(schema["properties"]), keys - set(schema["properties"])
    for i, line in enumerate(lines):
        if line and line[0].isalpha():
            j = i - 1  # a run of one-line keys (minReplicas, maxReplicas) shares the comment above it
            while j >= 0 and lines[j][:1].isalpha() and ": " in lines[j]:
                j -= 1
            assert lines[j].startswith("#") or "#" in line, f"{chart.name}/values.yaml: {line!r} has no comment"


# ------------------------------------------------------------------ tympan-inference


def test_inference_defaults_render_valid_objects(isvc_schema):
    objects = render(INFERENCE, INFERENCE_REQUIRED, name="digits", namespace="serving")
    validate(objects, isvc_schema)
    assert sorted(obj["kind"] for obj in objects) == ["InferenceService", "Secret", "ServiceAccount"]
    (isvc,) = by_kind(objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}

    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert env["STORAGE_URI"] == INFERENCE_REQUIRED["model"]["storageUri"]
    assert env["OMP_NUM_THREADS"] == "2"  # the CPU limit
    assert container["name"] == "kserve-container"
    assert container["command"] == ["tympan", "serve"]
    assert container["args"][:8] == [
        "/mnt/models",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--name",
        "digits",
        "--max-duration",
    ]
    assert container["ports"][0]["containerPort"] == 8080
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"] == {"path": "/v2/models/digits/ready", "port": 8080}
    assert live["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert live["initialDelaySeconds"] >= 30 and ready["periodSeconds"] == 10
    env_file = images_env()
    assert container["image"] == f"{env_file['REGISTRY']}/{env_file['SERVE_IMAGE']}:{env_file['TAG']}"
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleMetric"]) == (1, 3, "cpu")
    assert "canaryTrafficPercent" not in predictor and "batcher" not in predictor
    assert not any("gpu" in key for key in container["resources"]["limits"])
    assert "nodeSelector" not in predictor and "tolerations" not in predictor
    assert_non_root(objects)

    (secret,) = by_kind(objects, "Secret")
    (account,) = by_kind(objects, "ServiceAccount")
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "tympan", "AWS_SECRET_ACCESS_KEY": "tympan-secret"}
    annotations = secret["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "tympan-platform-minio.mlops:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    assert annotations["serving.kserve.io/s3-region"] == "us-east-1"


def test_inference_gpu_canary_file(isvc_schema):
    values = yaml.safe_load((INFERENCE / "examples" / "values-gpu-canary.yaml").read_text())
    objects = render(INFERENCE, values, name="digits", namespace="serving")
    validate(objects, isvc_schema)
    # the existing secret is used: no Secret of our own, the ServiceAccount points at it
    assert sorted(obj["kind"] for obj in objects) == ["InferenceService", "ServiceAccount"]
    (account,) = by_kind(objects, "ServiceAccount")
    assert account["secrets"] == [{"name": "tympan-s3"}]
    (isvc,) = by_kind(objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]

    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert predictor["canaryTrafficPercent"] == 10
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 4)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    assert predictor["batcher"] == {"maxBatchSize": 32, "maxLatency": 20, "timeout": 60}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["cpu"] == "4"
    assert predictor["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    env_file = images_env()
    assert container["image"] == f"{env_file['REGISTRY']}/{env_file['TRAIN_IMAGE']}:{env_file['TAG']}"
    assert {e["name"]: e["value"] for e in container["env"]}["OMP_NUM_THREADS"] == "4"
    assert_non_root(objects)


def test_millicpu_limit_gives_one_thread():
    values = _merge(INFERENCE_REQUIRED, {"resources": {"limits": {"cpu": "1500m"}}})
    (isvc,) = by_kind(render(INFERENCE, values), "InferenceService")
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == "1"


def test_inference_probes_are_tuned_or_turned_off_from_values(isvc_schema):
    probes = {"readiness": {"periodSeconds": 3, "failureThreshold": 1}, "liveness": {"enabled": False}}
    objects = render(INFERENCE, _merge(INFERENCE_REQUIRED, {"model": {"name": "kws"}, "probes": probes}))
    validate(objects, isvc_schema)
    (isvc,) = by_kind(objects, "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert "livenessProbe" not in container
    ready = container["readinessProbe"]
    assert ready["httpGet"]["path"] == "/v2/models/kws/ready"
    assert (ready["periodSeconds"], ready["failureThreshold"], ready["timeoutSeconds"]) == (3, 1, 5)


def test_validators_catch_a_broken_object(isvc_schema):
    """The checks above can fail: a mistyped field in a rendered object is caught by each validator."""
    objects = render(INFERENCE, INFERENCE_REQUIRED)
    (isvc,) = by_kind(objects, "InferenceService")
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="minReplicas|'one'"):
        validate([isvc], isvc_schema)
    (account,) = by_kind(objects, "ServiceAccount")
    account["automountServiceAccountToken"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        validate([account], isvc_schema)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"minReplicas": -1}, "/minReplicas"),
        ({"maxReplicas": 0}, "/maxReplicas"),
        ({"canaryTrafficPercent": 10}, "/canaryTrafficPercent"),  # canary needs Serverless
        ({"deploymentMode": "Serverless", "canaryTrafficPercent": 101}, "/canaryTrafficPercent"),
        ({"minReplicas": 0}, "/minReplicas"),  # scale to zero needs Serverless
        ({"scaleMetric": "rps"}, "/scaleMetric"),  # a Knative metric in Standard mode
        ({"deploymentMode": "RawDeployment"}, "/deploymentMode"),
        ({"modle": {"name": "x"}}, "'modle'"),  # a typo'd key
        ({"gpu": {"enabled": True, "count": 0}}, "/gpu/count"),
        ({"gpu": {"enabled": True, "cuont": 1}}, "'cuont'"),
        ({"batcher": {"enabled": True, "maxBatchSize": 0}}, "/batcher/maxBatchSize"),
        ({"model": {"name": "Digits_1"}}, "/model/name"),
        ({"model": {"storageUri": "models:/digits@champion"}}, "/model/storageUri"),
        ({"s3": {"accessKeyId": ""}}, "/s3/accessKeyId"),
        ({"resources": {"limits": {"cpu": "two"}}}, "/resources/limits/cpu"),
        ({"model": {"maxClips": 0}}, "/model/maxClips"),
        ({"model": {"maxBodyMb": 0}}, "/model/maxBodyMb"),
        ({"model": {"maxSamples": 1.5}}, "/model/maxSamples"),
        ({"probes": {"readiness": {"periodSeconds": 0}}}, "/probes/readiness/periodSeconds"),
        ({"probes": {"liveness": {"path": "/healthz"}}}, "'path'"),
        ({"probes": {"startup": {"enabled": True}}}, "'startup'"),
    ],
)
def test_inference_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(helm.HelmValuesError) as caught:
        render(INFERENCE, _merge(INFERENCE_REQUIRED, override))
    assert key in str(caught.value)


def test_inference_without_storage_uri_is_refused():
    with pytest.raises(helm.HelmValuesError, match="/model/storageUri"):
        render(INFERENCE, {"s3": INFERENCE_REQUIRED["s3"]})


def test_inference_max_below_min_replicas_is_refused():
    with pytest.raises(helm.HelmRenderError, match=r"maxReplicas \(2\) is below minReplicas \(3\)"):
        render(INFERENCE, _merge(INFERENCE_REQUIRED, {"minReplicas": 3, "maxReplicas": 2}))


def test_inference_without_s3_renders_no_account_or_secret(isvc_schema):
    objects = render(INFERENCE, {"model": INFERENCE_REQUIRED["model"], "s3": {"enabled": False}})
    validate(objects, isvc_schema)
    assert [obj["kind"] for obj in objects] == ["InferenceService"]
    assert "serviceAccountName" not in objects[0]["spec"]["predictor"]


# ------------------------------------------------------------------ tympan-platform


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _check_references(objects: list[dict], existing: set[str] = frozenset()) -> None:
    """Every secret a pod reads is rendered or named as existing; every Service selects some pod."""
    secrets = {obj["metadata"]["name"] for obj in by_kind(objects, "Secret")} | set(existing)
    for spec in pod_specs(objects):
        for container in spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, ref
            for item in container.get("envFrom", []):
                assert item["secretRef"]["name"] in secrets
    pods = [
        obj["spec"]["template"]["metadata"]["labels"] for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), service["metadata"]["name"]


def test_platform_defaults_render_valid_objects(isvc_schema):
    objects = render(PLATFORM, PLATFORM_REQUIRED)
    validate(objects, isvc_schema)
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == sorted(
        ["Secret", "Secret", "Secret", "Service", "Service", "Service", "Deployment", "Deployment", "StatefulSet"]
        + ["PersistentVolumeClaim", "Job"]
    )
    _check_references(objects)
    assert_non_root(objects)

    (mlflow,) = [obj for obj in by_kind(objects, "Deployment") if obj["metadata"]["name"] == "tympan-platform-mlflow"]
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    assert container["command"] == ["mlflow", "server"]
    args = container["args"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    assert "--default-artifact-root=s3://mlflow/mlflow" in args and "--no-serve-artifacts" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "tympan-platform-mlflow.mlops.svc:5000" in allowed
    env = _env(container)
    assert env["DB_PASSWORD"]["secretKeyRef"] == {"name": "tympan-platform-db", "key": "password"}
    # DB_PASSWORD is defined before the URL that expands it
    names = [e["name"] for e in container["env"]]
    assert names.index("DB_PASSWORD") < names.index("MLFLOW_BACKEND_STORE_URI")
    assert env["MLFLOW_BACKEND_STORE_URI"] == (
        "postgresql://mlflow:$(DB_PASSWORD)@tympan-platform-postgresql.mlops.svc:5432/mlflow"
    )
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://tympan-platform-minio.mlops.svc:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "tympan-platform-s3"
    services = {obj["metadata"]["name"] for obj in by_kind(objects, "Service")}
    assert {"tympan-platform-postgresql", "tympan-platform-minio", "tympan-platform-mlflow"} <= services

    (postgres,) = by_kind(objects, "StatefulSet")
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    secrets = {obj["metadata"]["name"]: obj["stringData"] for obj in by_kind(objects, "Secret")}
    assert secrets["tympan-platform-db"] == {"password": "db-secret-1"}
    (job,) = by_kind(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}[
        "BUCKET"
    ] == "mlflow"


def test_platform_release_name_prefixes_every_object(isvc_schema):
    objects = render(PLATFORM, PLATFORM_REQUIRED, name="team-a", namespace="ml")
    validate(objects, isvc_schema)
    names = {obj["metadata"]["name"] for obj in objects}
    assert all(name.startswith("team-a-tympan-platform-") for name in names - {"tympan-s3"})
    _check_references(objects)


def test_platform_external_database_and_s3(isvc_schema):
    values = yaml.safe_load((PLATFORM / "examples" / "values-external.yaml").read_text())
    objects = render(PLATFORM, values)
    validate(objects, isvc_schema)
    assert sorted(obj["kind"] for obj in objects) == ["Deployment", "Service"]  # no DB, no MinIO, no own secrets
    _check_references(objects, existing={"mlflow-db", "tympan-s3"})
    (mlflow,) = by_kind(objects, "Deployment")
    assert mlflow["spec"]["replicas"] == 2
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["MLFLOW_BACKEND_STORE_URI"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}
    assert "MLFLOW_S3_ENDPOINT_URL" not in env  # AWS S3
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "--default-artifact-root=s3://acme-ml-artifacts/mlflow" in container["args"]
    assert any(a.startswith("--allowed-hosts=") and a.endswith(",mlflow.example.com") for a in container["args"])


def test_platform_proxy_artifact_mode():
    values = _merge(PLATFORM_REQUIRED, {"mlflow": {"artifactMode": "proxy"}})
    (mlflow,) = [obj for obj in by_kind(render(PLATFORM, values), "Deployment") if "mlflow" in obj["metadata"]["name"]]
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--artifacts-destination=s3://mlflow/mlflow" in args and "--serve-artifacts" in args
    assert not any(a.startswith("--default-artifact-root") for a in args)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"postgresql": {"enabled": False}}, "/externalDatabase"),
        ({"postgresql": {"password": ""}}, "/postgresql/password"),
        ({"postgresql": {"password": "has@sign!"}}, "/postgresql/password"),  # would break the URL
        ({"s3": {"secretAccessKey": "short"}}, "/s3/secretAccessKey"),
        ({"s3": {"bucket": "Bad_Bucket"}}, "/s3/bucket"),
        ({"mlflow": {"artifactMode": "local"}}, "/mlflow/artifactMode"),
        ({"mlflow": {"replicas": 0}}, "/mlflow/replicas"),
        ({"minio": {"storageSize": "20GB"}}, "/minio/storageSize"),
        ({"mlfow": {}}, "'mlfow'"),
    ],
)
def test_platform_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(helm.HelmValuesError) as caught:
        render(PLATFORM, _merge(PLATFORM_REQUIRED, override))
    assert key in str(caught.value)


def test_platform_pipeline_secret_matches_what_the_pipeline_reads():
    values = _merge(PLATFORM_REQUIRED, {"pipelineSecret": {"namespace": "kubeflow-user"}})
    (secret,) = [obj for obj in render(PLATFORM, values) if obj["metadata"]["name"] == "tympan-s3"]
    assert secret["metadata"]["namespace"] == "kubeflow-user"
    assert secret["stringData"] == {"access_key_id": "tympan", "secret_access_key": "tympan-secret"}
    cluster = ROOT / "pipelines" / "cluster.yaml"
    if not cluster.is_file():
        pytest.skip("no pipelines/cluster.yaml to compare with")
    wanted = {s["name"]: set(s["env"].values()) for s in yaml.safe_load(cluster.read_text())["secrets"]}
    assert set(secret["stringData"]) == wanted[secret["metadata"]["name"]]


def test_inference_default_endpoint_is_the_platform_minio():
    """The two charts' defaults fit together: release tympan-platform in namespace mlops."""
    platform = render(PLATFORM, PLATFORM_REQUIRED, name="tympan-platform", namespace="mlops")
    (minio,) = [obj for obj in by_kind(platform, "Service") if obj["metadata"]["name"].endswith("-minio")]
    port = next(p["port"] for p in minio["spec"]["ports"] if p["name"] == "s3")
    endpoint = f"{minio['metadata']['name']}.{minio['metadata']['namespace']}:{port}"
    inference = yaml.safe_load((INFERENCE / "values.yaml").read_text())
    assert inference["s3"]["endpoint"] == endpoint


def test_predictor_command_fits_the_real_tympan_cli(monkeypatch):
    """The container's `tympan serve` arguments parse with tympan's own CLI into the values of the chart
    (the server start itself is replaced by a recorder: starting KServe is tests/test_serving.py's job)."""
    from tympan import cli, serving

    model = {"name": "digits", "maxDuration": 12.5, "maxBatch": 4, "maxClips": 8, "maxBodyMb": 2.5}
    model["maxSamples"] = 123_000_000  # Helm reads numbers as floats: rendered whole, never as 1.23e+08
    values = _merge(INFERENCE_REQUIRED, {"model": model})
    (isvc,) = by_kind(render(INFERENCE, values), "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["command"][0] == "tympan"
    calls = []
    monkeypatch.setattr(serving, "serve", lambda model, **kwargs: calls.append((model, kwargs)))
    assert cli.main([*container["command"][1:], *container["args"]]) == 0
    (model, kwargs), *_ = calls
    assert model == "/mnt/models"
    assert kwargs["name"] == "digits" and kwargs["port"] == 8080 and kwargs["host"] == "0.0.0.0"
    assert kwargs["max_duration"] == 12.5 and kwargs["max_batch"] == 4
    assert kwargs["max_clips"] == 8 and kwargs["max_body_mb"] == 2.5
    assert kwargs["max_samples"] == 123_000_000


def test_serving_image_command_fits_the_real_tympan_cli(monkeypatch):
    """The serving image's ENTRYPOINT + CMD parse with tympan's CLI and listen on every interface (tympan serve's
    own default, 127.0.0.1, would refuse connections from outside the container)."""
    from tests.test_images import DOCKERFILES, stages
    from tympan import cli, serving

    final = dict(stages(DOCKERFILES["serve"])[-1])
    command = json.loads(final["ENTRYPOINT"]) + json.loads(final["CMD"])
    assert command[:2] == ["tympan", "serve"]
    calls = []
    monkeypatch.setattr(serving, "serve", lambda model, **kwargs: calls.append((model, kwargs)))
    assert cli.main(command[1:]) == 0
    ((model, kwargs),) = calls
    assert model == "/mnt/models" and kwargs["host"] == "0.0.0.0" and kwargs["port"] == int(final["EXPOSE"])


def test_pipeline_inference_service_command_fits_the_real_tympan_cli(monkeypatch):
    """The pipeline's deploy step (tympan.stages.inference_service) also serves on every interface of its pod."""
    from tympan import cli, serving, stages

    service = stages.inference_service("digits", "3", "tympan-serve:0.1.0", "http://mlflow:5000")
    (container,) = service["spec"]["predictor"]["containers"]
    calls = []
    monkeypatch.setattr(serving, "serve", lambda model, **kwargs: calls.append((model, kwargs)))
    assert cli.main(["serve", *container["args"]]) == 0
    ((model, kwargs),) = calls
    assert model == "models:/digits/3" and kwargs["host"] == "0.0.0.0" and kwargs["port"] == 8080
