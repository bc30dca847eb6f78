"""kubeloop's own HTTP routes on the kserve server: version, reload, feedback, review, similar.

    GET  /v1/models/{name}/version      which registry version answers, since when
    POST /v1/models/{name}/reload       check the alias now instead of at the next poll
    POST /v1/models/{name}/canary       forward a share of inference to a canary (serving.canary)
    POST /v1/feedback/{dataset}         a labelled input (JSON, or a raw image/png body)
    GET  /v1/review/{dataset}           predictions to label: ?strategy=&budget=&...
    GET  /v1/review/{dataset}/progress  the review page's progress line: ?labeller=
    GET  /v1/review/{dataset}/quality   labellers' agreement, kappa, gold accuracy
    GET  /v1/review/{dataset}/disputes  items whose overlap labels disagree
    POST /v1/review/{dataset}/disputes/{prediction_id}  an adjudicator's label: {"label": ...}
    GET  /v1/similar/{prediction_id}    logged predictions nearest by embedding: ?k=
    GET  /review/{dataset}              the review page (serving.review_page)

Errors are {"error": message, "reason": word} with a 4xx/5xx status: the routes raise
`Rejected` and serving.asgi answers it, once for all of them. With a bearer token
configured, reload (it changes what is served), feedback, review and similar refuse
requests without it (401). Thin: the logic is in feedback.py, review.py and holder.py.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from kubeloop.api import samples
from kubeloop.serving import canary, feedback, review_page
from kubeloop.serving.consensus import Consensus
from kubeloop.serving.errors import Rejected
from kubeloop.serving.holder import ModelFollower
from kubeloop.serving.predictor import Predictor
from kubeloop.serving.review import ReviewQueue


@dataclass(frozen=True)
class Components:
    """What the routes work with."""

    name: str
    predictor: Predictor
    follower: ModelFollower
    review: ReviewQueue
    feedback: feedback.FeedbackService | None = None
    token: str | None = None
    labellers: dict[str, str] = field(default_factory=dict)
    """A labeller's own bearer token -> their name."""
    user_header: str | None = None
    """The header a trusted authenticating proxy names the signed-in user in."""
    threshold: int | None = None
    """The FeedbackDataset's retrain threshold, for the review page."""
    split: canary.Split = field(default_factory=canary.Split)
    """The canary split this predictor applies (serving.canary)."""
    reload_timeout_seconds: float = 5.0


