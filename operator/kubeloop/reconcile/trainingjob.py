"""TrainingJob: one run of the trainer entrypoint that registers a model version.

    reconcile(body, ports, now)
        parse the spec and find its problems       (spec_problems: pure)
        observe the trainer                        (ports.trainer: Job and pods, or a process)
        not started: is its baseModel alias set?   (ports.registry; if not: wait, retried)
        decide                                     (pure: status, start?, events)
        start the trainer if the plan says so      (idempotent: same name, existing is fine)
        write the status, tell the events          (ports.objects)

A crash between starting the trainer and writing the status is harmless: the next reconcile
observes the trainer it started and follows it. A running job whose trainer disappears fails
rather than training (and registering) twice; a finished one stays finished.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubeloop import metrics
from kubeloop.api import conditions
from kubeloop.api.common import ConditionStatus
from kubeloop.api.errors import Unavailable
from kubeloop.api.predictor import parse_model_uri
from kubeloop.api.times import format_time
from kubeloop.api.training_result import TrainingResult
from kubeloop.api.trainingjob import Phase, TrainingJob, TrainingJobSpec, TrainingJobStatus
from kubeloop.reconcile import common
from kubeloop.reconcile.common import is_dns_subdomain, key_problems, label_problems
from kubeloop.reconcile.ports import Body, Event, Ports, Registry, TrainerState

__all__ = ["TrainerState"]

TRAINER_COMMAND = ("python", "-m", "kubeloop.training")
SPEC_PATH = "/etc/kubeloop/trainingjob.yaml"
RESULT_PATH = "/dev/termination-log"
TERMINAL: tuple[Phase, ...] = ("Succeeded", "Failed")
INVALID_SPEC_EXIT_CODE = 2
"""The trainer's exit code for a spec it refuses: retrying cannot help."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = {"Exists", "Equal"}
_TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""Kueue's label naming the LocalQueue that admits a workload (spec.queueName)."""


def trainer_command(
    processes: int, python: str = TRAINER_COMMAND[0], torchrun: Sequence[str] | None = None
) -> list[str]:
    """The trainer's command: the entrypoint itself, or torchrun running it.

    `torchrun`: torchrun's options; None for one node, where --standalone finds a free
    rendezvous port and `processes` ranks run (one process: no torchrun at all).
    """
    entrypoint = list(TRAINER_COMMAND[1:])
    if torchrun is None:
        if processes == 1:
            return [python, *entrypoint]
        torchrun = ["--standalone", f"--nproc-per-node={processes}"]
    return [python, "-m", "torch.distributed.run", *torchrun, *entrypoint]


def multi_node_problem(nodes: int) -> str:
    """Why a cluster with neither Kubeflow Trainer nor JobSet cannot run `nodes` nodes."""
    return (
        f"distributed.numNodes: {nodes} needs a multi-node engine, Kubeflow Trainer's TrainJob "
        "(v2, with its torch-distributed ClusterTrainingRuntime) or JobSet, and this cluster "
        "serves neither: install one, or set numNodes: 1 and numProcPerNode to the GPUs of "
        "one node"
    )


def trainer_args(spec_path: str = SPEC_PATH, result_path: str = RESULT_PATH) -> list[str]:
    """Arguments of the trainer entrypoint: the TrainingJob manifest in, the result out."""
    return ["--spec", spec_path, "--result", result_path]


def parse_result(text: str) -> TrainingResult:
    """The trainer's result (kubeloop.api.training_result); ValueError when there is none."""
    try:
        return TrainingResult.parse(text)
    except ValueError as error:
        raise ValueError(f"{error}: {text[:200]!r}") from error


@dataclass(frozen=True)
class Observed:
    """What `reconcile` saw before deciding."""

    generation: int
    """metadata.generation of the spec."""
    trainer_name: str
    """What runs (or will run) the trainer is called."""
    trainer: TrainerState | None
    """None: not started yet, or gone."""
    problems: tuple[str, ...] = field(default=())
    """Why the spec cannot run: the schema's, the models', spec_problems' and the runtime's."""
    waiting: str | None = None
    """Why the trainer cannot start yet, though the spec is fine (base_model_wait)."""


@dataclass(frozen=True)
class TrainingJobPlan:
    """What `decide` wants the runtime to do."""

    status: TrainingJobStatus
    """The status to write."""
    start_trainer: bool = False
    """Start the trainer; it is not running and the job has not finished."""
    events: tuple[Event, ...] = ()
    """Transitions worth telling."""
    finished: bool = False
    """The job reached Succeeded or Failed in this decision (it was not before)."""
    result: TrainingResult | None = None
    """The trainer's result, when this decision read one."""
    waiting: str | None = None
    """Why the trainer was not started, to be tried again later (Observed.waiting)."""


