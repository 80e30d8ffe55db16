"""`YouTubeLinks`: links become metadata tags on the way into the model, and tags become verified links on the way out.

Encoding (training data and chat context) turns each recognised link into a tag holding the video's id, title and
channel. The cache decides: the API is asked only about ids never seen, in `videos.list` batches of 50, and a link
whose video is deleted, private, or unknown while the API is unavailable stays as it was. So encoding the same
data twice gives the same text.

Decoding (generated replies) never emits a URL that was not verified by `videos.list`:
- a tag whose id is a known video becomes `https://www.youtube.com/watch?v=ID`;
- otherwise its title is searched (`search.list`, 100 units, cached per title) and the hit is verified with
  `videos.list` before it is linked; with no hit, no budget or no API, the tag becomes its title as plain text;
- a raw YouTube URL the model wrote is linked (canonical form) only if its id verifies, else replaced by
  `UNVERIFIED_LINK_TEXT`.

Every API failure (quota, bad key, HTTP error, network) degrades to plain text with one log line; no method here
raises because of the API. All public methods are safe to call from several threads (the bot uses
`asyncio.to_thread`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httplib2
from googleapiclient.errors import HttpError

from cloneus.errors import ConfigError
from cloneus.plugins.youtube import client
from cloneus.plugins.youtube.cache import VideoCache
from cloneus.plugins.youtube.quota import QuotaLedger, next_reset, quota_day, utc_now
from cloneus.plugins.youtube.urls import LINK_HINT, TagFormat, TagMatch, find_links, is_video_id, watch_url

if TYPE_CHECKING:
    from cloneus.config import YoutubeConfig

logger = logging.getLogger(__name__)

API_KEY_ENV = "YOUTUBE_API_KEY"
# After an HTTP or network error, calls pause this long: a reply should not wait on a dead network at every turn,
# nor spend 100 search units on a request that is likely to fail the same way.
ERROR_PAUSE = timedelta(seconds=60)
UNVERIFIED_LINK_TEXT = "[video unavailable]"


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with each non-overlapping `(start, end, replacement)` applied."""
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


class _NoBudget(Exception):
    """Today's units would be exceeded, so the call was not made."""


def normalize_query(title: str) -> str:
    """The search-cache key for a title: whitespace collapsed, case folded, so trivial variants share one search."""
    return " ".join(title.split()).casefold()


def cached_video_count(db_path: str | Path) -> int:
    """How many videos an existing database caches (0 if the file or table is missing); never creates the file."""
    path = Path(db_path)
    if not path.is_file():
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM youtube_videos").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


