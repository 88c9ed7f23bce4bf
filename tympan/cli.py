"""The `tympan` command. Each subcommand loads a config and calls one stage.

Overrides follow the config path as `key.path=value` (values parsed as YAML), e.g.
`tympan train params.yaml training.epochs=3 seed=2`.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import fire
import yaml

from tympan import config as configuration
from tympan import stages
from tympan.errors import TympanError


def _overrides(overrides: tuple[str, ...]) -> dict:
    parsed = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise configuration.ConfigError(f"override {item!r} must look like key.path=value")
        try:
            parsed[key] = configuration.load_yaml(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "cannot be parsed"
            raise configuration.ConfigError(f"override {item!r}: the value is not valid YAML ({problem})") from None
    return parsed


def _config(config: str, overrides: tuple[str, ...], training: bool = True) -> configuration.Config:
    """`training=False` for the stages before training: see configuration.parse."""
    return configuration.load(config, _overrides(overrides), training=training)


def _configs(
    config: str, overrides: tuple[str, ...], use_grid: bool, training: bool = True
) -> list[configuration.Config]:
    """The config, or with `use_grid` every combination of its `grid:` block."""
    if not use_grid:
        return [_config(config, overrides, training)]
    return configuration.expand_grid(*configuration.load_raw(config, _overrides(overrides)), training=training)


def _print_summary(run_dir: Path, summary: dict) -> None:
    """Each split's headline metrics (the task's; summary.json has them all)."""
    headline = (summary.get("task") or {}).get("headline") or []
    for split in ("dev", "test"):
        metrics = summary.get(split) or {}
        shown = {k: v for k, v in metrics.items() if k in headline} or metrics
        if metrics:
            print(f"{split}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        else:
            print(f"{split}: no clips in this split")
    print(f"run: {run_dir}")


def _direction(lower_is_better: bool) -> str | None:
    """--lower-is-better as a ranking direction; without it, the task's (or max for other metrics)."""
    return "min" if lower_is_better else None


