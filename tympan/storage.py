"""Object storage (S3, MinIO, Ceph) for artifacts: upload, and `s3://` URIs made local.

`localize("s3://bucket/prefix")` downloads an object or a whole prefix into a local cache and
returns its path, so every loader in tympan only ever reads local files. A download goes to a
temporary directory that is renamed into place, and a marker listing the remote ETags is written
last: an interrupted download never looks complete, and a changed remote is fetched again.

The endpoint is $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL, else $MLFLOW_S3_ENDPOINT_URL (what
MLflow users set for MinIO), else AWS itself. Credentials come from the usual AWS variables or
~/.aws. Timeouts are short and retries few, so a server that is down fails in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from tympan.errors import TympanError
from tympan.fileio import write_json

log = logging.getLogger("tympan")
SCHEME = "s3://"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
CACHE_ENV = "TYMPAN_CACHE"
ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "403"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class StorageError(TympanError):
    """An object store cannot be reached, refuses the credentials, or lacks the bucket or key."""


def is_remote(uri) -> bool:
    return str(uri).startswith(SCHEME)


def split(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b")."""
    if not is_remote(uri):
        raise StorageError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in the URI (expected s3://BUCKET/KEY)")
    return bucket, key.strip("/")


def endpoint_url() -> str | None:
    return next((os.environ[name] for name in ENDPOINT_ENVS if os.environ.get(name)), None)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tympan")


def client(endpoint: str | None = None):
    """A boto3 S3 client on `endpoint` (else the configured one), with short timeouts and two attempts."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=3, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint or endpoint_url(), config=config)


def _error(uri: str, exc: Exception, s3) -> StorageError:
    """One clear sentence for a botocore failure, naming the URI and the cause."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    endpoint = getattr(getattr(s3, "meta", None), "endpoint_url", None) or endpoint_url() or "AWS S3"
    if isinstance(exc, EndpointConnectionError | BotoConnectionError):
        return StorageError(f"{uri}: cannot reach S3 endpoint {endpoint}: is the server running? ({exc})")
    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{uri}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = exc.response.get("Error", {}).get("Message") or code
        if code in ACCESS_CODES:
            return StorageError(
                f"{uri}: access denied by {endpoint} ({code}: {message}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions"
            )
        if code == "NoSuchBucket":
            return StorageError(f"{uri}: no such bucket {split(uri)[0]!r} on {endpoint}")
        if code in MISSING_CODES:
            return StorageError(f"{uri}: no such key on {endpoint}")
        return StorageError(f"{uri}: S3 error from {endpoint}: {code}: {message}")
    return StorageError(f"{uri}: S3 request to {endpoint} failed: {exc}")


def _listing(s3, uri: str, bucket: str, key: str) -> tuple[bool, dict[str, dict]]:
    """(is_prefix, {relative path: {"key", "etag", "size"}}) of what `uri` names; a key that is
    an object wins over a prefix of the same name."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if key:
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
                name = PurePosixPath(key).name
                return False, {name: {"key": key, "etag": head["ETag"], "size": head["ContentLength"]}}
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) not in MISSING_CODES:
                    raise
        prefix = f"{key}/" if key else ""
        found: dict[str, dict] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                if not relative or relative.endswith("/"):  # folder placeholders
                    continue
                parts = PurePosixPath(relative).parts
                if ".." in parts or relative.startswith("/"):
                    raise StorageError(f"{uri}: refusing object key {item['Key']!r} (leaves the prefix)")
                found[relative] = {"key": item["Key"], "etag": item["ETag"], "size": item["Size"]}
    except (BotoCoreError, ClientError) as exc:
        raise _error(uri, exc, s3) from None
    if not found:
        raise StorageError(f"{uri}: no such key or prefix in bucket {bucket!r}")
    return True, found


def localize(uri_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The local path of `uri_or_path`: a local path as is; an s3:// object or prefix downloaded
    into the cache (reused while its ETags and sizes still match the remote's)."""
    if not is_remote(uri_or_path):
        return Path(uri_or_path)
    uri = str(uri_or_path)
    bucket, key = split(uri)
    s3 = client()
    is_prefix, listing = _listing(s3, uri, bucket, key)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / "s3" / bucket / (key or "_bucket")
    marker = target.with_name(f".{target.name}.complete.json")
    state = {"uri": uri, "prefix": is_prefix, "objects": listing}
    if target.exists() and marker.is_file():
        try:
            if json.loads(marker.read_text()) == state:
                log.info("%s: using the cached copy in %s", uri, target)
                return target
        except (OSError, json.JSONDecodeError):
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        for relative, item in listing.items():
            local = tmp / relative if is_prefix else tmp / "object"
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                s3.download_file(bucket, item["key"], str(local))
            except (BotoCoreError, ClientError) as exc:
                raise _error(f"{SCHEME}{bucket}/{item['key']}", exc, s3) from None
        marker.unlink(missing_ok=True)  # from here until the new marker, the copy is not trusted
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp if is_prefix else tmp / "object", target)
        write_json(marker, state)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _prune_empty(target.parent, root)
    log.info("%s: downloaded %d file(s) to %s", uri, len(listing), target)
    return target


