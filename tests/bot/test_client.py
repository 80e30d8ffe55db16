"""The bot client end to end against the fake Discord: start-up, sync, the error path, context, resilience.

These tests load a test-only cog (`probe_cog.py`) so they check the client's machinery independently of the
product cogs, which have their own tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import discord
import pytest

from bot.client import GENERIC_ERROR, bot_intents
from bot.render import EDIT_DELAY_SECONDS
from bot.store import Store

PROBE = ("tests.bot.probe_cog",)
RUN_PY = Path(__file__).resolve().parents[2] / "run.py"
ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original"


class TestStartup:
    async def test_connects_syncs_to_guild_and_answers(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            names = [c["name"] for c in fake_discord.commands[fake_discord.guild_id]]
            assert names == ["probe"]
            assert None not in fake_discord.commands  # nothing synced globally
            rec = await drv.slash("probe echo", text="hello there")
            await rec.answered()
            assert rec.original["content"] == "hello there"
            assert fake_discord.identify_count == 1

    async def test_identifies_with_only_needed_intents(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE):
            intents = discord.Intents._from_value(fake_discord.intents)
            assert intents == bot_intents()
            assert intents.message_content and intents.members
            assert not intents.presences and not intents.typing and not intents.dm_messages

    async def test_commands_before_model_ready_get_loading_message(self, start_bot, fake_discord):
        from cloneus import Cloneus

        release = threading.Event()

        def slow_loader(path):
            release.wait(30)
            return Cloneus.from_pretrained(path)

        async with start_bot(extensions=PROBE, loader=slow_loader) as drv:
            assert drv.bot.engine.loading_eta() is not None
            rec = await drv.slash("probe generate", author="alice")
            await rec.answered()
            assert "loading" in rec.text and " s" in rec.text
            release.set()
            await drv.wait_for(lambda: drv.bot.engine.status().loaded, timeout=60)
            rec = await drv.slash("probe generate", author="alice")
            await rec.answered()
            assert rec.text.startswith("**[alice]**")

    async def test_restart_keeps_context(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            await drv.post_message("remember me", user="bob")
            await drv.wait_for(lambda: fake_discord.calls is not None and _context(drv), timeout=10)
        async with start_bot(extensions=PROBE) as drv:
            ctx = await drv.bot.store.recent_context(fake_discord.channel_ids["general"], 10)
            assert [(m.author, m.text) for m in ctx] == [("bob", "remember me")]


def _context(drv):
    """Non-blocking peek at the general channel's context rows (the store is SQLite; read it synchronously)."""
    import sqlite3

    with sqlite3.connect(drv.settings.db_path) as conn:
        return conn.execute(
            "SELECT author, text, is_clone FROM context WHERE channel_id = ? ORDER BY created_at, id",
            (drv.fake.channel_ids["general"],),
        ).fetchall()


