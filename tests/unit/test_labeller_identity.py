"""Who a review request comes from: a labeller's own token names them, a trusted proxy's
header names the signed-in user, the shared token names nobody; bad tokens are refused."""

from __future__ import annotations

from typing import Any, cast

import pytest
from starlette.requests import Request

from kubeloop.api.predictor import LABELLER_TOKENS_ENV, TOKEN_ENV, parse_command_line
from kubeloop.serving.errors import Rejected
from kubeloop.serving.routes import Components, _authorize

NOBODY = cast(Any, None)


def components(**fields: Any) -> Components:
    return Components("digits", NOBODY, NOBODY, NOBODY, **fields)


def request(**headers: str) -> Request:
    pairs = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": pairs})


def test_the_credentials_name_the_labeller() -> None:
    c = components(token="shared", labellers={"t-ada": "ada"}, user_header="X-Forwarded-User")
    assert _authorize(c, request(authorization="Bearer t-ada", x_forwarded_user="eve")) == "ada"
    assert _authorize(c, request(authorization="Bearer shared", x_forwarded_user="bob")) == "bob"
    assert _authorize(c, request(authorization="Bearer shared")) is None
    for headers in ({"authorization": "Bearer nope"}, {"x_forwarded_user": "bob"}, {}):
        with pytest.raises(Rejected) as refused:
            _authorize(c, request(**headers))
        assert refused.value.status == 401
    only_labellers = components(labellers={"t-ada": "ada"})
    assert _authorize(only_labellers, request(authorization="bearer t-ada")) == "ada"
    proxied = components(user_header="X-Forwarded-User")  # the proxy authenticates
    assert _authorize(proxied, request(x_forwarded_user="bob")) == "bob"
    assert _authorize(components(), request(x_forwarded_user="bob")) is None


def test_labeller_tokens_come_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--name", "digits", "--model-uri", "models:/digits@champion"]
    monkeypatch.setenv(TOKEN_ENV, "shared")
    monkeypatch.setenv(LABELLER_TOKENS_ENV, '{"ada": "t-ada", "bob": "t-bob"}')
    config = parse_command_line([*args, "--trusted-user-header", "X-Forwarded-User"])
    assert config.labellers == {"t-ada": "ada", "t-bob": "bob"}
    assert "t-ada" not in " ".join(config.to_args())
    for bad, problem in (
        ("{oops", "is not JSON"),
        ('["ada"]', "JSON object of labeller name to token"),
        ('{"ada": "same", "bob": "same"}', "one token to two labellers"),
    ):
        monkeypatch.setenv(LABELLER_TOKENS_ENV, bad)
        with pytest.raises(SystemExit) as exited:
            parse_command_line(args)
        assert exited.value.code == 2
        assert problem in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_command_line([*args, "--labeller-tokens", '{"ada": "t"}'])
