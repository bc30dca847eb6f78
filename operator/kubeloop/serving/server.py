"""The predictor process: a kserve ModelServer with kubeloop's model, routes and loops.

Differences from `kserve.ModelServer.start`: the address to bind is configurable (kserve
always binds 0.0.0.0); the server starts before the model is loaded and /v2/health/ready
answers 503 until it is (kserve reports ready as soon as it runs); no gRPC port; and the
background loops (alias follower, prediction log, live accuracy) run beside uvicorn and
flush what they hold when it stops (SIGTERM/SIGINT). The HTTP layer (serving.asgi) bounds
every request body and answers every error, kserve's routes' and kubeloop's alike; what
the process logs goes through kubeloop.redaction.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import kserve
import kserve.model_server
import uvloop
from fastapi import FastAPI
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.server import RESTServer

from kubeloop import redaction, selection
from kubeloop import settings as kubeloop_settings
from kubeloop.api.predictor import PredictorConfig, parse_command_line
from kubeloop.registry import Registry, parse_model_uri
from kubeloop.serving import asgi, canary, fast_path, feedback, onnx_model, routes
from kubeloop.serving.consensus import Consensus
from kubeloop.serving.errors import Rejected
from kubeloop.serving.gold import GoldSet
from kubeloop.serving.holder import ModelFollower, ModelHolder
from kubeloop.serving.kserve_model import KServeModel
from kubeloop.serving.live_accuracy import LiveAccuracy
from kubeloop.serving.prediction_log import PredictionLog
from kubeloop.serving.prediction_pool import PredictionPool
from kubeloop.serving.predictor import Predictor
from kubeloop.serving.replicas import OwnWrites, PeerSync
from kubeloop.serving.review import ReviewQueue
from kubeloop.serving.v2_routes import V2Routes
from kubeloop.storage import InvalidEndpoint, ObjectStore

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_SECONDS = 15.0
GC_YOUNG_THRESHOLD = 20_000
"""Net allocations between the collector's young passes (Python's default: 700)."""

Step = Callable[[], Coroutine[Any, Any, None]]
"""A coroutine to start: a background loop or a shutdown step."""


class _ReadyWhenLoaded(DataPlane):  # type: ignore[misc]  # kserve ships no type information
    """Server readiness is every registered model's readiness, not just "the server runs";
    a model's metadata lists the version it serves."""

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await model.healthy() for model in models])

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await super().model_metadata(model_name)
        version = self.served_version(model_name)
        return metadata | {"versions": [version] if version is not None else []}

    def answer_v1(self, model_name: str) -> fast_path.AnswerV1 | None:
        """The V1 answer of the model registered as `model_name` (serving.fast_path)."""
        model = self.model_registry.get_models().get(model_name)
        return model.answer_v1 if isinstance(model, KServeModel) else None

    def served_version(self, model_name: str) -> str | None:
        """The registry version `model_name` serves; None when none is loaded."""
        model = self.model_registry.get_models().get(model_name)
        current = model.predictor.holder.current if isinstance(model, KServeModel) else None
        return current.version.version if current is not None else None


class _RESTServer(RESTServer):  # type: ignore[misc]  # kserve ships no type information
    """kserve's REST server with kubeloop's HTTP layer: its hooks run when the app is made."""

    def __init__(
        self,
        body_rules: list[asgi.BodyRule],
        config: PredictorConfig,
        split: canary.Split,
        **kw: Any,
    ):
        super().__init__(**kw)
        self._body_rules = body_rules
        self._limits = config
        self._split = split

    def _add_middlewares(self, app: FastAPI) -> None:
        # Not kserve's: its TimingMiddleware calls getrusage twice and logs per request, half
        # the predictor's time at batch 1 (bench/README.md); the predictor's own histograms
        # (kubeloop_predictor_request_seconds) time each request. No access log either.
        # Innermost first: the fast path answers what the canary split leaves here, the
        # canary split sees bodies the limits let through.
        app.add_middleware(fast_path.V1FastPath, model_of=self.dataplane.answer_v1)
        app.add_middleware(canary.CanaryRoutes, split=self._split)
        asgi.add_body_limits(
            app,
            rules=self._body_rules,
            max_inflight_bytes=self._limits.max_inflight_bytes,
            max_json_depth=self._limits.max_json_depth,
        )
        app.add_middleware(V2Routes, version_of=self.dataplane.served_version)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        asgi.add_exception_handlers(app)  # after kserve's: ours answer Exception, redacted


