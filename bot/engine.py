"""The generation worker: one thread owns the loaded model, with a bounded queue in front of it.

Why one thread: a model is not safe to call from two threads at once, and generation is CPU/GPU-bound work that
would freeze the event loop if it ran there. Every model call (load, swap, generate, stream, next-speaker) runs
as an item on the worker's FIFO queue; coroutines await an `asyncio.Future` the worker resolves, and streamed
chunks cross back with `loop.call_soon_threadsafe`, so the event loop never waits on the model.

Back-pressure: at most `queue_depth` model requests are accepted at once (waiting plus running). One more gets
`EngineBusy` at once, which the bot turns into a polite "busy, try again". Loads do not count against the bound,
but while a model loads, requests get `EngineLoading(eta_s)` instead of queueing behind it for minutes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError

if TYPE_CHECKING:
    from bot.registry import ModelEntry, ModelRegistry
    from bot.store import Store
    from cloneus import Cloneus

logger = logging.getLogger(__name__)

DEFAULT_LOAD_ESTIMATE_S = 30.0  # ETA for a checkpoint never loaded here; later loads use its measured duration
_STOP = object()


class EngineBusy(CloneusError):
    """The queue is full."""

    def __init__(self, depth: int):
        self.depth = depth
        super().__init__(f"busy: {depth} requests are already waiting for the model, try again in a moment")


class EngineLoading(CloneusError):
    """A model is loading; `eta_s` is the estimated seconds left."""

    def __init__(self, eta_s: float, name: str | None = None):
        self.eta_s = eta_s
        super().__init__(f"the model{f' {name!r}' if name else ''} is loading, ready in about {eta_s:.0f} s")


class EngineNotLoaded(CloneusError):
    """No model is loaded (none registered, unloaded, or the last load failed)."""


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot for /model status."""

    model: str | None
    checkpoint: str | None
    device: str | None
    memory_mb: float
    queue_depth: int
    loaded: bool
    loading: bool
    error: str | None = None


def _load_pretrained(path: Path) -> Cloneus:
    from cloneus import Cloneus

    return Cloneus.from_pretrained(path)