def _seconds(flag: str, value) -> None:
    """A duration option (None: not given) must be a positive, finite number of seconds: checked
    before any file is read, so a bad one is an argument error, not a failure of every file."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is not None and not (number and 0 < value < math.inf):
        raise TympanError(f"{flag} must be a positive number of seconds, got {value!r}")


def _kubeflow():
    """pipelines/run.py of the repository checkout (components/ and pipelines/ are not installed
    with the package): from the working directory, else beside an editable install."""
    candidates = [Path.cwd(), Path(__file__).resolve().parents[1]]
    root = next((c for c in candidates if (c / "pipelines" / "run.py").is_file() and (c / "components").is_dir()), None)
    if root is None:
        raise TympanError("`tympan pipeline` needs the tympan repository (components/, pipelines/); run it from there")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from pipelines import run

    return run


class PipelineCommands:
    """The Kubeflow training pipeline: compile it, run it on this machine, or submit it to a cluster."""

    def compile(self, output: str = "pipelines/compiled/training.yaml", cluster: str | None = None) -> None:
        """Write the pipeline IR YAML; --cluster FILE sets GPU pool, resources and secrets
        (default pipelines/cluster.yaml)."""
        print(f"pipeline: {_kubeflow().compile_pipeline(output, cluster)}")

    def run_local(
        self,
        config: str = "pipelines/tiny.yaml",
        root: str = "runs/pipeline",
        grid: str = "",
        mlflow_uri: str | None = None,
        threshold: float | None = None,
        model_name: str = "tympan",
        metric: str | None = None,
        lower_is_better: bool = False,
        cache: bool = True,
    ) -> None:
        """Run the pipeline here with kfp.local (tasks as subprocesses; cluster settings are ignored).
        MLflow defaults to a sqlite store in --root.

        The best run is registered when it beats the champion on --metric (default: the runs' tracking
        metric, in its direction; --lower-is-better for another metric that is) and --threshold (a floor,
        or a ceiling for a lower-is-better metric)."""
        result = _kubeflow().run_local(
            config, root, grid, mlflow_uri, threshold, model_name, metric, cache, _direction(lower_is_better)
        )
        best = result["best"]
        _print_summary(best, json.loads((best / "summary.json").read_text()))
        print(f"mlflow: {result['tracking_uri']}")

    def submit(
        self,
        config: str = "params.yaml",
        host: str | None = None,
        grid: str = "",
        mlflow_uri: str = "",
        s3_endpoint: str = "",
        threshold: float | None = None,
        model_name: str | None = None,
        metric: str | None = None,
        lower_is_better: bool = False,
        package: str | None = None,
        cluster: str | None = None,
        experiment: str = "tympan",
        run_name: str | None = None,
        namespace: str | None = None,
        cron: str | None = None,
        token: str | None = None,
    ) -> None:
        """Start a run on the Kubeflow Pipelines server at --host (compiled now, or --package FILE);
        --cron '0 0 2 * * *' (6 fields, seconds first) creates a recurring run instead. --metric,
        --lower-is-better and --threshold: as for run-local."""
        if not host:
            raise TympanError(
                "say where Kubeflow Pipelines is: --host URL (e.g. https://kubeflow.example.com/pipeline)"
            )
        result = _kubeflow().submit(
            host, config, grid, mlflow_uri, s3_endpoint, threshold, model_name, metric, package, cluster,
            experiment, run_name, namespace, cron, token, _direction(lower_is_better),
        )  # fmt: skip
        for key, value in result.items():
            print(f"{key}: {value}")


class Commands:
    """tympan: train, evaluate and serve audio models from a YAML config."""

    pipeline = PipelineCommands()

    def fetch(self, config: str = "params.yaml", *overrides: str) -> None:
        """Download the dataset (or copy it from $TYMPAN_DATA_MIRROR), write its index and print its
        data report (files, duration, sample rates and channels, class balance or target ranges,
        unreadable files per split), which is saved beside the index as JSON and Markdown."""
        from tympan.datasets import report

        resolved = _config(config, overrides, training=False)
        path = stages.fetch(resolved)
        found = stages.data_report(resolved)
        if found is not None:
            print(report.text(found) + "\n")
        print(f"dataset: {path}")

    def datasets(self, root: str = "data/raw") -> None:
        """List every named corpus: its size, license, whether it is public or given on request, its
        task and class count, whether a fetched copy is present below --root, and its presets."""
        from tympan.datasets import catalogue

        print(catalogue.table(root))

    def preprocess(
        self, config: str = "params.yaml", *overrides: str, grid: bool = False, workers: int | None = None
    ) -> None:
        """Extract offline features into packed, memory-mapped files per split; a killed run resumes.

        --grid: for every feature config of the grid. --workers N: extract in N processes (1: in this
        one; default: one per CPU this process is given)."""
        configs = _configs(config, overrides, grid, training=False)
        for path in dict.fromkeys(stages.preprocess(c, workers=workers) for c in configs):
            print(f"features: {path}")

    def train(
        self, config: str = "params.yaml", *overrides: str, run_dir: str | None = None, grid: bool = False
    ) -> None:
        """Train one model into runs/<experiment>/<run id>/ (or --run-dir); an interrupted run resumes.

        --grid trains every combination of the config's `grid:` block, each in the run directory of
        its own resolved config, skipping those that finished already.
        """
        configs = _configs(config, overrides, grid)
        if grid and run_dir:
            raise TympanError("--run-dir names one run; a grid's runs go to runs/<experiment>/<run id>")
        for number, resolved in enumerate(configs, 1):
            if grid:
                print(f"[{number}/{len(configs)}] {stages.default_run_dir(resolved)}")
                stages.preprocess(resolved)
            run, summary = stages.train(resolved, run_dir)
            _print_summary(run, summary)

    def postprocess(
        self,
        runs: str,
        by: str | list[str] | None = None,
        metric: str | None = None,
        output: str | None = None,
        lower_is_better: bool = False,
    ) -> None:
        """Compare the runs below RUNS: tables, mean ± std per group, best runs, curves, confusions.

        Writes to --output (default RUNS/report): tables (CSV, Markdown, HTML), mean ± std per group
        (--by keys, default every varying key but seed), the best run per group, overlaid curves,
        confusion matrices summed per group. The best runs are best on --metric (default: the runs'
        tracking metric, e.g. dev.mae, in its direction; --lower-is-better for another metric that is)."""
        from tympan import postprocess

        keys = [by] if isinstance(by, str) else by
        if keys is not None:
            keys = [k for key in keys for k in str(key).split(",") if k]
        out = postprocess.report(runs, keys, metric, output, _direction(lower_is_better))
        print((out / "report.md").read_text().split("## All runs")[0].rstrip())
        print(f"\nreport: {out / 'report.md'}, {out / 'report.html'}")

    def runs(self, root: str = "runs") -> None:
        """List the runs below ROOT with their status (finished, running, stopped)."""
        from tympan import postprocess

        for row in postprocess.load_runs(root):
            score = "  ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items() if k.startswith("dev."))
            print(f"{row['status']:9} {row['run']}  epochs {len(row['history'])}  {score}")

    def clean(self, root: str = "runs", stopped: bool = False, states: bool = False) -> None:
        """Delete killed runs (--stopped) and/or the training states of finished ones (--states).

        --stopped deletes runs that were killed or failed; --states deletes the saved training
        states (best/, last/) of finished runs, keeping results, plots and bundles. Outputs that a
        dvc.yaml tracks (runs/default/best, ...) are kept, and said so, unless ROOT names that run."""
        from tympan import cleaning

        if not (stopped or states):
            raise TympanError("say what to delete: --stopped and/or --states")
        done = cleaning.clean(root, stopped, states)
        for line in done.deleted + done.kept:
            print(line)

    def show(self, run_dir: str) -> None:
        """Print a finished run's dev and test results (or those of every finished run below a folder)."""
        from tympan import postprocess, results

        path = Path(run_dir)
        if (path / "summary.json").is_file():
            return _print_summary(path, results.read_summary(path / "summary.json"))
        if not path.is_dir():
            raise TympanError(f"{run_dir}: no such run directory")
        if (path / "config.yaml").is_file():
            raise TympanError(f"{run_dir}: no summary.json (the run has not finished)")
        finished = []
        for run in postprocess.find_runs(path):
            if (run / "summary.json").is_file():
                try:
                    finished.append((run, results.read_summary(run / "summary.json")))
                except TympanError as exc:  # one corrupt run does not hide the others
                    logging.getLogger("tympan").warning("skipped a run: %s", exc)
        if not finished:
            raise TympanError(f"{run_dir}: no finished run in it or below it")
        for number, (run, summary) in enumerate(finished):
            if number:
                print()
            _print_summary(run, summary)

    def inference(
        self,
        model: str,
        *paths: str,
        output: str | None = None,
        window: float | None = None,
        hop: float | None = None,
        embeddings: bool = False,
        device: str = "cpu",
        trust_code: bool = False,
    ) -> None:
        """Predict audio files or folders with a bundle (a run's `bundle/`, or models:/NAME@ALIAS).

        --output FILE.csv|.json writes the table (embeddings to FILE.embeddings.npy); --window and
        --hop (seconds) add sliding-window rows plus a `mean` row per file: windows start every hop
        from 0 s, and where the last of them stops short of the end, one more ends exactly at the end.
        --trust-code builds a bundle's custom (non-tympan) classes, which runs their code: only for
        bundles of your own.
        """
        from tympan import bundle, inference

        if not paths:
            raise TympanError("give at least one audio file or folder")
        _seconds("--window", window)
        _seconds("--hop", hop)
        if hop is not None and window is None:
            raise TympanError("--hop sets the step between sliding windows: it needs --window")
        predictor = bundle.load(model, device, trust_code)
        results = inference.run(predictor, list(paths), window, hop, embeddings)
        if output:
            for path in inference.write(results, output):
                print(f"wrote {path}")
        else:
            print(inference.to_text(results))
        if results.failed:
            listing = "; ".join(f"{file} ({reason})" for file, reason in results.failed[:3])
            more = f"; and {len(results.failed) - 3} more" if len(results.failed) > 3 else ""
            raise TympanError(f"{len(results.failed)} file(s) failed and were skipped: {listing}{more}")

    def serve(
        self,
        model: str,
        port: int = 8080,
        name: str | None = None,
        max_duration: float = 30.0,
        max_batch: int = 16,
        host: str = "127.0.0.1",
        max_clips: int = 64,
        max_body_mb: float = 32.0,
        trust_code: bool = False,
        max_samples: int = 64_000_000,
    ) -> None:
        """Serve a bundle (a directory, s3://..., or models:/NAME@ALIAS) with KServe: V1 /v1/models/NAME:predict and
        V2 /v2/models/NAME/infer on --host (default 127.0.0.1, this machine only; 0.0.0.0 in a container) and --port.

        NAME is --name, else the registered model's name (models:/NAME@ALIAS), else the bundle's experiment name.
        Refused: clips longer than --max-duration seconds, requests of more than --max-clips clips, bodies over
        --max-body-mb MiB, requests whose audio decodes to more than --max-samples samples (frames x channels as
        stored, plus resampling to the model's rate; read from the files' headers). --trust-code: as for inference."""
        from tympan import serving

        limits = {"max_duration": max_duration, "max_batch": max_batch, "max_clips": max_clips}
        limits |= {"max_samples": max_samples, "max_body_mb": max_body_mb}
        serving.serve(model, name=name, host=host, port=port, trust_code=trust_code, **limits)

    def register(self, run_dir: str, name: str, tracking_uri: str | None = None, trust_code: bool = False) -> None:
        """Log a finished run to MLflow and register its bundle as a new version of NAME.

        The tracking store is --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
        (MLflow's own default).
        --trust-code registers a bundle of your own custom classes (it then loads only with trust).
        """
        from tympan import registry

        result = registry.register(run_dir, name, tracking_uri, trust_code)
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
        print(f"registered {name} version {result['version']}  ({metrics})")
        print(f"model: models:/{name}/{result['version']}  mlflow run: {result['run_id']}")

    def promote(
        self,
        name: str,
        metric: str | None = None,
        alias: str = "champion",
        version: str | None = None,
        lower_is_better: bool = False,
        print_uri: bool = False,
        tracking_uri: str | None = None,
    ) -> None:
        """Move ALIAS (default champion) to the version of NAME best on METRIC, or to --version.

        METRIC defaults to the one the versions were ranked on in training (e.g. dev.accuracy, highest
        wins; dev.mae, lowest wins); --lower-is-better for another metric where lower is better.

        --print-uri also prints the storage URI of that version's files (what a KServe
        InferenceService's storageUri needs).
        """
        from tympan import registry

        result = registry.promote(name, metric, alias, version, _direction(lower_is_better), tracking_uri)
        value = f" ({result['metric']} {result['value']})" if result["value"] is not None else ""
        if result["changed"]:
            print(f"{name}@{alias} -> version {result['version']}{value} (was {result['previous'] or 'unset'})")
        else:
            print(f"{name}@{alias} stays at version {result['version']}{value}: already the best")
        if print_uri:
            print(result["download_uri"])

    def models(self) -> None:
        """List every model preset: its family, the input it takes, its parameters for a typical
        input, where pretrained weights may come from, and the line that names it in a config."""
        from tympan.models import listing

        print(listing.table())

    def config(self, config: str = "params.yaml", *overrides: str) -> None:
        """Print the resolved config (presets expanded, defaults filled), its run id and, as comments
        (so the output is still a config), the resolved pipeline: every transform and augmentation
        with all its arguments, where it acts and how it is seeded."""
        import yaml

        from tympan import flow

        resolved = _config(config, overrides)
        print(resolved.to_yaml(), end="")
        print(f"# run id: {resolved.run_id()}")
        print("# pipeline (saved with each run as pipeline.yaml):")
        for line in yaml.safe_dump(flow.resolve(resolved), sort_keys=False, width=100).splitlines():
            print(f"#   {line}")


