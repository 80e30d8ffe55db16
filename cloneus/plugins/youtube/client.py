"""The two YouTube Data API v3 calls CloneUs makes, and how their failures are told apart.

`videos.list(part="snippet", id=...)` takes up to 50 ids and costs 1 unit whatever their number; ids it does not
return are deleted, private or never existed. `search.list` costs 100 units. The discovery document ships with
google-api-python-client (`static_discovery=True`), so building the service needs no network; tests pass an
`HttpMock`/`HttpMockSequence` as `http`.

The API key travels in every request URI, and `HttpError`'s text includes that URI, so nothing here logs an
exception's text without passing it through `redact`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from googleapiclient.errors import HttpError

VIDEOS_PER_CALL = 50
VIDEOS_LIST_UNITS = 1
SEARCH_UNITS = 100
HTTP_TIMEOUT_SECONDS = 15
# "Me at the zoo", the first video on YouTube: a stable id for a 1-unit key check.
KNOWN_VIDEO_ID = "jNQXAC9IVRw"
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
KEY_REASONS = frozenset(
    {
        "keyInvalid",
        "keyExpired",
        "API_KEY_INVALID",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "accessNotConfigured",
        "SERVICE_DISABLED",
        "ipRefererBlocked",
    }
)
_KEY_IN_TEXT = re.compile(r"(key=)[^&\s\"']+")


def build_service(api_key: str, http: Any = None) -> Any:
    """A `youtube` v3 client from the bundled discovery document (no network until a request runs).

    Args:
        api_key (`str`): the API key; kept inside the client, never logged.
        http (`httplib2.Http`, *optional*): transport; tests pass `HttpMock`. Defaults to one with a
            `HTTP_TIMEOUT_SECONDS` timeout, so a stalled network cannot hold a bot reply for long.
    """
    import httplib2
    from googleapiclient.discovery import build

    return build(
        "youtube",
        "v3",
        developerKey=api_key,
        http=http or httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS),
        cache_discovery=False,
        static_discovery=True,
    )


def redact(text: str) -> str:
    """`text` with any `key=...` query parameter masked, for log lines built from exception text."""
    return _KEY_IN_TEXT.sub(r"\1***", text)


def error_reasons(error: HttpError) -> set[str]:
    """The machine-readable reasons in an API error body (`errors[].reason` and `details[].reason`)."""
    try:
        body = json.loads(error.content.decode("utf-8"))["error"]
    except (ValueError, KeyError, TypeError):
        return set()
    entries = [*body.get("errors", []), *body.get("details", [])]
    reasons = {entry["reason"] for entry in entries if isinstance(entry, dict) and "reason" in entry}
    if "API key not valid" in str(body.get("message", "")):
        reasons.add("keyInvalid")
    return reasons


def describe(error: HttpError) -> str:
    """One safe line about an API error: status, reasons and Google's message, with the key masked."""
    reasons = ",".join(sorted(error_reasons(error))) or "no reason given"
    return redact(f"HTTP {error.resp.status} {reasons}: {error.reason}")


def videos_request(service: Any, ids: list[str]) -> Any:
    """The `videos.list` request for at most `VIDEOS_PER_CALL` ids."""
    if not 0 < len(ids) <= VIDEOS_PER_CALL:
        raise ValueError(f"videos.list takes 1 to {VIDEOS_PER_CALL} ids, got {len(ids)}")
    return service.videos().list(part="snippet", id=",".join(ids))


def parse_videos(response: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """`id -> (title, channel)` from a `videos.list` response."""
    return {
        item["id"]: (item["snippet"]["title"], item["snippet"].get("channelTitle", ""))
        for item in response.get("items", [])
    }


def search_request(service: Any, query: str) -> Any:
    """The `search.list` request for the single best video matching `query`."""
    return service.search().list(part="snippet", q=query, type="video", maxResults=1)


def parse_search(response: dict[str, Any]) -> str | None:
    """The video id of the top search result, or None when the search found nothing."""
    for item in response.get("items", []):
        video_id = item.get("id", {}).get("videoId")
        if video_id:
            return video_id
    return None
