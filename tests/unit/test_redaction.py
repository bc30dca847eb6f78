"""kubeloop.redaction: credentials masked in URIs inside any text, in log records (message,
arguments, traceback) and in what is written to stdout and stderr."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from kubeloop import redaction


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:PASSWORD@mlflow:5000/x", "http://user:***@mlflow:5000/x"),
        ("at https://TOKEN@host/path and more", "at https://***@host/path and more"),
        ("http://u:p@ss@host/", "http://u:***@host/"),  # an unescaped @ in the password
        ("s3://key:secret@bucket/k", "s3://key:***@bucket/k"),
        ("(url='http://u:pw@127.0.0.1:9/api')", "(url='http://u:***@127.0.0.1:9/api')"),
        ("GET /x?X-Amz-Signature=abc123&part=1", "GET /x?X-Amz-Signature=***&part=1"),
        ("http://h/?token=t0k&password=p4ss#f", "http://h/?token=***&password=***#f"),
        ("http://host:5000/path@x", "http://host:5000/path@x"),  # no userinfo: unchanged
        ("mail me at a@b.c, http://host:5000", "mail me at a@b.c, http://host:5000"),
        ("models:/digits@champion", "models:/digits@champion"),
        ("no uri at all", "no uri at all"),
    ],
)
def test_credentials_are_masked(text: str, shown: str) -> None:
    assert redaction.redact(text) == shown
    assert redaction.redact(shown) == shown  # idempotent: redacting twice changes nothing


def test_log_records_are_redacted_message_arguments_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redaction.LogFilter())
    log = logging.getLogger("test-redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("cannot reach %s", "http://u:SECRET1@h:1")
        try:
            raise RuntimeError("API request to http://u:SECRET2@h:1/api failed")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "SECRET" not in text
    assert "cannot reach http://u:***@h:1" in text
    assert "RuntimeError: API request to http://u:***@h:1/api failed" in text


def test_install_reaches_the_handlers_configured() -> None:
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("test-redaction-install")
    logger.addHandler(handler)
    try:
        redaction.install()
        assert any(isinstance(f, redaction.LogFilter) for f in handler.filters)
    finally:
        logger.removeHandler(handler)


def test_stdout_and_stderr_are_redacted_in_the_block(capsys: pytest.CaptureFixture[str]) -> None:
    with redaction.redacted_output():
        print("run at http://u:SECRET@h:5000/#/runs/1")
        sys.stderr.write("token https://SECRET@h\n")
    print("after http://u:shown@h")
    out, err = capsys.readouterr()
    assert "SECRET" not in out + err
    assert "http://u:***@h:5000/#/runs/1" in out
    assert "http://u:shown@h" in out  # restored after the block
