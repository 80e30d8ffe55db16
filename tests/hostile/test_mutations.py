"""Generated variants of real exports: truncations, byte flips, encodings, line endings, stray NULs.

The sources are the first messages of the demo chat (data/demo/demo_chat.json, a DiscordChatExporter export)
written out in every supported format, plus, when present, the real #ubuntu corpus in ../shared/data. Each
variant must end in its documented outcome, through `run_prepare` (which also checks that no partial user index
or cache entry is left): the same messages (BOM, CRLF), an error naming the problem (UTF-16, an invalid byte and
its offset, truncated JSON), or, for damage a format cannot detect, a result or an error naming the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import pytest

from tests.hostile.conftest import DEMO_CHAT, SHARED_DATA, Outcome, expect_error, run_prepare

SOURCE_MESSAGES = 40
SOURCES = ["dce_json", "dce_csv", "generic_csv", "whatsapp", "telegram"]
# The WhatsApp source writes dd/mm/yyyy dates of early February only, which fit either order.
SOURCE_SETTINGS = {"whatsapp": {"date_format": "dayfirst"}}
JSON_SOURCES = {"dce_json", "telegram"}
CUTS = [0.1, 0.33, 0.5, 0.77, 0.95]
FLIP_AT = [0.2, 0.5, 0.8]


def _demo_messages() -> tuple[dict, list[dict]]:
    export = json.loads(DEMO_CHAT.read_text(encoding="utf-8"))
    return export, export["messages"][:SOURCE_MESSAGES]


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def source_bytes(kind: str) -> bytes:
    """The demo chat's first messages as an export of `kind`."""
    import pandas as pd

    export, messages = _demo_messages()
    name = [m["author"].get("nickname") or m["author"]["name"] for m in messages]
    if kind == "dce_json":
        return json.dumps({**export, "messages": messages}, ensure_ascii=False, indent=1).encode("utf-8")
    if kind == "dce_csv":
        rows = [[m["author"]["id"], m["author"]["name"], m["timestamp"], m["content"], "", ""] for m in messages]
        header = ["AuthorID", "Author", "Date", "Content", "Attachments", "Reactions"]
        return _csv_text(header, rows).encode("utf-8")
    if kind == "generic_csv":
        rows = [[n, m["content"], m["timestamp"]] for n, m in zip(name, messages, strict=True)]
        return _csv_text(["username", "text", "timestamp"], rows).encode("utf-8")
    stamps = [pd.Timestamp(m["timestamp"]).tz_convert("UTC") for m in messages]
    if kind == "whatsapp":
        lines = [f"{t:%d/%m/%Y, %H:%M} - {n}: {m['content']}" for t, n, m in zip(stamps, name, messages, strict=True)]
        return ("\n".join(lines) + "\n").encode("utf-8")
    chat = [
        {"id": i, "type": "message", "date": f"{t:%Y-%m-%dT%H:%M:%S}", "from": n, "from_id": m["author"]["id"]}
        | {"text": m["content"]}
        for i, (t, n, m) in enumerate(zip(stamps, name, messages, strict=True))
    ]
    return json.dumps(
        {"name": "demo", "type": "private_group", "id": 1, "messages": chat}, ensure_ascii=False
    ).encode()


def _flip(data: bytes, at: float, byte: int) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes([byte]) + data[i + 1 :]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory, tiny_model_dir, tiny_tokenizer) -> dict[str, Outcome]:
    """Each unmodified source, prepared once: the reference the variants are compared with."""
    root = tmp_path_factory.mktemp("baselines")
    results = {}
    for kind in SOURCES:
        chat = root / f"{kind}.export"
        chat.write_bytes(source_bytes(kind))
        results[kind] = run_prepare(
            chat, root / f"work-{kind}", tiny_model_dir, tiny_tokenizer, **SOURCE_SETTINGS.get(kind, {})
        )
        assert results[kind].error is None, results[kind].error
    return results


def _run(tmp_path, prepare, kind: str, data: bytes) -> tuple[Path, Outcome]:
    chat = tmp_path / f"{kind}.export"
    chat.write_bytes(data)
    return chat, prepare(chat, **SOURCE_SETTINGS.get(kind, {}))


def _result_or_named_error(chat: Path, outcome: Outcome, baseline: Outcome) -> None:
    """Damage the format cannot see: a result no larger than the original, or an error that names the file."""
    if outcome.error is not None:
        assert str(chat) in str(outcome.error)
        return
    assert outcome.stats["messages_kept"] <= baseline.stats["messages_kept"] + 1
    assert not outcome.frame["text"].str.contains("\ufffd").any(), "bad bytes were replaced silently"