class TestContext:
    async def test_seeded_from_history_at_startup(self, start_bot, fake_discord):
        general = fake_discord.channel_ids["general"]
        users = {name: fake_discord.members[uid]["user"] for name, uid in fake_discord.user_ids.items()}
        fake_discord.create_message(general, users["alice"], {"content": f"hi <@{fake_discord.user_ids['bob']}>"})
        fake_discord.create_message(general, fake_discord.bot_user, {"content": "**[carol]** cloned words"})
        fake_discord.create_message(general, fake_discord.bot_user, {"content": "Training started"})
        fake_discord.create_message(general, users["bob"], {"content": "yo <:pog:1234>"})
        hook = {"id": "99", "username": "Alice (clone)", "discriminator": "0000", "avatar": None, "bot": True}
        fake_discord.create_message(general, hook, {"content": "via webhook"}, extra={"webhook_id": "99"})
        async with start_bot(extensions=PROBE) as drv:
            # Stored as an export holds messages (raw markup; names as shown, read before the member list is in,
            # so usernames here); read back normalised, resolving authors by id (`ReplyService.history`).
            assert _context(drv) == [
                ("alice", f"hi <@{fake_discord.user_ids['bob']}>", 0),
                ("carol", "cloned words", 1),
                ("bob", "yo <:pog:1234>", 0),
                ("Alice", "via webhook", 1),
            ]

    async def test_live_messages_in_configured_channel_only(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            await drv.post_message("elsewhere", user="alice", channel="random")
            await drv.post_message("first", user="alice")
            rec = await drv.slash("probe echo", text="bot output is not context")
            await rec.answered()
            await drv.post_message("second", user="carol")
            await drv.wait_for(lambda: len(_context(drv)) == 2)
            assert _context(drv) == [("Alice", "first", 0), ("Carol", "second", 0)]

    async def test_edits_and_deletes_follow(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            msg = await drv.post_message("typo", user="alice")
            await drv.wait_for(lambda: _context(drv))
            fake_discord.edit_message(int(msg["id"]), {"content": "fixed"}, None)
            await drv.wait_for(lambda: _context(drv) == [("Alice", "fixed", 0)])
            fake_discord.delete_message(int(msg["id"]))
            await drv.wait_for(lambda: _context(drv) == [])


class TestErrors:
    async def test_unexpected_error_is_logged_and_user_gets_generic_reply(self, start_bot, caplog):
        async with start_bot(extensions=PROBE) as drv:
            with caplog.at_level(logging.ERROR, logger="bot.client"):
                rec = await drv.slash("probe fail")
                await rec.answered()
            assert rec.text == GENERIC_ERROR and rec.ephemeral
            assert any(r.exc_info and "probe failure" in str(r.exc_info[1]) for r in caplog.records)

    async def test_domain_error_is_explained(self, start_bot):
        async with start_bot(extensions=PROBE) as drv:
            rec = await drv.slash("probe fail", kind="busy")
            await rec.answered()
            assert "busy" in rec.text and rec.ephemeral

    async def test_permission_denied(self, start_bot):
        async with start_bot(extensions=PROBE) as drv:
            denied = await drv.slash("probe admin", user="alice")
            await denied.answered()
            assert "Manage Server" in denied.text and denied.ephemeral
            allowed = await drv.slash("probe admin", user="boss")
            await allowed.answered()
            assert allowed.text == "admin ok"


class TestResilience:
    async def test_streamed_edits_are_throttled_and_final_text_lands(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            rec = await drv.slash("probe stream", words=6, delay=0.3)
            await rec.done(lambda r: r.original and r.original["content"].rstrip().endswith("w5"), timeout=20)
            edits = fake_discord.calls_to("PATCH", ORIGINAL)
            gaps = [b.t - a.t for a, b in zip(edits, edits[1:-1], strict=False)]  # the final flush is exempt
            assert len(edits) >= 2 and all(g >= EDIT_DELAY_SECONDS * 0.9 for g in gaps)
            assert rec.original["content"].rstrip() == "**[probe]** w0 w1 w2 w3 w4 w5"

    async def test_429_on_edit_is_retried(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            fake_discord.inject("PATCH", ORIGINAL, 429, times=1, retry_after=0.2)
            rec = await drv.slash("probe stream", words=3)
            await rec.done(lambda r: r.original and r.original["content"].rstrip().endswith("w2"), timeout=20)
            statuses = [c.status for c in fake_discord.calls_to("PATCH", ORIGINAL)]
            assert statuses[0] == 429 and statuses[1] == 200

    async def test_5xx_is_survived(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            fake_discord.inject("POST", r"/interactions/\d+/[^/]+/callback", 500, times=1)
            fake_discord.inject("PATCH", ORIGINAL, 502, times=1)
            rec = await drv.slash("probe stream", words=2)
            await rec.done(lambda r: r.original and r.original["content"].rstrip().endswith("w1"), timeout=20)
            assert [c.status for c in fake_discord.calls_to("POST", "/callback")] == [500, 200]
            assert 502 in [c.status for c in fake_discord.calls_to("PATCH", ORIGINAL)]
            general = fake_discord.channel_ids["general"]
            fake_discord.inject("POST", rf"/channels/{general}/messages$", 502, times=1)
            sent = await drv.bot.get_channel(general).send("after an outage")
            assert fake_discord.messages[sent.id]["content"] == "after an outage"
            assert [c.status for c in fake_discord.calls_to("POST", rf"/channels/{general}/messages$")] == [502, 200]

    async def test_gateway_disconnect_resumes_and_replays_missed_events(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            await fake_discord.disconnect_gateway()
            await drv.post_message("sent while disconnected", user="bob")
            await drv.wait_for(lambda: fake_discord.resume_count == 1, timeout=20)
            await drv.wait_for(lambda: _context(drv) == [("Bob", "sent while disconnected", 0)], timeout=10)
            rec = await drv.slash("probe echo", text="still here")
            await rec.answered()
            assert rec.text == "still here" and fake_discord.identify_count == 1

    async def test_op7_reconnect_request(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            await fake_discord.request_reconnect()
            await drv.wait_for(lambda: fake_discord.resume_count == 1, timeout=20)
            rec = await drv.slash("probe echo", text="after op 7")
            await rec.answered()
            assert rec.text == "after op 7"
            # commands are synced once, in setup_hook, never again on reconnect
            assert len(fake_discord.calls_to("PUT", "/commands")) == 1

    async def test_event_loop_answers_while_generating(self, start_bot, fake_discord):
        async with start_bot(extensions=PROBE) as drv:
            await drv.wait_for(lambda: drv.bot.engine.status().loaded, timeout=60)
            gens = [await drv.slash("probe generate", author="bob") for _ in range(3)]
            echo = await drv.slash("probe echo", text="quick")
            await echo.answered()
            await asyncio.gather(*(g.answered(timeout=60) for g in gens))
            assert all(g.text.startswith("**[bob]**") for g in gens)


class TestRunPy:
    def test_bad_settings_exit_2_with_one_line_per_variable(self, tmp_path):
        env = {"PATH": os.environ["PATH"], "GUILDS_ID": "12x", "QUEUE_DEPTH": "0", "HOME": str(tmp_path)}
        (tmp_path / ".env").write_text("CHANNEL_ID=abc\n")
        proc = subprocess.run(
            [sys.executable, str(RUN_PY)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert lines[0] == "error: bad bot settings:"
        named = sorted(line.split()[0].split("=")[0] for line in lines[1:])
        assert named == ["BOT_TOKEN", "CHANNEL_ID", "GUILDS_ID"]  # QUEUE_DEPTH is checked once these are fixed

    def test_token_is_never_printed(self, tmp_path):
        secret = "MTIz.super-secret-token"
        env = {"PATH": os.environ["PATH"], "BOT_TOKEN": secret, "GUILDS_ID": "1", "CTX_LIMIT": "zero"}
        proc = subprocess.run(
            [sys.executable, str(RUN_PY)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and "CTX_LIMIT='zero' is invalid" in proc.stderr
        assert secret not in proc.stderr + proc.stdout

    async def test_sigterm_shuts_down_cleanly(self, bot_settings, fake_discord):
        from run import serve

        task = asyncio.create_task(serve(bot_settings))
        await fake_discord.wait_for(lambda: fake_discord.identify_count == 1 or task.done(), timeout=60)
        await fake_discord.wait_for(lambda: fake_discord._ws is not None or task.done(), timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 60)
        assert task.result() is None
        await fake_discord.wait_for(lambda: fake_discord._ws is None, timeout=10)  # the gateway was closed
        async with await Store.open(bot_settings.db_path) as store:  # and the database reopens
            assert await store.list_jobs() == []

    async def test_missing_privileged_intents_stop_start_up(self, bot_settings, fake_discord):
        from run import serve

        fake_discord.privileged_intents_enabled = False
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(serve(bot_settings), 60)

    @pytest.mark.parametrize(
        "error, expected",
        [
            (discord.PrivilegedIntentsRequired(None), "enable the Message Content and Server Members intents"),
            (discord.LoginFailure("Improper token has been passed."), "BOT_TOKEN was rejected by Discord"),
        ],
    )
    def test_main_turns_discord_refusals_into_one_line(self, monkeypatch, tmp_path, capsys, error, expected):
        import run

        async def refused(settings):
            raise error

        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("BOT_TOKEN", "MTIz.secret")
        monkeypatch.setenv("GUILDS_ID", "1")
        monkeypatch.setattr(run, "serve", refused)
        assert run.main() == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {expected}") and "\n" not in err and "MTIz.secret" not in err