def _prune_empty(directory: Path, root: Path) -> None:
    """Remove now-empty cache directories up to `root`, so a failed download leaves nothing."""
    try:
        while directory != root and root in directory.parents and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent
    except OSError:
        pass


def upload(path: str | Path, uri: str) -> str:
    """Upload a file to the key `uri` names (into it, when `uri` ends with "/"), or a directory's
    files under the prefix `uri` names. Returns the URI of the uploaded object or prefix."""
    from botocore.exceptions import BotoCoreError, ClientError

    path = Path(path)
    bucket, key = split(uri)
    if not path.exists():
        raise StorageError(f"{path}: no such file or directory to upload to {uri}")
    if path.is_file():
        key = f"{key}/{path.name}".lstrip("/") if uri.endswith("/") or not key else key
        files = {key: path}
    else:
        files = {
            f"{key}/{f.relative_to(path).as_posix()}".lstrip("/"): f for f in sorted(path.rglob("*")) if f.is_file()
        }
        if not files:
            raise StorageError(f"{path}: an empty directory; nothing to upload to {uri}")
    s3 = client()
    for object_key, local in files.items():
        try:
            s3.upload_file(str(local), bucket, object_key)
        except (BotoCoreError, ClientError) as exc:
            raise _error(f"{SCHEME}{bucket}/{object_key}", exc, s3) from None
        except Exception as exc:  # boto3's transfer manager wraps ClientError in S3UploadFailedError
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, BotoCoreError | ClientError):
                raise _error(f"{SCHEME}{bucket}/{object_key}", cause, s3) from None
            raise
    log.info("uploaded %d file(s) to %s%s/%s", len(files), SCHEME, bucket, key)
    return f"{SCHEME}{bucket}/{key}"


def check(uri: str, endpoint: str | None = None) -> None:
    """Fail with a clear StorageError unless the bucket of `uri` is reachable with the current
    credentials: a quick check before tools that retry for minutes (dvc push/pull)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = split(uri)
    s3 = client(endpoint)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchBucket"}:
            exc.response["Error"]["Code"] = "NoSuchBucket"
        raise _error(uri, exc, s3) from None
    except BotoCoreError as exc:
        raise _error(uri, exc, s3) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m tympan.storage check S3_URI [ENDPOINT]` (what `make push`/`make pull` run first)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "check":
        print("usage: python -m tympan.storage check S3_URI [ENDPOINT_URL]", file=sys.stderr)
        return 2
    try:
        check(args[1], args[2] if len(args) == 3 and args[2] else None)
    except TympanError as exc:
        print(f"tympan: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
