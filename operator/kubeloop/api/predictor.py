"""The predictor's configuration: one model for its command line, its Pods' args and its limits.

    python -m kubeloop.serving --name NAME --model-uri models:/M@ALIAS [--host H] ...

`parse_command_line(argv)` reads the predictor's command line (exit 2 with a usage message
when it is wrong; `--help` lists every option); `PredictorConfig.to_args()` renders the
arguments the operator's builders put in Pods and the local mode passes to the process
(reconcile.servedmodel.predictor_args), so the two sides cannot drift: parsing what was
rendered gives the same model. Only the feedback bearer token comes from the environment
(KUBELOOP_FEEDBACK_TOKEN, a secret: never on a command line); MLflow and S3 connections are
kubeloop.settings'. No I/O here beyond argparse's usage message.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic import model_validator as _model_validator
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    CliSuppress,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from kubeloop.api.feedbackdataset import Strategy

PROG = "python -m kubeloop.serving"
TOKEN_ENV = "KUBELOOP_FEEDBACK_TOKEN"
LABELLER_TOKENS_ENV = "KUBELOOP_LABELLER_TOKENS"

ReviewStrategy = Literal[Strategy, "time-sampled"]
"""The review queue's strategies (kubeloop.selection.STRATEGIES; a test keeps them equal)."""

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of models:/name/3 or models:/name@alias; no side effects."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise ValueError(
            f"not a registered-model URI: {uri!r} (expected models:/NAME/VERSION or "
            "models:/NAME@ALIAS)"
        )
    return match["name"], match["version"], match["alias"]


def _model_uri(uri: str) -> str:
    parse_model_uri(uri)
    return uri


def _names(value: Any) -> Any:
    """Comma-separated names (or a list of them), stripped; empty parts dropped."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(part).strip() for part in parts if str(part).strip())
    if parts and not names:
        raise ValueError("needs at least one name")
    return names


def _shape(value: Any) -> Any:
    """A shape as "8,8" (or a list of sizes): positive whole numbers."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    text = ",".join(str(part) for part in parts)
    try:
        shape = tuple(int(str(part).strip()) for part in parts)
    except ValueError:
        raise ValueError(f"not a shape: {text!r} (expected e.g. 8,8)") from None
    if not shape or any(size < 1 for size in shape):
        raise ValueError(f"not a shape: {text!r} (sizes must be positive)")
    return shape


def _no_commas(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    for name in names or ():
        if "," in name:
            raise ValueError(f"{name!r}: names must not contain commas (they separate names)")
    return names


Names = Annotated[tuple[str, ...], BeforeValidator(_names), AfterValidator(_no_commas)]
Shape = Annotated[tuple[int, ...], BeforeValidator(_shape)]


@dataclass(frozen=True)
class FeedbackConfig:
    """Where feedback samples, the prediction log and live accuracy go."""

    dataset: str
    bucket: str
    prefix: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...] | None
    slices: tuple[str, ...]


