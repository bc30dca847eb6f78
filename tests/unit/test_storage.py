"""ObjectStore against a real S3 server: writes, reads, O(new) listing, outages retried by
urllib3 (connection errors and 5xx answers, bounded), endpoints never shown with
credentials."""

import pytest

from kubeloop.local import services
from kubeloop.storage import ObjectNotFound, ObjectStore, S3Uri, StorageUnavailable
from tests.conftest import ACCESS_KEY, SECRET_KEY, unused_url
from tests.tcp_proxy import TcpProxy


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


def test_a_5xx_answer_is_retried(s3_server: services.Service) -> None:
    direct = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY)
    direct.ensure_bucket("store-test")
    direct.put_bytes("store-test", "retried", b"x")
    proxy = TcpProxy(s3_server.url)
    proxy.intercept("503", times=2)  # then the proxy passes requests on
    try:
        store = ObjectStore(proxy.url, ACCESS_KEY, SECRET_KEY, retries=2, timeout_seconds=3)
        assert store.get_bytes("store-test", "retried") == b"x"
        assert proxy.intercepted == 2
    finally:
        proxy.close()


def test_5xx_answers_past_the_retries_name_the_endpoint(s3_server: services.Service) -> None:
    proxy = TcpProxy(s3_server.url)
    proxy.mode = "503"
    try:
        store = ObjectStore(proxy.url, ACCESS_KEY, SECRET_KEY, retries=2, timeout_seconds=3)
        with pytest.raises(StorageUnavailable) as failed:
            store.list_keys("store-test", "p/")
        assert f"object storage at {proxy.url} failed after 3 attempts" in str(failed.value)
        assert "KUBELOOP_S3_ENDPOINT" in str(failed.value)
        assert proxy.intercepted == 3
    finally:
        proxy.close()


def test_an_endpoint_with_credentials_is_refused_without_showing_them() -> None:
    with pytest.raises(ValueError, match="carries credentials") as refused:
        ObjectStore("http://key:PLANTED-SECRET@127.0.0.1:9", ACCESS_KEY, SECRET_KEY)
    assert "PLANTED-SECRET" not in str(refused.value)
    assert "http://key:***@127.0.0.1:9" in str(refused.value)


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
