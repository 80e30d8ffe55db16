"""Channel export (bot/export.py) through the real discord.py client against the fake Discord.

The export must be readable by the data pipeline as a DiscordChatExporter file, append only new messages on a
re-run, page through long histories, and never leave a half-written file behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import discord
import pytest

from bot.export import build_index, export_channel, export_path, read_export
from cloneus.data.readers import read_chat
from cloneus.errors import CloneusError, DataFormatError


def seed_messages(fake, channel_id: int, count: int, authors=("alice", "bob")) -> list[dict]:
    """Messages already in the channel before the bot looks (no gateway events)."""
    return [
        fake.create_message(
            channel_id,
            fake.members[fake.user_ids[authors[i % len(authors)]]]["user"],
            {"content": f"message {i}"},
            dispatch=False,
        )  # fmt: skip
        for i in range(count)
    ]


@pytest.fixture
async def channel(start_bot, fake_discord):
    """A quiet channel (`random`) seen through the running bot."""
    async with start_bot(extensions=()) as drv:
        yield drv.bot.get_channel(fake_discord.channel_ids["random"])


async def test_export_is_dce_json_that_read_chat_reads(channel, fake_discord, tmp_path):
    seed_messages(fake_discord, channel.id, 2)
    bob = fake_discord.user_ids["bob"]
    first = seed_messages(fake_discord, channel.id, 1)[0]
    fake_discord.create_message(
        channel.id,
        fake_discord.members[fake_discord.user_ids["alice"]]["user"],
        {
            "content": f"<@{bob}> agreed",
            "message_reference": {"message_id": first["id"], "channel_id": str(channel.id)},
        },
        extra={"type": 19, "mentions": [fake_discord.members[bob]["user"]]},
        dispatch=False,
    )
    result = await export_channel(channel, tmp_path)
    assert result.path == export_path(tmp_path, channel.guild.id, channel.id) and result.added == result.total == 4
    document = json.loads(result.path.read_text())
    assert document["guild"]["id"] == str(channel.guild.id) and document["channel"]["name"] == "random"
    reply = document["messages"][-1]
    assert reply["type"] == "Reply" and reply["reference"]["messageId"] == first["id"]
    assert reply["author"]["nickname"] == "Alice" and reply["mentions"][0]["id"] == str(bob)

    frame = read_chat(result.path)
    assert list(frame["author"]) == ["Alice", "Bob", "Alice", "Alice"]
    assert frame["text"].iloc[0] == "message 0" and frame["reply_to"].iloc[-1] == first["id"]


async def test_rerun_appends_only_new_messages(channel, fake_discord, tmp_path):
    seed_messages(fake_discord, channel.id, 3)
    first = await export_channel(channel, tmp_path)
    newer = seed_messages(fake_discord, channel.id, 2, authors=("carol",))
    calls_before = len(fake_discord.calls)
    second = await export_channel(channel, tmp_path)
    assert (second.added, second.total) == (2, 5)
    history_calls = [c for c in fake_discord.calls[calls_before:] if c.path.endswith("/messages")]
    newest_exported = max(int(m["id"]) for m in read_export(first.path)["messages"][:3])
    assert history_calls[0].query["after"] == str(newest_exported)
    ids = [m["id"] for m in read_export(second.path)["messages"]]
    assert len(ids) == len(set(ids)) == 5 and ids[-2:] == [m["id"] for m in newer]


async def test_long_history_is_paged_and_after_date_filters(channel, fake_discord, tmp_path):
    messages = seed_messages(fake_discord, channel.id, 230)
    progress: list[int] = []

    async def on_progress(count: int) -> None:
        progress.append(count)

    result = await export_channel(channel, tmp_path, on_progress=on_progress)
    assert result.total == 230 and progress == []  # progress comes every 500 messages
    pages = [c for c in fake_discord.calls if c.method == "GET" and c.path.endswith("/messages")]
    assert len(pages) >= 3
    cutoff = discord.utils.snowflake_time(int(messages[199]["id"]))
    later = await export_channel(channel, tmp_path / "later", after=cutoff)
    assert later.total == len([m for m in messages if discord.utils.snowflake_time(int(m["id"])) > cutoff])


async def test_a_failed_export_leaves_the_previous_file_intact(channel, fake_discord, tmp_path):
    seed_messages(fake_discord, channel.id, 150)
    result = await export_channel(channel, tmp_path / "exports")
    before = result.path.read_bytes()
    seed_messages(fake_discord, channel.id, 150)
    fake_discord.inject("GET", rf"^/channels/{channel.id}/messages$", 403)
    with pytest.raises(discord.Forbidden):
        await export_channel(channel, tmp_path / "exports")
    assert result.path.read_bytes() == before
    assert [p.name for p in result.path.parent.iterdir()] == [result.path.name]


def test_a_corrupt_export_is_reported_not_overwritten(tmp_path: Path):
    path = tmp_path / "1-2.json"
    path.write_text('{"messages": [', encoding="utf-8")
    with pytest.raises(DataFormatError, match="1-2.json.*not valid JSON"):
        read_export(path)
    path.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(DataFormatError, match="'messages' list"):
        read_export(path)


async def test_index_from_exports_marks_opted_out_ids(channel, fake_discord, tmp_path):
    seed_messages(fake_discord, channel.id, 9, authors=("alice", "alice", "bob"))
    result = await export_channel(channel, tmp_path)
    users_json = tmp_path / "users.json"
    index = build_index([result.path], users_json, min_share=0.2, opted_out_ids={fake_discord.user_ids["bob"]})
    assert [(u.display_name, u.message_count, u.included) for u in index.users] == [
        ("Alice", 6, True),
        ("Bob", 3, False),
    ]
    assert index.get("bob").opted_out and users_json.exists()
    with pytest.raises(CloneusError, match="run /admin export first"):
        build_index([], users_json, min_share=0.2)
