"""Every metric the Grafana dashboard queries is one that kubeloop's code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import kubeloop.metrics  # noqa: F401 - registers every kubeloop metric

DASHBOARD = Path(__file__).resolve().parents[2] / "helm/kubeloop/dashboards/kubeloop.json"


def exported_samples() -> set[str]:
    """Sample names of kubeloop's metrics, as Prometheus will see them (with _bucket etc.)."""
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("kubeloop_"):
            continue
        names.add(family.name)
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_count", "_sum"],
            "gauge": [""],
            "info": ["_info"],
        }.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    # Label matchers and legends are stripped; the remaining identifiers are metric names.
    bare = [re.sub(r"\{[^}]*\}", "", e) for e in exprs]
    return {w for e in bare for w in re.findall(r"kubeloop_[a-z_]+", e)}


def test_dashboard_queries_only_exported_metrics() -> None:
    missing = queried_metrics() - exported_samples()
    assert missing == set(), f"the dashboard queries metrics nobody exports: {sorted(missing)}"


def test_dashboard_covers_the_loop() -> None:
    queried = queried_metrics()
    for topic in ("feedback", "retrain", "trainingjob", "gate", "serving_version", "latency"):
        stem = {"latency": "predictor_request_seconds"}.get(topic, topic)
        assert any(stem in metric for metric in queried), f"no panel about {topic}"
