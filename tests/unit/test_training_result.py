"""The trainer's result line (parsed by the operator) and the model card."""

import json

import pytest

from kubeloop import plugins
from kubeloop.api.training_result import MAX_BYTES, TrainingResult
from kubeloop.api.trainingjob import Metrics
from kubeloop.training import card, splits

RESULT = TrainingResult(
    training_job="digits-retrain-3",
    registered_model="digits",
    model_version="4",
    mlflow_run_id="0123456789abcdef0123456789abcdef",
    metrics=Metrics(overall=0.95, slices={"base": 0.99, "new-user": 0.91}),
    onnx_max_abs_diff=9.5e-6,
    train_seconds=12.5,
    device="cpu",
)


def test_the_line_is_compact_camel_case_json() -> None:
    line = RESULT.to_line()
    assert "\n" not in line
    assert " " not in line
    wire = json.loads(line)
    assert set(wire) == {
        "trainingJob",
        "registeredModel",
        "modelVersion",
        "mlflowRunId",
        "metrics",
        "onnxMaxAbsDiff",
        "trainSeconds",
        "device",
    }
    assert wire["modelVersion"] == "4"
    assert wire["metrics"] == {"overall": 0.95, "slices": {"base": 0.99, "new-user": 0.91}}


def test_parse_takes_the_last_result_line_of_noisy_output() -> None:
    stdout = "\n".join(["loading", '{"not": "a result"}', RESULT.to_line(), "", "  "])
    assert TrainingResult.parse(stdout) == RESULT
    assert TrainingResult.parse(RESULT.to_line()) == RESULT
    with pytest.raises(ValueError, match="no training result"):
        TrainingResult.parse("Traceback ...\nKeyError: 'x'")


def test_many_slices_still_fit_a_termination_message() -> None:
    slices = {f"user-{i:03d}-with-a-long-slice-name": 0.987654 for i in range(60)}
    result = RESULT.model_copy(update={"metrics": Metrics(overall=0.5, slices=slices)})
    assert len(result.to_line().encode()) < MAX_BYTES


def test_model_card_states_lineage_metrics_and_interface() -> None:
    info = plugins.load("image-classifier").info()
    text = card.render(
        card.Facts(
            training_job="default/digits-retrain-3",
            registered_model="digits",
            plugin=info,
            args={"epochs": 20, "fineTune": "full"},
            lineage=[
                splits.Lineage("base", "builtin://digits", False, 1078, 359, 360),
                splits.Lineage(
                    "feedback", "s3://kubeloop/f/gen-3.json", True, 80, 10, 0, "digits-feedback", 3
                ),
            ],
            metric="accuracy",
            evaluation=plugins.Evaluation(0.95, {"base": 0.99, "new-user": 0.91}),
            slice_sizes={"base": 360, "new-user": 360},
            unevaluated=["night-shift"],
            parent="models:/digits/3",
            classes=[str(d) for d in range(10)],
            input_shape=(1, 8, 8),
            embedding_size=64,
            onnx_max_abs_diff=9.5e-6,
            train_seconds=12.3,
            device="cpu",
            best_epoch=14,
            epochs=20,
        )
    )
    assert text.startswith("# digits: model card")
    assert "fine-tuned from `models:/digits/3`" in text
    assert "| new-user | 0.9100 | 360 |" in text
    assert "| **overall** | 0.9500 | 720 |" in text
    assert "| night-shift | not evaluated" in text
    assert "| feedback | `s3://kubeloop/f/gen-3.json` | digits-feedback | 3 | 80 | 10 | 0 |" in text
    assert f"`{info.name}` {info.version}" in text
    assert '"fineTune": "full"' in text
    assert "input `input`: float32 `[batch, 1, 8, 8]`" in text
    assert "output `embedding`: float32 `[batch, 64]`" in text
