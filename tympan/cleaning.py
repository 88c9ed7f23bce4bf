"""`tympan clean`: delete stopped runs and the training states (best/, last/) of finished ones.

An output that a DVC pipeline tracks (an `outs:` path of a dvc.yaml, e.g. `runs/default/best`) is
kept unless the run it belongs to is named as the folder to clean: deleting it makes `dvc status`
report it missing. What is kept is said, with the stage that tracks it. DVC's own reading of the
dvc.yaml files (matrix and foreach stages, `${...}` values) says what is tracked.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tympan import postprocess
from tympan.errors import TympanError

STATES = ("best", "last")


@dataclass
class Cleaned:
    """What a clean did: lines saying what was deleted and what was kept, and why."""

    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def tracked_outputs(root: str | Path) -> dict[Path, str]:
    """{resolved path: the stage that has it as an output} for the DVC repository holding `root`;
    empty outside one (or without dvc installed). A pipeline DVC cannot read is an error, as
    nothing could then be known to be safe."""
    try:
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
    except ImportError:
        return {}
    try:
        top = Repo.find_root(str(root))
    except NotDvcRepoError:
        return {}
    try:
        with Repo(top) as repo:
            return {Path(out.fs_path).resolve(): out.stage.addressing for out in repo.index.outs}
    except Exception as exc:  # dvc's errors for a broken dvc.yaml or params file are many
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TympanError(
            f"{top}: cannot read its DVC pipelines ({problem}); nothing was deleted, as nothing could be "
            "checked against them"
        ) from None


def _stage_of(path: Path, tracked: dict[Path, str]) -> str | None:
    """The stage that tracks `path`, as an output or inside one."""
    path = path.resolve()
    return next((tracked[p] for p in (path, *path.parents) if p in tracked), None)


def _tracked_in(run_dir: Path, tracked: dict[Path, str]) -> dict[Path, str]:
    """The tracked outputs at or below `run_dir` (or the one it lies in)."""
    resolved = run_dir.resolve()
    inside = {p: s for p, s in tracked.items() if p == resolved or resolved in p.parents}
    around = _stage_of(run_dir, tracked)
    return inside or ({resolved: around} if around else {})


def clean(root: str | Path, stopped: bool, states: bool) -> Cleaned:
    """Delete the runs below `root` that were killed or failed (`stopped`) and the states of the
    finished ones (`states`), keeping DVC-tracked outputs of runs other than `root` itself."""
    root = Path(root)
    wanted = {"stopped": stopped, "finished": states}
    runs = [(r, s) for r in postprocess.find_runs(root) if wanted.get(s := postprocess.status(r))]
    tracked = tracked_outputs(root) if runs else {}  # reading the pipelines takes seconds: only when needed
    named = root.resolve()
    done = Cleaned()
    for run_dir, state in runs:
        asked = run_dir.resolve() == named
        if state == "stopped":
            outputs = _tracked_in(run_dir, tracked)
            if outputs and not asked:
                done.kept.append(_kept(run_dir, f"{run_dir} (stopped)", outputs, "--stopped"))
                continue
            shutil.rmtree(run_dir)
            done.deleted.append(f"deleted {run_dir}{_warning(outputs)}")
        else:
            paths = [run_dir / name for name in STATES if (run_dir / name).exists()]
            outputs = {p: s for p in paths if (s := _stage_of(p, tracked))}
            if outputs and not asked:
                done.kept.append(_kept(run_dir, ", ".join(map(str, outputs)), outputs, "--states"))
            for path in paths:
                if asked or path not in outputs:
                    shutil.rmtree(path)
            if paths and (asked or len(outputs) < len(paths)):
                done.deleted.append(f"deleted the states of {run_dir}{_warning(outputs if asked else {})}")
    return done


def _kept(run_dir: Path, what: str, outputs: dict[Path, str], flag: str) -> str:
    stages = ", ".join(sorted(set(outputs.values())))
    return f"kept {what}: tracked by DVC (stage {stages}); to delete, name the run: tympan clean {run_dir} {flag}"


def _warning(outputs: dict[Path, str]) -> str:
    if not outputs:
        return ""
    stages = ", ".join(sorted(set(outputs.values())))
    return f" (DVC-tracked by {stages}: `dvc status` reports it missing until `dvc checkout` or `dvc repro`)"