def reconcile(body: Body, ports: Ports, now: datetime) -> TrainingJobPlan:
    """Start the trainer if it is not running and the job has not finished; follow it."""
    tj, problems = common.parse(TrainingJob, body, lambda tj: spec_problems(tj.spec))
    status = common.read_status(TrainingJobStatus, body)

    def plan(recorded: bool) -> TrainingJobPlan:
        seen = ports.trainer.observe(body, recorded=recorded)
        found = [*problems, seen.problem] if seen.problem is not None else problems
        waiting = None
        if tj is not None and seen.state is None and not found:
            waiting = base_model_wait(tj.spec, ports.registry)
        generation = common.generation(body)
        observed = Observed(generation, seen.name, seen.state, tuple(found), waiting)
        return decide(tj.spec if tj is not None else None, status, observed, now)

    planned = plan(recorded=status is not None and status.job_name is not None)
    if planned.waiting is not None:
        ports.objects.write_status(body, planned.status)
        ports.objects.emit(body, planned.events)
        raise Unavailable(planned.waiting, WAITING_FOR_BASE_MODEL)  # the runtime retries it
    if planned.start_trainer and tj is not None and not ports.trainer.start(tj, body):
        # One of that name exists (an interrupted reconcile's, or someone else's): follow it.
        planned = plan(recorded=True)
        if planned.start_trainer and tj is not None:
            ports.trainer.start(tj, body)  # it went meanwhile
    ports.objects.write_status(body, planned.status)
    ports.objects.emit(body, planned.events)
    namespace, name = common.name_of(body)
    new = planned.status
    times = (new.start_time, new.completion_time)
    metrics.observe_training_job(namespace, name, new.phase, times, planned.finished)
    return planned


WAITING_FOR_BASE_MODEL = "WaitingForBaseModel"


def base_model_wait(spec: TrainingJobSpec, registry: Registry) -> str | None:
    """Why the trainer must wait for spec.baseModel: an alias no version carries yet (a
    retrain a FeedbackDataset created before its ServedModel's first promotion, say); None
    when it can start. A missing version number is the trainer's to refuse: no wait helps."""
    if spec.base_model is None:
        return None
    try:
        name, version, alias = parse_model_uri(spec.base_model)
    except ValueError:
        return None  # admission and the trainer say what is wrong with it
    if version is not None or alias is None or registry.alias_version(name, alias) is not None:
        return None
    return (
        f"spec.baseModel {spec.base_model}: registered model {name!r} has no version with "
        f"alias {alias!r} yet; the trainer starts once one has it (a ServedModel's promotion "
        "sets it), or fix spec.baseModel"
    )


SPEC_MAX_BYTES = 128 * 1024
"""Most a spec may take as YAML: the trainer pod carries it in an annotation, and a pod's
annotations may take 256 KiB in all."""


def spec_problems(spec: TrainingJobSpec) -> list[str]:
    """What is wrong with `spec` that the CRD schema could not refuse; empty when fine."""
    problems = []
    names = [d.name for d in spec.datasets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"datasets: names must be unique; repeated: {', '.join(repeated)}")
    slices = spec.evaluation.slices
    repeated = sorted({s for s in slices if slices.count(s) > 1})
    if repeated:
        problems.append(f"evaluation.slices: repeated: {', '.join(repeated)}")
    for i, ref in enumerate(spec.credentials):
        if not _ENV_NAME.match(ref.key):
            problems.append(
                f"credentials[{i}].key: {ref.key!r} becomes an environment variable name, so it "
                "must be letters, digits and '_', not starting with a digit"
            )
    template = spec.template
    problems += label_problems(template.labels, "template.labels")
    problems += label_problems(template.node_selector, "template.nodeSelector")
    for key in template.annotations:
        problems += key_problems(key, "template.annotations")
    for i, toleration in enumerate(template.tolerations):
        where = f"template.tolerations[{i}]"
        unknown = sorted(set(toleration) - _TOLERATION_KEYS)
        if unknown:
            allowed = sorted(_TOLERATION_KEYS)
            problems.append(f"{where}: unknown fields {unknown}; allowed: {allowed}")
        if toleration.get("operator", "Equal") not in _TOLERATION_OPERATORS:
            problems.append(f"{where}.operator: must be Exists or Equal")
        if toleration.get("effect", "") not in _TOLERATION_EFFECTS:
            problems.append(f"{where}.effect: must be NoSchedule, PreferNoSchedule or NoExecute")
    account = template.service_account_name
    if account is not None and not is_dns_subdomain(account):
        problems.append(f"template.serviceAccountName: {account!r} is not a valid object name")
    if spec.image is not None and (not spec.image.strip() or any(c.isspace() for c in spec.image)):
        problems.append(f"image: {spec.image!r} is not an image reference")
    size = len(common.yaml_text(spec.to_wire()).encode())
    if size > SPEC_MAX_BYTES:
        problems.append(
            f"the spec takes {size // 1024} KiB as YAML, more than the {SPEC_MAX_BYTES // 1024} "
            "KiB its trainer pod can carry: list the images in a manifest file in S3 (a "
            "dataset's uri) rather than in the spec"
        )
    return problems


