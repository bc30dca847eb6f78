"""Credentials out of what kubeloop prints, logs and stores.

A tracking URI may carry a password (`http://user:PASSWORD@mlflow:5000`), an S3 endpoint a
key, a presigned URL a signature; error messages of the clients that use them (MLflow,
requests, urllib3) repeat them. Everything kubeloop shows a person goes through `redact`:

    http://user:PASSWORD@host/x        ->  http://user:***@host/x
    https://TOKEN@host                 ->  https://***@host
    ...?X-Amz-Signature=abc&part=1     ->  ...?X-Amz-Signature=***&part=1

`LogFilter` does the same to every log record (message, arguments and traceback), and
`redacted_output` to what is written to stdout and stderr (MLflow, for one, prints run
URLs built from the tracking URI), so what a library says is covered too. Pure and
dependency-free: every layer may import it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO, cast

MASK = "***"

# scheme://userinfo@ : userinfo runs to the last "@" before the path, as urllib.parse reads it.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@"
)
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|"
    r"token|access_token|id_token|password|passwd|secret|client_secret|api_key|apikey)=)"
    r"(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it masked; no side effects."""
    if "://" not in text and "=" not in text:
        return text  # the common case, a message without a URI: no regex work
    text = _USERINFO.sub(_mask_userinfo, text)
    return _SECRET_PARAMETER.sub(lambda m: m["name"] + MASK, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, has_password, _ = match["userinfo"].partition(":")
    # A password: keep the user, who helps to debug. A lone part may be a token: mask it.
    return f"{match['scheme']}{user}:{MASK}@" if has_password else f"{match['scheme']}{MASK}@"


class LogFilter(logging.Filter):
    """Redacts a record's message and traceback; attach it to handlers (see `install`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
_FILTER = LogFilter()


def install() -> None:
    """Attach the filter to every handler configured now (the root's and other loggers').

    A handler filter sees the records propagated from every library's logger; call this
    once logging is configured.
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


class _RedactingStream:
    """A text stream that redacts what is written to it, then hands it on."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """sys.stdout and sys.stderr redacted while the block runs; restored after it."""
    saved = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, _RedactingStream(saved[0]))
    sys.stderr = cast(TextIO, _RedactingStream(saved[1]))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