@pytest.mark.parametrize("kind", SOURCES)
class TestVariantsOfRealExports:
    def test_sources_read_whole(self, baselines, kind):
        assert baselines[kind].stats["messages_kept"] >= SOURCE_MESSAGES // 2

    @pytest.mark.parametrize("cut", CUTS)
    def test_truncation(self, tmp_path, prepare, baselines, kind, cut):
        data = source_bytes(kind)
        chat, outcome = _run(tmp_path, prepare, kind, data[: int(len(data) * cut)])
        if kind in JSON_SOURCES:
            expect_error(outcome, str(chat), "JSON")
        else:
            _result_or_named_error(chat, outcome, baselines[kind])

    @pytest.mark.parametrize("at", FLIP_AT)
    def test_invalid_byte_is_named_with_its_offset(self, tmp_path, prepare, kind, at):
        data = _flip(source_bytes(kind), at, 0xFF)
        chat, outcome = _run(tmp_path, prepare, kind, data)
        expect_error(outcome, str(chat), "not valid UTF-8", f"offset {data.index(0xFF)}")

    @pytest.mark.parametrize(("at", "byte"), [(0.3, ord('"')), (0.6, ord("{")), (0.45, ord("\n")), (0.7, ord(","))])
    def test_structural_byte_flip(self, tmp_path, prepare, baselines, kind, at, byte):
        chat, outcome = _run(tmp_path, prepare, kind, _flip(source_bytes(kind), at, byte))
        _result_or_named_error(chat, outcome, baselines[kind])

    def test_utf16_is_named(self, tmp_path, prepare, kind):
        chat, outcome = _run(tmp_path, prepare, kind, source_bytes(kind).decode("utf-8").encode("utf-16"))
        expect_error(outcome, str(chat), "UTF-16")

    @pytest.mark.parametrize("change", ["bom", "crlf"])
    def test_harmless_changes_read_the_same(self, tmp_path, prepare, baselines, kind, change):
        data = source_bytes(kind)
        data = codecs.BOM_UTF8 + data if change == "bom" else data.replace(b"\n", b"\r\n")
        _, outcome = _run(tmp_path, prepare, kind, data)
        assert outcome.error is None, outcome.error
        assert outcome.stats["messages_kept"] == baselines[kind].stats["messages_kept"]
        assert outcome.frame["author"].tolist() == baselines[kind].frame["author"].tolist()

    def test_stray_nul(self, tmp_path, prepare, baselines, kind):
        data = source_bytes(kind)
        at = data.index(b"campaign")
        chat, outcome = _run(tmp_path, prepare, kind, data[:at] + b"\x00" + data[at:])
        _result_or_named_error(chat, outcome, baselines[kind])


UBUNTU = SHARED_DATA / "ubuntu-irc"


@pytest.mark.skipif(not UBUNTU.is_dir(), reason="the shared #ubuntu corpus is not present")
class TestRealCorpus:
    """The first lines of the real #ubuntu exports (generic CSV and DCE JSON), damaged the same ways."""

    ROWS = 300

    def _source(self, name: str) -> bytes:
        if name == "csv":
            with (UBUNTU / "ubuntu_irc.csv").open(encoding="utf-8", newline="") as f:
                return "".join(line for _, line in zip(range(self.ROWS + 1), f, strict=False)).encode("utf-8")
        import ijson

        with (UBUNTU / "ubuntu_irc_dce.json").open("rb") as f:
            messages = [m for _, m in zip(range(self.ROWS), ijson.items(f, "messages.item"), strict=False)]
        return json.dumps({"guild": {"id": "1", "name": "ubuntu"}, "messages": messages}, default=str).encode("utf-8")

    @pytest.mark.parametrize("name", ["csv", "json"])
    @pytest.mark.parametrize("variant", ["whole", "cut", "flip", "utf16", "crlf"])
    def test_variant(self, tmp_path, prepare, name, variant):
        data = self._source(name)
        if variant == "cut":
            data = data[: len(data) // 2]
        elif variant == "flip":
            data = _flip(data, 0.4, 0xFE)
        elif variant == "utf16":
            data = data.decode("utf-8").encode("utf-16")
        elif variant == "crlf":
            data = data.replace(b"\n", b"\r\n")
        chat = tmp_path / f"ubuntu.{name}"
        chat.write_bytes(data)
        outcome = prepare(chat)
        if variant in ("whole", "crlf") or (variant == "cut" and name == "csv"):
            assert outcome.error is None, outcome.error
            assert outcome.stats["messages_kept"] > 50
        elif variant == "cut":
            expect_error(outcome, str(chat), "JSON")
        elif variant == "flip":
            expect_error(outcome, str(chat), "not valid UTF-8")
        else:
            expect_error(outcome, str(chat), "UTF-16")
