"""TrainingJob phase logic as pure functions: decide, the trainer's result, spec problems, and
reading a batch Job and its pods into a TrainerState."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from kubeloop.api import conditions
from kubeloop.api.training_result import TrainingFailure
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeloop.reconcile import observations, trainingjob
from kubeloop.reconcile.trainingjob import Observed, TrainerState, TrainingJobPlan

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RESULT = json.dumps(
    {
        "trainingJob": "tj",
        "registeredModel": "digits",
        "modelVersion": "7",
        "mlflowRunId": "run-1",
        "metrics": {"overall": 0.95, "slices": {"base": 0.97}},
        "onnxMaxAbsDiff": 1e-6,
        "trainSeconds": 12.5,
        "device": "cuda",
    }
)


def spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {
            "plugin": {"name": "image-classifier"},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": "digits",
            **fields,
        }
    )


def decide(
    status: TrainingJobStatus | None,
    generation: int,
    trainer: TrainerState | None,
    problems: Sequence[str] = (),
) -> TrainingJobPlan:
    observed = Observed(generation, "tj", trainer, tuple(problems))
    return trainingjob.decide(spec(), status, observed, NOW)


def ready(status: TrainingJobStatus) -> tuple[str, str]:
    found = conditions.get_condition(status.conditions, "Ready")
    assert found is not None
    return found.status, found.reason


def test_a_new_job_starts_its_trainer_once_named() -> None:
    plan = decide(None, 1, None)
    assert plan.start_trainer
    assert (plan.status.phase, plan.status.job_name, plan.status.observed_generation) == (
        "Pending",
        "tj",
        1,
    )
    assert [e.reason for e in plan.events] == ["Started"]
    assert ready(plan.status) == ("False", "Starting")


def test_phases_follow_the_trainer_and_events_mark_transitions() -> None:
    started = decide(None, 1, None).status
    running = decide(started, 1, TrainerState("Running", "T0"))
    assert (running.status.phase, running.status.start_time) == ("Running", "T0")
    assert [e.reason for e in running.events] == ["Running"]
    again = decide(running.status, 1, TrainerState("Running", "T0"))
    assert again.events == ()
    assert not again.start_trainer
    done = decide(again.status, 1, TrainerState("Succeeded", "T0", "T1", result=RESULT))
    status = done.status
    assert (status.phase, status.model_version, status.mlflow_run_id) == ("Succeeded", "7", "run-1")
    assert status.metrics is not None
    assert status.metrics.slices == {"base": 0.97}
    assert (status.start_time, status.completion_time) == ("T0", "T1")
    assert ready(status) == ("True", "Succeeded")
    assert done.finished
    assert [e.reason for e in done.events] == ["Succeeded"]
    assert "version 7" in done.events[0].message


LOG = """2026-12-03T07:00:01Z INFO training image-classifier small on cpu (fp32): 10 classes
2026-12-03T07:00:02Z INFO epoch 1/30 train_loss=1.2000 val_accuracy=0.8000 images_per_second=900.0
[rank0]:2026-12-03T07:00:03Z INFO epoch 2/30 train_loss=0.5 val_accuracy=0.91 img_s=1800.5
2026-12-03T07:00:03Z INFO rank 1 of 2: training its shard; rank 0 registers
"""


def test_progress_is_the_last_epoch_line_of_the_trainers_log() -> None:
    progress = observations.progress_from_log(LOG)
    assert progress is not None
    assert (progress.epoch, progress.epochs, progress.percent) == (2, 30, 6)
    assert progress.metrics == {
        "train_loss": 0.5,
        "val_accuracy": 0.91,
        "img_s": 1800.5,
    }
    assert progress.update_time == "2026-12-03T07:00:03Z"
    assert observations.progress_from_log(LOG.splitlines()[0]) is None  # no epoch yet
    assert observations.progress_from_log("") is None


def test_the_status_keeps_the_last_progress_it_saw() -> None:
    started = decide(None, 1, None).status
    progress = observations.progress_from_log(LOG)
    running = decide(started, 1, TrainerState("Running", "T0", progress=progress)).status
    assert running.progress == progress
    unread = decide(running, 1, TrainerState("Running", "T0")).status  # the log unreadable
    assert unread.progress == progress
    done = decide(unread, 1, TrainerState("Succeeded", "T0", "T1", result=RESULT)).status
    assert done.progress == progress


def test_a_finished_job_whose_trainer_is_gone_is_not_restarted() -> None:
    done = TrainingJobStatus(phase="Succeeded", model_version="7")
    plan = decide(done, 2, None)
    assert not plan.start_trainer
    assert plan.status.phase == "Succeeded"
    assert plan.status.observed_generation == 2
    failed = decide(TrainingJobStatus(phase="Failed"), 1, None)
    assert not failed.start_trainer


def test_a_running_job_whose_trainer_vanishes_fails_rather_than_training_twice() -> None:
    plan = decide(TrainingJobStatus(phase="Running"), 1, None)
    assert (plan.start_trainer, plan.status.phase, plan.finished) == (False, "Failed", True)
    assert ready(plan.status) == ("False", "TrainerLost")
    pending = decide(TrainingJobStatus(phase="Pending", job_name="tj"), 1, None)
    assert pending.start_trainer


def test_failure_carries_the_reason_and_is_told_once() -> None:
    trainer = TrainerState("Failed", "T0", "T1", "BackoffLimitExceeded", "pod x: OOMKilled")
    plan = decide(TrainingJobStatus(phase="Running"), 1, trainer)
    assert plan.status.phase == "Failed"
    assert ready(plan.status) == ("False", "BackoffLimitExceeded")
    succeeded = conditions.get_condition(plan.status.conditions, "Succeeded")
    assert succeeded is not None
    assert (succeeded.status, succeeded.message) == ("False", "pod x: OOMKilled")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Failed")]
    assert plan.finished
    again = decide(plan.status, 1, trainer)
    assert (again.events, again.finished) == ((), False)


@pytest.mark.parametrize(
    ("result", "words"),
    [(None, "''"), ("{not json", "{not json"), ('{"modelVersion": "1"}', "modelVersion")],
)
def test_an_unreadable_result_fails_the_job(result: str | None, words: str) -> None:
    plan = decide(None, 1, TrainerState("Succeeded", result=result))
    assert plan.status.phase == "Failed"
    assert ready(plan.status) == ("False", "ResultUnreadable")
    message = conditions.get_condition(plan.status.conditions, "Ready")
    assert message is not None
    assert words in message.message


def test_invalid_spec_does_not_start_and_warns_once() -> None:
    plan = decide(None, 3, None, ["bad label"])
    assert not plan.start_trainer
    assert ready(plan.status) == ("False", "InvalidSpec")
    assert [e.reason for e in plan.events] == ["InvalidSpec"]
    again = decide(plan.status, 3, None, ["bad label"])
    assert again.events == ()
    fixed = decide(again.status, 4, None)
    assert fixed.start_trainer


def test_spec_problems_find_what_the_schema_cannot() -> None:
    assert trainingjob.spec_problems(spec()) == []
    problems = trainingjob.spec_problems(
        spec(
            datasets=[{"name": "a", "uri": "s3://b/1"}, {"name": "a", "uri": "s3://b/2"}],
            credentials=[{"name": "s", "key": "not-an-env"}],
            template={
                "labels": {"ok.example.com/k": "v", "bad key": "v", "k": "x" * 64},
                "annotations": {"a/b/c": "v"},
                "tolerations": [{"key": "k", "operator": "Maybe", "colour": "red"}],
                "serviceAccountName": "Not_Valid",
            },
            image="two words",
        )
    )
    text = "\n".join(problems)
    for words in (
        "repeated: a",
        "credentials[0].key",
        "'bad key'",
        "value 'xxx",
        "'a/b/c'",
        "unknown fields ['colour']",
        "operator: must be",
        "serviceAccountName",
        "image:",
    ):
        assert words in text


def job(conditions_: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "tj", "uid": "job-uid"},
        "spec": {},
        "status": {"startTime": "T0", "conditions": conditions_ or [], **status},
    }


def pod(name: str, phase: str, state: dict[str, Any], created: str = "T1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


def test_a_jobs_fingerprint_changes_with_its_status_and_suspension_only() -> None:
    job: dict[str, Any] = {"metadata": {"name": "j"}, "spec": {"suspend": False}}
    same = observations.job_fingerprint(job)
    relabelled = {**job, "metadata": {"name": "j", "labels": {"a": "b"}, "finalizers": ["x"]}}
    assert observations.job_fingerprint(relabelled) == same
    assert observations.job_fingerprint({**job, "status": {}}) == same
    assert observations.job_fingerprint({**job, "status": {"active": 1}}) != same
    assert observations.job_fingerprint({**job, "spec": {"suspend": True}}) != same


def test_a_complete_job_gives_the_newest_successful_pods_result() -> None:
    state = observations.trainer_state(
        job([{"type": "Complete", "status": "True"}], completionTime="T9"),
        [
            pod("old", "Failed", {"terminated": {"exitCode": 1, "message": "boom"}}, "T1"),
            pod("new", "Succeeded", {"terminated": {"exitCode": 0, "message": RESULT}}, "T2"),
        ],
    )
    assert state == TrainerState("Succeeded", "T0", "T9", result=RESULT)


def test_a_failed_job_names_the_condition_and_the_pods_exit() -> None:
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline",
        "lastTransitionTime": "T5",
    }
    state = observations.trainer_state(
        job([failed]),
        [pod("p", "Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
    )
    assert (state.phase, state.reason, state.completion_time) == (
        "Failed",
        "DeadlineExceeded",
        "T5",
    )
    assert "code 137 (OOMKilled)" in state.message


def test_a_failed_trainers_reason_reaches_the_status() -> None:
    failure = TrainingFailure(
        training_job="tj",
        error="DatasetError",
        message="dataset not found or empty: s3://kubeloop/does-not-exist/",
        exit_code=1,
        log_tail=["... INFO loading dataset base", "... ERROR nothing under the prefix"],
    )
    terminated = {"exitCode": 1, "reason": "Error", "message": failure.to_line()}
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    state = observations.trainer_state(
        job([failed]), [pod("p", "Failed", {"terminated": terminated})]
    )
    plan = decide(TrainingJobStatus(phase="Running"), 1, state)
    message = conditions.get_condition(plan.status.conditions, "Succeeded")
    assert message is not None
    assert "the trainer exited with code 1 (Error)" in message.message
    assert (
        "DatasetError: dataset not found or empty: s3://kubeloop/does-not-exist/" in message.message
    )
    assert "nothing under the prefix" in message.message  # the last log lines too
    long = failure.model_copy(update={"log_tail": ["x" * 300] * 40})
    assert len(long.to_line().encode()) <= 4096  # a termination message keeps 4 KiB


@pytest.mark.parametrize(
    ("job_", "pods", "expected"),
    [
        (job(), [], ("Pending", "")),
        ({**job(), "spec": {"suspend": True}}, [], ("Pending", "Suspended")),
        (job(active=1), [pod("p", "Running", {"running": {}})], ("Running", "")),
        (job(active=1, ready=1), [], ("Running", "")),
        (
            job(active=1),
            [pod("p", "Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "x"}})],
            ("Pending", "ImagePullBackOff"),
        ),
        (
            job(active=1),
            [
                {
                    "metadata": {"name": "p"},
                    "status": {
                        "phase": "Pending",
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": "0/3 nodes have nvidia.com/gpu",
                            }
                        ],
                    },
                }
            ],
            ("Pending", "Unschedulable"),
        ),
    ],
)
def test_waiting_and_running(
    job_: dict[str, Any], pods: list[dict[str, Any]], expected: tuple[str, str]
) -> None:
    state = observations.trainer_state(job_, pods)
    assert (state.phase, state.reason) == expected


def test_trainer_entrypoint_contract() -> None:
    assert trainingjob.TRAINER_COMMAND == ("python", "-m", "kubeloop.training")
    assert trainingjob.trainer_args() == [
        "--spec",
        "/etc/kubeloop/trainingjob.yaml",
        "--result",
        "/dev/termination-log",
    ]
