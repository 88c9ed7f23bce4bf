"""A registered model's pip requirements: what any bundle needs, plus what its own classes import
(timm, transformers, ...), and only that; and `tympan models`, which lists every model preset."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import tympan.models
import tympan.transforms
from tympan.registry import BASE_REQUIREMENTS, requirements
from tympan.tasks import Classification


def distributions(modules: set[str]) -> set[str]:
    found = metadata.packages_distributions()
    return {d for m in modules for d in found.get(m, [])} - {"tympan"}


def norm(name: str) -> str:
    return name.lower().replace("_", "-")


def imported_modules(module_name: str, lazy: bool, seen: set[str] | None = None) -> set[str]:
    """Top-level names of the third-party imports a tympan module makes, and those of the tympan
    modules it imports, transitively. `lazy`: imports inside functions too, anywhere (what it may
    ever import); else those of the module itself, plus what importing its tympan imports runs."""
    seen = set() if seen is None else seen
    seen.add(module_name)
    tree = ast.parse(Path(importlib.util.find_spec(module_name).origin).read_text())
    nodes = ast.walk(tree) if lazy or len(seen) == 1 else tree.body
    names = set()
    for node in nodes:
        found = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            submodules = [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
            found = submodules or [node.module]  # `from tympan.models import sources`: that module, not them all
        for name in found:
            if name.split(".")[0] != "tympan":
                names.add(name.split(".")[0])
            elif name not in seen and _is_module(name):
                names |= imported_modules(name, lazy, seen)
    return names - set(sys.stdlib_module_names)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def dependency_closure(names) -> set[str]:
    """The distributions `names` install, theirs included (markers ignored: an over-approximation)."""
    seen, todo = set(), [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            todo.append(line.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("!")[0]
                        .split("~")[0].strip().lower().replace("_", "-"))  # fmt: skip
    return seen


def test_loading_a_bundle_imports_only_the_base_requirements_and_what_they_install():
    code = "import sys; import tympan.bundle, tympan.inference; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    needed = {d.lower().replace("_", "-") for d in distributions({m.split(".")[0] for m in out.split()})}
    allowed = dependency_closure(BASE_REQUIREMENTS)
    assert needed - allowed == set(), "add these to registry.BASE_REQUIREMENTS"


def component_classes():
    for package in (tympan.models, tympan.transforms):
        for name in package.__all__:
            obj = getattr(package, name)
            if inspect.isclass(obj) and hasattr(obj, "requires"):
                yield obj


def test_every_module_s_imports_are_declared_by_its_classes_and_nothing_more():
    """Per module of a model or transform class: the distributions it imports, in its own code or by
    importing tympan's modules, outside what any bundle needs, are declared in its classes'
    `requires`; and every declared one is imported there or in a tympan module it uses."""
    by_module: dict = {}
    for cls in component_classes():
        by_module.setdefault(inspect.getmodule(cls), set()).update(cls.requires)
    base = dependency_closure(BASE_REQUIREMENTS)
    for module, declared in by_module.items():
        imported = distributions(imported_modules(module.__name__, lazy=False))
        covered = dependency_closure(declared) | base
        assert {d for d in imported if norm(d) not in covered} == set(), f"{module.__name__}: declare them"
        reachable = distributions(imported_modules(module.__name__, lazy=True))
        assert declared <= reachable, f"{module.__name__} declares {sorted(declared - reachable)} it never imports"


def manifest(model: str, features: list[str]) -> dict:
    return {
        "model": {"target": model, "args": {}},
        "task": {"target": f"{Classification.__module__}:Classification"},
        "features": {"offline": [{"target": t} for t in features], "online": []},
    }


def test_requirements_name_what_the_classes_import_and_only_that():
    plain = requirements(manifest("tympan.models.cnn:SmallCNN", ["tympan.transforms.logmel:PannLogMel"]))
    names = {r.split("==")[0] for r in plain}
    assert names == set(BASE_REQUIREMENTS) and all("==" in r for r in plain)
    timm = requirements(manifest("tympan.models.timm_backbone:TimmModel", ["tympan.transforms.opensmile:OpenSmile"]))
    assert {r.split("==")[0] for r in timm} == set(BASE_REQUIREMENTS) | {"timm", "opensmile"}
    assert f"timm=={metadata.version('timm')}" in timm
    stored = manifest("tympan.models.ffnn:FFNN", [])
    backbone = {"target": "tympan.models.ecapa:ECAPA", "args": {}}
    stored["features"]["offline"] = [{"target": "tympan.transforms.embedding:Embedding", "args": {"model": backbone}}]
    assert {r.split("==")[0] for r in requirements(stored)} == set(BASE_REQUIREMENTS) | {"speechbrain"}
    own = requirements(manifest("evil.py:Net", []))  # never imported to find out
    assert {r.split("==")[0] for r in own} == set(BASE_REQUIREMENTS)


def test_tympan_models_lists_every_preset_with_its_input_size_and_weights(capsys):
    from tympan.cli import main
    from tympan.config.presets import available_presets

    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    for preset in available_presets("models"):
        assert f"model: {preset}" in printed
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.startswith(("Cnn14 ", "SmallCNN "))}
    assert rows["Cnn14"][1:4] == ["Cnn14", "frames", "79.7"] and rows["SmallCNN"][3] == "0.2"
    assert "Cnn14_mAP=0.431" in printed and "IMAGENET1K_V1" in printed and "?" not in printed
