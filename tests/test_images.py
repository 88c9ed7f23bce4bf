"""The image recipes: hadolint-clean, multi-stage, non-root, and installing tympan the way CI does.

There is no Docker engine here, so the images are not built; these tests parse the Dockerfiles and the
Makefile so that a recipe drifting from `make install` (pins, extras) fails CI.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {name: ROOT / "images" / name / "Dockerfile" for name in ("base", "train-cuda", "serve")}
HADOLINT = Path(sys.executable).parent / "hadolint"
PINS = ["requirements/torch.txt", "requirements/torchaudio.txt"]
NO_DEPS = "requirements/no-deps.txt"  # installed --no-deps everywhere (their declared dependencies conflict)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def pip_commands(stage: list[tuple[str, str]]) -> list[list[str]]:
    """Each `pip install ...` in a stage's RUN lines, as argument lists."""
    commands = []
    for keyword, rest in stage:
        if keyword == "RUN":
            for part in re.split(r"&&|;", rest):
                words = shlex.split(part)
                if words[:2] == ["pip", "install"]:
                    commands.append(words[2:])
    return commands


def requirement_files(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a in ("-r", "--requirement")]


def extras_of(args: list[str]) -> set[str]:
    for arg in args:
        match = re.fullmatch(r"\.\[([a-z,]+)\]", arg)
        if match:
            return set(match.group(1).split(","))
    return set()


def makefile_install() -> list[list[str]]:
    recipe = (ROOT / "Makefile").read_text().split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(line.split("install", 1)[1]) for line in recipe.splitlines() if "$(PIP) install" in line]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