class YouTubeLinks:
    """Encode YouTube links into metadata tags and decode generated tags into verified links.

    Args:
        cfg (`YoutubeConfig`): `tag_format`, `daily_quota` and `db_path`.
        service (`googleapiclient.discovery.Resource`, *optional*): a built `youtube` v3 client; None means cache
            only (no API calls). Tests build one with `http=HttpMockSequence(...)`.
        clock (`Callable[[], datetime]`, *optional*, defaults to the system clock): an aware "now", for the quota day.
    """

    def __init__(self, cfg: YoutubeConfig, service: Any = None, *, clock: Callable[[], datetime] = utc_now):
        self.tag_format = TagFormat(cfg.tag_format)
        self.cache = VideoCache(cfg.db_path)
        self.quota = QuotaLedger(self.cache, cfg.daily_quota, clock)
        self.service = service
        self._key_rejected = False
        self._api_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._lookups = 0
        self._hits = 0
        self._budget_logged: dict[str, str] = {}  # call name -> the quota day its "no budget" line was logged
        self._paused_until: datetime | None = None

    @classmethod
    def from_env(cls, cfg: YoutubeConfig, environ: Mapping[str, str] | None = None) -> YouTubeLinks | None:
        """Build from `YOUTUBE_API_KEY`, or decide the feature is off; logs one line saying which.

        Without a key, an existing cache is still used (cache-only: no API calls), so a training machine can encode
        with a cache imported from the bot's machine. With neither, returns None and links pass through untouched.

        Raises:
            ConfigError: `youtube.enabled` is 'on' but there is neither a key nor a cache.
        """
        env = os.environ if environ is None else environ
        if cfg.enabled == "off":
            logger.info("YouTube links off (youtube.enabled: off): links pass through untouched")
            return None
        key = env.get(API_KEY_ENV, "").strip()
        if key:
            logger.info("YouTube links on: API key set, cache %s, budget %d units/day", cfg.db_path, cfg.daily_quota)
            return cls(cfg, client.build_service(key))
        cached = cached_video_count(cfg.db_path)
        if cached:
            logger.info(
                "YouTube links from cache only: %s not set, %d videos cached in %s; other links pass through",
                API_KEY_ENV,
                cached,
                cfg.db_path,
            )
            return cls(cfg)
        if cfg.enabled == "on":
            raise ConfigError(
                f"youtube.enabled is 'on' but {API_KEY_ENV} is not set and {cfg.db_path} caches no videos; "
                "set the key in .env, import a cache, or use youtube.enabled: auto"
            )
        logger.info("YouTube links off: %s is not set, so links pass through untouched", API_KEY_ENV)
        return None

    def __repr__(self) -> str:
        return f"YouTubeLinks(db_path={str(self.cache.db_path)!r}, api={self._api_state()!r})"

    def close(self) -> None:
        """Close the database; the API client belongs to whoever built it and lives as long as the process."""
        self.cache.close()

    def __enter__(self) -> YouTubeLinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encode(self, text: str) -> str:
        """`text` with each YouTube link whose video is known replaced by its tag."""
        return self.encode_texts([text])[0]

    def encode_texts(self, texts: list[str]) -> list[str]:
        """Encode many texts with as few API calls as possible: all their unknown ids are fetched in batches of 50.

        Args:
            texts (`list[str]`): messages, e.g. a whole chat log during dataset preparation.

        Returns:
            `list[str]`: the texts, links replaced by tags; links to invalid or unfetchable videos unchanged.
        """
        found = [self._scan(text)[1] if LINK_HINT.search(text) else [] for text in texts]
        videos = self._lookup([vid for links in found for _, _, vid in links])
        out = []
        for text, links in zip(texts, found, strict=True):
            edits = [(s, e, self.tag_format.render(vid, *videos[vid])) for s, e, vid in links if vid in videos]
            out.append(_apply(text, edits) if edits else text)
        return out

    def decode(self, text: str) -> str:
        """Turn generated tags and raw YouTube URLs into verified links, or plain text when they cannot be verified.

        Args:
            text (`str`): a generated reply.

        Returns:
            `str`: the reply; every URL in it that points at YouTube has been checked with `videos.list`.
        """
        tags, links = self._scan(text)
        tags_to_check = [t.id for t in tags if t.complete and is_video_id(t.id)]
        videos = self._lookup(tags_to_check + [vid for _, _, vid in links])
        edits = [(s, e, watch_url(vid) if vid in videos else UNVERIFIED_LINK_TEXT) for s, e, vid in links]
        for tag in tags:
            video_id = None  # a tag cut off by the length limit shows its partial title; not worth a search
            if tag.complete:
                video_id = tag.id if tag.id in videos else self._search(tag.title)
            edits.append((tag.start, tag.end, watch_url(video_id) if video_id else tag.title))
        return _apply(text, edits)

    def _scan(self, text: str) -> tuple[list[TagMatch], list[tuple[int, int, str]]]:
        """Tags in `text`, and raw links `(start, end, id)` outside them (a tag format may itself hold a URL)."""
        tags = self.tag_format.find(text)
        if not tags:
            return [], [(m.start(), m.end(), m["id"]) for m in find_links(text)]
        bounds = [0, *(p for t in tags for p in (t.start, t.end)), len(text)]
        links = [
            (start + m.start(), start + m.end(), m["id"])
            for start, end in zip(bounds[::2], bounds[1::2], strict=True)
            for m in find_links(text[start:end])
        ]
        return tags, links

    def check_key(self) -> str | None:
        """Check the API key with a 1-unit `videos.list` of a known video, once at start-up.

        Returns:
            `str | None`: None when the key works; otherwise one line saying what is wrong and what to do.
        """
        if self.service is None:
            return f"{API_KEY_ENV} is not set: YouTube links use the cache only"
        try:
            response = self._execute(client.VIDEOS_LIST_UNITS, client.videos_request, [client.KNOWN_VIDEO_ID])
        except _NoBudget:
            return f"YouTube key not checked: today's budget of {self.quota.daily_quota} units is spent"
        except HttpError as e:
            reasons = client.error_reasons(e)
            if reasons & client.KEY_REASONS:
                self._key_rejected = True
                return (
                    f"YouTube API key rejected ({client.describe(e)}); check {API_KEY_ENV} and that the YouTube "
                    "Data API v3 is enabled for its Google Cloud project"
                )
            if reasons & client.QUOTA_REASONS:
                self.quota.mark_exhausted()
            return f"YouTube key not checked: {client.describe(e)}"
        except (httplib2.HttpLib2Error, OSError) as e:
            return f"YouTube key not checked: network error ({type(e).__name__}: {client.redact(str(e))})"
        if client.KNOWN_VIDEO_ID not in client.parse_videos(response):
            return "YouTube API key works but the check video was not returned; lookups may be restricted"
        return None

    def stats(self) -> dict[str, Any]:
        """Units used today, budget, cache sizes and the cache hit rate since this object was created.

        Returns:
            `dict`: `api` ('on', 'cache only' or 'key rejected'), `units_used`, `daily_quota`, `units_left`,
            `quota_day` (Pacific date), `resets_at` (UTC ISO time), `videos`, `invalid`, `searches` (cache rows),
            `lookups`, `cache_hits` and `hit_rate` (None before the first lookup).
        """
        now = self.quota.clock()
        used = self.quota.used_today()
        with self._stats_lock:
            lookups, hits = self._lookups, self._hits
        return {
            "api": self._api_state(),
            "units_used": used,
            "daily_quota": self.quota.daily_quota,
            "units_left": max(0, self.quota.daily_quota - used),
            "quota_day": quota_day(now),
            "resets_at": next_reset(now).isoformat(timespec="seconds"),
            **self.cache.counts(),
            "lookups": lookups,
            "cache_hits": hits,
            "hit_rate": hits / lookups if lookups else None,
        }

    def _api_state(self) -> str:
        if self.service is None:
            return "cache only"
        return "key rejected" if self._key_rejected else "on"

    def _count(self, lookups: int, hits: int) -> None:
        with self._stats_lock:
            self._lookups += lookups
            self._hits += hits

    def _lookup(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Known videos among `ids` (`id -> (title, channel)`), fetching ids the cache has never seen."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        videos = self.cache.videos(ids)
        invalid = self.cache.invalid(ids)
        missing = [vid for vid in ids if vid not in videos and vid not in invalid]
        self._count(len(ids), len(ids) - len(missing))
        for start in range(0, len(missing), client.VIDEOS_PER_CALL):
            batch = missing[start : start + client.VIDEOS_PER_CALL]
            response = self._call("videos.list", client.VIDEOS_LIST_UNITS, client.videos_request, batch)
            if response is None:
                break
            fetched = client.parse_videos(response)
            self.cache.store_lookup(fetched, [vid for vid in batch if vid not in fetched])
            videos.update(fetched)
        return videos

    def _search(self, title: str) -> str | None:
        """A verified video id for a generated title, from the search cache or one `search.list`; None if none."""
        query = normalize_query(title)
        if not query:
            return None
        cached, video_id = self.cache.search(query)
        self._count(1, int(cached))
        if not cached:
            response = self._call("search.list", client.SEARCH_UNITS, client.search_request, " ".join(title.split()))
            if response is None:
                return None
            video_id = client.parse_search(response)
            self.cache.store_search(query, video_id)
        return video_id if video_id and video_id in self._lookup([video_id]) else None

    def _execute(self, units: int, make_request: Callable[[Any, Any], Any], arg: Any) -> dict[str, Any]:
        """Reserve `units`, then run `make_request(service, arg)`; API and network errors propagate to the caller."""
        if not self.quota.try_spend(units):
            raise _NoBudget
        with self._api_lock:
            return make_request(self.service, arg).execute(num_retries=0)

    def _call(self, what: str, units: int, make_request: Callable[[Any, Any], Any], arg: Any) -> dict[str, Any] | None:
        """`_execute` for normal use: None (after at most one log line) instead of any API failure."""
        if self.service is None or self._key_rejected:
            return None
        if self._paused_until is not None and self.quota.clock() < self._paused_until:
            return None
        try:
            return self._execute(units, make_request, arg)
        except _NoBudget:
            day = quota_day(self.quota.clock())
            if self._budget_logged.get(what) != day:
                self._budget_logged[what] = day
                logger.warning(
                    "YouTube budget too low for %s (%d units, %d of %d left today): plain text until midnight Pacific",
                    what,
                    units,
                    self.quota.remaining(),
                    self.quota.daily_quota,
                )
        except HttpError as e:
            reasons = client.error_reasons(e)
            if reasons & client.QUOTA_REASONS:
                self.quota.mark_exhausted()
                self._budget_logged = dict.fromkeys(("videos.list", "search.list"), quota_day(self.quota.clock()))
                logger.warning("YouTube quota exceeded (%s): no more calls until midnight Pacific", client.describe(e))
            elif reasons & client.KEY_REASONS:
                self._key_rejected = True
                logger.error("YouTube API key rejected (%s): using the cache only until restart", client.describe(e))
            else:
                self._pause()
                logger.warning("YouTube %s failed (%s): links stay plain text for a minute", what, client.describe(e))
        except (httplib2.HttpLib2Error, OSError) as e:
            self._pause()
            logger.warning(
                "YouTube %s failed (%s: %s): links stay plain text for a minute",
                what,
                type(e).__name__,
                client.redact(str(e)),
            )
        return None

    def _pause(self) -> None:
        self._paused_until = self.quota.clock() + ERROR_PAUSE
