"""Everything that refuses a manifest, in one list: what `kubeloop validate` reports.

In the order a manifest meets them on its way to a trained model:

1. the CRD's OpenAPI schema, as `kubectl apply` checks it, and the models (cross-field
   rules, unknown fields), each problem once (api.validation.manifest_errors);
2. the reconcilers' `spec_problems`, which the operator reports as Ready=False InvalidSpec;
3. the trainer's checks (training.checks.job_problems): the plugin, its arguments against
   the plugin's model, the datasets and baseModel - for a TrainingJob, and for the
   TrainingJob a FeedbackDataset's retrain creates, so a bad template is refused up front
   instead of when the threshold is reached.

2 and 3 read the spec: they run whenever the spec parses, even if metadata does not.

Plugins: `kubeloop validate` and `kubeloop up` run where the plugins are installed (the
trainer is a local process there), so a plugin that is not installed is a problem. The
operator's image installs none: it does not check plugin arguments, and leaves them to the
trainer, whose image has the plugins - a job whose arguments are wrong fails with the
trainer's exit code 2 and its message (InvalidSpec, naming `spec.args.<name>`). A runtime
without plugins that wants the rest of these checks passes `require_plugins=False`: a
plugin that is not installed is then no problem, and its arguments go unchecked.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from kubeloop.api import FeedbackDataset, TrainingJob, validation
from kubeloop.api.common import ObjectMeta
from kubeloop.api.feedbackdataset import FeedbackDatasetSpec
from kubeloop.api.servedmodel import ServedModelSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.reconcile import feedbackdataset, servedmodel, trainingjob
from kubeloop.training import checks

TEMPLATE = "spec.retrain.trainingTemplate"
_PLACEHOLDER = "placeholder"  # a valid name where metadata.name is not (already refused)


def problems(manifest: dict[str, Any], require_plugins: bool = True) -> list[str]:
    """Every problem of `manifest` that the API server, the operator or the trainer would
    refuse, each 'field: what is wrong'; empty when it would run. Loads plugins."""
    found = validation.manifest_errors(manifest)
    resource = validation.resource_for(manifest)
    if resource is None:
        return found
    raw = manifest.get("spec")
    spec = _parsed(resource.model_fields["spec"].annotation, raw)
    name = _name(manifest)
    if isinstance(spec, TrainingJobSpec):
        found += [f"spec.{p}" for p in trainingjob.spec_problems(spec)]
        found += checks.job_problems(spec, require_plugins)
    elif isinstance(spec, FeedbackDatasetSpec):
        found += [_under_spec(p) for p in feedbackdataset.spec_problems(spec, name)]
        found += _retrain_problems(spec, name, require_plugins)
    elif isinstance(spec, ServedModelSpec):
        found += [f"spec.{p}" for p in servedmodel.spec_problems(spec)]
    elif resource is TrainingJob:
        found += _argument_problems(raw, "spec", require_plugins)
    elif resource is FeedbackDataset:
        template = _at(raw, "retrain", "trainingTemplate")
        found += _argument_problems(template, TEMPLATE, require_plugins)
    return found


def _at(value: Any, *keys: str) -> Any:
    """value[key][key]..., or None where a step is not a mapping or lacks the key."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _retrain_problems(spec: FeedbackDatasetSpec, name: str, require_plugins: bool) -> list[str]:
    """The trainer's problems with the first TrainingJob the retrain template creates.

    The job is built as the controller builds it, snapshot dataset included, so that a
    dataset the controller fills in is not taken for one missing its manifest.
    """
    if spec.retrain is None:
        return []
    dataset = FeedbackDataset(metadata=ObjectMeta(name=name), spec=spec)
    manifest = feedbackdataset.build_training_job(dataset, 1, feedbackdataset.manifest_uri(spec, 1))
    job = TrainingJob.model_validate(manifest)
    return [_moved(p, TEMPLATE) for p in checks.job_problems(job.spec, require_plugins)]


def _argument_problems(raw: Any, where: str, require_plugins: bool) -> list[str]:
    """The plugin's problems with a TrainingJob spec (at `where`) that does not parse as a
    whole: its arguments are still checked, if its plugin is named."""
    part = _parsed(checks.PluginPart, raw)
    if not isinstance(part, checks.PluginPart):
        return []
    return [_moved(p, where) for p in checks.argument_problems(part, require_plugins)]


def _moved(problem: str, where: str) -> str:
    """A trainer's problem (named under `spec.`) named under `where` instead."""
    if where == "spec":
        return problem
    return (
        problem.replace("spec.", f"{where}.", 1)
        if problem.startswith("spec.")
        else f"{where}: {problem}"
    )


def _parsed(model: Any, value: Any) -> BaseModel | None:
    """`value` as `model`, or None when it does not parse (the models named why)."""
    if not isinstance(model, type) or not issubclass(model, BaseModel):
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _name(manifest: dict[str, Any]) -> str:
    """metadata.name, or a placeholder when it is invalid (a problem already named)."""
    name = _at(manifest, "metadata", "name")
    try:
        return ObjectMeta(name=name).name
    except ValidationError:
        return _PLACEHOLDER


def _under_spec(problem: str) -> str:
    """A reconciler's problem named from the manifest's root: they name fields under spec,
    except metadata's."""
    return problem if problem.startswith("metadata.") else f"spec.{problem}"
