"""kubeloop's own HTTP routes on the kserve server: version, reload, feedback, review, similar.

    GET  /v1/models/{name}/version      which registry version answers, since when
    POST /v1/models/{name}/reload       check the alias now instead of at the next poll
    POST /v1/feedback/{dataset}         a labelled input (JSON, or a raw image/png body)
    GET  /v1/review/{dataset}           predictions to label: ?strategy=&budget=&...
    GET  /v1/similar/{prediction_id}    logged predictions nearest by embedding: ?k=

Errors are {"error": message, "reason": word} with a 4xx/5xx status. With a bearer token
configured, feedback, review and similar refuse requests without it (401). Thin: the logic
is in feedback.py, review.py and holder.py.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from kubeloop.serving import feedback
from kubeloop.serving.holder import ModelFollower
from kubeloop.serving.predictor import Predictor
from kubeloop.serving.review import ReviewQueue, UnknownPrediction


@dataclass(frozen=True)
class Components:
    """What the routes work with."""

    name: str
    predictor: Predictor
    follower: ModelFollower
    review: ReviewQueue
    feedback: feedback.FeedbackService | None = None
    token: str | None = None


def router(c: Components) -> APIRouter:
    routes = APIRouter(tags=["kubeloop"])

    @routes.get("/v1/models/{name}/version")
    async def version(name: str) -> JSONResponse:
        if name != c.name:
            return _error(404, "unknown-model", f"this predictor serves {c.name!r}, not {name!r}")
        return JSONResponse(_version(c))

    @routes.post("/v1/models/{name}/reload")
    async def reload(name: str) -> JSONResponse:
        if name != c.name:
            return _error(404, "unknown-model", f"this predictor serves {c.name!r}, not {name!r}")
        try:
            swapped = await c.follower.refresh()
        except Exception as error:  # the registry's or the model's problem, reported as such
            return _error(503, "reload-failed", f"{type(error).__name__}: {error}", retry_after=5)
        return JSONResponse({"swapped": swapped, **_version(c)})

    @routes.post("/v1/feedback/{dataset}")
    async def post_feedback(dataset: str, request: Request) -> JSONResponse:
        service = c.feedback
        try:
            if service is None or dataset != service.policy.dataset:
                raise feedback.Rejected(404, "unknown-dataset", _dataset_problem(c, dataset))
            _authorize(c, request)
            policy = service.policy
            feedback.check_size(request.headers.get("content-length"), policy)
            body = await _read(request, policy.max_payload_bytes)
            current = c.predictor.holder.current
            shape = feedback.expected_shape(policy, current.onnx.input_shape if current else None)
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media == "image/png":
                parsed = feedback.parse_png(body, request.query_params, policy, shape)
            elif media in ("application/json", ""):
                parsed = feedback.parse_json(body, policy, shape)
            else:
                raise feedback.Rejected(
                    415,
                    "unsupported-media-type",
                    f"content type {media!r}: send application/json or image/png",
                )
            return JSONResponse(await service.submit(parsed, shape), status_code=201)
        except feedback.Rejected as error:
            if service is not None:
                service.reject(error)
            return _rejected(error)

    @routes.get("/v1/review/{dataset}")
    async def review(
        dataset: str,
        request: Request,
        strategy: str | None = None,
        budget: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        include_reviewed: bool = False,
        seed: int | None = None,
        threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
        every: Annotated[int | None, Query(ge=1)] = None,
        offset: Annotated[int | None, Query(ge=0)] = None,
        interval_seconds: Annotated[float | None, Query(gt=0)] = None,
        iterations: Annotated[int | None, Query(ge=1, le=100)] = None,
        sample_size: Annotated[int | None, Query(ge=1)] = None,
    ) -> JSONResponse:
        try:
            if c.feedback is None or dataset != c.feedback.policy.dataset:
                raise feedback.Rejected(404, "unknown-dataset", _dataset_problem(c, dataset))
            _authorize(c, request)
        except feedback.Rejected as error:
            return _rejected(error)
        options = {
            key: value
            for key, value in {
                "seed": seed,
                "threshold": threshold,
                "every": every,
                "offset": offset,
                "interval_seconds": interval_seconds,
                "iterations": iterations,
                "sample_size": sample_size,
            }.items()
            if value is not None
        }
        try:
            chosen = await c.review.select(strategy, budget, include_reviewed, **options)
        except ValueError as error:
            return _error(400, "bad-request", str(error))
        return JSONResponse({"dataset": dataset, **chosen})

    @routes.get("/v1/similar/{prediction_id}")
    async def similar(
        prediction_id: str, request: Request, k: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> JSONResponse:
        try:
            _authorize(c, request)
        except feedback.Rejected as error:
            return _rejected(error)
        try:
            return JSONResponse(await c.review.similar(prediction_id, k))
        except UnknownPrediction as error:
            return _error(404, "unknown-prediction", str(error))

    return routes


def _version(c: Components) -> dict[str, Any]:
    model = c.predictor.holder.current
    return {
        "name": c.name,
        "model_uri": c.follower.uri,
        "follows_alias": c.follower.follows_alias,
        "registered_model": model.version.name if model else None,
        "model_version": model.version.version if model else None,
        "source": model.version.uri if model else None,
        "classes": list(model.classes) if model else None,
        "input_shape": list(model.onnx.input_shape) if model else None,
        "loaded_at": model.loaded_at if model else None,
        "last_check": c.follower.last_check,
        "last_error": c.follower.last_error,
    }


def _authorize(c: Components, request: Request) -> None:
    if c.token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), c.token):
        raise feedback.Rejected(401, "unauthorized", "a valid bearer token is required")


async def _read(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it grows past `limit` (a chunked body has no length)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise feedback.Rejected(
                413, "too-large", f"the body exceeds the limit of {limit} bytes"
            )
    return bytes(body)


def _dataset_problem(c: Components, dataset: str) -> str:
    if c.feedback is None:
        return "this predictor collects no feedback (started without --feedback-dataset)"
    return f"this predictor collects feedback for {c.feedback.policy.dataset!r}, not {dataset!r}"


def _rejected(error: feedback.Rejected) -> JSONResponse:
    return _error(error.status, error.reason, str(error), error.retry_after)


def _error(status: int, reason: str, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": message, "reason": reason}, status_code=status, headers=headers)
