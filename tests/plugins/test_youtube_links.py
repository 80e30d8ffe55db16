"""`YouTubeLinks`: encoding, decoding, quota and API failures, against googleapiclient's HttpMockSequence."""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from googleapiclient.http import HttpMock

from cloneus.errors import ConfigError
from cloneus.plugins.youtube import UNVERIFIED_LINK_TEXT, YouTubeLinks, find_links, watch_url
from cloneus.plugins.youtube.cache import VideoCache
from cloneus.plugins.youtube.client import build_service
from cloneus.plugins.youtube.links import ERROR_PAUSE
from cloneus.plugins.youtube.quota import next_reset

from .conftest import API_KEY, api_error, ok, query, requested_ids, search_body, video_id, videos_body

RICK = "dQw4w9WgXcQ"
RICK_TAG = '<youtube id="dQw4w9WgXcQ" title="Never Gonna &quot;Give&quot; You Up" channel="Rick Astley">'


def rick_lookup():
    return ok(videos_body((RICK, 'Never Gonna "Give" You Up', "Rick Astley")))


class FailingHttp:
    """An httplib2 stand-in whose every request fails like a dropped connection (HttpMock cannot raise)."""

    def __init__(self):
        self.calls = 0

    def request(self, *args, **kwargs):
        self.calls += 1
        raise ConnectionResetError("connection reset by peer")


