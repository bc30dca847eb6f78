"""The served model version, and following an MLflow alias with atomic swaps.

A new version is downloaded, opened in onnxruntime and warmed up in a worker thread while
the old one keeps serving; only then is one reference replaced. Batches read the reference
once when they start, so in-flight requests finish on the version they began with and none
fails during a swap. The alias is polled (MLflow sends no notifications) with one cheap
registry call; POST /v1/models/{name}/reload asks for a check at once (`reload`), waiting a
bounded time for it: the check runs in a worker thread, so the event loop answers other
requests meanwhile, and one that outlasts the wait goes on in the background. Errors kept
for GET .../version (`last_error`) are redacted: they may quote a tracking URI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from kubeloop import images, redaction
from kubeloop.registry import ModelVersion, Registry, parse_model_uri
from kubeloop.serving import onnx_model
from kubeloop.serving.errors import Rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to run."""

    version: ModelVersion
    classes: tuple[str, ...]
    onnx: onnx_model.OnnxModel
    loaded_at: float
    """Unix time the version started serving."""
    preprocessing: images.Preprocessing | None = None
    """How the version's images were prepared in training (its kubeloop.preprocessing tag):
    encoded images sent to it are decoded the same way. None: models trained before the tag
    (digits), whose PNGs must have the input's size."""


class ModelHolder:
    """The one reference to the serving version; replacing it is atomic."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve `model` from now on; returns the version it replaced."""
        previous, self.current = self.current, model
        return previous


class ModelFollower:
    """Keeps `holder` on the version `uri` names: once for a version, continuously for an alias."""

    def __init__(
        self,
        registry: Registry,
        uri: str,
        holder: ModelHolder,
        poll_seconds: float,
        input_shape: tuple[int, ...] | None = None,
        fallback_classes: tuple[str, ...] | None = None,
        warm_up_rows: int = 1,
        device: str = "cpu",
    ) -> None:
        self.uri = uri
        self.model_name, _, alias = parse_model_uri(uri)
        self.follows_alias = alias is not None
        self.holder = holder
        self.poll_seconds = poll_seconds
        self.last_error: str | None = None
        self.last_check: float | None = None
        self._registry = registry
        self._input_shape = input_shape
        self._fallback_classes = fallback_classes
        self._warm_up_rows = warm_up_rows
        self._device = device
        self._refused: dict[str, str] = {}  # version -> why it cannot be served
        self._lock = asyncio.Lock()
        self._reloading: asyncio.Task[bool] | None = None

    async def refresh(self) -> bool:
        """Check the registry now and swap if the URI names another version; True if swapped."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(self._check)
            except Exception as error:
                self.last_error = describe(error)
                raise
            finally:
                self.last_check = time.time()
            self.last_error = None
            if loaded is None:
                return False
            previous = self.holder.swap(loaded)
            log.info(
                "serving %s version %s (was %s)",
                self.model_name,
                loaded.version.version,
                previous.version.version if previous else "nothing",
            )
            return True

    async def reload(self, timeout: float) -> bool:
        """Check now (`refresh`), waiting at most `timeout` seconds; True if swapped.

        Rejected (503) when the check fails or outlasts the wait; a check that outlasts it
        goes on, and a reload meanwhile waits for that one instead of starting another.
        """
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self.refresh())
            # A check nobody waits for any more still has its error read (last_error has it).
            self._reloading.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self._reloading), timeout)
        except TimeoutError:
            raise Rejected(
                503,
                "reload-timeout",
                f"the registry did not answer within {timeout:g}s (--reload-timeout-seconds); "
                "the check goes on, see GET .../version",
                retry_after=5,
            ) from None
        except Exception as error:  # the registry's or the model's problem, reported as such
            raise Rejected(503, "reload-failed", describe(error), retry_after=5) from None

    async def run(self) -> None:
        """Load the first version (retrying), then follow the alias until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception as error:  # the loop must outlive any one failed load
                level = logging.WARNING if self.holder.current else logging.ERROR
                log.log(level, "cannot load %s: %s", self.uri, describe(error))
            if self.holder.current is not None and not self.follows_alias:
                return  # a pinned version never changes
            # Until something is served, retry sooner than the poll interval.
            delay = self.poll_seconds if self.holder.current else min(self.poll_seconds, 2.0)
            await asyncio.sleep(delay)

    def _check(self) -> LoadedModel | None:
        """Blocking: resolve the URI; load the version it names unless it already serves."""
        version = self._registry.resolve(self.uri)
        current = self.holder.current
        if current is not None and current.version.version == version.version:
            return None
        if version.version in self._refused:
            raise onnx_model.ModelFormatError(self._refused[version.version])
        try:
            return self._load(version, current)
        except onnx_model.ModelFormatError as error:
            self._refused[version.version] = f"version {version.version}: {error}"
            raise

    def _load(self, version: ModelVersion, current: LoadedModel | None) -> LoadedModel:
        data = self._registry.download_onnx(version)
        model = onnx_model.OnnxModel(data, self._input_shape, self._device)
        if current is not None and model.instance_size != current.onnx.instance_size:
            # Requests already validated against the serving shape would fail on this one.
            raise onnx_model.ModelFormatError(
                f"its input shape {list(model.input_shape)} differs from the serving version's "
                f"{list(current.onnx.input_shape)}; restart the predictor to switch"
            )
        n_classes = model.warm_up(self._warm_up_rows)
        classes = onnx_model.class_names(version.tags, n_classes, self._fallback_classes)
        tag = version.tags.get(images.TAG)
        try:
            preprocessing = images.Preprocessing.from_tag(tag) if tag else None
        except (ValueError, TypeError, KeyError) as error:
            raise onnx_model.ModelFormatError(
                f"its {images.TAG} tag is unreadable: {error}"
            ) from None
        return LoadedModel(
            version=version,
            classes=classes,
            onnx=model,
            loaded_at=time.time(),
            preprocessing=preprocessing,
        )


def describe(error: BaseException) -> str:
    """An error as GET .../version and the log show it: its type and message, redacted."""
    return redaction.redact(f"{type(error).__name__}: {error}")
