"""`kubeloop demo [--example digits|objects]`: the whole loop on real data, on one machine.

1. A base model is trained (TrainingJob digits-base: a small CNN on scikit-learn's digits;
   objects-base: a ResNet-18 with the CIFAR stem on RGB 32 x 32 coloured objects) and served
   (ServedModel digits or objects, the first version promoted to @champion).
2. A new user (digits: writes every digit mirrored, kubeloop.digits.new_user, the
   designer-glasses case; objects: a camera with a colour cast in low light,
   kubeloop.objects.new_user) asks the predictor for predictions over HTTP and sends back
   the correct labels through the feedback API as float inputs ([8, 8], or [3, 32, 32]),
   each naming the prediction it corrects.
3. At the FeedbackDataset's threshold a snapshot is frozen and TrainingJob
   <name>-feedback-gen-1 fine-tunes the served version on the base data plus the feedback.
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

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kubeloop import digits, manifests, objects
from kubeloop.local import lock, report, servers, services
from kubeloop.local.loop import LocalLoop
from kubeloop.local.processes import ProcessTable

ROOT = Path(__file__).resolve().parents[3] / "examples"


@dataclass(frozen=True)
class Example:
    """One use case the demo can play: its manifests, names and new user."""

    name: str
    new_user: Callable[[int, int], tuple[NDArray[np.float32], NDArray[np.str_]]]
    """(count, seed) -> the new user's images and their correct labels."""
    input_shape: tuple[int, ...]
    quick_epochs: tuple[int, int]
    """Epochs of the base job and of the retrain template with --quick."""

    @property
    def examples(self) -> Path:
        return ROOT / self.name

    @property
    def model(self) -> str:
        return self.name

    @property
    def served(self) -> str:
        return self.name

    @property
    def dataset(self) -> str:
        return f"{self.name}-feedback"

    @property
    def base_job(self) -> str:
        return f"{self.name}-base"


EXAMPLES = {
    "digits": Example("digits", digits.new_user_feedback, (digits.HEIGHT, digits.WIDTH), (15, 10)),
    "objects": Example(
        "objects", objects.new_user_feedback, (objects.CHANNELS, objects.SIZE, objects.SIZE), (6, 4)
    ),
}
"""The examples `kubeloop demo --example` plays, by name."""
NEW_USER = "new-user"


class DemoError(RuntimeError):
    """The demo could not go on; the message says where and what to look at."""


@dataclass(frozen=True)
class Options:
    """How much the demo does."""

    quick: bool = False
    """Fewer epochs: the CI end-to-end run."""
    timeout_seconds: float = 900.0
    """Longest any single wait may take."""
    example: str = "digits"
    """Which of EXAMPLES to play."""
    review: bool = False
    """A person labels the new user's images on the review page, instead of the demo
    sending their labels."""


def run(state_dir: Path, options: Options, console: Console) -> dict[str, Any]:
    """Run the demo in `state_dir/demo` (made anew) and return its summary."""
    if options.example not in EXAMPLES:
        raise DemoError(f"unknown example {options.example!r}; known: {', '.join(EXAMPLES)}")
    example = EXAMPLES[options.example]
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
            return _story(loop, workdir, example, options, console, started)
        finally:
            loop.close()
            servers.stop_servers(table)
            console.print(
                f"to look at what the demo made (MLflow runs and versions, the predictor): "
                f"kubeloop up -f {example.examples} --state-dir {workdir}"
            )