def _explicit_switches(argv: list[str]) -> list[str]:
    """`--grid` -> `--grid=True` where the command's option is a boolean: fire would otherwise take the
    next word as its value, so `train x.yaml --grid seed=2` dropped the override without a word."""
    command, rest = getattr(Commands, argv[0].replace("-", "_"), None) if argv else None, 1
    if isinstance(command, PipelineCommands) and len(argv) > 1:
        command, rest = getattr(command, argv[1].replace("-", "_"), None), 2
    if not callable(command):
        return argv
    names = [n for n, p in inspect.signature(command).parameters.items() if isinstance(p.default, bool)]
    switches = {f"--{n}" for n in names} | {f"--{n.replace('_', '-')}" for n in names}
    words = argv[rest:]
    end = words.index("--") if "--" in words else len(words)  # fire's own flags follow a bare --
    return argv[:rest] + [f"{w}=True" if w in switches else w for w in words[:end]] + words[end:]


HELP_FLAGS = ("-h", "--help")


def _help_path(argv: list[str]) -> list[str] | None:
    """The commands a help request names (`train x.yaml --help` -> ["train"]), or None for no request.
    Words after a bare `--` are fire's own flags: `-- --help` already asks fire directly."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    if not any(word in HELP_FLAGS for word in words):
        return None
    path, component = [], Commands
    for word in words:
        member = None if word.startswith(("-", "_")) else getattr(component, word.replace("-", "_"), None)
        if member is None:
            break
        path.append(word)
        if not isinstance(member, PipelineCommands):
            break
        component = member
    return path


def _help_view(method):
    """`method` as its help shows it: a config with a default (params.yaml) is still its first
    positional argument, as the README passes it; fire lists any argument with a default as a
    flag only (-c/--config). Shown, never called."""
    signature = inspect.signature(method)
    config = signature.parameters.get("config")
    if config is None or config.default is inspect.Parameter.empty:
        return method

    def view(*args, **kwargs):
        raise AssertionError("a help view is never called")

    parameters = [
        p.replace(default=inspect.Parameter.empty) if p is config else p for p in signature.parameters.values()
    ]
    view.__signature__ = signature.replace(parameters=parameters)
    view.__name__ = method.__name__
    lines = [f"config: the config file or experiment preset (default: {config.default})"]
    if "overrides" in signature.parameters:
        lines.append("overrides: key.path=value pairs that change the config, e.g. training.epochs=3 seed=2")
    view.__doc__ = inspect.getdoc(method) + "\n\nArgs:\n" + "".join(f"    {line}\n" for line in lines)
    return view


def _show_help(path: list[str]) -> int:
    """Help on `tympan [command...]` as fire's own `-- --help` gives it, which (unlike a `--help` among
    the arguments) prints no "INFO: Showing help with the command ..." line first."""
    component = Commands()
    if path:
        target = component
        for word in path:
            target = getattr(target, word.replace("-", "_"))
        if not isinstance(target, PipelineCommands):
            component = _help_view(target)
            for word in reversed(path):
                component = SimpleNamespace(**{word.replace("-", "_"): component})
    try:
        fire.Fire(component, command=[*path, "--", "--help"], name="tympan")
    except fire.core.FireExit as done:
        return done.code
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    help_path = _help_path(argv)
    if help_path is not None:
        return _show_help(help_path)
    argv = _explicit_switches(argv)
    try:
        fire.Fire(Commands(), command=argv, name="tympan")  # an instance: --help then lists every command
    except TympanError as exc:
        print(f"tympan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tympan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tympan config ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