def decide(
    spec: TrainingJobSpec | None,
    status: TrainingJobStatus | None,
    observed: Observed,
    now: datetime,
) -> TrainingJobPlan:
    """The status that the observed trainer (None: not started or gone) means; no side effects.

    A finished job stays finished when its trainer disappears (a Job removed by
    ttlSecondsAfterFinished, say), and a running one whose trainer disappears fails: a job is
    never trained twice. A pending one is started (again), unless its base model's alias is
    not set yet: then it waits (WaitingForBaseModel; the runtime tries again). A spec with
    problems (or none that parses: `spec` None) is not started; the status says InvalidSpec
    until it is fixed.
    """
    generation, trainer, trainer_name = observed.generation, observed.trainer, observed.trainer_name
    problems = list(observed.problems)
    if spec is None and not problems:
        problems = ["the spec could not be read"]
    old = status or TrainingJobStatus()
    new = old.model_copy(deep=True)
    new.observed_generation = generation
    if trainer is None and old.phase in TERMINAL:
        return TrainingJobPlan(new)
    if trainer is None and problems:
        message = "; ".join(problems)
        news = conditions.is_news(old.conditions, "Ready", "False", "InvalidSpec", generation)
        new.phase = "Pending"
        _set_phase_conditions(new, "InvalidSpec", message, generation, now)
        warning = (Event("Warning", "InvalidSpec", message),) if news else ()
        return TrainingJobPlan(new, events=warning)
    if trainer is None and observed.waiting is not None and old.phase != "Running":
        news = conditions.is_news(
            old.conditions, "Ready", "False", WAITING_FOR_BASE_MODEL, generation
        )
        new.phase = "Pending"
        _set_phase_conditions(new, WAITING_FOR_BASE_MODEL, observed.waiting, generation, now)
        told = (Event("Normal", WAITING_FOR_BASE_MODEL, observed.waiting),) if news else ()
        return TrainingJobPlan(new, events=told, waiting=observed.waiting)
    if trainer is None and old.phase == "Running":
        # Running again would train twice (and register twice): say so and stop instead.
        message = (
            f"trainer {trainer_name} disappeared while it ran (deleted?); create a new "
            "TrainingJob to train again"
        )
        new.phase = "Failed"
        new.completion_time = format_time(now)
        _set_phase_conditions(new, "TrainerLost", message, generation, now)
        return TrainingJobPlan(
            new, events=(Event("Warning", "Failed", f"TrainerLost: {message}"),), finished=True
        )
    if trainer is None:
        new.phase = "Pending"
        new.job_name = trainer_name
        _set_phase_conditions(new, "Starting", f"starting trainer {trainer_name}", generation, now)
        return TrainingJobPlan(
            new,
            start_trainer=True,
            events=(Event("Normal", "Started", f"started trainer {trainer_name}"),),
        )

    new.job_name = trainer_name
    new.start_time = trainer.start_time or old.start_time
    new.progress = trainer.progress or old.progress
    result = None
    phase: Phase = trainer.phase
    reason, message = trainer.reason, trainer.message
    if phase == "Succeeded":
        try:
            result = parse_result(trainer.result or "")
        except ValueError as error:
            phase, reason = "Failed", "ResultUnreadable"
            message = (
                f"the trainer exited successfully but its result could not be read: {error}; "
                "check the training pod's termination message"
            )
        else:
            new.mlflow_run_id = result.mlflow_run_id
            new.model_version = result.model_version
            new.metrics = result.metrics
            metric = f", overall {result.metrics.overall:.4f}" if result.metrics.overall else ""
            reason = "Succeeded"
            message = f"registered {result.registered_model} version {result.model_version}{metric}"
    if phase in TERMINAL:
        new.completion_time = trainer.completion_time or old.completion_time or format_time(now)
    new.phase = phase
    reason = reason or phase
    message = message or {
        "Pending": f"trainer {trainer_name} is waiting to run",
        "Running": f"trainer {trainer_name} is running",
        "Failed": f"trainer {trainer_name} failed",
    }.get(phase, "")
    _set_phase_conditions(new, reason, message, generation, now)

    events: list[Event] = []
    if phase != old.phase:
        if phase == "Running":
            events.append(Event("Normal", "Running", message))
        elif phase == "Succeeded":
            events.append(Event("Normal", "Succeeded", message))
        elif phase == "Failed":
            events.append(Event("Warning", "Failed", f"{reason}: {message}"))
    finished = phase in TERMINAL and old.phase not in TERMINAL
    return TrainingJobPlan(new, events=tuple(events), finished=finished, result=result)


def _set_phase_conditions(
    status: TrainingJobStatus, reason: str, message: str, generation: int, now: datetime
) -> None:
    """Ready (True once the model version is registered) and Succeeded, from the phase."""
    succeeded: ConditionStatus = "Unknown"
    if status.phase == "Succeeded":
        succeeded = "True"
    elif status.phase == "Failed":
        succeeded = "False"
    ready: ConditionStatus = "True" if status.phase == "Succeeded" else "False"
    for type_, value in (("Ready", ready), ("Succeeded", succeeded)):
        status.conditions = conditions.set_condition(
            status.conditions, type_, value, reason, message, generation, now
        )
