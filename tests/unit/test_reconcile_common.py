"""Shared reconcile helpers: child names, label checks, times, the warn-once rule; and the
operator's merge patches for status writes."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from kubeloop.api import conditions
from kubeloop.api.times import format_time, parse_time
from kubeloop.kube.ports import merge_patch
from kubeloop.reconcile.common import child_name, label_problems, set_failing, yaml_text

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_merge_patch_sets_changes_and_removes_what_is_gone() -> None:
    old = {"phase": "Running", "gate": {"verdict": "Failed", "sliceDeltas": {"a": -0.1}}, "x": 1}
    new = {"phase": "Running", "gate": {"verdict": "Passed", "sliceDeltas": {"b": 0.1}}}
    assert merge_patch(old, new) == {
        "x": None,
        "gate": {"verdict": "Passed", "sliceDeltas": {"a": None, "b": 0.1}},
    }
    assert merge_patch(new, new) == {}
    assert merge_patch({"l": [1, 2]}, {"l": [1]}) == {"l": [1]}


def test_yaml_text_is_what_safe_dump_writes() -> None:
    data = {
        "z": [1, 2.5, None, True],
        "a": {"nested": "text: with a colon", "long": "word " * 40, "empty": {}},
        "unicode": "Zürich ✓",
        "multi": "two\nlines",
    }
    for sort_keys in (True, False):
        assert yaml_text(data, sort_keys=sort_keys) == yaml.safe_dump(data, sort_keys=sort_keys)
    assert yaml.safe_load(yaml_text(data)) == data


def test_child_names() -> None:
    assert child_name("digits", "-predictor") == "digits-predictor"
    long = child_name("x" * 80)
    assert len(long) == 63
    assert long == child_name("x" * 80)
    assert child_name("x" * 80) != child_name("x" * 81)
    assert len(child_name("digits" * 10, max_length=45)) == 45


def test_times_round_trip() -> None:
    assert format_time(NOW) == "2026-01-02T03:04:05Z"
    assert format_time(NOW.replace(microsecond=7000), "milliseconds") == "2026-01-02T03:04:05.007Z"
    assert parse_time("2026-01-02T03:04:05Z") == NOW
    assert parse_time(None) is None


def test_label_problems() -> None:
    assert label_problems({"kueue.x-k8s.io/queue-name": "gpu", "a": ""}, "l") == []
    assert len(label_problems({"-bad": "v", "ok": "-bad-"}, "l")) == 2


def test_a_failing_condition_warns_once_per_reason_and_generation() -> None:
    first, events = set_failing([], "Ready", "StorageUnavailable", "S3 is down", 1, NOW)
    assert [e.reason for e in events] == ["StorageUnavailable"]
    again, events = set_failing(first, "Ready", "StorageUnavailable", "S3 is still down", 1, NOW)
    assert events == ()  # the same reason for the same spec: said already
    ready = conditions.get_condition(again, "Ready")
    assert ready is not None
    assert ready.message == "S3 is still down"
    _, events = set_failing(again, "Ready", "SecretNotFound", "no Secret", 1, NOW)
    assert [e.reason for e in events] == ["SecretNotFound"]  # a new reason
    _, events = set_failing(again, "Ready", "StorageUnavailable", "S3 is down", 2, NOW)
    assert [e.reason for e in events] == ["StorageUnavailable"]  # the spec changed
