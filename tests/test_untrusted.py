"""Loading a bundle or an MLflow model is data-only: tampered files run no code and say why they
were refused; `trust_code` opts in for one's own custom classes. Every payload here would create
a marker file if it ran."""

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import S3_BUCKET, free_port
from tympan import audio, bundle, registry
from tympan.cli import main
from tympan.errors import DataError


def copy_bundle(tiny_run, tmp_path, name="bundle", **changes):
    """The tiny run's bundle copied to tmp_path/name, with top-level bundle.json keys replaced; a
    `features` change is one transform, put first in the online chain."""
    copy = tmp_path / name
    shutil.copytree(tiny_run[0] / "bundle", copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    if "features" in changes:
        features = manifest["features"]
        changes["features"] = {**features, "online": [changes["features"], *features["online"]]}
    if "task" in changes:
        changes["task"] = {**manifest["task"], **changes["task"]}
    (copy / "bundle.json").write_text(json.dumps({**manifest, **changes}))
    return copy


def wav(tiny_workspace):
    return sorted((tiny_workspace[0] / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[0]


def module_file(tmp_path, marker, source="class Evil:\n    pass\n"):
    """A Python file that creates `marker` when it is imported."""
    path = tmp_path / "evil.py"
    path.write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n{source}")
    return path


def refused_targets(tmp_path, marker, manifest):
    """(role, component) pairs a bundle must not load without trust_code."""
    evil = module_file(tmp_path, marker)
    model_args = manifest["model"]["args"]
    return [
        ("features", {"target": "subprocess:Popen", "args": {"args": ["touch", str(marker)]}}),
        ("model", {"target": f"{evil}:Evil", "args": {}}),
        ("model", {"target": "tympan.models.cnn:torch", "args": {}}),  # in tympan, but not a class
        ("model", {"target": "tympan.transforms.logmel:PannLogMel", "args": {}}),  # a class of the other role
        ("features", {"target": "tympan.transforms.logmel:torch.nn.Module", "args": {}}),
        ("features", {"target": "tympan.models.cnn:SmallCNN", "args": {}}),  # a class of another role
        ("task", {"target": "subprocess:Popen", "args": {"args": ["touch", str(marker)]}}),
        ("task", {"target": f"{evil}:Evil", "args": {}}),
        ("task", {"target": "tympan.tasks.base:Path", "args": {}}),  # in tympan.tasks, but not a Task
        ("model", {"target": "tympan.models.cnn:SmallCNN:x", "args": model_args}),
        ("model", {"target": "tympan.models/../../evil.py:Evil", "args": {}}),
    ]


def test_tampered_bundle_runs_no_code(tiny_run, tmp_path):
    marker = tmp_path / "PWNED"
    manifest = json.loads((tiny_run[0] / "bundle/bundle.json").read_text())
    for number, (role, component) in enumerate(refused_targets(tmp_path, marker, manifest)):
        tampered = copy_bundle(tiny_run, tmp_path, f"bundle{number}", **{role: component})
        with pytest.raises(bundle.UntrustedCodeError) as refused:
            bundle.load(tampered)
        message = str(refused.value)
        assert f"the {role} target {component['target']!r}" in message and "--trust-code" in message
        assert str(tampered / "bundle.json") in message
        assert not marker.exists(), f"{component['target']} ran"


def test_cli_refuses_a_tampered_bundle_in_one_line(tiny_run, tiny_workspace, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    payload = {"target": "subprocess:Popen", "args": {"args": ["touch", str(marker)]}}
    tampered = copy_bundle(tiny_run, tmp_path, features=payload)
    assert main(["inference", str(tampered), str(wav(tiny_workspace))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tympan: error: ") and "subprocess:Popen" in err[0]
    assert "names code outside tympan" in err[0] and "--trust-code" in err[0]
    assert not marker.exists()


def test_trust_code_builds_ones_own_class(tiny_run, tiny_workspace, tmp_path, capsys):
    marker = tmp_path / "imported"
    own = module_file(tmp_path, marker, "from tympan.models.cnn import SmallCNN\n\nclass MyCNN(SmallCNN):\n    pass\n")
    manifest = json.loads((tiny_run[0] / "bundle/bundle.json").read_text())
    custom = copy_bundle(tiny_run, tmp_path, model={**manifest["model"], "target": f"{own}:MyCNN"})
    with pytest.raises(bundle.UntrustedCodeError, match="MyCNN"):
        bundle.load(custom)
    assert not marker.exists(), "the file was imported before the refusal"
    clip = wav(tiny_workspace)
    assert main(["inference", str(custom), str(clip)]) == 1 and "--trust-code" in capsys.readouterr().err

    trusted = bundle.load(custom, trust_code=True)
    assert marker.exists() and type(trusted.model).__name__ == "MyCNN"
    samples, rate = audio.load(clip)
    expected = bundle.load(tiny_run[0] / "bundle").predict(samples, rate).scores
    np.testing.assert_allclose(trusted.predict(samples, rate).scores, expected)
    assert main(["inference", str(custom), str(clip), "--trust-code"]) == 0


class Payload:
    """Unpickling this creates `path`: what a tampered python_model.pkl would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickled_model_dir(tiny_run, tmp_path, marker):
    """An MLflow model directory in the cloudpickle pyfunc layout whose pickle is a payload, with a
    real tympan bundle among its artifacts."""
    model = tmp_path / "mnt/models"
    (model / "artifacts").mkdir(parents=True)
    shutil.copytree(tiny_run[0] / "bundle", model / "artifacts/bundle")
    (model / "python_model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    pyfunc = {
        "loader_module": "mlflow.pyfunc.model",
        "python_model": "python_model.pkl",
        "artifacts": {"bundle": {"path": "artifacts/bundle", "uri": "bundle"}},
        "cloudpickle_version": "3.1.3",
        "python_version": "3.11.7",
        "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
    }
    (model / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": pyfunc}, "mlflow_version": "3.17.2"}))
    return model


def test_tampered_mlflow_model_is_refused_without_unpickling(tiny_run, tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof))).close()
    assert proof.exists(), "the payload works when unpickled"

    marker = tmp_path / "PWNED"
    model = pickled_model_dir(tiny_run, tmp_path, marker)
    with pytest.raises(bundle.UntrustedCodeError) as refused:
        bundle.load(model)  # as KServe's /mnt/models would be
    message = str(refused.value)
    assert str(model / "MLmodel") in message and "pickled Python model (python_model.pkl)" in message
    assert "tympan register" in message and "--trust-code" in message
    assert not marker.exists()
    # with trust, the bundle inside is used; the pickle is still never loaded
    assert bundle.load(model, trust_code=True).directory == model / "artifacts/bundle"
    assert not marker.exists()


@pytest.mark.parametrize(
    "pyfunc, needle",
    [
        ({"loader_module": "evil", "data": "artifacts/bundle"}, "loader_module is 'evil'"),
        ({"loader_module": bundle.LOADER_MODULE, "data": "artifacts/bundle", "code": "code"}, "ships code (code/)"),
        ({"loader_module": bundle.LOADER_MODULE, "data": "../../outside"}, "leads outside the model directory"),
        ({"loader": "x"}, "loader_module is None"),
    ],
)
def test_mlflow_model_of_another_loader_is_refused(pyfunc, needle, tiny_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_run[0] / "bundle", model / "artifacts/bundle")
    (model / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": pyfunc}}))
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        bundle.load(model)


def test_mlflow_model_config_does_not_grant_trust(tiny_run, tmp_path):
    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    payload = {"target": "subprocess:Popen", "args": {"args": ["touch", str(marker)]}}
    copy_bundle(tiny_run, model, "bundle", features=payload)
    pyfunc = {"loader_module": bundle.LOADER_MODULE, "data": "bundle", "model_config": {"trust_code": True}}
    (model / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": pyfunc}}))
    with pytest.raises(bundle.UntrustedCodeError, match="subprocess:Popen"):
        bundle.load(model)
    assert not marker.exists()


def test_register_and_load_a_custom_class_only_with_trust(tiny_run, tiny_workspace, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    own = tmp_path / "own.py"
    own.write_text("from tympan.models.cnn import SmallCNN\n\nclass MyCNN(SmallCNN):\n    pass\n")
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run, ignore=shutil.ignore_patterns("best", "last"))
    manifest = json.loads((run / "bundle/bundle.json").read_text())
    (run / "bundle/bundle.json").write_text(
        json.dumps({**manifest, "model": {**manifest["model"], "target": f"{own}:MyCNN"}})
    )

    with pytest.raises(bundle.UntrustedCodeError, match="MyCNN"):
        registry.register(run, "custom")
    assert not (tmp_path / "mlruns.db").exists(), "nothing is logged for a refused bundle"
    registry.register(run, "custom", trust_code=True)
    with pytest.raises(bundle.UntrustedCodeError, match="MyCNN"):
        bundle.load("models:/custom/1")
    with pytest.raises(bundle.UntrustedCodeError, match="MyCNN"):
        mlflow.pyfunc.load_model("models:/custom/1")
    samples, rate = audio.load(wav(tiny_workspace))
    model = mlflow.pyfunc.load_model("models:/custom/1", model_config={"trust_code": True})
    table = model.predict(samples[None, :], params={"sample_rate": rate})
    expected = bundle.load("models:/custom/1", trust_code=True).predict(samples, rate)
    assert table["label"][0] == expected.outputs["label"]


# ---- targets that look like tympan's own modules: every role, every loader

ROLE_PACKAGES = {"model": "tympan.models", "features": "tympan.transforms", "task": "tympan.tasks"}


def lookalikes(package):
    """Targets a resolver might read as a file or a module outside the installed tympan."""
    return [
        f"{package}.evil.py:Evil",  # dotted, ends in .py: was read as a file in the working directory
        f"{package}.evil:Evil",  # a module that only the planted folders hold
        f"{package}.evil.py.x:Evil",
        "evil:Evil",
        "./evil.py:Evil",
        f"{package}/../evil.py:Evil",
        f"{package}.evil.py:Evil ",
    ]


def plant(folder, marker):
    """Marker-writing Python files at every place a resolver could look for the targets above:
    `folder/<dotted name>.py`, `folder/evil.py` and `folder/tympan/<package>/evil(.py)`."""
    source = f"from pathlib import Path\nPath({str(marker)!r}).touch()\nclass Evil:\n    pass\n"
    names = ["evil.py", *(f"{p}.evil.py" for p in [*ROLE_PACKAGES.values(), "tympan.augmentations"])]
    for package in [*ROLE_PACKAGES.values(), "tympan.augmentations"]:
        inner = folder.joinpath(*package.split("."))
        names += [f"{inner.relative_to(folder)}/evil.py", f"{inner.relative_to(folder)}/evil/py.py"]
        names += [f"{inner.relative_to(folder)}/evil/__init__.py", f"{inner.relative_to(folder)}/evil/py/x.py"]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source)


def with_target(manifest, role, target):
    """`manifest` with `target` in `role`: the model, the task, the first online transform, or an
    augmentation in the pipeline record (beside an adapter naming a file)."""
    if role == "features":
        online = [{"target": target, "args": {}}, *manifest["features"]["online"]]
        return {**manifest, "features": {**manifest["features"], "online": online}}
    if role == "augmentations":
        adapter = {"target": "tympan.augmentations:Audiomentations", "args": {"transform": "evil.py:Evil"}}
        record = {**manifest["pipeline"], "augmentations": [{"target": target, "args": {}}, adapter]}
        return {**manifest, "pipeline": record}
    return {**manifest, role: {**manifest[role], "target": target}}


def hostile_bundle(tiny_run, tmp_path, marker, name, role, target):
    """The tiny bundle with `target` in `role`, evil files planted inside."""
    copy = tmp_path / name
    shutil.copytree(tiny_run[0] / "bundle", copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps(with_target(manifest, role, target)))
    plant(copy, marker)
    return copy


def test_lookalike_targets_never_import_a_file(tiny_run, tmp_path, monkeypatch):
    """Every look-alike in every role is refused by `bundle.load` run from inside the bundle, with
    the marker files planted there and in the working directory; none of them runs."""
    marker = tmp_path / "PWNED"
    plant(tmp_path, marker)
    number = 0
    for role, package in ROLE_PACKAGES.items():
        for target in lookalikes(package):
            number += 1
            tampered = hostile_bundle(tiny_run, tmp_path, marker, f"b{number}", role, target)
            monkeypatch.chdir(tampered)
            with pytest.raises(bundle.UntrustedCodeError) as refused:
                bundle.load(".")
            assert f"the {role} target {target!r}" in str(refused.value)
            assert not marker.exists(), f"{role} {target} ran"
    # the augmentations a bundle records are read by people, never built
    tampered = hostile_bundle(
        tiny_run, tmp_path, marker, "augment", "augmentations", "tympan.augmentations.evil.py:Evil"
    )
    monkeypatch.chdir(tampered)
    assert bundle.load(".").name == "tiny" and not marker.exists()


def test_user_file_targets_need_a_path_separator(tmp_path, monkeypatch):
    from tympan.targets import resolve_target

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    plant(tmp_path, marker)
    with pytest.raises(ValueError, match=r"a file target needs a path separator, e.g. './evil.py:Evil'"):
        resolve_target("evil.py:Evil")
    with pytest.raises(ValueError, match=r"needs a path separator, e.g. './tympan.models.evil.py:Evil'"):
        resolve_target("tympan.models.evil.py:Evil")
    with pytest.raises(ValueError, match="cannot import tympan.models.evil"):
        resolve_target("tympan.models.evil:Evil")
    assert not marker.exists()
    assert resolve_target("./evil.py:Evil").__name__ == "Evil" and marker.exists()


@pytest.fixture
def registry_here(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    yield tmp_path
    mlflow.set_tracking_uri(None)


def tamper_registered(tiny_run, root, name, role, target, marker):
    """Register the tiny run as `name`, then put `target` in `role` of the stored copy (what a
    person with write access to the artifact store could do) and plant the evil files beside it."""
    registry.register(tiny_run[0], name)
    stored = [p.parent for p in root.rglob("bundle.json") if "artifacts" in p.parts or "mlartifacts" in p.parts]
    assert stored, "the registered bundle was not found in the local artifact store"
    for directory in stored:
        manifest = json.loads((directory / "bundle.json").read_text())
        (directory / "bundle.json").write_text(json.dumps(with_target(manifest, role, target)))
        plant(directory, marker)


@pytest.mark.parametrize("role", list(ROLE_PACKAGES))
def test_lookalike_targets_refused_through_every_loader(
    role, tiny_run, tiny_workspace, tmp_path, registry_here, s3_server, monkeypatch
):
    """One look-alike per role, through the CLI's inference and serve run from inside the bundle,
    a registered model (`models:/`) and an `s3://` copy: each refuses, and no marker appears."""
    from tympan import storage

    marker = tmp_path / "PWNED"
    target = f"{ROLE_PACKAGES[role]}.evil.py:Evil"
    plant(tmp_path, marker)
    tampered = hostile_bundle(tiny_run, tmp_path, marker, "hostile", role, target)
    tympan = str(Path(sys.executable).parent / "tympan")
    clip = str(wav(tiny_workspace))
    inference = subprocess.run([tympan, "inference", ".", clip], cwd=tampered, capture_output=True, text=True)
    assert inference.returncode == 1 and "refusing to load" in inference.stderr, inference.stderr
    serve = [tympan, "serve", ".", "--port", str(free_port())]
    served = subprocess.run(serve, cwd=tampered, capture_output=True, text=True, timeout=120)
    assert served.returncode != 0 and "refusing to load" in served.stderr, served.stderr[-2000:]

    uri = storage.upload(tampered, f"s3://{S3_BUCKET}/hostile/{role}")
    with pytest.raises(bundle.UntrustedCodeError, match=re.escape(target)):
        bundle.load(uri)
    tamper_registered(tiny_run, registry_here, f"hostile-{role}", role, target, marker)
    with pytest.raises(bundle.UntrustedCodeError, match=re.escape(target)):
        bundle.load(f"models:/hostile-{role}/1")
    assert not marker.exists()