class PredictorConfig(BaseSettings):
    """kubeloop predictor: onnxruntime behind a KServe ModelServer (V1 and V2 protocols) with
    micro-batching, alias following, the feedback API, the prediction log and the review
    queue. The feedback bearer token comes from $KUBELOOP_FEEDBACK_TOKEN; MLflow and S3 from
    KUBELOOP_MLFLOW_TRACKING_URI and KUBELOOP_S3_*. Feedback needs --feedback-dataset,
    --feedback-bucket, --feedback-prefix and --classes together, or none of them."""

    model_config = SettingsConfigDict(
        env_prefix="KUBELOOP_",
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
        cli_prog_name=PROG,
        cli_kebab_case=True,
        cli_enforce_required=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
    )

    name: str = Field(min_length=1)
    """model name in the inference routes"""
    model_uri: Annotated[str, AfterValidator(_model_uri)]
    """models:/NAME@ALIAS (followed) or models:/NAME/VERSION (pinned)"""
    host: str = "0.0.0.0"
    """address to bind; the default, every interface, is for a container: pass 127.0.0.1
    outside one (the local mode and the tests do)"""
    http_port: int = Field(default=8080, ge=1, le=65535)
    """HTTP port"""
    max_batch_size: int = Field(default=32, ge=1)
    """rows per onnxruntime batch"""
    max_latency_ms: float = Field(default=5.0, ge=0)
    """longest a request waits for others to fill a batch"""
    alias_poll_seconds: float = Field(default=10.0, gt=0)
    """how often the alias is checked for a new version"""
    feedback_dataset: str | None = None
    """FeedbackDataset name in the feedback routes"""
    feedback_bucket: str | None = None
    """S3 bucket of samples and the prediction log"""
    feedback_prefix: str | None = None
    """key prefix of the dataset, e.g. feedback/d/"""
    classes: Names | None = None
    """comma-separated class names"""
    input_shape: Shape | None = None
    """shape of one input, e.g. 8,8 (unset: the model's)"""
    slices: Names = ()
    """comma-separated slice tags feedback may carry (none: any tag)"""
    review_strategy: ReviewStrategy = "least-confidence"
    """the review queue's default strategy"""
    review_budget: int = Field(default=50, ge=1)
    """the review queue's default number of predictions"""
    device: Literal["cpu", "cuda"] = "cpu"
    """where onnxruntime runs the model: cuda needs onnxruntime-gpu and a GPU (a ServedModel
    with resources.gpu gets it)"""
    review_audit_share: float = Field(default=0.0, ge=0.0, le=1.0)
    """share of each review request drawn at random from the pool instead of by the strategy"""
    review_overlap: int = Field(default=1, ge=1, le=10)
    """labels an item needs from different labellers before it becomes one sample"""
    review_gold_share: float = Field(default=0.0, ge=0.0, le=0.5)
    """share of each review request that are gold items (the dataset's gold/ samples)"""
    retrain_threshold: int | None = Field(default=None, ge=1)
    """the FeedbackDataset's retrain threshold, which the review page counts toward"""
    max_payload_bytes: int = Field(default=1 << 20, ge=1)
    """feedback body limit (413 above it)"""
    max_request_bytes: int = Field(default=16 << 20, ge=1)
    """body limit of every other route: inference, reload (413 above it)"""
    max_request_rows: int = Field(default=1024, ge=1)
    """inputs per inference request (413 above it)"""
    max_inflight_bytes: int = Field(default=64 << 20, ge=1)
    """request bodies held at once, all requests together; a request that would pass it
    waits for room (503 with Retry-After after 10 s), so no burst exhausts the memory"""
    max_json_depth: int = Field(default=32, ge=2, le=512)
    """deepest nesting of a JSON body (400 deeper)"""
    reload_timeout_seconds: float = Field(default=5.0, gt=0)
    """longest POST .../reload waits for the registry before answering 503 (the check goes
    on in the background)"""
    pool_size: int = Field(default=50_000, ge=1)
    """predictions kept for the review queue"""
    log_flush_seconds: float = Field(default=5.0, gt=0)
    """prediction log interval"""
    log_batch_size: int = Field(default=1000, ge=1)
    """records per prediction log object"""
    warm_start_seconds: float = Field(default=3600.0, ge=0)
    """prediction log age read back into the review pool at start (0: none)"""
    stats_flush_seconds: float = Field(default=2.0, gt=0)
    """how often live accuracy is written"""
    feedback_token: CliSuppress[SecretStr | None] = None
    """bearer token the feedback, review, similar and reload routes require (from
    $KUBELOOP_FEEDBACK_TOKEN only)"""
    labeller_tokens: CliSuppress[SecretStr | None] = None
    """labellers' own bearer tokens, a JSON object of name to token (from
    $KUBELOOP_LABELLER_TOKENS only, e.g. a Secret's key): each is accepted where the feedback
    token is, and a sample sent with one records its name as the labeller"""
    trusted_user_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+$")
    """header naming the signed-in user, set by a trusted authenticating proxy in front of
    the predictor (e.g. X-Forwarded-User of OAuth2 Proxy): its value is the labeller"""

    @_model_validator(mode="after")
    def _feedback_together(self) -> Self:
        wanted = (self.feedback_dataset, self.feedback_bucket, self.feedback_prefix, self.classes)
        if any(value is not None for value in wanted) and None in wanted:
            raise ValueError(
                "feedback needs --feedback-dataset, --feedback-bucket, --feedback-prefix and "
                "--classes together"
            )
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("--classes must not repeat a class")
        _ = self.labellers  # refuses malformed labeller tokens at start, not per request
        body_limit = max(self.max_request_bytes, self.max_payload_bytes)
        if self.max_inflight_bytes < body_limit:
            raise ValueError(
                f"--max-inflight-bytes ({self.max_inflight_bytes}) must hold at least one "
                f"request of the largest body limit ({body_limit})"
            )
        return self

    @property
    def feedback(self) -> FeedbackConfig | None:
        """The feedback part, or None when the predictor collects no feedback."""
        if (
            self.feedback_dataset is None
            or self.feedback_bucket is None
            or self.feedback_prefix is None
            or self.classes is None
        ):
            return None
        return FeedbackConfig(
            dataset=self.feedback_dataset,
            bucket=self.feedback_bucket,
            prefix=self.feedback_prefix,
            classes=self.classes,
            input_shape=self.input_shape,
            slices=self.slices,
        )

    @property
    def labellers(self) -> dict[str, str]:
        """Token -> labeller name, from labeller_tokens; ValueError naming what is wrong."""
        if self.labeller_tokens is None:
            return {}
        try:
            names = json.loads(self.labeller_tokens.get_secret_value() or "{}")
        except json.JSONDecodeError as error:
            raise ValueError(f"${LABELLER_TOKENS_ENV} is not JSON: {error.msg}") from None
        if not isinstance(names, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in names.items()
        ):
            raise ValueError(
                f"${LABELLER_TOKENS_ENV} must be a JSON object of labeller name to token"
            )
        if len(set(names.values())) != len(names):
            raise ValueError(f"${LABELLER_TOKENS_ENV} gives one token to two labellers")
        return {token: name for name, token in names.items()}

    @property
    def token(self) -> str | None:
        """The bearer token, or None when the routes are open."""
        if self.feedback_token is None:
            return None
        return self.feedback_token.get_secret_value() or None

    def to_args(self) -> list[str]:
        """The command line that parses back to this model: the options that were given,
        in declaration order; the token never (it travels in the environment)."""
        args: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in _NOT_ON_COMMAND_LINE or name not in self.model_fields_set:
                continue
            if value is None or value == ():
                continue  # what the default says already; a command line cannot spell None
            text = _text(value)
            # argparse takes "-x" for an option: such a value must be attached, --flag=-x.
            args += [f"{_flag(name)}={text}"] if text.startswith("-") else [_flag(name), text]
        return args

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The command line (added by parse_command_line) comes first; of the environment only
        # the token counts, so no stray KUBELOOP_HOST can move the bind address.
        return init_settings, _TokenFromEnvironment(settings_cls)


