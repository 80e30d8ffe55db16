"""The SQLite cache, its JSONL export/import, and the Pacific-day quota ledger."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest

from cloneus.errors import DataFormatError
from cloneus.plugins.youtube.cache import VideoCache
from cloneus.plugins.youtube.quota import QuotaLedger, next_reset, quota_day

from .conftest import FakeClock, video_id


@pytest.fixture
def cache(tmp_path):
    cache = VideoCache(tmp_path / "a.db")
    yield cache
    cache.close()


def fill(cache: VideoCache) -> None:
    cache.store_lookup({video_id(1): ('Title "one"', "Chan"), video_id(2): ("Two", "Chan 2")}, [video_id(3)])
    cache.store_search("some song", video_id(1))
    cache.store_search("nothing matches", None)


class TestVideoCache:
    def test_tables_are_prefixed_and_wal(self, cache):
        conn = sqlite3.connect(cache.db_path)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"youtube_videos", "youtube_invalid", "youtube_searches", "youtube_quota"}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    def test_reopening_keeps_data(self, cache):
        fill(cache)
        again = VideoCache(cache.db_path)
        assert again.videos([video_id(1), video_id(3)]) == {video_id(1): ('Title "one"', "Chan")}
        assert again.invalid([video_id(1), video_id(3)]) == {video_id(3)}
        assert again.search("some song") == (True, video_id(1))
        assert again.search("nothing matches") == (True, None)
        assert again.search("never searched") == (False, None)
        again.close()

    def test_lookup_over_the_parameter_limit(self, cache):
        found = {video_id(i): (f"t{i}", "c") for i in range(2000)}
        cache.store_lookup(found, [])
        assert cache.videos([video_id(i) for i in range(2500)]) == found

    def test_a_video_becoming_invalid_moves_tables(self, cache):
        cache.store_lookup({video_id(1): ("t", "c")}, [])
        cache.store_lookup({}, [video_id(1)])
        assert cache.videos([video_id(1)]) == {} and cache.invalid([video_id(1)]) == {video_id(1)}

    def test_failed_transaction_writes_nothing(self, cache):
        with pytest.raises(RuntimeError), cache.transaction() as cur:
            cur.execute("INSERT INTO youtube_invalid VALUES (?, ?)", (video_id(9), "2026-01-01T00:00:00+00:00"))
            raise RuntimeError("boom")
        assert cache.invalid([video_id(9)]) == set()


class TestExportImport:
    def test_round_trip_and_idempotent(self, cache, tmp_path):
        fill(cache)
        assert cache.export_jsonl(tmp_path / "a.jsonl") == {"video": 2, "invalid": 1, "search": 2}
        other = VideoCache(tmp_path / "b.db")
        assert other.import_jsonl(tmp_path / "a.jsonl") == {"video": 2, "invalid": 1, "search": 2}
        assert other.import_jsonl(tmp_path / "a.jsonl") == {"video": 0, "invalid": 0, "search": 0}
        other.export_jsonl(tmp_path / "b.jsonl")
        other.close()
        assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()

    def test_newer_observation_wins(self, cache, tmp_path):
        lines = [
            {"type": "video", "id": video_id(1), "title": "old", "channel": "c", "fetched_at": "2020-01-01T00:00:00Z"},
            {"type": "invalid", "id": video_id(2), "checked_at": "2999-01-01T00:00:00+00:00"},
        ]
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        cache.store_lookup({video_id(1): ("fresh", "c"), video_id(2): ("was valid", "c")}, [])
        assert cache.import_jsonl(tmp_path / "in.jsonl") == {"video": 0, "invalid": 1, "search": 0}
        assert cache.videos([video_id(1), video_id(2)]) == {video_id(1): ("fresh", "c")}
        assert cache.invalid([video_id(2)]) == {video_id(2)}

    @pytest.mark.parametrize(
        ("bad_line", "line", "field"),
        [
            ("not json", 2, None),
            ('{"type": "playlist", "id": "x"}', 2, None),
            (
                '{"type": "video", "id": "short", "title": "t", "channel": "c", "fetched_at": "2026-01-01T00:00:00Z"}',
                2,
                "id",
            ),
            (
                '{"type": "video", "id": "vid00000009", "title": 5, "channel": "c", "fetched_at": "2026-01-01"}',
                2,
                "title",
            ),
            ('{"type": "invalid", "id": "vid00000009", "checked_at": "yesterday"}', 2, "checked_at"),
            ('{"type": "invalid", "id": "vid00000009", "checked_at": "2026-01-01T00:00:00"}', 2, "checked_at"),
        ],
    )
    def test_bad_line_is_named_and_nothing_is_imported(self, cache, tmp_path, bad_line, line, field):
        good = {"type": "video", "id": video_id(1), "title": "t", "channel": "c", "fetched_at": "2026-01-01T00:00:00Z"}
        path = tmp_path / "in.jsonl"
        path.write_text(json.dumps(good) + "\n" + bad_line + "\n")
        with pytest.raises(DataFormatError) as err:
            cache.import_jsonl(path)
        assert (err.value.line, err.value.field) == (line, field)
        assert str(path) in str(err.value)
        assert cache.counts() == {"videos": 0, "invalid": 0, "searches": 0}

    def test_missing_file_says_how_to_make_one(self, cache, tmp_path):
        with pytest.raises(DataFormatError, match="youtube export"):
            cache.import_jsonl(tmp_path / "nope.jsonl")


class TestQuota:
    @pytest.mark.parametrize(
        ("before", "after"),
        [
            # Winter (PST, UTC-8): midnight Pacific is 08:00 UTC.
            (datetime(2026, 1, 15, 7, 59, 59, tzinfo=timezone.utc), datetime(2026, 1, 15, 8, 0, tzinfo=timezone.utc)),
            # Summer (PDT, UTC-7): midnight Pacific is 07:00 UTC.
            (datetime(2026, 7, 15, 6, 59, 59, tzinfo=timezone.utc), datetime(2026, 7, 15, 7, 0, tzinfo=timezone.utc)),
        ],
    )
    def test_counter_resets_at_pacific_midnight(self, cache, before, after):
        clock = FakeClock(before)
        ledger = QuotaLedger(cache, daily_quota=100, clock=clock)
        assert ledger.try_spend(60) and not ledger.try_spend(41) and ledger.try_spend(40)
        assert ledger.used_today() == 100 and not ledger.try_spend(1)
        assert next_reset(before) == after
        clock.now = after
        assert quota_day(after) != quota_day(before)
        assert ledger.used_today() == 0 and ledger.try_spend(100)

    def test_counter_is_shared_through_the_database(self, cache, clock):
        QuotaLedger(cache, 10, clock).try_spend(7)
        other = VideoCache(cache.db_path)
        assert QuotaLedger(other, 10, clock).used_today() == 7
        other.close()

    def test_exhausted_day_refuses_everything_until_reset(self, cache, clock):
        ledger = QuotaLedger(cache, 10_000, clock)
        ledger.try_spend(3)
        ledger.mark_exhausted()
        assert ledger.used_today() == 10_000 and ledger.remaining() == 0 and not ledger.try_spend(1)
        clock.now = next_reset(clock.now)
        assert ledger.try_spend(1)
