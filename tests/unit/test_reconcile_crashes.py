"""A TrainingJob's and a ServedModel's reconcile crashed at every port call, before or after
it acted, then run again as the runtime would: no trainer started twice, no version promoted
twice, and the same end state as an uninterrupted run. In-memory ports: the same reconciles
run in the operator and in `kubeloop up`, so this covers both runtimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubeloop.api.errors import Unavailable
from kubeloop.api.trainingjob import Metrics
from kubeloop.reconcile import servedmodel, trainingjob
from kubeloop.reconcile.ports import TrainerState
from tests.memory_ports import Crash, Memory

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TJ_CALLS = 1  # start the trainer (no look first: no status names one yet), then the status
SM_CALLS = 6  # alias, latest, two metrics, move the alias, deploy (then the status)


def training_job() -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tj", "namespace": "default", "generation": 1, "uid": "u-tj"},
        "spec": {
            "plugin": {"name": "image-classifier"},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": "digits",
        },
    }


def served_model() -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": "sm", "namespace": "default", "generation": 1, "uid": "u-sm"},
        "spec": {"registeredModel": "digits"},
    }


def until_done(memory: Memory, key: tuple[str, str, str], reconcile: Any, rounds: int) -> None:
    for _ in range(rounds):
        try:
            reconcile(memory.objects.items[key], memory.ports, NOW)
        except Crash:
            memory.crashes.at = None


def test_a_retrain_waits_for_its_base_models_alias_then_starts_once() -> None:
    memory = Memory()
    body = training_job()
    body["spec"]["baseModel"] = "models:/digits@champion"
    memory.objects.put(body)
    key = ("TrainingJob", "default", "tj")
    for _ in range(2):  # no version has the alias yet: said, and retried by the runtime
        with pytest.raises(Unavailable, match="no version with alias 'champion' yet"):
            trainingjob.reconcile(memory.objects.items[key], memory.ports, NOW)
    status = memory.objects.status("TrainingJob", "tj")
    assert status["phase"] == "Pending"
    assert status["conditions"][0]["reason"] == trainingjob.WAITING_FOR_BASE_MODEL
    assert [e.reason for e in memory.objects.events] == [trainingjob.WAITING_FOR_BASE_MODEL]
    assert memory.trainer.started == []
    memory.registry.aliases["champion"] = "1"  # the ServedModel's first promotion
    trainingjob.reconcile(memory.objects.items[key], memory.ports, NOW)
    assert memory.trainer.started == ["tj"]
    assert memory.objects.status("TrainingJob", "tj")["conditions"][0]["reason"] == "Starting"


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("call", range(1, TJ_CALLS + 2))
def test_a_training_job_starts_one_trainer_whatever_the_crash(call: int, after: bool) -> None:
    memory = Memory()
    memory.objects.put(training_job())
    memory.crashes.at = (call, after)
    until_done(memory, ("TrainingJob", "default", "tj"), trainingjob.reconcile, 3)
    assert memory.trainer.started == ["tj"]
    memory.trainer.states["tj"] = TrainerState("Running", "2026-01-01T12:00:00Z")
    until_done(memory, ("TrainingJob", "default", "tj"), trainingjob.reconcile, 1)
    assert memory.objects.status("TrainingJob", "tj")["phase"] == "Running"
    assert memory.trainer.started == ["tj"]


def test_a_first_reconcile_starts_without_looking_and_a_rerun_follows_what_it_started() -> None:
    memory = Memory()
    memory.objects.put(training_job())
    key = ("TrainingJob", "default", "tj")
    memory.crashes.at = (1, True)  # the trainer started; its status was never written
    until_done(memory, key, trainingjob.reconcile, 1)
    assert (memory.trainer.started, memory.trainer.looks) == (["tj"], 0)
    memory.trainer.states["tj"] = TrainerState("Running", "2026-01-01T12:00:00Z")
    until_done(memory, key, trainingjob.reconcile, 1)  # its start finds it, then looks
    assert (memory.trainer.started, memory.trainer.looks) == (["tj"], 1)
    assert memory.objects.status("TrainingJob", "tj")["phase"] == "Running"


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("call", range(1, SM_CALLS + 2))
def test_a_promotion_happens_once_whatever_the_crash(call: int, after: bool) -> None:
    memory = Memory()
    base = Metrics(overall=0.9, slices={"base": 0.9})
    memory.registry.versions = {"1": base, "2": Metrics(overall=0.95, slices={"base": 0.92})}
    memory.registry.aliases = {"champion": "1"}
    memory.objects.put(served_model())
    memory.crashes.at = (call, after)
    until_done(memory, ("ServedModel", "default", "sm"), servedmodel.reconcile, 3)
    status = memory.objects.status("ServedModel", "sm")
    assert memory.registry.aliases == {"champion": "2", "champion-previous": "1"}
    assert (status["servingVersion"], status.get("candidateVersion")) == ("2", None)
    promoted = [e for e in memory.objects.events if e.reason == "Promoted"]
    assert len(promoted) <= 1  # told once (or not at all when the crash lost the status)
    assert memory.predictor.deployed[-1].version == "2"
