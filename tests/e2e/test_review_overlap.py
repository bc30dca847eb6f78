"""Review overlap and gold items with two labellers, each with their own token, against a
real predictor process and a real S3 server.

With `--review-overlap 2` a label is a vote: nothing enters the inbox until both labellers
have labelled an item; agreeing labels become one sample (its id the prediction's), a
disagreement waits in the disputes list until an adjudicator chooses, and a second
adjudication is refused. Gold items (known labels under the prefix's gold/) come mixed into
each labeller's queue looking like any other item, score the labeller and never become
samples. The quality route and /metrics give each labeller's agreement and gold accuracy
and the kappas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from ulid import ULID

from kubeloop import agreement
from kubeloop.api import samples
from kubeloop.local import services
from kubeloop.storage import ObjectStore
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.serving_process import start_reviewing_predictor

pytestmark = pytest.mark.slow

BUCKET = "review-overlap"
PREFIX = "feedback/digits/"
DATASET = "digits-fb"
TOKENS = {"ada": "token-of-ada", "bob": "token-of-bob"}


def _as(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def _inbox(store: ObjectStore) -> list[samples.FeedbackSample]:
    return [
        samples.FeedbackSample.model_validate_json(line)
        for key in store.list_keys(BUCKET, PREFIX + samples.INBOX)
        for line in store.get_bytes(BUCKET, key).splitlines()
    ]


def _other(label: str) -> str:
    return serving_models.CLASSES[(serving_models.CLASSES.index(label) + 1) % 10]


def test_two_labellers_agree_dispute_adjudicate_and_are_scored_on_gold(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    store = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY, retries=1)
    store.ensure_bucket(BUCKET)
    gold_inputs = serving_models.digit_like_inputs(2, seed=11)
    gold = [
        samples.FeedbackSample(
            id=str(ULID()),
            input=x.reshape(-1).tolist(),
            shape=[8, 8],
            label=label,
            received_at=samples.rfc3339(0),
        )
        for x, label in zip(gold_inputs, ["4", "9"], strict=True)
    ]
    lines = "\n".join(g.model_dump_json(by_alias=True, exclude_none=True) for g in gold)
    store.put_bytes(BUCKET, PREFIX + samples.GOLD + "set-1.jsonl", lines.encode())
    gold_label = {g.id: g.label for g in gold}

    process = start_reviewing_predictor(
        tmp_path / "predictor",
        mlflow_server.url,
        s3_server.url,
        BUCKET,
        ["--review-overlap", "2", "--review-gold-share", "0.2", "--review-budget", "10"],
        env={"KUBELOOP_LABELLER_TOKENS": json.dumps(TOKENS)},
        dataset=DATASET,
        prefix=PREFIX,
    )
    try:
        with httpx.Client(base_url=process.url, timeout=30) as http:
            inputs = serving_models.digit_like_inputs(12, seed=5)
            answer = http.post(
                "/v1/models/digits:predict", json={"instances": [x.tolist() for x in inputs]}
            )
            assert answer.status_code == 200, answer.text

            def queue(name: str) -> list[dict[str, object]]:
                found = http.get(f"/v1/review/{DATASET}", headers=_as(name))
                assert found.status_code == 200, found.text
                return list(found.json()["items"])

            def label(name: str, item: str, given: str) -> dict[str, object]:
                sent = http.post(
                    f"/v1/feedback/{DATASET}",
                    json={"prediction_id": item, "label": given},
                    headers=_as(name),
                )
                assert sent.status_code == 201, sent.text
                return dict(sent.json())

            ada_queue = queue("ada")
            assert len(ada_queue) == 10
            golds = [i for i in ada_queue if i["prediction_id"] in gold_label]
            assert len(golds) == 2  # 20% of 10, mixed in
            assert all(set(g) == set(ada_queue[0]) for g in golds)  # nothing tells them apart
            pool = [i for i in ada_queue if i["prediction_id"] not in gold_label]
            items = [str(i["prediction_id"]) for i in pool[:5]]
            predicted = {str(i["prediction_id"]): str(i["predicted_label"]) for i in pool}

            # ada: agrees with the model on 0-2, not on 3; votes on 4 alone
            ada_labels = {p: predicted[p] for p in items[:3]}
            ada_labels[items[3]] = _other(predicted[items[3]])
            ada_labels[items[4]] = predicted[items[4]]
            for item, given in ada_labels.items():
                ack = label("ada", item, given)
                assert ack["review"] == {"status": "pending", "votes": 1, "overlap": 2}
            for g in golds:  # right on the first gold item, wrong on the second
                gid = str(g["prediction_id"])
                given = gold_label[gid] if g is golds[0] else _other(gold_label[gid])
                assert label("ada", gid, given)["review"] == {"status": "gold"}
            assert _inbox(store) == []  # one label each: nothing agreed yet

            # ada's queue leaves out what she voted on and the gold she had; bob's has them
            again_for_ada = {str(i["prediction_id"]) for i in queue("ada")}
            assert not again_for_ada & (set(ada_labels) | set(gold_label))
            bob_queue = {str(i["prediction_id"]) for i in queue("bob")}
            assert set(items) <= bob_queue
            assert set(gold_label) <= bob_queue

            bob_labels = {p: predicted[p] for p in items[:4]}  # disagrees with ada on 3
            outcomes = {item: label("bob", item, given) for item, given in bob_labels.items()}
            for g in gold_label:
                label("bob", g, gold_label[g])
            assert [outcomes[p]["review"]["status"] for p in items[:4]] == [  # type: ignore[index]
                "agreed",
                "agreed",
                "agreed",
                "disputed",
            ]
            stored = {s.id: s for s in _inbox(store)}
            assert set(stored) == set(items[:3])  # the prediction's id is the sample's
            for item in items[:3]:
                assert stored[item].label == predicted[item]
                assert stored[item].agreed_by == ["ada", "bob"]
                assert stored[item].prediction_id == item
                assert stored[item].input

            disputes = http.get(f"/v1/review/{DATASET}/disputes", headers=_as("bob")).json()
            assert [d["prediction_id"] for d in disputes["items"]] == [items[3]]
            assert disputes["items"][0]["votes"] == {
                "ada": ada_labels[items[3]],
                "bob": bob_labels[items[3]],
            }
            chosen = ada_labels[items[3]]
            adjudicated = http.post(
                f"/v1/review/{DATASET}/disputes/{items[3]}",
                json={"label": chosen},
                headers=_as("bob"),
            )
            assert adjudicated.status_code == 201, adjudicated.text
            assert adjudicated.json()["adjudicator"] == "bob"
            again = http.post(
                f"/v1/review/{DATASET}/disputes/{items[3]}",
                json={"label": chosen},
                headers=_as("ada"),
            )
            assert again.status_code == 409, again.text
            stored = {s.id: s for s in _inbox(store)}
            assert set(stored) == set(items[:4])  # item 4 has one vote: still out
            assert stored[items[3]].label == chosen
            assert stored[items[3]].labeller == "bob"
            assert stored[items[3]].agreed_by == ["ada"]
            late = label("ada", items[0], _other(predicted[items[0]]))  # settled: no change
            assert late["review"]["status"] == "agreed"
            assert {s.id: s.label for s in _inbox(store)}[items[0]] == predicted[items[0]]
            assert (
                http.get(f"/v1/review/{DATASET}/disputes", headers=_as("ada")).json()["items"] == []
            )

            quality = http.get(f"/v1/review/{DATASET}/quality", headers=_as("ada")).json()
            assert quality["items"] == 4
            assert quality["disputed"] == 0
            assert quality["labellers"]["ada"]["agreement"] == 1.0
            assert quality["labellers"]["bob"]["agreement"] == 0.75
            assert quality["labellers"]["ada"]["gold_accuracy"] == 0.5
            assert quality["labellers"]["bob"]["gold_accuracy"] == 1.0
            firsts = [ada_labels[p] for p in items[:4]]
            seconds = [bob_labels[p] for p in items[:4]]
            kappa = agreement.cohen_kappa(firsts, seconds)
            assert kappa is not None
            assert kappa < 1.0
            assert quality["cohen_kappa"] == [{"labellers": ["ada", "bob"], "kappa": kappa}]
            assert quality["fleiss_kappa"] == pytest.approx(
                agreement.fleiss_kappa([[a, b] for a, b in zip(firsts, seconds, strict=True)])
            )

            text = http.get("/metrics").text
            assert _gauge(text, "kubeloop_review_gold_accuracy", labeller="ada") == 0.5
            assert _gauge(text, "kubeloop_review_agreement", labeller="bob") == 0.75
            assert _gauge(text, "kubeloop_review_kappa", statistic="cohen") == pytest.approx(kappa)
            decisions = 'kubeloop_review_decisions_total{dataset="digits-fb",status="adjudicated"}'
            assert f"{decisions} 1.0" in text

            unnamed = http.post(  # a vote names the item it labels
                f"/v1/feedback/{DATASET}",
                json={"input": inputs[0].tolist(), "label": "1"},
                headers=_as("ada"),
            )
            assert unnamed.status_code == 422, unnamed.text
            assert unnamed.json()["reason"] == "overlap-needs-labeller"
    finally:
        process.stop()


def _gauge(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match[1] for k, v in labels.items()):
            return float(match[2])
    raise AssertionError(f"no {name} {labels} in /metrics")