class PredictorServer(kserve.ModelServer):  # type: ignore[misc]  # kserve ships no type information
    """kserve's ModelServer, bound to a chosen host, with kubeloop's routes and loops."""

    def __init__(
        self,
        config: PredictorConfig,
        components: routes.Components,
        background: list[Step],
        shutdown: list[Step],
    ) -> None:
        super().__init__(
            http_port=config.http_port,
            enable_grpc=False,
            workers=1,
            enable_latency_logging=False,
            registered_models=ModelRepository(),
            grace_period=10,
        )
        self.dataplane = _ReadyWhenLoaded(model_registry=self.registered_models)
        self.host = config.host
        self._config = config
        self._components = components
        self._background = background
        self._shutdown = shutdown
        self._serving = False

    def start(self, models: list[Any]) -> None:
        for model in models:
            self.register_model(model)
        self._rest_server = _RESTServer(
            self._body_rules(),
            self._config,
            self._components.split,
            app=FASTAPI_APP_IMPORT_STRING,
            data_plane=self.dataplane,
            model_repository_extension=self.model_repository_extension,
            http_port=self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.host
        kserve.model_server.app.include_router(routes.router(self._components))
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._on_signal)
        # What is imported by now (kserve, fastapi, mlflow: ~240,000 objects) lives as long as
        # the process: keep it out of the collector's full passes, which otherwise stall every
        # request in flight for ~130 ms (p99 under load, bench/README.md).
        gc.freeze()
        # Young passes far less often than Python's default: under 32 callers its collections
        # (and the older generations' they trigger) doubled the p99 (bench/README.md).
        # Requests free what they allocate by reference counting.
        gc.set_threshold(GC_YOUNG_THRESHOLD)
        # uvloop: its event loop does the per-request socket and callback work in C.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._serve())

    def _body_rules(self) -> list[asgi.BodyRule]:
        service = self._components.feedback
        return [
            asgi.BodyRule(
                "/v1/feedback/",
                self._config.max_payload_bytes,
                feedback.PAYLOAD_OPTION,
                on_refused=service.reject if service is not None else None,
            ),
            asgi.BodyRule("", self._config.max_request_bytes, "--max-request-bytes"),
        ]

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        # While uvicorn serves it handles the signal itself, then re-raises it here once it
        # has stopped: ignoring it lets _serve flush. Before that, stop at once.
        if not self._serving:
            raise SystemExit(128 + number)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=8, thread_name_prefix="io"))
        tasks = [loop.create_task(start()) for start in self._background]
        self._serving = True
        try:
            await self._rest_server.start()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("stopping: flushing the prediction log and live accuracy")
            try:
                await asyncio.wait_for(self._run_shutdown(), SHUTDOWN_FLUSH_SECONDS)
            except TimeoutError:
                log.error("flushing at shutdown took over %ss; gave up", SHUTDOWN_FLUSH_SECONDS)

    async def _run_shutdown(self) -> None:
        for step in self._shutdown:  # in order: the batcher stops, then the flushes
            await step()