_SECRET_ENV = {"feedback_token": TOKEN_ENV, "labeller_tokens": LABELLER_TOKENS_ENV}
_NOT_ON_COMMAND_LINE = frozenset(_SECRET_ENV)


class _TokenFromEnvironment(EnvSettingsSource):
    def __call__(self) -> dict[str, Any]:
        found = super().__call__().items()
        return {key: value for key, value in found if key in _NOT_ON_COMMAND_LINE}


def parse_command_line(argv: Sequence[str]) -> PredictorConfig:
    """The configuration `argv` describes (and $KUBELOOP_FEEDBACK_TOKEN); prints the help
    and exits 0 for --help, prints a usage message and exits 2 when something is wrong."""
    description = " ".join((PredictorConfig.__doc__ or "").split())
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    source: CliSettingsSource[argparse.ArgumentParser] = CliSettingsSource(
        PredictorConfig, root_parser=parser
    )
    source(args=list(argv))
    secret = sorted(_NOT_ON_COMMAND_LINE & set(source()))  # argparse hides them, not refuses
    if secret:
        parser.error(
            f"unrecognized arguments: {_flag(secret[0])} (it is read from "
            f"${_SECRET_ENV[secret[0]]} only: a command line shows in every process listing)"
        )
    try:
        return PredictorConfig(_cli_settings_source=source)
    except ValidationError as error:
        parser.error("; ".join(describe(error)))
        raise AssertionError("unreachable: argparse exits") from error


def describe(error: ValidationError) -> list[str]:
    """One line per problem, naming the option as the command line spells it."""
    lines = []
    for problem in error.errors(include_url=False):
        fields = [str(part) for part in problem["loc"] if isinstance(part, str)]
        where = f"{_flag(fields[0])}: " if fields else ""
        lines.append(where + _message(problem["type"], problem["msg"], problem.get("ctx") or {}))
    return lines


def _message(kind: str, message: str, ctx: dict[str, Any]) -> str:
    plain = {
        "greater_than_equal": "must be at least {ge}",
        "greater_than": "must be more than {gt}",
        "less_than_equal": "must be at most {le}",
        "less_than": "must be less than {lt}",
        "int_parsing": "must be a whole number",
        "float_parsing": "must be a number",
        "literal_error": "must be one of {expected}",
        "extra_forbidden": "is not an option",
        "missing": "is required",
    }
    if kind in plain:
        return plain[kind].format(**ctx)
    return message.removeprefix("Value error, ")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(value: object) -> str:
    if isinstance(value, tuple):
        text = ",".join(_text(part) for part in value)
        # pydantic-settings reads a list spelt "--" as empty; the empty part after a comma
        # is dropped again by the names' parser (_names).
        return text + "," if text == "--" else text
    if isinstance(value, float):
        text = repr(value)
        return text.removesuffix(".0")  # 5.0 -> "5": the CRD's integers stay as written
    return str(value)
