"""Stores on object storage: `s3://bucket/prefix` (DESIGN.md section 3), through obstore.

`store_path("s3://bucket/run1")` gives an `S3Path`, `store_path("shards")` a
`pathlib.Path`; the store code takes either. S3Path has the few pathlib
methods stores use (`/`, `name`, `exists`, `is_file`, `read_text`,
`write_text`, `unlink`, ...) plus what object storage adds: ranged reads,
conditional writes (`put(..., mode="create")` is If-None-Match: *,
`mode={"e_tag": tag}` is If-Match), listing, and uploads of local files
(multipart when large).

There is no rename on S3, so a store there is kept safe otherwise: writers
build each shard in a local staging folder, upload it under its final key
and only then list it in the manifest, which they replace by If-Match on its
ETag (retried on conflict). Readers trust only the manifest.

Credentials, region and endpoint come from the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
AWS_ENDPOINT_URL for S3-compatible servers); with none set in the
environment and boto3 installed, boto3's chain (~/.aws files, profiles) is used.
Choice of library: docs/stores.md, "Library choice" (measured in bench/bench_s3.py).
"""

from __future__ import annotations

import fnmatch
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from f1.shared.errors import UserError

SCHEME = "s3://"
MULTIPART_CHUNK = 16 << 20  # uploads larger than this go as multipart, in parts of this size


class S3Error(UserError):
    """Object storage could not be reached or refused a request; one line naming the fix."""


def is_s3(location: Any) -> bool:
    return isinstance(location, S3Path) or (isinstance(location, str) and location.startswith(SCHEME))


def store_path(location: "str | Path | S3Path") -> "Path | S3Path":
    """An S3Path for an s3:// URL, else a pathlib.Path."""
    if isinstance(location, S3Path):
        return location
    if isinstance(location, str) and location.startswith(SCHEME):
        return S3Path.parse(location)
    return Path(location)


_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()


