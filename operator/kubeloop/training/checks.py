"""Everything checked before a training starts, gathered into one message.

Reading the spec file and finding the plugin are the only I/O; the checks themselves
(`spec_problems`) are pure, so each rule is tested as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field

from kubeloop import plugins, registry
from kubeloop.api import validation
from kubeloop.api.common import ApiModel
from kubeloop.api.trainingjob import PluginRef, TrainingJob, TrainingJobSpec
from kubeloop.training import datasets

LOADABLE_KINDS = (plugins.LABELLED_IMAGES,)
"""Dataset kinds the trainer can load for a plugin."""


class PluginPart(ApiModel):
    """The fields of a TrainingJob spec its plugin checks; read on their own, they let a
    spec that is wrong elsewhere still have its arguments checked."""

    model_config = ConfigDict(extra="ignore")

    plugin: PluginRef
    args: dict[str, Any] = Field(default_factory=dict)
    base_model: str | None = None


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


def check_job(job: TrainingJob) -> tuple[plugins.Plugin[Any, Any], plugins.Arguments]:
    """The job's plugin and its `args` as the plugin's model; InvalidSpec names every problem."""
    plugin, loading = _load(job.spec.plugin.name, require=True)
    args, problems = spec_problems(job.spec, _info(plugin))
    if loading or problems:
        raise InvalidSpec(f"TrainingJob {_name(job)}", loading + problems)
    assert plugin is not None  # else a problem above says why
    assert args is not None
    return plugin, args


def job_problems(spec: TrainingJobSpec, require_plugin: bool = True) -> list[str]:
    """Everything the trainer would refuse in `spec` before reading any data: the plugin
    (loaded here), its arguments, the datasets and baseModel.

    With `require_plugin` False, a plugin that is not installed here is no problem, and its
    arguments go unchecked: where the trainer runs, it may be.
    """
    plugin, loading = _load(spec.plugin.name, require_plugin)
    return loading + spec_problems(spec, _info(plugin))[1]


def argument_problems(part: PluginPart, require_plugin: bool = True) -> list[str]:
    """What the plugin (loaded here) refuses in `part`: job_problems for a spec that does
    not parse as a whole."""
    plugin, loading = _load(part.plugin.name, require_plugin)
    info = _info(plugin)
    return loading + (_plugin_problems(part, info)[1] if info is not None else [])


def spec_problems(
    spec: TrainingJobSpec, info: plugins.PluginInfo | None
) -> tuple[plugins.Arguments | None, list[str]]:
    """(args as the plugin's model, problems) of `spec` for a plugin declaring `info` (None:
    no plugin, so no arguments); no side effects."""
    args: plugins.Arguments | None = None
    problems: list[str] = []
    if info is not None:
        part = PluginPart(plugin=spec.plugin, args=spec.args, base_model=spec.base_model)
        args, problems = _plugin_problems(part, info)
    for source in spec.datasets:
        problems += [f"spec.{p}" for p in datasets.source_problems(source)]
    if spec.base_model is not None:
        try:
            registry.parse_model_uri(spec.base_model)
        except ValueError as error:
            problems.append(f"spec.baseModel: {error}")
    return args, problems


def _plugin_problems(
    part: PluginPart, info: plugins.PluginInfo
) -> tuple[plugins.Arguments | None, list[str]]:
    problems: list[str] = []
    if part.plugin.version is not None and part.plugin.version != info.version:
        problems.append(
            f"spec.plugin.version: {part.plugin.version!r} is required but "
            f"{info.name} {info.version} is installed"
        )
    args, arg_problems = plugins.check_args(info, part.args, part.base_model)
    problems += [f"spec.{p}" for p in arg_problems]
    unloadable = [d.kind for d in info.datasets if d.kind not in LOADABLE_KINDS]
    if unloadable:
        problems.append(
            f"plugin {info.name} expects datasets of kind {unloadable}, which this trainer "
            f"cannot load (it loads {list(LOADABLE_KINDS)})"
        )
    return args, problems


def _load(name: str, require: bool) -> tuple[plugins.Plugin[Any, Any] | None, list[str]]:
    """The installed plugin `name`, or None and why (nothing when not `require`d and not
    installed)."""
    if not require and name not in plugins.installed():
        return None, []
    try:
        return plugins.load(name), []
    except plugins.PluginError as error:
        return None, [f"spec.plugin.name: {error}"]


def _info(plugin: plugins.Plugin[Any, Any] | None) -> plugins.PluginInfo | None:
    return plugin.info() if plugin is not None else None


def _name(job: TrainingJob) -> str:
    return f"{job.metadata.namespace}/{job.metadata.name}"
