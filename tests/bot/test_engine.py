"""The generation engine: one worker thread, bounded queue, loading states, streaming, hot swap."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from bot.engine import Engine, EngineBusy, EngineLoading, EngineNotLoaded
from bot.registry import ModelRegistry
from cloneus.errors import CloneusError, UnknownAuthorError

GREEDY = {"do_sample": False, "max_new_tokens": 6}


class GatedModel:
    """A stand-in for `Cloneus` whose generations wait on a gate, so a test decides exactly when each finishes.

    A real model cannot be paused mid-generation, and these tests are about the queue around it (bounds, the
    event loop staying free, early stop), not about text. It records the threads it runs on.
    """

    def __init__(self, path=None):
        self.gate = threading.Event()
        self.threads: set[str] = set()
        self.started = 0
        self.tokens_made = 0
        self.loaded = True
        self.checkpoint = path
        self.device = "cpu"
        self.swapped_to = []
        self.pace_s = 0.0

    def generate(self, history, author, seed_text=None, **sampling):
        self.threads.add(threading.current_thread().name)
        self.started += 1
        self.gate.wait(10)
        return f"{author} says hi"

    def stream_generate(self, history, author, seed_text=None, **sampling):
        self.threads.add(threading.current_thread().name)
        for i in range(50):
            self.gate.wait(10)
            time.sleep(self.pace_s)
            self.tokens_made += 1
            yield f"t{i} "

    def swap_checkpoint(self, path):
        self.swapped_to.append(path)
        self.checkpoint = path
        return 0.0

    def unload(self):
        self.loaded = False


@pytest.fixture
def registry(tmp_path, tiny_checkpoint):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"name": "tiny", "ckpt": str(tiny_checkpoint)},
                                           {"name": "other", "ckpt": str(tiny_checkpoint)}]}))  # fmt: skip
    return ModelRegistry(path)


@pytest.fixture
async def gated(registry):
    model = GatedModel()
    async with Engine(registry, queue_depth=2, loader=lambda path: model) as engine:
        await engine.load("tiny")
        yield engine, model
        model.gate.set()


class TestQueue:
    async def test_full_queue_raises_busy_and_frees_up(self, gated):
        engine, model = gated
        running = [asyncio.create_task(engine.generate([], "alice")) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(EngineBusy, match="busy"):
            await engine.generate([], "bob")
        assert engine.status().queue_depth == 2
        model.gate.set()
        assert await asyncio.gather(*running) == ["alice says hi"] * 2
        assert await engine.generate([], "bob") == "bob says hi"
        assert engine.status().queue_depth == 0

    async def test_model_runs_on_worker_and_loop_stays_free(self, gated):
        engine, model = gated
        task = asyncio.create_task(engine.generate([], "alice"))
        ticks = 0
        while model.started == 0 or ticks < 5:  # the loop keeps ticking while the model is blocked
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done()
        model.gate.set()
        await task
        assert model.threads == {"cloneus-engine"}

    async def test_leaving_a_stream_early_stops_generation(self, gated):
        engine, model = gated
        model.gate.set()
        model.pace_s = 0.02  # 50 tokens take a second; the consumer leaves after 3
        got = []
        async for chunk in engine.stream([], "alice"):
            got.append(chunk)
            if len(got) == 3:
                break
        await engine.generate([], "alice")  # queued behind the stream: runs only once it has stopped
        assert model.tokens_made < 50 and engine.status().queue_depth == 0


class TestLoading:
    async def test_requests_while_loading_get_eta(self, registry):
        model, release = GatedModel(), threading.Event()

        def slow(path):
            release.wait(10)
            return model

        async with Engine(registry, loader=slow) as engine:
            engine.start_background_load("tiny")
            eta = engine.loading_eta()
            assert eta is not None and eta > 0
            with pytest.raises(EngineLoading, match=r"loading, ready in about \d+ s") as info:
                await engine.generate([], "alice")
            assert info.value.eta_s > 0 and engine.status().loading
            release.set()
            while engine.status().loading:
                await asyncio.sleep(0.01)
            assert engine.status().loaded and engine.status().model == "tiny" and engine.loading_eta() is None

    async def test_the_estimate_is_that_checkpoints_measured_load_time(self, registry, tiny_checkpoint, tmp_path):
        from bot.store import Store

        model, release = GatedModel(), threading.Event()

        def slow(path):
            release.wait(10)
            return model

        store = await Store.open(tmp_path / "bot.db")
        async with store, Engine(registry, loader=slow, store=store) as engine:
            await store.record_load_time(str(tiny_checkpoint), 120.0)
            engine.start_background_load("tiny")
            for _ in range(200):  # the background load reads the store on its first step
                if engine.loading_eta() > 100:
                    break
                await asyncio.sleep(0.01)
            assert 100 < engine.loading_eta() <= 120
            with pytest.raises(EngineLoading, match=r"ready in about 1[012]\d s"):
                await engine.generate([], "alice")
            release.set()
            while engine.status().loading:
                await asyncio.sleep(0.01)
            measured = await store.load_time(str(tiny_checkpoint))
            assert measured is not None and measured < 100  # the new measurement replaced the old one

    async def test_a_checkpoint_never_loaded_falls_back_to_the_default(self, registry, tmp_path):
        from bot.engine import DEFAULT_LOAD_ESTIMATE_S
        from bot.store import Store

        release = threading.Event()

        def slow(path):
            release.wait(10)
            return GatedModel(path)

        store = await Store.open(tmp_path / "bot.db")
        async with store, Engine(registry, loader=slow, store=store) as engine:
            await store.record_load_time("some/other/checkpoint", 500.0)
            task = asyncio.create_task(engine.load("tiny"))
            await asyncio.sleep(0.05)
            assert DEFAULT_LOAD_ESTIMATE_S - 5 < engine.loading_eta() <= DEFAULT_LOAD_ESTIMATE_S
            release.set()
            await task

    async def test_not_loaded_and_unknown_name(self, registry):
        async with Engine(registry, loader=GatedModel) as engine:
            with pytest.raises(EngineNotLoaded, match="/model switch"):
                await engine.generate([], "alice")
            with pytest.raises(CloneusError, match="unknown model 'nope'; registered models: tiny, other"):
                await engine.load("nope")
            assert engine.authors == []

    async def test_failed_load_is_reported(self, registry):
        def broken(path):
            raise CloneusError(f"{path}: missing users.json")

        async with Engine(registry, loader=broken) as engine:
            with pytest.raises(CloneusError, match="missing users.json"):
                await engine.load("tiny")
            status = engine.status()
            assert not status.loaded and not status.loading and "users.json" in status.error
            with pytest.raises(EngineNotLoaded, match="last load failed"):
                await engine.generate([], "alice")

    async def test_second_load_swaps_and_unload(self, registry):
        async with Engine(registry, loader=GatedModel) as engine:
            await engine.load("tiny")
            model = engine.model
            seconds = await engine.load("other")
            assert seconds >= 0 and engine.model is model and model.swapped_to == [registry.get("other").path]
            assert engine.status().model == "other"
            await engine.unload()
            assert not engine.status().loaded
            with pytest.raises(EngineNotLoaded):
                await engine.generate([], "alice")


class TestWithTinyModel:
    async def test_generate_stream_and_authors(self, registry):
        async with Engine(registry) as engine:
            seconds = await engine.load("tiny")
            assert seconds > 0
            assert sorted(engine.authors) == ["alice", "bob", "carol"]
            history = [("alice", "hello there"), ("bob", "hi alice")]
            whole = await engine.generate(history, "carol", sampling=GREEDY)
            chunks = [c async for c in engine.stream(history, "carol", sampling=GREEDY)]
            assert "".join(chunks) == whole
            probs = await engine.author_probabilities(history)
            assert set(probs) == {"alice", "bob", "carol"} and sum(probs.values()) == pytest.approx(1, abs=1e-3)
            assert await engine.predict_author(history, "top") in {"alice", "bob", "carol"}
            status = engine.status()
            assert status.loaded and status.device == "cpu" and status.memory_mb > 0
            assert status.checkpoint == str(registry.get("tiny").path)

    async def test_unknown_author_error_reaches_caller(self, registry):
        async with Engine(registry) as engine:
            await engine.load("tiny")
            with pytest.raises(UnknownAuthorError):
                await engine.generate([], "mallory", sampling=GREEDY)
            with pytest.raises(UnknownAuthorError):
                async for _ in engine.stream([], "mallory", sampling=GREEDY):
                    pass

    async def test_close_waits_for_queued_work(self, registry):
        engine = Engine(registry)
        await engine.load("tiny")
        task = asyncio.create_task(engine.generate([("alice", "hi")], "bob", sampling=GREEDY))
        await asyncio.sleep(0)
        await engine.close()
        assert task.done() and isinstance(task.result(), str)
        assert not engine._thread.is_alive()
