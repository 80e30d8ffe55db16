"""Fixtures for the YouTube plugin tests: a config pointing at a temporary database, and canned API responses.

The API is mocked with googleapiclient's own `HttpMockSequence`, plugged into a real `build("youtube", "v3")` from
the discovery document bundled with the library, so requests are built exactly as in production and nothing leaves
the machine.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

import pytest
from googleapiclient.http import HttpMockSequence

from cloneus.config import YoutubeConfig
from cloneus.plugins.youtube import YouTubeLinks
from cloneus.plugins.youtube.client import build_service

API_KEY = "AIzaTEST-secret-key-0123456789"


def video_id(n: int) -> str:
    """A well-formed, distinct 11-character id."""
    return f"vid{n:08d}"


def ok(body: dict) -> tuple[dict, str]:
    return ({"status": "200"}, json.dumps(body))


def videos_body(*videos: tuple[str, str, str]) -> dict:
    """A `videos.list` response body returning `(id, title, channel)` videos."""
    return {
        "kind": "youtube#videoListResponse",
        "items": [
            {"kind": "youtube#video", "id": vid, "snippet": {"title": title, "channelTitle": channel}}
            for vid, title, channel in videos
        ],
    }


def search_body(*ids: str) -> dict:
    return {"items": [{"id": {"kind": "youtube#video", "videoId": vid}, "snippet": {"title": "x"}} for vid in ids]}


def api_error(status: int, reason: str, message: str = "error") -> tuple[dict, str]:
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}}
    return ({"status": str(status)}, json.dumps(body))


def query(request: tuple) -> dict[str, str]:
    """The query parameters of one request recorded by `HttpMockSequence.request_sequence`."""
    return {k: v[0] for k, v in parse_qs(urlparse(request[0]).query).items()}


def requested_ids(request: tuple) -> list[str]:
    return query(request)["id"].split(",")


class FakeClock:
    """An adjustable aware clock, so quota tests can cross Pacific midnight."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def yt_cfg(tmp_path) -> YoutubeConfig:
    return YoutubeConfig(db_path=str(tmp_path / "cloneus.db"))


@pytest.fixture
def make_links(yt_cfg):
    """`make_links(responses, **cfg_updates)` -> (YouTubeLinks, HttpMockSequence); closes them after the test."""
    made = []

    def factory(responses=(), clock=None, **updates):
        http = HttpMockSequence(list(responses))
        cfg = yt_cfg.model_copy(update=updates)
        kwargs = {"clock": clock} if clock else {}
        links = YouTubeLinks(cfg, build_service(API_KEY, http=http), **kwargs)
        made.append(links)
        return links, http

    yield factory
    for links in made:
        links.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc))