def _memory_mb(device: str | None) -> float:
    """Model memory: allocated CUDA memory on a GPU, else this process' resident set size."""
    if device is not None and device.startswith("cuda"):
        import torch

        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Engine:
    """The one owner of the loaded `cloneus.Cloneus`.

    Args:
        registry (`ModelRegistry`): where `load(name)` looks names up.
        queue_depth (`int`, *optional*, defaults to `8`): model requests accepted at once before `EngineBusy`.
        loader (`Callable[[Path], Cloneus]`, *optional*): builds a model from a checkpoint path when none is
            loaded; defaults to `Cloneus.from_pretrained`. Later loads use `Cloneus.swap_checkpoint`.
        store (`Store`, *optional*): keeps each checkpoint's measured load time, so the "ready in about N s" of
            a load is what that checkpoint took last time (checkpoints differ by base model and device). Without
            it, or for a checkpoint never loaded, the estimate is `DEFAULT_LOAD_ESTIMATE_S`.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        queue_depth: int = 8,
        loader: Callable[[Path], Cloneus] | None = None,
        store: Store | None = None,
    ):
        if queue_depth < 1:
            raise ValueError(f"queue_depth must be at least 1, got {queue_depth}")
        self.registry = registry
        self.queue_depth = queue_depth
        self._loader = loader or _load_pretrained
        self._store = store
        self._model: Cloneus | None = None
        self._name: str | None = None
        self._error: str | None = None
        self._loading: str | None = None
        self._load_started = 0.0
        self._load_estimate = DEFAULT_LOAD_ESTIMATE_S
        self._pending = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._background: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._work, name="cloneus-engine", daemon=True)
        self._thread.start()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- worker --------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, future, loop, counted = item
            try:
                result = fn()
            except BaseException as e:  # the worker boundary: hand every failure to the awaiting coroutine
                _resolve(loop, future, error=e)
            else:
                _resolve(loop, future, result=result)
            finally:
                if counted:
                    with self._lock:
                        self._pending -= 1

    def _submit(self, fn: Callable[[], Any], *, counted: bool = True) -> asyncio.Future:
        """Queue `fn` for the worker; raises `EngineBusy` when `queue_depth` requests are already in."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if counted:
            with self._lock:
                if self._pending >= self.queue_depth:
                    raise EngineBusy(self._pending)
                self._pending += 1
        self._queue.put((fn, future, loop, counted))
        return future

    def ready_model(self) -> Cloneus:
        """The loaded model; `EngineLoading` (with the ETA) while one loads, `EngineNotLoaded` when none is."""
        if self._loading is not None:
            raise EngineLoading(self.loading_eta() or 1.0, self._loading)
        if self._model is None or not self._model.loaded:
            reason = f" (last load failed: {self._error})" if self._error else ""
            raise EngineNotLoaded(f"no model is loaded{reason}; an admin can load one with /model switch")
        return self._model

    # -- loading -------------------------------------------------------------------------------------------------

    def _entry(self, name_or_entry: str | ModelEntry) -> ModelEntry:
        if not isinstance(name_or_entry, str):
            return name_or_entry
        entry = self.registry.get(name_or_entry)
        if entry is None:
            known = ", ".join(self.registry.names()) or "none registered"
            raise CloneusError(f"unknown model {name_or_entry!r}; registered models: {known}")
        return entry

    async def load(self, name_or_entry: str | ModelEntry) -> float:
        """Load (or hot-swap to) a registered model; returns the seconds it took.

        Raises:
            `CloneusError`: unknown name, or the checkpoint failed to load (the previous model stays served when
                the failure happened before it was replaced).
        """
        entry = self._entry(name_or_entry)
        self._loading, self._load_started = entry.name, time.monotonic()
        measured = await self._store.load_time(str(entry.path)) if self._store is not None else None
        self._load_estimate = measured or DEFAULT_LOAD_ESTIMATE_S

        def run() -> float:
            start = time.perf_counter()
            if self._model is not None and self._model.loaded:
                self._model.swap_checkpoint(entry.path)
            else:
                self._model = self._loader(entry.path)
            return time.perf_counter() - start

        try:
            seconds = await self._submit(run, counted=False)
        except BaseException as e:
            self._error = str(e)
            raise
        finally:
            self._loading = None
        self._name, self._error = entry.name, None
        if self._store is not None:
            await self._store.record_load_time(str(entry.path), seconds)
        logger.info("model %r ready in %.1f s", entry.name, seconds)
        return seconds

    def start_background_load(self, entry: str | ModelEntry) -> None:
        """Start `load(entry)` without waiting; requests meanwhile get `EngineLoading`. Failures are logged."""
        entry = self._entry(entry)
        self._loading, self._load_started = entry.name, time.monotonic()
        self._load_estimate = DEFAULT_LOAD_ESTIMATE_S  # until `load` has read this checkpoint's measured time

        async def run() -> None:
            try:
                await self.load(entry)
            except Exception:
                logger.exception("loading model %r failed", entry.name)

        self._background = asyncio.get_running_loop().create_task(run())

    def loading_eta(self) -> float | None:
        """Seconds until the model being loaded is expected ready, or None when nothing loads."""
        if self._loading is None:
            return None
        return max(1.0, self._load_estimate - (time.monotonic() - self._load_started))

    async def unload(self) -> None:
        """Free the model; requests get `EngineNotLoaded` until the next `load`."""

        def run() -> None:
            if self._model is not None:
                self._model.unload()
            self._model = None

        await self._submit(run, counted=False)
        self._name = None

    # -- requests ------------------------------------------------------------------------------------------------

    async def generate(
        self, history: list[tuple[str, str]], author: str, seed_text: str | None = None, sampling: dict | None = None
    ) -> str:
        """The whole reply as `author` to `history`."""
        model = self.ready_model()
        return await self._submit(lambda: model.generate(history, author, seed_text=seed_text, **(sampling or {})))

    async def stream(
        self,
        history: list[tuple[str, str]],
        author: str,
        seed_text: str | None = None,
        sampling: dict | None = None,
        *,
        new_author: bool = False,
    ) -> AsyncIterator[str]:
        """Yield text deltas of the reply as the worker produces them. Leaving the loop early stops generation
        at the next token. `new_author` allows a name the model's index does not know (zero-shot).

        Raises (at the first iteration): `EngineBusy`, `EngineLoading`, `EngineNotLoaded`, and anything the model
        raises (e.g. `UnknownAuthorError`).
        """
        model = self.ready_model()
        options = sampling or {}
        async for chunk in self._stream_from(
            lambda: model.stream_generate(history, author, seed_text=seed_text, new_author=new_author, **options)
        ):
            yield chunk

    async def base_stream(
        self, messages: list[tuple[str, str]], system: str | None = None, sampling: dict | None = None
    ) -> AsyncIterator[str]:
        """The untuned base model's reply to a short user/assistant chat (`Cloneus.base_stream`), in deltas."""
        model = self.ready_model()
        async for chunk in self._stream_from(lambda: model.base_stream(messages, system, **(sampling or {}))):
            yield chunk

    async def _stream_from(self, pieces: Callable[[], Any]) -> AsyncIterator[Any]:
        """Run the iterator `pieces()` returns on the worker and yield its items here as they come."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def run() -> None:
            for chunk in pieces():
                if stop.is_set():
                    return
                _call_soon(loop, chunks.put_nowait, chunk)

        done = self._submit(run)
        try:
            while True:
                getter = asyncio.ensure_future(chunks.get())
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not chunks.empty():
                    yield chunks.get_nowait()
                done.result()  # re-raises what the model raised
                return
        finally:
            stop.set()
            # Nobody reads the worker's outcome after an early exit; retrieve it so asyncio does not warn.
            done.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def stream_batch(
        self,
        history: list[tuple[str, str]],
        authors: list[str],
        seed_text: str | None = None,
        sampling: dict | None = None,
    ) -> AsyncIterator[tuple[int, str]]:
        """One reply per author to the same history, generated as one batch (one queue slot), as `(row, delta)`
        pairs while it is produced (`Cloneus.stream_batch`)."""
        model = self.ready_model()
        options = sampling or {}
        async for item in self._stream_from(lambda: model.stream_batch(history, authors, seed_text, **options)):
            yield item

    async def predict_author(
        self,
        history: list[tuple[str, str]],
        mode: Any = "weighted",
        *,
        exclude: list[str] | None = None,
        seed: int | None = None,
    ) -> str | None:
        """Who speaks next (`mode`, `exclude`, `seed` as in `Cloneus.predict_author`); None when the model would
        stay silent."""
        model = self.ready_model()
        return await self._submit(lambda: model.predict_author(history, mode=mode, exclude=exclude or (), seed=seed))

    async def prompt_text(self, history: list[tuple[str, str]], author: str, sampling: dict | None = None) -> str:
        """The exact prompt a reply as `author` would be generated from (`Cloneus.prompt_text`)."""
        model = self.ready_model()
        return await self._submit(lambda: model.prompt_text(history, author, **(sampling or {})))

    async def author_probabilities(self, history: list[tuple[str, str]]) -> dict[str, float]:
        model = self.ready_model()
        return await self._submit(lambda: model.author_probabilities(history))

    # -- introspection -------------------------------------------------------------------------------------------

    @property
    def authors(self) -> list[str]:
        """Names the loaded model can speak as (trainable users of its index); empty when none is loaded."""
        model = self._model
        if model is None or not model.loaded:
            return []
        return [u.display_name for u in model.users.trainable()]

    @property
    def model(self) -> Cloneus | None:
        return self._model

    def status(self) -> EngineStatus:
        model = self._model
        loaded = model is not None and model.loaded
        device = model.device if loaded else None
        return EngineStatus(
            model=self._name if loaded else None,
            checkpoint=str(model.checkpoint) if loaded and model.checkpoint else None,
            device=device,
            memory_mb=_memory_mb(device),
            queue_depth=self._pending,
            loaded=loaded,
            loading=self._loading is not None,
            error=self._error,
        )

    async def close(self) -> None:
        """Stop the worker after the items already queued; the model is released with the thread."""
        if self._background is not None and not self._background.done():
            self._background.cancel()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop closed while the worker was finishing; nobody is waiting any more
        logger.debug("event loop closed; dropping a worker result")


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future, *, result=None, error=None) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    _call_soon(loop, settle)