def build(config: PredictorConfig, settings: kubeloop_settings.Settings) -> PredictorServer:
    """Wire the predictor's parts together; starts nothing."""
    registered_model, _, _ = parse_model_uri(config.model_uri)
    fb = config.feedback
    holder = ModelHolder()
    follower = ModelFollower(
        Registry(settings.mlflow_tracking_uri),
        config.model_uri,
        holder,
        config.alias_poll_seconds,
        input_shape=fb.input_shape if fb else None,
        fallback_classes=fb.classes if fb else None,
        device=config.device,
        warm_up_rows=config.max_batch_size,
    )
    pool = PredictionPool(config.pool_size)
    prediction_log: PredictionLog | None = None
    live: LiveAccuracy | None = None
    service: feedback.FeedbackService | None = None
    background: list[Step] = [follower.run]
    shutdown: list[Step] = []
    if fb is not None:
        store = ObjectStore.from_settings(settings)
        own = OwnWrites()
        prediction_log = PredictionLog(
            store,
            fb.bucket,
            fb.prefix,
            config.log_batch_size,
            config.log_flush_seconds,
            on_written=own.add,
        )
        live = LiveAccuracy(store, fb.bucket, fb.prefix, registered_model)
        policy = feedback.Policy(
            dataset=fb.dataset,
            classes=fb.classes,
            input_shape=fb.input_shape,
            slices=fb.slices,
            max_payload_bytes=config.max_payload_bytes,
        )
        peers = PeerSync(
            store, fb.bucket, fb.prefix, pool, prediction_log, config.warm_start_seconds, own
        )
        consensus = Consensus(store, fb.bucket, fb.prefix, fb.dataset, config.review_overlap)
        gold = GoldSet(store, fb.bucket, fb.prefix) if config.review_gold_share > 0 else None
        service = feedback.FeedbackService(
            policy,
            store,
            fb.bucket,
            fb.prefix,
            pool,
            live,
            find_elsewhere=peers.find,
            consensus=consensus,
            gold=gold,
            on_written=own.add,
        )
        stats_seconds, sync_seconds = config.stats_flush_seconds, config.log_flush_seconds
        background += [
            prediction_log.run,
            lambda: live.run(stats_seconds),
            lambda: peers.run(sync_seconds),
            lambda: _prepare_storage(store, fb.bucket, live, prediction_log, pool, config),
            # The review queue's k-center is compiled (numba) now, not in a labeller's request.
            lambda: asyncio.to_thread(selection.strategies.compile_k_center),
        ]
    predictor = Predictor(
        holder, config.max_batch_size, config.max_latency_ms / 1000, pool, prediction_log
    )
    shutdown.append(predictor.close)
    if service is not None:
        shutdown.append(service.writer.close)  # samples waiting for their segment's write
    if prediction_log is not None and live is not None:
        log_flush, live_flush = prediction_log.flush, live.flush
        shutdown += [
            lambda: _flush("prediction log", log_flush),
            lambda: _flush("live accuracy", live_flush),
        ]
    components = routes.Components(
        name=config.name,
        predictor=predictor,
        follower=follower,
        review=ReviewQueue(
            pool,
            config.review_strategy,
            config.review_budget,
            config.review_audit_share,
            consensus=service.consensus if service else None,
            gold=service.gold if service else None,
            gold_share=config.review_gold_share,
            model=lambda: holder.current,
        ),
        feedback=service,
        token=config.token,
        labellers=config.labellers,
        user_header=config.trusted_user_header,
        threshold=config.retrain_threshold,
        reload_timeout_seconds=config.reload_timeout_seconds,
    )
    server = PredictorServer(config, components, background, shutdown)
    server.model = KServeModel(config.name, predictor, config.max_request_rows)
    return server


def main(argv: Sequence[str]) -> int:
    """The predictor image's entrypoint."""
    return serve(parse_command_line(argv))


def serve(config: PredictorConfig) -> int:
    """Run the predictor `config` describes until SIGTERM; 2 when the settings are unusable.

    What it prints and logs is redacted (a library may print a tracking URI too)."""
    with redaction.redacted_output():
        return _serve(config)


def _serve(config: PredictorConfig) -> int:
    settings = kubeloop_settings.load()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _quiet_kserve()
    try:
        onnx_model.check_device(config.device)
        server = build(config, settings)
    except (InvalidEndpoint, onnx_model.DeviceUnavailable) as error:  # unusable: say which
        print(f"kubeloop predictor: {error}", file=sys.stderr)
        return 2
    redaction.install()  # every handler configured by now: ours, kserve's, uvicorn's
    log.info(
        "predictor %s for %s on http://%s:%d%s",
        config.name,
        config.model_uri,
        config.host,
        config.http_port,
        f", feedback for {config.feedback.dataset}" if config.feedback else "",
    )
    server.start([server.model])
    return 0


class _ExpectedErrors(logging.Filter):
    """Drops kserve's tracebacks for answers that are no server fault (400, 503 not ready)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        expected = (InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady, Rejected)
        return not isinstance(error, expected)


def _quiet_kserve() -> None:
    logging.getLogger("kserve").addFilter(_ExpectedErrors())
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # a timing line per request
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # kserve's use


async def _prepare_storage(
    store: ObjectStore,
    bucket: str,
    live: LiveAccuracy,
    prediction_log: PredictionLog,
    pool: PredictionPool,
    config: PredictorConfig,
) -> None:
    """At start, retried until storage answers: the bucket, the stored live accuracy; then,
    once, the recent predictions back into the review pool."""
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(store.ensure_bucket, bucket)
            await asyncio.to_thread(live.load)
            break
        except Exception as error:  # serving goes on; feedback answers 503 meanwhile
            log.warning("storage not ready (%s); retrying in %.0fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 30.0)
    if config.warm_start_seconds > 0:
        try:
            batches = await asyncio.to_thread(
                prediction_log.read_recent, config.warm_start_seconds, config.pool_size
            )
        except Exception as error:  # the pool fills from new predictions instead
            log.warning("the prediction log could not be read back: %s", error)
            return
        for batch in batches:
            pool.add(batch)
        log.info("review pool: %d predictions read back from the log", len(pool))


async def _flush(what: str, flush: Callable[[], object]) -> None:
    try:
        await asyncio.to_thread(flush)
    except Exception as error:  # shutdown goes on; the log says what was lost
        log.error("could not write the %s at shutdown: %s", what, error)
