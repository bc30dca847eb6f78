"""Object storage (S3 / MinIO) for samples, snapshots and the prediction log.

The only module that talks S3 for kubeloop's own data; MLflow reaches S3 by itself.
Retries are urllib3's (`Retry`): connection and read errors and 5xx answers, every verb,
with exponential backoff, at most `retries` times; what still fails is StorageUnavailable,
naming the endpoint (credentials never: an endpoint carrying some is refused).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from kubeloop import redaction
from kubeloop.api.errors import Unavailable
from kubeloop.settings import Settings

T = TypeVar("T")


class StorageUnavailable(Unavailable):
    """The S3 server could not be reached, or answered with a server error."""

    reason = "StorageUnavailable"


class ObjectNotFound(KeyError):
    """The requested object does not exist."""


class InvalidEndpoint(ValueError):
    """The S3 endpoint cannot be used as given (the message says why, redacted)."""


@dataclass(frozen=True)
class S3Uri:
    """s3://bucket/key, split."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
        return cls(parsed.netloc, parsed.path.lstrip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


BACKOFF_SECONDS = 0.2
"""Backoff factor: retries wait 0, 0.4, 0.8, ... seconds (urllib3 doubles it per retry)."""
BACKOFF_MAX_SECONDS = 5.0
RETRIED_STATUSES = (500, 502, 503, 504)


def retry_policy(retries: int) -> urllib3.Retry:
    """At most `retries` more attempts after a connection or read error or a 5xx answer."""
    return urllib3.Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=retries,
        redirect=2,
        allowed_methods=None,  # every verb: S3's POSTs (multipart, deletes) repeat safely
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=BACKOFF_SECONDS,
        backoff_max=BACKOFF_MAX_SECONDS,
        raise_on_status=False,  # the last 5xx reaches minio, whose error names it
        retry_after_max=int(BACKOFF_MAX_SECONDS),  # a server's Retry-After, bounded too
    )


class ObjectStore:
    """A bucket-level S3 client with bounded retries and errors that name the endpoint."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        retries: int = 3,
        timeout_seconds: float = 10.0,
    ) -> None:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parsed.username is not None or parsed.password is not None:
            raise InvalidEndpoint(
                f"the S3 endpoint {redaction.redact(endpoint)} carries credentials: give the "
                "endpoint alone, and the keys as KUBELOOP_S3_ACCESS_KEY and "
                "KUBELOOP_S3_SECRET_KEY"
            )
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self._attempts = retries + 1
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(3.0, timeout_seconds), read=timeout_seconds),
            retries=retry_policy(retries),
            maxsize=16,
        )
        self._client = Minio(
            parsed.netloc,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            secure=parsed.scheme == "https",
            http_client=http,
        )

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str | None = None) -> ObjectStore:
        return cls(
            endpoint or settings.s3_endpoint,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            settings.s3_region,
            settings.s3_retries,
            settings.s3_timeout_seconds,
        )

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists."""
        if not self._call(self._client.bucket_exists, bucket):
            try:
                self._call(self._client.make_bucket, bucket)
            except S3Error as error:
                if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Store `data`; returns only once the server has acknowledged the write."""
        # A fresh stream per attempt: a retry must not resume the one a failed attempt read.
        self._call(
            lambda: self._client.put_object(bucket, key, io.BytesIO(data), len(data), content_type)
        )

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The object's content; ObjectNotFound when it does not exist."""
        try:
            response = self._call(self._client.get_object, bucket, key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket"):
                raise ObjectNotFound(f"s3://{bucket}/{key}") from error
            raise
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def put_json(self, bucket: str, key: str, value: Any) -> None:
        self.put_bytes(bucket, key, json.dumps(value).encode(), "application/json")

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.get_bytes(bucket, key))

    def list_keys(self, bucket: str, prefix: str, start_after: str | None = None) -> list[str]:
        """Keys under `prefix` in lexical order, only those after `start_after` when given.

        With time-ordered keys (ULIDs) this lists only what arrived since the last call.
        """

        def listing() -> list[str]:
            objects = self._client.list_objects(
                bucket, prefix=prefix, recursive=True, start_after=start_after or ""
            )
            return [o.object_name for o in objects if o.object_name is not None]

        try:
            return self._call(listing)
        except S3Error as error:
            if error.code == "NoSuchBucket":
                return []
            raise

    def copy(self, bucket: str, source: str, target: str) -> None:
        """Copy one object within `bucket`, server-side; ObjectNotFound when there is none."""
        try:
            self._call(lambda: self._client.copy_object(bucket, target, CopySource(bucket, source)))
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket"):
                raise ObjectNotFound(f"s3://{bucket}/{source}") from error
            raise

    def delete(self, bucket: str, keys: list[str]) -> None:
        """Delete `keys` (absent ones are fine), up to 1000 per request."""
        for start in range(0, len(keys), 1000):
            batch = [DeleteObject(k) for k in keys[start : start + 1000]]

            def remove(batch: list[DeleteObject] = batch) -> list[str]:
                failed = self._client.remove_objects(bucket, batch)
                return [f"{e.name}: {e.message}" for e in failed if e.code != "NoSuchKey"]

            failures = self._call(remove)
            if failures:
                raise StorageUnavailable(
                    f"object storage at {self.endpoint} refused to delete {len(failures)} "
                    f"objects, e.g. {failures[0]}"
                )

    def _call(self, func: Callable[..., T], *args: Any) -> T:
        """Run one client call (urllib3 retried it); an outage becomes StorageUnavailable."""
        try:
            return func(*args)
        except (S3Error, InvalidResponseError) as error:
            if _status(error) < 500:
                raise  # the server answered: NoSuchKey, AccessDenied, ... are the caller's
            raise self._unavailable(error) from error
        except (urllib3.exceptions.HTTPError, OSError, ServerError) as error:
            raise self._unavailable(error) from error

    def _unavailable(self, error: Exception) -> StorageUnavailable:
        detail = redaction.redact(f"{type(error).__name__}: {error}")[:500]
        return StorageUnavailable(
            f"object storage at {self.endpoint} failed after {self._attempts} attempts "
            f"({detail}); check that the S3 server runs and KUBELOOP_S3_ENDPOINT points at it"
        )


def _status(error: S3Error | InvalidResponseError) -> int:
    if isinstance(error, S3Error):
        return int(error.response.status)
    return int(error._code)  # minio keeps the status there only
