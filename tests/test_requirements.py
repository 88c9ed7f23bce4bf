"""A registered model's pip requirements: what any bundle needs, plus what its own classes import
(timm, transformers, ...), and only that; and `tympan models`, which lists every model preset."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import inspect
import subprocess
import sys

import tympan.models
import tympan.transforms
from tympan.registry import BASE_REQUIREMENTS, requirements
from tympan.tasks import Classification


def distributions(modules: set[str]) -> set[str]:
    found = metadata.packages_distributions()
    return {d for m in modules for d in found.get(m, [])} - {"tympan"}


def norm(name: str) -> str:
    return name.lower().replace("_", "-")


def imported_modules(source: str) -> set[str]:
    """Top-level names of every import in a module, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"tympan"}


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
    """Per module of a model or transform class: the distributions it imports (outside what any
    bundle needs) are declared in its classes' `requires`, and every declared one is imported there."""
    by_module: dict = {}
    for cls in component_classes():
        by_module.setdefault(inspect.getmodule(cls), set()).update(cls.requires)
    base = dependency_closure(BASE_REQUIREMENTS)
    for module, declared in by_module.items():
        imported = distributions(imported_modules(inspect.getsource(module)))
        covered = dependency_closure(declared) | base
        assert {d for d in imported if norm(d) not in covered} == set(), f"{module.__name__}: declare them"
        assert declared <= imported, f"{module.__name__} declares {sorted(declared - imported)} it never imports"


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
