"""Benchmark: does the bot stay responsive while the model generates? (issue 5 §6)

The real bot (`run.open_bot`, every cog) runs against the fake Discord of the test suite (`tests/bot/`), serving
the tiny random model by default (`--model builtin` serves SmolLM2-135M with a fresh LoRA adapter instead; its
first run converts the GGUF once). Three measurements, each beside a baseline from the same run:

1. Event-loop lag (p50/p99 of how late a 10 ms timer fires) while `/clone speak` generations run back to back.
   Baseline: the same generations called directly on the event loop, as a bot without the engine thread would.
   Target: p99 < 100 ms.
2. Time to the first response (the deferral callback reaching Discord) of a `/clone speak` issued while another
   reply is streaming. Baseline: the same command on an idle bot. Target: < 0.5 s.
3. `/clone speak` from 20 users at once: every one must get a reply or a "busy" answer; none dropped.
   Baseline: the same 20 requests one after another. Reported as replies per second.

    python bench/bench_bot.py [--users 20] [--rounds 5] [--tokens 48] [--model tiny|builtin]

Writes `bench/results/bench_bot.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import discord  # noqa: E402
import yarl  # noqa: E402

from bot.settings import Settings  # noqa: E402
from cloneus.io import atomic_write_json  # noqa: E402
from run import open_bot  # noqa: E402
from tests.bot.conftest import AUTHORS, Driver, write_tiny_checkpoint  # noqa: E402
from tests.bot.fake_discord import ADMIN_PERMS, FakeDiscord  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_bot.json"
TICK_S = 0.010
LOADING = 1 << 7
LAG_TARGET_S = 0.100
FIRST_RESPONSE_TARGET_S = 0.5


class LagMonitor:
    """Measures how late a `TICK_S` sleep wakes up, i.e. how long something else held the event loop."""

    def __init__(self):
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(TICK_S)
            self.lags.append(max(0.0, loop.time() - start - TICK_S))

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def finished(rec) -> bool:
    """The interaction has its final visible answer: a clone reply or an error/busy line."""
    original = rec.original
    return bool(original and not original["flags"] & LOADING and rec.text)


async def speak(drv: Driver, user: str, tokens: int, author: str = "alice"):
    return await drv.slash("clone speak", author=author, user=user, max_new_tokens=tokens)


async def settle(drv: Driver, rec, timeout: float = 300) -> None:
    """Wait until the command is done, including the store writes after the last edit."""
    await rec.done(finished, timeout)
    if rec.text.startswith("**["):
        for _ in range(int(timeout / 0.02)):
            if await drv.bot.store.get_reply(rec.original_id):
                return
            await asyncio.sleep(0.02)


async def first_response_s(drv: Driver, user: str, tokens: int) -> float:
    sent = time.monotonic()
    rec = await speak(drv, user, tokens)
    await rec.response(timeout=30)
    callback = next(c for c in drv.fake.calls if c.method == "POST" and f"/interactions/{rec.id}/" in c.path)
    await settle(drv, rec)
    return callback.t - sent


async def measure(drv: Driver, args) -> dict:
    history = [(a, f"hello from {a}") for a in AUTHORS]
    model = drv.bot.engine.model
    # Every reply is exactly `tokens` long (the random tiny model would otherwise stop at random).
    sampling = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    await drv.bot.store.set_channel_setting(drv.fake.channel_ids["general"], "sampling", sampling)

    with LagMonitor() as blocking:
        for _ in range(args.rounds):
            model.generate(history, "alice", **sampling)
            await asyncio.sleep(TICK_S * 2)  # let the monitor see the stall
    with LagMonitor() as engine:
        for i in range(args.rounds):
            await settle(drv, await speak(drv, AUTHORS[i % 3], args.tokens))

    idle = [await first_response_s(drv, "carol", args.tokens) for _ in range(args.rounds)]
    busy = []
    for _ in range(args.rounds):
        running = await speak(drv, "alice", args.tokens)
        await running.done(lambda r: r.original_id and len(r.edits()) >= 2, 60)  # streaming has begun
        busy.append(await first_response_s(drv, "bob", args.tokens))
        await settle(drv, running)

    users = [f"user{i}" for i in range(args.users)]
    for name in users:
        drv.fake.user_ids[name] = drv.fake.add_member(name)
    start = time.monotonic()
    for name in users:
        await settle(drv, await speak(drv, name, args.tokens))
    sequential_s = time.monotonic() - start

    start = time.monotonic()
    recs = [await speak(drv, name, args.tokens) for name in users]
    outcomes = {"reply": 0, "busy": 0, "dropped": 0}
    for rec in recs:
        try:
            await settle(drv, rec, timeout=300)
        except TimeoutError:
            outcomes["dropped"] += 1
            continue
        outcomes["reply" if rec.text.startswith("**[") else "busy" if "busy" in rec.text else "dropped"] += 1
    concurrent_s = time.monotonic() - start

    return {
        "lag_blocking_p50_ms": percentile(blocking.lags, 50) * 1000,
        "lag_blocking_p99_ms": percentile(blocking.lags, 99) * 1000,
        "lag_engine_p50_ms": percentile(engine.lags, 50) * 1000,
        "lag_engine_p99_ms": percentile(engine.lags, 99) * 1000,
        "first_response_idle_s": statistics.median(idle),
        "first_response_busy_s": statistics.median(busy),
        "first_response_busy_max_s": max(busy),
        "sequential_replies_per_s": args.users / sequential_s,
        "concurrent_replies_per_s": outcomes["reply"] / concurrent_s,
        "concurrent_outcomes": outcomes,
        "concurrent_wall_s": concurrent_s,
        "sequential_wall_s": sequential_s,
    }


def print_table(r: dict, args) -> None:
    rows = [
        ("event-loop lag p50 (ms)", r["lag_blocking_p50_ms"], r["lag_engine_p50_ms"], "-"),
        ("event-loop lag p99 (ms)", r["lag_blocking_p99_ms"], r["lag_engine_p99_ms"], f"< {LAG_TARGET_S * 1000:.0f}"),
        ("first response (s)", r["first_response_idle_s"], r["first_response_busy_s"], f"< {FIRST_RESPONSE_TARGET_S}"),
        (f"replies/s ({args.users} users)", r["sequential_replies_per_s"], r["concurrent_replies_per_s"], "no drop"),
    ]
    headers = ("metric", "baseline", "bot", "bot/base", "target")
    print(f"\nbench_bot: model={args.model}, {args.tokens} tokens/reply, {args.rounds} rounds, {args.users} users")
    print("baselines: lag = generate() on the event loop; first response = idle bot; replies/s = one at a time")
    print(f"{headers[0]:<26}{headers[1]:>12}{headers[2]:>12}{headers[3]:>10}  {headers[4]}")
    for name, base, ours, target in rows:
        ratio = ours / base if base else float("nan")
        print(f"{name:<26}{base:>12.3f}{ours:>12.3f}{ratio:>10.3f}  {target}")
    o = r["concurrent_outcomes"]
    print(f"{args.users} concurrent users: {o['reply']} replies, {o['busy']} told busy, {o['dropped']} dropped")


async def run(args) -> dict:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        tmp = Path(tmp)
        checkpoint = await asyncio.to_thread(build_checkpoint, args.model, tmp)
        fake = FakeDiscord()
        general = fake.add_channel("general")
        fake.channel_ids = {"general": general}
        fake.user_ids = {name: fake.add_member(name, nick=name.capitalize()) for name in AUTHORS}
        admins = fake.snowflake()
        fake.add_role(admins, "Admins", ADMIN_PERMS)
        fake.role_ids = {"Admins": admins}
        await fake.start()
        discord.http.Route.BASE = fake.rest_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
        models_json = tmp / "models.json"
        models_json.write_text(json.dumps({"default": "m", "models": [{"name": "m", "ckpt": str(checkpoint)}]}))
        settings = Settings(
            token="bench-token",
            guild_ids=[fake.guild_id],
            channel_id=general,
            db_path=tmp / "cloneus.db",
            models_json=models_json,
            queue_depth=args.queue_depth,
            clone_cooldown_s=0,
            history_seed_n=0,
            config_path=tmp / "train_config.yaml",
            chat_dir=tmp / "chat",
            users_json=tmp / "users.json",
        )
        try:
            async with open_bot(settings) as bot:
                bot._connection.guild_ready_timeout = 0.05
                runner = asyncio.create_task(bot.start("bench-token"))
                await asyncio.wait_for(bot.wait_until_ready(), 60)
                drv = Driver(fake, bot, settings)
                await drv.wait_for(lambda: bot.engine.status().loaded, timeout=600, message="model never loaded")
                result = await measure(drv, args)
                await bot.close()
                await runner
        finally:
            await fake.close()
    return result


def build_checkpoint(model: str, tmp: Path) -> Path:
    """A LoRA checkpoint of the tiny random model, or of SmolLM2 (via its safetensors cache) with `builtin`."""
    from cloneus.models.tiny import build_tiny_model

    if model == "tiny":
        return write_tiny_checkpoint(build_tiny_model(tmp / "tiny"), tmp / "ckpt" / "checkpoint-1")
    from cloneus.models.loading import resolve_model

    return write_tiny_checkpoint(resolve_model("builtin:smollm2-135m").path, tmp / "ckpt" / "checkpoint-1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20, help="concurrent /clone speak users")
    parser.add_argument("--rounds", type=int, default=5, help="generations per lag and first-response measurement")
    parser.add_argument("--tokens", type=int, default=48, help="tokens per reply (forced with min_new_tokens)")
    parser.add_argument("--queue-depth", type=int, default=8, help="the engine's queue bound")
    parser.add_argument("--model", choices=("tiny", "builtin"), default="tiny")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print_table(result, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS, {"args": vars(args), **result})
    print(f"wrote {RESULTS}")
    ok = (
        result["lag_engine_p99_ms"] < LAG_TARGET_S * 1000
        and result["first_response_busy_s"] < FIRST_RESPONSE_TARGET_S
        and result["concurrent_outcomes"]["dropped"] == 0
    )
    print("targets met" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
