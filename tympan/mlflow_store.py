"""Talking to an MLflow tracking store: which one, failing fast when it is down, its errors as
one RegistryError line, and downloading a registered model version into the cache.

Tracking, the registry and `tympan.bundle` (for `models:/` locations) share this; it imports
none of them, and MLflow only inside its functions, so the rest of tympan works without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from tympan.errors import TympanError

log = logging.getLogger("tympan")
# MLflow's own default store, so `mlflow.pyfunc.load_model("models:/...")` and the MLflow UI find
# what tympan registered without being told where
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
OLD_DEFAULT = "mlruns.db"  # tympan's default before it followed MLflow's
TRACKING_ENV = "MLFLOW_TRACKING_URI"


class RegistryError(TympanError):
    """The registry has no such model, version or alias, or cannot be reached."""


def tracking_uri(uri: str | None = None) -> str:
    """The given URI, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite store in the working
    directory (with a warning where only tympan's earlier default store is there)."""
    chosen = uri or os.environ.get(TRACKING_ENV)
    if chosen:
        return chosen
    if Path(OLD_DEFAULT).is_file() and not Path("mlflow.db").is_file():
        log.warning(
            "%s is tympan's earlier default store; the default is now MLflow's own, %s: set "
            "MLFLOW_TRACKING_URI=sqlite:///%s to keep using it",
            OLD_DEFAULT, DEFAULT_TRACKING_URI, OLD_DEFAULT,
        )  # fmt: skip
    return DEFAULT_TRACKING_URI


def fail_fast(timeout: int) -> None:
    """One retry for MLflow's HTTP calls, each waiting at most `timeout` seconds (unless the
    environment sets them), instead of MLflow's minutes of backed-off retries: a server that is
    down fails at once."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout))


def connect(uri: str | None):
    """The mlflow module, set to the tracking store `uri`, failing fast. The timeout stays long
    enough for a server that stores a large model's upload before it answers."""
    import mlflow

    fail_fast(timeout=30)
    # the one retry's warning would precede the RegistryError that says the same in one line
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri(uri))
    return mlflow


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow error was caused by the server not answering."""
    import requests

    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, requests.ConnectionError | requests.Timeout)


@contextlib.contextmanager
def errors(uri: str | None, what: str):
    """MLflow's failures while doing `what` as one RegistryError line naming the tracking store."""
    from mlflow.exceptions import MlflowException

    where = tracking_uri(uri)
    try:
        yield
    except MlflowException as exc:
        if unreachable(exc):
            raise RegistryError(
                f"cannot reach the MLflow tracking server at {where} ({what}): is it running?"
            ) from None
        message = str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else type(exc).__name__
        raise RegistryError(f"MLflow at {where} ({what}): {message}") from None


def download_model(model_uri: str, uri: str | None = None) -> Path:
    """The local directory of a registered model version (`models:/NAME@ALIAS` or
    `models:/NAME/VERSION`), downloaded once into $TYMPAN_CACHE and reused: a version's files
    do not change. The download is renamed into place when complete, so a failed one leaves nothing."""
    from tympan.storage import cache_root

    name, alias, number = _parse_model_uri(model_uri)
    mlflow = connect(uri)
    with errors(uri, f"downloading {model_uri}"):
        client = mlflow.MlflowClient()
        try:
            found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        except mlflow.exceptions.MlflowException as exc:
            if unreachable(exc):
                raise
            raise RegistryError(f"{model_uri}: no such registered model version ({exc.message})") from None
        # the same name and version can exist in two stores: the version's own ids tell them apart
        key = hashlib.sha256(f"{tracking_uri(uri)}\n{found.source}\n{found.run_id}".encode()).hexdigest()[:12]
        target = cache_root() / "mlflow" / f"{quote(name, safe='')}-v{found.version}-{key}"
        if target.is_dir():
            log.info("%s: using the cached copy of version %s in %s", model_uri, found.version, target)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{found.version}", dst_path=str(tmp))
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():  # else another process finished the same download first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: version %s downloaded to %s", model_uri, found.version, target)
    return target


def _parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS, None); `models:/NAME/VERSION` -> (NAME, None, VERSION)."""
    rest = model_uri.removeprefix("models:/")
    name, sep, alias = rest.rpartition("@")
    if sep and name and alias and "/" not in name + alias:
        return name, alias, None
    name, sep, number = rest.rpartition("/")
    if sep and name and "/" not in name and number.isdigit():
        return name, None, number
    raise RegistryError(f"{model_uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