def _story(
    loop: LocalLoop,
    workdir: Path,
    example: Example,
    options: Options,
    console: Console,
    started: float,
) -> dict[str, Any]:
    documents = _manifests(example, options)
    threshold = int(documents["FeedbackDataset"]["spec"]["retrain"]["threshold"])
    for kind in ("TrainingJob", "ServedModel", "FeedbackDataset"):
        name = documents[kind]["metadata"]["name"]
        console.print(f"{kind.lower()}.kubeloop.io/{name} {loop.apply(documents[kind])}")

    wait = _Waiter(loop, console, options.timeout_seconds)
    served = example.served
    wait.until("training the base model", lambda: _job_done(loop, example.base_job))
    wait.until("serving the base model", lambda: _ready(loop, served))
    url = loop.status("ServedModel", served)["url"]
    console.print(f"predictor: {url}  (feedback: POST {url}/v1/feedback/{example.dataset})")

    images, labels = example.new_user(threshold, 1)
    job = f"{example.dataset}-gen-1"
    if options.review:
        correct = _predict(url, example, images, labels)
        console.print(
            f"the base model got {correct}/{len(labels)} of the new user's images right. "
            f"Label them at {url}/review/{example.dataset}?slice={NEW_USER} (a class's key "
            f"labels the image, Enter accepts the model's answer); the retrain starts at "
            f"{threshold} labels"
        )
        wait.until(
            f"waiting for {threshold} labels on the review page",
            lambda: loop.get("TrainingJob", job) is not None,
        )
        threshold_at = time.monotonic()
    else:
        sent = _send_feedback(url, example, images, labels, console)
        correct, threshold_at = sent.correct, sent.threshold_at
        console.print(
            f"the base model got {correct}/{len(labels)} of the new user's images right; "
            f"{len(labels)} corrections stored"
        )
    wait.until("waiting for the retrain trigger", lambda: loop.get("TrainingJob", job) is not None)
    wait.until(f"retraining ({job})", lambda: _job_done(loop, job))
    new_version = str(loop.status("TrainingJob", job).get("modelVersion"))
    wait.until("gate and rollout", lambda: _gate_decided(loop, served, new_version))
    gate = loop.status("ServedModel", served).get("gate", {})
    served_at = None
    if gate.get("verdict") == "Passed":
        wait.until(
            f"predictor swapping in version {new_version}",
            lambda: _answers(url, example, new_version),
        )
        served_at = time.monotonic()
        # The predictor may swap between the loop's steps: the summary reads the status.
        wait.until(
            f"{served} recording version {new_version} as served",
            lambda: loop.status("ServedModel", served).get("servingVersion") == new_version,
        )
    return report.summary(
        loop,
        workdir,
        model=example.model,
        served=served,
        dataset=example.dataset,
        feedback_sent=len(labels),
        base_correct_on_feedback=correct,
        feedback_to_serving_seconds=None if served_at is None else served_at - threshold_at,
        threshold_time=time.time() - (time.monotonic() - threshold_at),
        total_seconds=time.monotonic() - started,
    )


def _manifests(example: Example, options: Options) -> dict[str, dict[str, Any]]:
    if not example.examples.is_dir():
        raise DemoError(
            f"the demo's manifests are missing: {example.examples} (run from a kubeloop checkout)"
        )
    documents = {doc["kind"]: doc for _, doc in manifests.load(example.examples)}
    if options.quick:
        base_epochs, tune_epochs = example.quick_epochs
        documents["TrainingJob"]["spec"]["args"]["epochs"] = base_epochs
        template = documents["FeedbackDataset"]["spec"]["retrain"]["trainingTemplate"]
        template["args"]["epochs"] = tune_epochs
    documents["TrainingJob"]["spec"]["resources"]["gpu"] = 0  # one machine, maybe no GPU
    return documents


@dataclass(frozen=True)
class _Sent:
    correct: int
    threshold_at: float


def _send_feedback(url: str, example: Example, images: Any, labels: Any, console: Console) -> _Sent:
    """Predict each image, then send its correct label naming the prediction; one at a time,
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
                f"{url}/v1/models/{example.served}:predict", {"instances": [image.tolist()]}
            )
            prediction = answer["predictions"][0]
            correct += int(prediction["class"] == label)
            services.post(
                f"{url}/v1/feedback/{example.dataset}",
                {
                    "input": image.tolist(),
                    "label": str(label),
                    "prediction_id": prediction["prediction_id"],
                    "slice": NEW_USER,
                },
            )
            acknowledged_at = time.monotonic()
            progress.advance(task)
    return _Sent(correct, acknowledged_at)


def _predict(url: str, example: Example, images: Any, labels: Any) -> int:
    """Predict every image at once (they enter the review queue); how many were right."""
    answer = services.post(
        f"{url}/v1/models/{example.served}:predict", {"instances": [i.tolist() for i in images]}
    )
    predicted = [p["class"] for p in answer["predictions"]]
    return sum(p == label for p, label in zip(predicted, labels, strict=True))


def _job_done(loop: LocalLoop, name: str) -> bool:
    phase = loop.status("TrainingJob", name).get("phase")
    if phase == "Failed":
        conditions = loop.status("TrainingJob", name).get("conditions", [])
        why = next((c.get("message") for c in conditions if c.get("type") == "Succeeded"), "")
        raise DemoError(f"TrainingJob {name} failed: {why}")
    return phase == "Succeeded"


def _ready(loop: LocalLoop, served: str) -> bool:
    conditions = loop.status("ServedModel", served).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _gate_decided(loop: LocalLoop, served: str, version: str) -> bool:
    status = loop.status("ServedModel", served)
    gate = status.get("gate") or {}
    if gate.get("candidateVersion") != version or gate.get("verdict") == "Pending":
        return False
    return gate.get("verdict") == "Failed" or status.get("servingVersion") == version


def _answers(url: str, example: Example, version: str) -> bool:
    probe = np.zeros(example.input_shape, np.float32).tolist()
    answer = services.post(f"{url}/v1/models/{example.served}:predict", {"instances": [probe]})
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
                self._loop.wait(0.5)

    @contextmanager
    def _spinner(self, what: str) -> Iterator[None]:
        with Progress(
            SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=self._console
        ) as progress:
            progress.add_task(what, total=None)
            yield
