"""The predictor's one configuration model (kubeloop.api.predictor): its command line, the
args it renders for Pods (parsed back to the same model), the token from the environment
only, and `--help` that lists every option without importing the server."""

from __future__ import annotations

import os
import subprocess
import sys
import typing

import onnxruntime
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubeloop import selection
from kubeloop.api import predictor
from kubeloop.api.predictor import PredictorConfig, parse_command_line


def test_command_line_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_FEEDBACK_TOKEN", "t")
    parsed = parse_command_line(
        ["--name", "digits", "--model-uri", "models:/digits@champion", "--host", "127.0.0.1",
         "--http-port", "9000", "--max-batch-size", "16", "--max-latency-ms", "2",
         "--alias-poll-seconds", "1", "--feedback-dataset", "fd", "--feedback-bucket", "b",
         "--feedback-prefix", "p/", "--classes", "0,1,2", "--input-shape", "8,8",
         "--slices", "base,new-user", "--max-payload-bytes", "1000"],
    )  # fmt: skip
    assert parsed.feedback is not None
    assert parsed.feedback.classes == ("0", "1", "2")
    assert parsed.feedback.input_shape == (8, 8)
    assert parsed.feedback.slices == ("base", "new-user")
    assert (parsed.host, parsed.http_port, parsed.max_batch_size) == ("127.0.0.1", 9000, 16)
    assert parsed.feedback_token is not None
    assert parsed.feedback_token.get_secret_value() == "t"
    assert parsed.token == "t"
    monkeypatch.delenv("KUBELOOP_FEEDBACK_TOKEN")
    minimal = parse_command_line(["--name", "m", "--model-uri", "models:/m/3"])
    assert minimal.feedback is None
    assert minimal.host == "0.0.0.0"
    assert minimal.token is None


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--model-uri", "runs:/x/model"], "not a registered-model URI"),
        (["--model-uri", "models:/m/1", "--feedback-dataset", "fd"], "together"),
        (["--model-uri", "models:/m/1", "--max-batch-size", "0"], "at least 1"),
        (["--model-uri", "models:/m/1", "--input-shape", "8,x"], "not a shape"),
        (["--model-uri", "models:/m/1", "--review-strategy", "best"], "--review-strategy"),
        (["--model-uri", "models:/m/1", "--http-port", "70000"], "--http-port: must be at most"),
        (["--model-uri", "models:/m/1", "--feedback-token", "t"], "unrecognized arguments"),
        (["--model-uri", "models:/m/1", "--classes", "a,a", "--feedback-dataset", "d",
          "--feedback-bucket", "b", "--feedback-prefix", "p/"], "must not repeat"),
        (["--model-uri", "models:/m/1", "--max-inflight-bytes", "100"], "must hold at least one"),
    ],
)  # fmt: skip
def test_command_line_errors(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_command_line(["--name", "m", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert problem in err
    assert "Traceback" not in err


def test_only_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBELOOP_HTTP_PORT", "1")
    parsed = parse_command_line(["--name", "m", "--model-uri", "models:/m/1"])
    assert (parsed.host, parsed.http_port) == ("0.0.0.0", 8080)


def test_review_strategies_are_the_selection_modules() -> None:
    assert set(typing.get_args(predictor.ReviewStrategy)) == set(selection.STRATEGIES)


configs = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        "model_uri": st.sampled_from(["models:/m@champion", "models:/digits/3"]),
    },
    optional={
        "host": st.sampled_from(["0.0.0.0", "127.0.0.1", "::"]),
        "http_port": st.integers(1, 65535),
        "max_batch_size": st.integers(1, 4096),
        "max_latency_ms": st.floats(0, 1000, allow_nan=False) | st.integers(0, 1000),
        "alias_poll_seconds": st.floats(0.001, 1e6, allow_nan=False),
        "input_shape": st.lists(st.integers(1, 512), min_size=1, max_size=3),
        "slices": st.lists(st.from_regex(r"[a-z][a-z-]{0,8}", fullmatch=True), max_size=3),
        "review_strategy": st.sampled_from(list(selection.STRATEGIES)),
        "review_budget": st.integers(1, 10_000),
        "max_request_rows": st.integers(1, 10**6),
        "max_json_depth": st.integers(2, 512),
        "reload_timeout_seconds": st.floats(0.01, 600, allow_nan=False),
        "warm_start_seconds": st.floats(0, 1e6, allow_nan=False),
    },
)
feedback = st.fixed_dictionaries(
    {
        "feedback_dataset": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        "feedback_bucket": st.from_regex(r"[a-z][a-z0-9-]{2,20}", fullmatch=True),
        "feedback_prefix": st.from_regex(r"[a-z0-9/_-]{0,20}", fullmatch=True),
        "classes": st.lists(
            st.text("abc 01_-.é", min_size=1, max_size=5).map(str.strip).filter(bool),
            min_size=1,
            max_size=5,
            unique=True,
        ),
    }
)


@settings(max_examples=150, deadline=None)
@given(configs, st.none() | feedback)
@example(  # a class spelt "--": pydantic-settings reads that alone as an empty list
    {"name": "a", "model_uri": "models:/m@champion"},
    {"feedback_dataset": "a", "feedback_bucket": "a00", "feedback_prefix": "", "classes": ["--"]},
)
def test_rendered_args_parse_back_to_the_same_model(
    options: dict[str, object], feedback_options: dict[str, object] | None
) -> None:
    model = PredictorConfig.model_validate({**options, **(feedback_options or {})})
    args = model.to_args()
    assert parse_command_line(args) == model
    assert args[:4] == ["--name", model.name, "--model-uri", model.model_uri]


def test_the_token_is_never_rendered() -> None:
    model = PredictorConfig.model_validate(
        {"name": "m", "model_uri": "models:/m/1", "feedback_token": "s3cret"}
    )
    assert model.token == "s3cret"
    assert "s3cret" not in " ".join(model.to_args())
    assert "s3cret" not in repr(model)


def test_help_lists_every_option_and_loads_no_server() -> None:
    answer = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kubeloop.serving", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for name, field in PredictorConfig.model_fields.items():
        if name in ("feedback_token", "labeller_tokens"):
            flag = "--" + name.replace("_", "-")
            assert flag not in answer.stdout  # a secret is no command line option
            continue
        assert "--" + name.replace("_", "-") in answer.stdout
        assert field.description, f"{name} has no help text"
    assert "container" in answer.stdout  # why the default host is 0.0.0.0
    assert "KUBELOOP_FEEDBACK_TOKEN" in answer.stdout
    imported = {line.split("|")[-1].strip() for line in answer.stderr.splitlines()}
    assert not {name for name in imported if name.startswith(("kserve", "onnxruntime"))}


def test_cuda_without_onnxruntime_gpu_is_one_line_exit_2() -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to refuse")
    command = ["--name", "digits", "--model-uri", "models:/digits@champion", "--device", "cuda"]
    answer = subprocess.run(
        [sys.executable, "-m", "kubeloop.serving", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBELOOP_MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert answer.returncode == 2, answer.stderr
    assert "--device cuda needs onnxruntime's CUDAExecutionProvider" in answer.stderr
    assert "install onnxruntime-gpu" in answer.stderr
    assert "Traceback" not in answer.stderr