def _client_config() -> dict[str, Any]:
    """Credentials from boto3's chain (files, profiles) when the environment names none and boto3 is there."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return {}
    try:
        import boto3
    except ImportError:
        return {}
    creds = boto3.Session().get_credentials()
    if creds is None:
        return {}
    frozen = creds.get_frozen_credentials()
    config = {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key}
    if frozen.token:
        config["session_token"] = frozen.token
    region = boto3.Session().region_name
    if region and not os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        config["region"] = region
    return config


def bucket_store(bucket: str) -> Any:
    """One obstore S3Store per bucket and process (its connection pool is shared by threads)."""
    with _STORES_LOCK:
        store = _STORES.get(bucket)
        if store is None:
            from obstore.store import S3Store

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
            config = _client_config()
            if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "region" in config):
                config["region"] = "us-east-1"
            store = S3Store(
                bucket,
                config=config,
                client_options={"allow_http": endpoint.startswith("http://"), "timeout": "120s"},
                retry_config={"max_retries": 5, "retry_timeout": timedelta(seconds=60)},
            )
            _STORES[bucket] = store
        return store


def _fail(path: "S3Path", action: str, exc: BaseException) -> S3Error:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return S3Error(
        f"cannot {action} {path}: {type(exc).__name__}: {first[:300]}; check the bucket, AWS_ENDPOINT_URL and the AWS credentials"
    )


class S3Path:
    """An object key (or a key prefix, a 'folder') in a bucket: s3://<bucket>/<key>."""

    def __init__(self, bucket: str, key: str):
        self.bucket, self.key = bucket, key.strip("/")

    @classmethod
    def parse(cls, url: str) -> "S3Path":
        rest = url[len(SCHEME) :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise S3Error(f"{url!r} names no bucket; write s3://<bucket>/<prefix>")
        return cls(bucket, key)

    # -- pathlib's surface -----------------------------------------------------------------

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Path) and (self.bucket, self.key) == (other.bucket, other.key)

    def __hash__(self) -> int:
        return hash((self.bucket, self.key))

    def __truediv__(self, name: str) -> "S3Path":
        return S3Path(self.bucket, f"{self.key}/{name}" if self.key else str(name))

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "S3Path":
        return S3Path(self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    def resolve(self) -> "S3Path":
        return self

    def mkdir(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: a prefix exists once an object is written under it."""

    @property
    def _store(self) -> Any:
        return bucket_store(self.bucket)

    def head(self) -> dict[str, Any] | None:
        """The object's metadata (size, e_tag), None when there is no object at this key."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return obstore.head(self._store, self.key)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001 - a connection or permission problem: one line
            raise _fail(self, "reach", exc) from None

    def is_file(self) -> bool:
        return self.head() is not None

    def is_dir(self) -> bool:
        return next(iter(self.list()), None) is not None

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator["S3Path"]:
        """The immediate children (objects and 'folders') under this prefix."""
        import obstore

        try:
            listing = obstore.list_with_delimiter(self._store, self.key + "/" if self.key else None)
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "list", exc) from None
        for prefix in listing["common_prefixes"]:
            yield S3Path(self.bucket, prefix)
        for obj in listing["objects"]:
            yield S3Path(self.bucket, obj["path"])

    def glob(self, pattern: str) -> Iterator["S3Path"]:
        return (p for p in self.iterdir() if fnmatch.fnmatch(p.name, pattern))

    def read_bytes(self) -> bytes:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self._store, self.key).bytes())
        except (NotFoundError, FileNotFoundError):
            raise FileNotFoundError(str(self)) from None
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "read", exc) from None

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        self.put(data)

    def write_text(self, text: str) -> None:
        self.put(text.encode())

    def unlink(self, missing_ok: bool = False) -> None:
        import obstore

        try:
            obstore.delete(self._store, self.key)  # S3 answers a delete of a missing key with success
        except Exception as exc:  # noqa: BLE001
            if not missing_ok:
                raise _fail(self, "delete", exc) from None

    # -- what object storage adds ----------------------------------------------------------

    def read_with_etag(self) -> tuple[bytes, str] | None:
        """(bytes, ETag) of the object, None when there is none: the start of a conditional update."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = obstore.get(self._store, self.key)
            return bytes(result.bytes()), result.meta["e_tag"]
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "read", exc) from None

    def put(self, data: bytes, mode: Any = "overwrite") -> str | None:
        """Write the object whole; returns its ETag. mode "create" (If-None-Match: *) raises
        FileExistsError when the key exists; {"e_tag": tag} (If-Match) raises ConflictError when it changed."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            return obstore.put(self._store, self.key, data, mode=mode)["e_tag"]
        except AlreadyExistsError:
            raise FileExistsError(str(self)) from None
        except PreconditionError:
            raise ConflictError(str(self)) from None
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "write", exc) from None

    def upload(self, local: Path) -> None:
        """Upload a local file under this key: one PUT, or a multipart upload when it is large. The object
        appears only when the upload completes, so a writer killed mid-way leaves no object (a dead
        multipart upload's parts are never listed; a bucket lifecycle rule reclaims them)."""
        import obstore

        try:
            obstore.put(self._store, self.key, Path(local), chunk_size=MULTIPART_CHUNK, max_concurrency=4)
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "upload to", exc) from None

    def size(self) -> int:
        meta = self.head()
        if meta is None:
            raise FileNotFoundError(str(self))
        return int(meta["size"])

    def read_range(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the object: one ranged GET."""
        import obstore

        if length <= 0:
            return b""
        try:
            return bytes(obstore.get_range(self._store, self.key, start=offset, length=length))
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "read", exc) from None

    def list(self) -> Iterator[tuple[str, int]]:
        """(key relative to this prefix, size) of every object under it, recursively."""
        import obstore

        base = self.key + "/" if self.key else ""
        try:
            for batch in obstore.list(self._store, prefix=base or None):
                for obj in batch:
                    yield obj["path"][len(base) :], int(obj["size"])
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "list", exc) from None

    def list_times(self) -> Iterator[tuple[str, float]]:
        """(key relative to this prefix, last-modified time in seconds since the epoch) of every object under it."""
        import obstore

        base = self.key + "/" if self.key else ""
        try:
            for batch in obstore.list(self._store, prefix=base or None):
                for obj in batch:
                    yield obj["path"][len(base) :], obj["last_modified"].timestamp()
        except Exception as exc:  # noqa: BLE001
            raise _fail(self, "list", exc) from None

    def download_to(self, local: Path) -> None:
        """Every object under this prefix (or this one object) into `local`, keeping relative paths."""
        entries = list(self.list())
        if not entries:
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            Path(local).write_bytes(self.read_bytes())
            return
        for rel, _ in entries:
            dest = Path(local) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((self / rel).read_bytes())


class ConflictError(Exception):
    """A conditional write lost: the object changed since it was read (HTTP 412)."""