def router(c: Components) -> APIRouter:
    routes = APIRouter(tags=["kubeloop"])

    @routes.get("/v1/models/{name}/version")
    async def version(name: str) -> JSONResponse:
        _check_model(c, name)
        return JSONResponse(_version(c))

    @routes.post("/v1/models/{name}/reload")
    async def reload(name: str, request: Request) -> JSONResponse:
        _check_model(c, name)
        _authorize(c, request)
        swapped = await c.follower.reload(c.reload_timeout_seconds)
        return JSONResponse({"swapped": swapped, **_version(c)})

    @routes.post("/v1/models/{name}/canary")
    async def set_canary(name: str, request: Request) -> JSONResponse:
        _check_model(c, name)
        _authorize(c, request)
        try:
            wanted = json.loads(await request.body())
            c.split.set(wanted.get("url"), int(wanted.get("percent", 0)))
        except (ValueError, TypeError, AttributeError) as error:
            raise Rejected(
                422, "bad-canary", f'send {{"url": URL, "percent": 0-100}}: {error}'
            ) from None
        return JSONResponse({"url": c.split.url, "percent": c.split.percent})

    @routes.post("/v1/feedback/{dataset}")
    async def post_feedback(dataset: str, request: Request) -> JSONResponse:
        service = _feedback_service(c, dataset)
        with service.counting_refusals():
            labeller = _authorize(c, request)
            current = c.predictor.holder.current
            ack = await service.receive(
                await request.body(),  # bounded and read by serving.asgi already
                request.headers.get("content-type", ""),
                request.query_params,
                current.onnx.input_shape if current else None,
                current.preprocessing if current else None,
                labeller=labeller,
            )
        return JSONResponse(ack, status_code=201)

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
        _feedback_service(c, dataset)
        labeller = _authorize(c, request) or request.query_params.get("labeller") or None
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
        chosen = await c.review.select(strategy, budget, include_reviewed, labeller, **options)
        return JSONResponse({"dataset": dataset, **chosen})

    @routes.get("/v1/review/{dataset}/progress")
    async def progress(dataset: str, request: Request) -> JSONResponse:
        service = _feedback_service(c, dataset)
        labeller = _authorize(c, request) or request.query_params.get("labeller") or None
        current = c.predictor.holder.current
        version = current.version.version if current else None
        found = await service.progress(labeller, version)
        return JSONResponse({"dataset": dataset, "threshold": c.threshold, **found})

    @routes.get("/v1/review/{dataset}/quality")
    async def quality(dataset: str, request: Request) -> JSONResponse:
        consensus = _consensus(c, dataset)
        _authorize(c, request)
        return JSONResponse({"dataset": dataset, **(await consensus.quality()).as_json()})

    @routes.get("/v1/review/{dataset}/disputes")
    async def disputes(dataset: str, request: Request) -> JSONResponse:
        consensus = _consensus(c, dataset)
        _authorize(c, request)
        found = await consensus.disputes()
        return JSONResponse({"dataset": dataset, "items": [_dispute(d) for d in found]})

    @routes.post("/v1/review/{dataset}/disputes/{prediction_id}")
    async def adjudicate(dataset: str, prediction_id: str, request: Request) -> JSONResponse:
        service = _feedback_service(c, dataset)
        with service.counting_refusals():
            adjudicator = _authorize(c, request)
            decided = await service.adjudicate(prediction_id, await request.body(), adjudicator)
        return JSONResponse(decided, status_code=201)

    @routes.get("/review/{dataset}", include_in_schema=False)
    async def page(dataset: str) -> HTMLResponse:
        _feedback_service(c, dataset)
        return HTMLResponse(review_page.render(c.name, dataset))

    @routes.get("/v1/similar/{prediction_id}")
    async def similar(
        prediction_id: str, request: Request, k: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> JSONResponse:
        _authorize(c, request)
        return JSONResponse(await c.review.similar(prediction_id, k))

    return routes


def _dispute(decision: samples.Decision) -> dict[str, Any]:
    """A disputed item as the adjudication view shows it: the votes and the input."""
    held = decision.sample
    return {
        "prediction_id": decision.prediction_id,
        "votes": decision.votes,
        "predicted_label": held.predicted_label,
        "model_version": held.model_version,
        "decided_at": decision.decided_at,
        "input": held.input,
        "shape": held.shape,
        "image": held.image,
        "content_type": held.content_type,
    }


def _consensus(c: Components, dataset: str) -> Consensus:
    service = _feedback_service(c, dataset)
    if service.consensus is None:
        raise Rejected(404, "no-overlap", f"{dataset} keeps no review votes")
    return service.consensus


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


def _check_model(c: Components, name: str) -> None:
    if name != c.name:
        raise Rejected(404, "unknown-model", f"this predictor serves {c.name!r}, not {name!r}")


def _authorize(c: Components, request: Request) -> str | None:
    """Refuse a request without a valid bearer token when tokens are set (401); the
    labeller its credentials name: a labeller's own token, else the trusted proxy's header."""
    user = (request.headers.get(c.user_header) or None) if c.user_header else None
    if c.token is None and not c.labellers:
        return user
    scheme, _, text = request.headers.get("authorization", "").partition(" ")
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header is any bytes
    # (Starlette decodes it as latin-1, which encode() undoes exactly).
    given = text.strip().encode("latin-1")
    if scheme.lower() == "bearer":
        for token, name in c.labellers.items():
            if hmac.compare_digest(given, token.encode()):
                return name
        if c.token is not None and hmac.compare_digest(given, c.token.encode()):
            return user
    raise Rejected(401, "unauthorized", "a valid bearer token is required")


def _feedback_service(c: Components, dataset: str) -> feedback.FeedbackService:
    if c.feedback is None:
        raise Rejected(
            404,
            "unknown-dataset",
            "this predictor collects no feedback (started without --feedback-dataset)",
        )
    if dataset != c.feedback.policy.dataset:
        raise Rejected(
            404,
            "unknown-dataset",
            f"this predictor collects feedback for {c.feedback.policy.dataset!r}, not {dataset!r}",
        )
    return c.feedback