def ours(caplog) -> list[str]:
    """Our log lines; googleapiclient also logs each 403 itself, which is its own business."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("cloneus")]


def no_key_in_logs(caplog) -> bool:
    return all(API_KEY not in r.getMessage() for r in caplog.records)


class TestEncode:
    def test_links_become_tags(self, make_links):
        links, http = make_links([rick_lookup()])
        text = f"lol https://youtu.be/{RICK}?t=3 and <https://www.youtube.com/watch?v={RICK}>!"
        assert links.encode(text) == f"lol {RICK_TAG} and {RICK_TAG}!"
        assert requested_ids(http.request_sequence[0]) == [RICK], "one id, asked once"
        assert query(http.request_sequence[0])["part"] == "snippet"

    def test_text_without_links_makes_no_call(self, make_links):
        links, http = make_links([])
        assert links.encode_texts(["hi", "no links here"]) == ["hi", "no links here"]
        assert http.request_sequence == []

    def test_120_ids_make_3_batched_calls(self, make_links):
        ids = [video_id(i) for i in range(120)]
        responses = [ok(videos_body(*((v, f"title {v}", "c") for v in ids[i : i + 50]))) for i in (0, 50, 100)]
        links, http = make_links(responses)
        texts = [f"see youtu.be/{v}" for v in ids] + [f"again https://youtube.com/watch?v={ids[0]}"]
        out = links.encode_texts(texts)
        assert [len(requested_ids(r)) for r in http.request_sequence] == [50, 50, 20]
        assert sum((requested_ids(r) for r in http.request_sequence), []) == ids
        assert out[5] == f'see <youtube id="{ids[5]}" title="title {ids[5]}" channel="c">'
        assert links.stats()["units_used"] == 3

    def test_deleted_or_private_ids_stay_plain_and_are_remembered(self, make_links):
        gone = video_id(7)
        links, http = make_links([rick_lookup()])
        text = f"youtu.be/{RICK} youtu.be/{gone}"
        assert links.encode(text) == f"{RICK_TAG} youtu.be/{gone}"
        assert requested_ids(http.request_sequence[0]) == [RICK, gone]
        assert links.cache.invalid([gone]) == {gone}
        assert links.encode(text) == f"{RICK_TAG} youtu.be/{gone}", "second time from the cache only"
        assert len(http.request_sequence) == 1

    def test_encoding_is_deterministic_across_runs(self, make_links, yt_cfg, tmp_path):
        texts = [f"song youtu.be/{video_id(i)} #{i}" for i in range(60)] + [f"gone youtu.be/{video_id(999)}"]
        body = [(video_id(i), f'Song {i} & "more"', f"Artist {i % 3}") for i in range(60)]
        first, _ = make_links([ok(videos_body(*body[:50])), ok(videos_body(*body[50:]))])
        run1 = first.encode_texts(texts)
        second, http = make_links([])  # a second run: any API call would fail the test
        assert second.encode_texts(texts) == run1 and http.request_sequence == []
        # A training machine without a key, given the bot machine's export, encodes the same way.
        first.cache.export_jsonl(tmp_path / "yt.jsonl")
        other_cfg = yt_cfg.model_copy(update={"db_path": str(tmp_path / "train.db")})
        with YouTubeLinks(other_cfg) as offline:
            offline.cache.import_jsonl(tmp_path / "yt.jsonl")
            assert offline.encode_texts(texts) == run1

    def test_cache_only_leaves_uncached_links_untouched(self, yt_cfg):
        with YouTubeLinks(yt_cfg) as links:
            links.cache.store_lookup({RICK: ('Never Gonna "Give" You Up', "Rick Astley")}, [])
            text = f"youtu.be/{RICK} youtu.be/{video_id(1)}"
            assert links.encode(text) == f"{RICK_TAG} youtu.be/{video_id(1)}"
            assert links.cache.invalid([video_id(1)]) == set(), "unknown is not invalid: a later run may fetch it"


class TestDecode:
    def test_cached_tag_becomes_its_url(self, make_links):
        links, http = make_links([])
        links.cache.store_lookup({RICK: ("Never Gonna Give You Up", "Rick Astley")}, [])
        assert links.decode(f"omg {RICK_TAG} lol") == f"omg {watch_url(RICK)} lol"
        assert http.request_sequence == []

    def test_invented_id_is_searched_by_title_then_verified(self, make_links):
        invented, found = "zzzzzzzzzzz", "abcdefghijk"
        links, http = make_links(
            [ok(videos_body()), ok(search_body(found)), ok(videos_body((found, "Real Title", "Real Channel")))]
        )
        tag = f'<youtube id="{invented}" title="Some  Song &amp; More" channel="Someone">'
        assert links.decode(f"listen: {tag}") == f"listen: {watch_url(found)}"
        lookup, search, verify = (query(r) for r in http.request_sequence)
        assert lookup["id"] == invented
        assert (search["q"], search["type"], search["maxResults"]) == ("Some Song & More", "video", "1")
        assert verify["id"] == found
        assert links.stats()["units_used"] == 102
        # The same title again: the earlier search is reused, no unit spent.
        assert links.decode(tag.replace("Some  Song", "some song")) == watch_url(found)
        assert len(http.request_sequence) == 3

    def test_search_hit_that_fails_verification_is_not_linked(self, make_links):
        links, http = make_links([ok(search_body("abcdefghijk")), ok(videos_body())])
        assert links.decode('<youtube id="" title="Ghost" channel="x">') == "Ghost"
        assert links.cache.invalid(["abcdefghijk"]) == {"abcdefghijk"}

    def test_search_without_result_leaves_title(self, make_links):
        links, http = make_links([ok(videos_body()), ok(search_body())])
        assert links.decode('a <youtube id="zzzzzzzzzzz" title="Nothing" channel="x"> b') == "a Nothing b"
        assert links.decode('<youtube id="zzzzzzzzzzz" title="Nothing" channel="x">') == "Nothing"
        assert len(http.request_sequence) == 2, "the invalid id and the empty search are both cached"

    def test_budget_spent_renders_title_without_search(self, make_links, caplog):
        links, http = make_links([ok(videos_body())], daily_quota=50)
        tag = '<youtube id="zzzzzzzzzzz" title="Big Song" channel="x">'
        with caplog.at_level(logging.WARNING):
            assert links.decode(f"{tag}!") == "Big Song!"
            assert links.decode(tag.replace("Big", "Other")) == "Other Song"
        (line,) = ours(caplog)
        assert "search.list" in line and "49 of 50 left" in line
        assert [query(r)["id"] for r in http.request_sequence] == ["zzzzzzzzzzz"], "no 100-unit search attempted"
        assert links.stats()["units_used"] == 1

    def test_tag_cut_off_at_the_end_becomes_its_partial_title_without_calls(self, make_links):
        links, http = make_links([])
        assert links.decode(f'so good <youtube id="{RICK}" title="Never Gonna G') == "so good Never Gonna G"
        assert links.decode(f'<youtube id="{RICK}" title="Never Gonna Give" chan') == "Never Gonna Give"
        assert http.request_sequence == []

    def test_tag_missing_its_channel_is_still_decoded(self, make_links):
        links, _ = make_links([])
        links.cache.store_lookup({RICK: ("Never Gonna Give You Up", "Rick Astley")}, [])
        assert links.decode(f'<youtube id="{RICK}" title="whatever">!') == f"{watch_url(RICK)}!"

    def test_format_holding_a_url_is_not_encoded_twice(self, make_links):
        links, http = make_links([rick_lookup()], tag_format="[{title}](https://youtu.be/{id})")
        once = links.encode(f"youtu.be/{RICK}")
        assert once == f'[Never Gonna "Give" You Up](https://youtu.be/{RICK})'
        assert links.encode(once) == once
        assert links.decode(once) == watch_url(RICK)
        assert len(http.request_sequence) == 1

    def test_raw_urls_are_verified_or_reduced_to_text(self, make_links):
        links, http = make_links([rick_lookup()])
        text = f"a https://youtu.be/{RICK}?si=x b youtube.com/shorts/{video_id(5)} c"
        assert links.decode(text) == f"a {watch_url(RICK)} b {UNVERIFIED_LINK_TEXT} c"
        assert requested_ids(http.request_sequence[0]) == [RICK, video_id(5)]

    def test_no_api_never_emits_an_unverified_url(self, yt_cfg):
        with YouTubeLinks(yt_cfg) as links:
            out = links.decode(f'youtu.be/{RICK} <youtube id="{RICK}" title="Rick" channel="x">')
            assert out == f"{UNVERIFIED_LINK_TEXT} Rick" and find_links(out) == []

    def test_every_url_in_output_is_a_known_video(self, make_links):
        real = [video_id(i) for i in range(3)]
        links, _ = make_links(
            [
                ok(videos_body(*((v, "t", "c") for v in real[:2]))),
                ok(search_body(real[2])),
                ok(videos_body((real[2], "t", "c"))),
            ]
        )
        text = " ".join(
            [f"youtu.be/{real[0]}", f'<youtube id="{real[1]}" title="x" channel="y">', f"youtu.be/{video_id(8)}"]
            + ['<youtube id="nope" title="third" channel="y">']
        )
        out = links.decode(text)
        assert [m["id"] for m in find_links(out)] == real
        assert set(re.findall(r"v=([\w-]{11})", out)) <= set(links.cache.videos(real))


class TestFailures:
    def test_quota_exceeded_degrades_and_stops_calls_for_the_day(self, make_links, caplog):
        links, http = make_links([api_error(403, "quotaExceeded", "You have exceeded your quota.")])
        text = f"youtu.be/{RICK}"
        with caplog.at_level(logging.WARNING):
            assert links.encode(text) == text
            assert links.decode(RICK_TAG) == 'Never Gonna "Give" You Up'
        assert len(http.request_sequence) == 1
        assert links.stats()["units_used"] == links.stats()["daily_quota"]
        assert len(ours(caplog)) == 1 and "quota" in ours(caplog)[0]
        assert no_key_in_logs(caplog)

    def test_calls_resume_after_pacific_midnight(self, make_links, clock):
        links, http = make_links([api_error(403, "quotaExceeded"), rick_lookup()], clock=clock)
        text = f"youtu.be/{RICK}"
        assert links.encode(text) == text
        clock.now = next_reset(clock.now) - timedelta(seconds=1)
        assert links.encode(text) == text and len(http.request_sequence) == 1
        clock.now += timedelta(seconds=1)
        assert links.encode(text) == RICK_TAG and len(http.request_sequence) == 2
        assert links.stats()["units_used"] == 1

    @pytest.mark.parametrize("status", [500, 404])
    def test_http_error_degrades_with_one_log_line(self, make_links, caplog, status):
        links, http = make_links([api_error(status, "backendError")])
        with caplog.at_level(logging.WARNING):
            assert links.encode(f"youtu.be/{RICK}") == f"youtu.be/{RICK}"
        assert len(ours(caplog)) == 1 and f"HTTP {status}" in ours(caplog)[0]
        assert links.cache.invalid([RICK]) == set(), "a failed call proves nothing about the video"
        assert no_key_in_logs(caplog)

    def test_network_error_degrades_and_pauses_calls(self, yt_cfg, caplog, clock):
        http = FailingHttp()
        with YouTubeLinks(yt_cfg, build_service(API_KEY, http=http), clock=clock) as links:
            with caplog.at_level(logging.WARNING):
                assert links.decode(RICK_TAG) == 'Never Gonna "Give" You Up'
                assert links.encode(f"youtu.be/{RICK}") == f"youtu.be/{RICK}"
            assert http.calls == 1, "no search after the lookup failed, no call while paused"
            assert len(ours(caplog)) == 1 and no_key_in_logs(caplog)
            clock.now += ERROR_PAUSE
            links.encode(f"youtu.be/{RICK}")
            assert http.calls == 2

    def test_rejected_key_is_reported_clearly_and_not_retried(self, make_links):
        invalid = api_error(400, "badRequest", "API key not valid. Please pass a valid API key.")
        links, http = make_links([invalid])
        message = links.check_key()
        assert "key rejected" in message and "YOUTUBE_API_KEY" in message and API_KEY not in message
        assert links.encode(f"youtu.be/{RICK}") == f"youtu.be/{RICK}"
        assert len(http.request_sequence) == 1 and links.stats()["api"] == "key rejected"

    def test_check_key_with_a_canned_httpmock_response(self, yt_cfg, tmp_path):
        (tmp_path / "zoo.json").write_text(json.dumps(videos_body(("jNQXAC9IVRw", "Me at the zoo", "jawed"))))
        http = HttpMock(str(tmp_path / "zoo.json"), {"status": "200"})
        with YouTubeLinks(yt_cfg, build_service(API_KEY, http=http)) as links:
            assert links.check_key() is None
            assert query((http.uri,)) == {"part": "snippet", "id": "jNQXAC9IVRw", "key": API_KEY, "alt": "json"}
            assert links.stats()["units_used"] == 1


class TestFromEnv:
    def test_no_key_no_cache_is_off_with_one_line(self, yt_cfg, caplog):
        with caplog.at_level(logging.INFO):
            assert YouTubeLinks.from_env(yt_cfg, environ={}) is None
        assert len(ours(caplog)) == 1 and "YOUTUBE_API_KEY is not set" in ours(caplog)[0]

    def test_key_builds_offline_and_never_shows_the_key(self, yt_cfg, caplog):
        with caplog.at_level(logging.DEBUG):
            links = YouTubeLinks.from_env(yt_cfg, environ={"YOUTUBE_API_KEY": API_KEY})
        assert links is not None and links.service is not None
        assert API_KEY not in repr(links) and no_key_in_logs(caplog)
        links.close()

    def test_no_key_with_cache_is_cache_only(self, yt_cfg):
        VideoCache(yt_cfg.db_path).store_lookup({RICK: ("t", "c")}, [])
        links = YouTubeLinks.from_env(yt_cfg, environ={})
        assert links is not None and links.service is None and links.stats()["api"] == "cache only"
        links.close()

    def test_off_and_on(self, yt_cfg):
        off = yt_cfg.model_copy(update={"enabled": "off"})
        assert YouTubeLinks.from_env(off, environ={"YOUTUBE_API_KEY": API_KEY}) is None
        with pytest.raises(ConfigError, match="youtube.enabled is 'on'"):
            YouTubeLinks.from_env(yt_cfg.model_copy(update={"enabled": "on"}), environ={})


class TestStatsAndThreads:
    def test_stats_hit_rate(self, make_links):
        links, _ = make_links([ok(videos_body((video_id(1), "a", "b")))])
        assert links.stats()["hit_rate"] is None
        links.encode(f"youtu.be/{video_id(1)} youtu.be/{video_id(2)}")
        links.encode(f"youtu.be/{video_id(1)} youtu.be/{video_id(2)}")
        stats = links.stats()
        assert (stats["lookups"], stats["cache_hits"], stats["hit_rate"]) == (4, 2, 0.5)
        assert (stats["videos"], stats["invalid"], stats["searches"]) == (1, 1, 0)
        assert stats["units_used"] == 1 and stats["units_left"] == 9_999

    def test_concurrent_calls_from_threads(self, make_links):
        ids = [video_id(i) for i in range(40)]
        links, http = make_links([ok(videos_body(*((v, f"t{v}", "c") for v in ids)))])
        links.encode_texts([f"youtu.be/{v}" for v in ids])
        texts = [f"youtu.be/{ids[i % 40]}" for i in range(400)]
        with ThreadPoolExecutor(8) as pool:
            encoded = list(pool.map(links.encode, texts))
            decoded = list(pool.map(links.decode, encoded))
        assert decoded == [watch_url(ids[i % 40]) for i in range(400)]
        assert len(http.request_sequence) == 1
