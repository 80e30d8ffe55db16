"""Start the CloneUs Discord bot: `python run.py` (or `TESTING=1 python run.py` for the DEV_* guild and channel).

Reads `.env` and the environment (see docs/bot.md), opens the database, the generation engine and the training
job manager, and runs the client until SIGINT/SIGTERM. On shutdown, training subprocesses keep running (the next
start finds them again) unless CANCEL_JOBS_ON_EXIT=1, in which case they get SIGTERM and save a checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord

from bot.client import EXTENSIONS, CloneusBot
from bot.engine import Engine
from bot.jobs import JobManager
from bot.registry import ModelRegistry
from bot.settings import Settings, SettingsError
from bot.store import Store
from cloneus.errors import CloneusError

logger = logging.getLogger("cloneus.bot")


def open_youtube(settings: Settings) -> Any:
    """The YouTube link plugin on the bot's database file, or None when it is off.

    The `youtube` section (tag format, daily quota) comes from the training config, so replies are decoded with
    the same tag format the model was trained on; only the database is the bot's own.
    """
    from cloneus.config import YoutubeConfig, load_config
    from cloneus.plugins.youtube import YouTubeLinks

    section = load_config(settings.config_path).youtube if Path(settings.config_path).exists() else YoutubeConfig()
    section = section.model_copy(update={"db_path": str(settings.db_path)})
    env = {"YOUTUBE_API_KEY": settings.youtube_api_key.get_secret_value()} if settings.youtube_api_key else {}
    links = YouTubeLinks.from_env(section, env)
    # One 1-unit call at start-up, so a bad key is reported once here instead of as failed lookups later.
    problem = links.check_key() if links is not None and links.service is not None else None
    if problem:
        logger.warning(problem)
    return links


@asynccontextmanager
async def open_bot(
    settings: Settings,
    *,
    extensions: tuple[str, ...] = EXTENSIONS,
    loader: Callable[[Path], Any] | None = None,
    youtube: Any = None,
) -> AsyncIterator[CloneusBot]:
    """Build the bot with its services open; everything is closed in reverse order on exit.

    Tests use this same factory against the fake Discord.

    Args:
        settings (`Settings`): validated settings.
        extensions (`tuple[str, ...]`, *optional*): cogs to load.
        loader (`Callable[[Path], Cloneus]`, *optional*): how the engine loads a checkpoint (default
            `Cloneus.from_pretrained`).
        youtube (`YouTubeLinks`, *optional*): the YouTube plugin; `run.py` passes `open_youtube(settings)`.
    """
    registry = ModelRegistry(settings.models_json)
    async with await Store.open(settings.db_path) as store:
        async with Engine(registry, queue_depth=settings.queue_depth, loader=loader, store=store) as engine:
            jobs = JobManager(store, settings, registry)
            bot = CloneusBot(settings, store, engine, jobs, registry, youtube, extensions=extensions)
            try:
                yield bot
            finally:
                if not bot.is_closed():
                    await bot.close()
                await jobs.close(cancel_running=settings.cancel_jobs_on_exit)


async def serve(settings: Settings) -> None:
    """Run the bot until it stops or the process gets SIGINT/SIGTERM."""
    async with open_bot(settings, youtube=open_youtube(settings)) as bot:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(bot.start(settings.token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            stopper.cancel()
            runner.result()  # re-raise a login or intents failure
            return
        logger.info("stopping (signal received)")
        await bot.close()
        await runner


def main() -> int:
    from dotenv import load_dotenv

    load_dotenv(Path(".env"))  # the directory the bot is started in; real environment variables win
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except discord.LoginFailure:
        print("error: BOT_TOKEN was rejected by Discord; copy it again from the developer portal", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print(
            "error: enable the Message Content and Server Members intents (developer portal → Bot → Privileged "
            "Gateway Intents)",
            file=sys.stderr,
        )
        return 2
    except CloneusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
