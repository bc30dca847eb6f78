"""Everything checked before a training starts, gathered into one message.

Reading the spec file and finding the plugin are the only I/O; the checks themselves
(`spec_problems`) are pure, so each rule is tested as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubeloop import plugins, registry
from kubeloop.api import validation
from kubeloop.api.trainingjob import TrainingJob, TrainingJobSpec
from kubeloop.training import datasets

LOADABLE_KINDS = (plugins.LABELLED_IMAGES,)
"""Dataset kinds the trainer can load for a plugin."""


class InvalidSpec(ValueError):
    """The TrainingJob cannot run as written; `problems` says every reason."""

    def __init__(self, subject: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{subject} is invalid: " + "; ".join(problems))


def load_job(path: Path) -> TrainingJob:
    """The TrainingJob manifest in `path` (YAML or JSON), checked as the operator would."""
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InvalidSpec(f"spec file {path}", [str(error).replace("\n", " ")]) from error
    if not isinstance(manifest, dict):
        raise InvalidSpec(f"spec file {path}", ["expected one TrainingJob manifest (a mapping)"])
    if manifest.get("kind") != TrainingJob.KIND:
        raise InvalidSpec(
            f"spec file {path}", [f"kind is {manifest.get('kind')!r}, not TrainingJob"]
        )
    problems = validation.manifest_errors(manifest)
    if problems:
        raise InvalidSpec(f"TrainingJob in {path}", problems)
    return TrainingJob.model_validate({k: v for k, v in manifest.items() if k != "status"})


def check_job(job: TrainingJob) -> tuple[plugins.Plugin[Any], dict[str, Any]]:
    """The job's plugin and its checked arguments; InvalidSpec names every problem."""
    try:
        plugin: plugins.Plugin[Any] | None = plugins.load(job.spec.plugin.name)
    except plugins.PluginError as error:
        plugin = None
        loading = [f"spec.plugin.name: {error}"]
    else:
        loading = []
    info = plugin.info() if plugin is not None else None
    args, problems = spec_problems(job.spec, info)
    if plugin is not None:
        problems += [f"spec.{p}" for p in plugin.check(args, job.spec.base_model)]
    problems = loading + problems
    if problems:
        raise InvalidSpec(f"TrainingJob {_name(job)}", problems)
    assert plugin is not None  # a failed load is a problem above
    return plugin, args


def spec_problems(
    spec: TrainingJobSpec, info: plugins.PluginInfo | None
) -> tuple[dict[str, Any], list[str]]:
    """(resolved args, problems) of `spec` for a plugin declaring `info`; no side effects."""
    problems: list[str] = []
    args: dict[str, Any] = dict(spec.args)
    if info is not None:
        if spec.plugin.version is not None and spec.plugin.version != info.version:
            problems.append(
                f"spec.plugin.version: {spec.plugin.version!r} is required but "
                f"{info.name} {info.version} is installed"
            )
        args, arg_problems = plugins.check_args(info, spec.args)
        problems += [f"spec.{p}" for p in arg_problems]
        unloadable = [d.kind for d in info.datasets if d.kind not in LOADABLE_KINDS]
        if unloadable:
            problems.append(
                f"plugin {info.name} expects datasets of kind {unloadable}, which this trainer "
                f"cannot load (it loads {list(LOADABLE_KINDS)})"
            )
    for source in spec.datasets:
        problems += [f"spec.{p}" for p in datasets.source_problems(source)]
    if spec.base_model is not None:
        try:
            registry.parse_model_uri(spec.base_model)
        except ValueError as error:
            problems.append(f"spec.baseModel: {error}")
    return args, problems


def _name(job: TrainingJob) -> str:
    return f"{job.metadata.namespace}/{job.metadata.name}"