# ------------------------------------------------------------------ hadolint


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    result = subprocess.run([str(HADOLINT), str(DOCKERFILES[name])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_are_justified():
    for path in DOCKERFILES.values():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "hadolint ignore" in line:
                assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"{path}:{i + 1}"


def test_hadolint_catches_a_bad_recipe(tmp_path):
    """The lint is live: an unpinned, root, cache-keeping recipe fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3042"} <= set(re.findall(r"DL\d{4}", result.stdout))


# ------------------------------------------------------------------ same install as CI


def test_makefile_installs_the_pins_files_then_the_package():
    commands = makefile_install()
    files = [f for args in commands for f in requirement_files(args)]
    assert files == [*PINS, NO_DEPS] and "--no-deps" in next(args for args in commands if NO_DEPS in args)
    assert extras_of(commands[-1]) == {"mlops", "serve", "test"}
    # the pins live only in requirements/: no inline torch version in the recipe
    assert not re.search(r"torch\w*==", (ROOT / "Makefile").read_text())


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_installs_what_ci_installs(name):
    builder, final = stages(DOCKERFILES[name])[0], stages(DOCKERFILES[name])[-1]
    commands = pip_commands(builder)
    installed = [f for args in commands for f in requirement_files(args) if f.startswith("requirements/")]
    assert installed == [*PINS, NO_DEPS]
    package_extras = extras_of(commands[-1])
    ci_extras = extras_of(makefile_install()[-1])
    assert package_extras and package_extras <= ci_extras, (package_extras, ci_extras)
    assert package_extras <= set(pyproject()["optional-dependencies"])
    # the dependency layer reads the same extras from pyproject.toml
    runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    layer = re.search(r"pyproject_requirements\.py pyproject\.toml ([a-z ]+?) >", runs)
    assert layer and set(layer.group(1).split()) == package_extras
    assert not re.search(r"torch\w*==", DOCKERFILES[name].read_text())
    assert not pip_commands(final), "the final stage installs nothing"


def test_the_pins_are_exact():
    for name in PINS:
        lines = [line for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")]
        assert lines and all(re.fullmatch(r"[a-z]+==[0-9.]+", line) for line in lines), lines


def test_torch_wheel_indexes():
    """CPU wheels for the base and serving images, CUDA wheels of the same versions for training."""
    for name, path in DOCKERFILES.items():
        index = re.search(r"ARG TORCH_INDEX=(\S+)", path.read_text()).group(1)
        expected = r"https://download\.pytorch\.org/whl/cu\d+" if name == "train-cuda" else r".*/whl/cpu"
        assert re.fullmatch(expected, index), (name, index)
        builder = stages(path)[0]
        for args in pip_commands(builder)[:2]:
            assert args[args.index("--index-url") + 1] == '"${TORCH_INDEX}"' or "${TORCH_INDEX}" in args


def test_extras_give_kfp_to_base_and_train_and_only_serving_needs_to_serve():
    extras = pyproject()["optional-dependencies"]
    assert "kfp==2.17.3" in extras["mlops"]  # components run kfp.dsl.executor_main in base and train
    for name in ("base", "train-cuda"):
        assert "mlops" in extras_of(pip_commands(stages(DOCKERFILES[name])[0])[-1])
    assert extras_of(pip_commands(stages(DOCKERFILES["serve"])[0])[-1]) == {"serve"}
    names = {re.split(r"[=<>\[]", line)[0] for line in extras["serve"]}
    assert names == {"kserve", "mlflow", "boto3"}
    # same versions as the mlops extra, so serving and registering agree
    assert {line for line in extras["serve"]} <= set(extras["mlops"])


# ------------------------------------------------------------------ image shape


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_non_root_and_dependencies_before_source(name):
    path = DOCKERFILES[name]
    all_stages = stages(path)
    assert len(all_stages) >= 2
    froms = [rest for keyword, rest in instructions(path) if keyword == "FROM"]
    assert all("latest" not in f for f in froms)
    assert re.search(r"ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+", path.read_text())
    final = all_stages[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0") and int(users[-1]) >= 1000
    assert any(keyword == "COPY" and rest.startswith("--from=builder /opt/venv") for keyword, rest in final)
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runs)
    builder = all_stages[0]
    order = [rest for keyword, rest in builder if keyword in ("COPY", "RUN")]
    source = next(i for i, rest in enumerate(order) if rest.startswith("tympan/"))
    deps = next(i for i, rest in enumerate(order) if "-r /tmp/requirements.txt" in rest)
    torch = next(i for i, rest in enumerate(order) if "requirements/torch.txt" in rest and rest.startswith("pip"))
    assert torch < deps < source


def test_serving_image_entrypoint():
    final = stages(DOCKERFILES["serve"])[-1]
    values = dict(final)
    assert values["ENTRYPOINT"] == '["tympan", "serve"]'
    assert values["CMD"].startswith('["/mnt/models"')
    assert values["EXPOSE"] == "8080"


def test_dockerignore_keeps_what_the_recipes_copy():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything else (venv, data, runs) stays out of the context
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for path in DOCKERFILES.values():
        for keyword, rest in instructions(path):
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") in kept, (path, source)
                    assert (ROOT / source).exists()


def test_pyproject_requirements_script():
    script = ROOT / "images" / "pyproject_requirements.py"
    run = [sys.executable, str(script), str(ROOT / "pyproject.toml")]
    lines = subprocess.run([*run, "serve"], capture_output=True, text=True, check=True).stdout.splitlines()
    project = pyproject()
    assert lines == project["dependencies"] + [d for d in project["optional-dependencies"]["serve"]]
    result = subprocess.run([*run, "serve", "gpu"], capture_output=True, text=True)
    assert result.returncode != 0 and "unknown extra(s) gpu" in result.stderr


# ------------------------------------------------------------------ make images


def _make(target: str, path: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        ["make", "--no-print-directory", target, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_make_images_without_docker_says_so(tmp_path):
    result = _make("images", "/usr/bin:/bin")
    if Path("/usr/bin/docker").exists() or Path("/bin/docker").exists():
        pytest.skip("a docker command is installed here")
    assert result.returncode != 0
    assert "no 'docker' command" in result.stderr


def test_make_images_builds_the_three_images_with_images_env_names(tmp_path):
    """`docker` here is a shim that records its arguments (no engine on this machine)."""
    log = tmp_path / "docker.log"
    shim = tmp_path / "docker"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    result = _make("push-images", f"{tmp_path}:/usr/bin:/bin", "TAG=9.9.9")
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in (ROOT / "images/images.env").read_text().splitlines() if "=" in line)
    calls = log.read_text().splitlines()
    expected = [
        f"build -f images/{d}/Dockerfile -t {env['REGISTRY']}/{env[k]}:9.9.9 ."
        for d, k in (("base", "BASE_IMAGE"), ("train-cuda", "TRAIN_IMAGE"), ("serve", "SERVE_IMAGE"))
    ]
    expected += [f"push {env['REGISTRY']}/{env[k]}:9.9.9" for k in ("BASE_IMAGE", "TRAIN_IMAGE", "SERVE_IMAGE")]
    assert calls == expected
