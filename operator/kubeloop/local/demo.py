"""`kubeloop demo`: the whole loop on real data, on one machine.

1. A base model is trained on scikit-learn's digits (TrainingJob digits-base) and served
   (ServedModel digits, the first version promoted to @champion).
2. A new user who writes every digit mirrored (kubeloop.digits.new_user: the designer-glasses
   case) asks the predictor for predictions over HTTP and sends back the correct labels
   through the feedback API, each naming the prediction it corrects.
3. At the FeedbackDataset's threshold a snapshot is frozen and TrainingJob
   digits-feedback-gen-1 fine-tunes the served version on base digits plus the feedback.
4. The gate compares the new version with the served one per slice; it is promoted, the
   predictor swaps it in, and the demo's next prediction is answered by it.

Everything runs for real: S3 and MLflow servers, torch training, onnxruntime serving.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kubeloop import digits, manifests
from kubeloop.local import lock, report, servers, services
from kubeloop.local.loop import LocalLoop
from kubeloop.local.processes import ProcessTable

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "digits"
MODEL = "digits"
SERVED = "digits"
DATASET = "digits-feedback"
BASE_JOB = "digits-base"


class DemoError(RuntimeError):
    """The demo could not go on; the message says where and what to look at."""


@dataclass(frozen=True)
class Options:
    """How much the demo does."""

    quick: bool = False
    """Fewer epochs: the CI end-to-end run."""
    timeout_seconds: float = 900.0
    """Longest any single wait may take."""


def run(state_dir: Path, options: Options, console: Console) -> dict[str, Any]:
    """Run the demo in `state_dir/demo` (made anew) and return its summary."""
    workdir = state_dir.resolve() / "demo"  # children run elsewhere: every path is absolute
    if workdir.exists():
        with lock.holding(workdir):
            ProcessTable(workdir).stop_all()  # whatever a killed demo left running
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    with lock.holding(workdir):
        table = ProcessTable(workdir)
        say = console.print
        found = servers.ensure_servers(table, say)
        loop = LocalLoop(workdir, found.s3_url, found.mlflow_url, say=say, processes=table)
        try:
            return _story(loop, workdir, options, console, started)
        finally:
            loop.close()
            servers.stop_servers(table)
            console.print(
                f"to look at what the demo made (MLflow runs and versions, the predictor): "
                f"kubeloop up -f {EXAMPLES} --state-dir {workdir}"
            )


def _story(
    loop: LocalLoop, workdir: Path, options: Options, console: Console, started: float
) -> dict[str, Any]:
    documents = _manifests(options)
    threshold = int(documents["FeedbackDataset"]["spec"]["retrain"]["threshold"])
    for kind in ("TrainingJob", "ServedModel", "FeedbackDataset"):
        name = documents[kind]["metadata"]["name"]
        console.print(f"{kind.lower()}.kubeloop.io/{name} {loop.apply(documents[kind])}")

    wait = _Waiter(loop, console, options.timeout_seconds)
    wait.until("training the base model", lambda: _job_done(loop, BASE_JOB))
    wait.until("serving the base model", lambda: _ready(loop))
    url = loop.status("ServedModel", SERVED)["url"]
    console.print(f"predictor: {url}  (feedback: POST {url}/v1/feedback/{DATASET})")

    images, labels = digits.new_user_feedback(threshold, seed=1)
    sent = _send_feedback(url, images, labels, console)
    threshold_at = sent.threshold_at
    console.print(
        f"the base model got {sent.correct}/{len(labels)} of the new user's digits right; "
        f"{len(labels)} corrections stored"
    )
    job = f"{DATASET}-gen-1"
    wait.until("waiting for the retrain trigger", lambda: loop.get("TrainingJob", job) is not None)
    wait.until(f"retraining ({job})", lambda: _job_done(loop, job))
    new_version = str(loop.status("TrainingJob", job).get("modelVersion"))
    wait.until("gate and rollout", lambda: _gate_decided(loop, new_version))
    gate = loop.status("ServedModel", SERVED).get("gate", {})
    served_at = None
    if gate.get("verdict") == "Passed":
        wait.until(
            f"predictor swapping in version {new_version}", lambda: _answers(url, new_version)
        )
        served_at = time.monotonic()
    return report.summary(
        loop,
        workdir,
        model=MODEL,
        served=SERVED,
        dataset=DATASET,
        feedback_sent=len(labels),
        base_correct_on_feedback=sent.correct,
        feedback_to_serving_seconds=None if served_at is None else served_at - threshold_at,
        total_seconds=time.monotonic() - started,
    )


def _manifests(options: Options) -> dict[str, dict[str, Any]]:
    if not EXAMPLES.is_dir():
        raise DemoError(
            f"the demo's manifests are missing: {EXAMPLES} (run from a kubeloop checkout)"
        )
    documents = {doc["kind"]: doc for _, doc in manifests.load(EXAMPLES)}
    if options.quick:
        documents["TrainingJob"]["spec"]["args"]["epochs"] = 15
        template = documents["FeedbackDataset"]["spec"]["retrain"]["trainingTemplate"]
        template["args"]["epochs"] = 10
    documents["TrainingJob"]["spec"]["resources"]["gpu"] = 0  # one machine, maybe no GPU
    return documents


@dataclass(frozen=True)
class _Sent:
    correct: int
    threshold_at: float


def _send_feedback(url: str, images: Any, labels: Any, console: Console) -> _Sent:
    """Predict each digit, then send its correct label naming the prediction; one at a time,
    as a person correcting an app would."""
    correct = 0
    acknowledged_at = time.monotonic()
    with Progress(
        TextColumn("sending the new user's feedback"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("feedback", total=len(labels))
        for image, label in zip(images, labels, strict=True):
            answer = services.post(
                f"{url}/v1/models/{SERVED}:predict", {"instances": [image.tolist()]}
            )
            prediction = answer["predictions"][0]
            correct += int(prediction["class"] == label)
            services.post(
                f"{url}/v1/feedback/{DATASET}",
                {
                    "input": image.tolist(),
                    "label": str(label),
                    "prediction_id": prediction["prediction_id"],
                    "slice": digits.NEW_USER,
                },
            )
            acknowledged_at = time.monotonic()
            progress.advance(task)
    return _Sent(correct, acknowledged_at)


def _job_done(loop: LocalLoop, name: str) -> bool:
    phase = loop.status("TrainingJob", name).get("phase")
    if phase == "Failed":
        conditions = loop.status("TrainingJob", name).get("conditions", [])
        why = next((c.get("message") for c in conditions if c.get("type") == "Succeeded"), "")
        raise DemoError(f"TrainingJob {name} failed: {why}")
    return phase == "Succeeded"


def _ready(loop: LocalLoop) -> bool:
    conditions = loop.status("ServedModel", SERVED).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _gate_decided(loop: LocalLoop, version: str) -> bool:
    status = loop.status("ServedModel", SERVED)
    gate = status.get("gate") or {}
    if gate.get("candidateVersion") != version or gate.get("verdict") == "Pending":
        return False
    return gate.get("verdict") == "Failed" or status.get("servingVersion") == version


def _answers(url: str, version: str) -> bool:
    answer = services.post(f"{url}/v1/models/{SERVED}:predict", {"instances": [[[0.0] * 8] * 8]})
    return str(answer.get("model_version")) == version


class _Waiter:
    """Steps the loop until a condition holds, with a spinner; DemoError on timeout."""

    def __init__(self, loop: LocalLoop, console: Console, timeout: float) -> None:
        self._loop, self._console, self._timeout = loop, console, timeout

    def until(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._timeout
        with self._spinner(what):
            while True:
                self._loop.step()
                if done():
                    return
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{what}: not done after {self._timeout:.0f}s; logs are under "
                        f"{self._loop.state_dir}"
                    )
                time.sleep(0.5)

    @contextmanager
    def _spinner(self, what: str) -> Iterator[None]:
        with Progress(
            SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=self._console
        ) as progress:
            progress.add_task(what, total=None)
            yield
