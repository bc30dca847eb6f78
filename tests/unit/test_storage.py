"""ObjectStore against a real S3 server: writes, reads, O(new) listing, outages."""

import pytest

from kubeloop.local import services
from kubeloop.storage import ObjectNotFound, ObjectStore, S3Uri, StorageUnavailable
from tests.conftest import ACCESS_KEY, SECRET_KEY, unused_url


def test_put_get_and_list_after(object_store: ObjectStore) -> None:
    object_store.ensure_bucket("store-test")
    object_store.ensure_bucket("store-test")  # idempotent
    for key in ["p/01", "p/02", "p/03"]:
        object_store.put_bytes("store-test", key, key.encode())
    object_store.put_json("store-test", "other/x.json", {"a": 1})
    assert object_store.get_bytes("store-test", "p/02") == b"p/02"
    assert object_store.get_json("store-test", "other/x.json") == {"a": 1}
    assert object_store.list_keys("store-test", "p/") == ["p/01", "p/02", "p/03"]
    assert object_store.list_keys("store-test", "p/", start_after="p/01") == ["p/02", "p/03"]
    assert object_store.list_keys("store-test", "p/", start_after="p/03") == []
    assert object_store.list_keys("no-such-bucket", "p/") == []


def test_missing_object(object_store: ObjectStore) -> None:
    object_store.ensure_bucket("store-test")
    with pytest.raises(ObjectNotFound):
        object_store.get_bytes("store-test", "absent")


def test_unreachable_server_names_the_endpoint() -> None:
    url = unused_url()
    store = ObjectStore(url, ACCESS_KEY, SECRET_KEY, retries=1, timeout_seconds=1)
    with pytest.raises(StorageUnavailable, match=url.replace(".", r"\.")):
        store.put_bytes("bucket", "key", b"x")


def test_s3_uri() -> None:
    assert S3Uri.parse("s3://bucket/a/b.json") == S3Uri("bucket", "a/b.json")
    assert str(S3Uri("bucket", "k")) == "s3://bucket/k"
    with pytest.raises(ValueError, match="not an S3 URI"):
        S3Uri.parse("http://x/y")


def test_service_reports_a_failed_start(tmp_path: object) -> None:
    port = services.free_port()
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(services.ServiceError, match="s3 server"):
            services.start_s3(tmp_path / "s3", port=port, timeout=15)  # type: ignore[operator]
