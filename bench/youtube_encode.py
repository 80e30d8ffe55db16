"""Benchmark: YouTube link encoding of a chat log, batched `encode_texts` against per-message `encode`.

The chat is the real Ubuntu IRC corpus (it holds a few dozen real YouTube links); links are added to every Nth
message, drawn from a pool of ids so that some repeat, in the forms people paste. The YouTube API is an in-process
fake that answers `videos.list` for any ids (about 5% come back missing, as deleted videos do), so the bench is
offline; it counts calls and quota units, and projects network time at `--latency-ms` per call.

Baseline: calling `encode(text)` message by message, which asks the API about each message's unseen ids on its own.
Candidate: one `encode_texts(all_texts)`, which asks about all unseen ids in batches of 50. Both start from an empty
cache; a warm rerun (everything cached, no calls) is timed too.

    python bench/youtube_encode.py [--messages 100000] [--link-every 10] [--pool 8000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httplib2
import pandas as pd

from cloneus.config import YoutubeConfig
from cloneus.plugins.youtube import YouTubeLinks
from cloneus.plugins.youtube.client import build_service

DATA_DIR = Path(
    os.environ.get("CLONEUS_BENCH_DATA", Path(__file__).resolve().parents[1].parent / "shared/data/ubuntu-irc")
)
RESULTS = Path(__file__).resolve().parent / "results" / "youtube_encode.json"
URL_FORMS = (
    "https://www.youtube.com/watch?v={}",
    "https://youtu.be/{}?si=shared",
    "youtube.com/watch?v={}&t=42s",
    "https://m.youtube.com/watch?v={}",
    "https://www.youtube.com/shorts/{}",
    "<https://music.youtube.com/watch?v={}>",
)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


class FakeYouTube:
    """Answers `videos.list` like the API: a snippet per existing id, nothing for ~5% ("deleted") ids."""

    def __init__(self):
        self.calls = 0

    def request(self, uri, method="GET", body=None, headers=None, **kwargs):
        self.calls += 1
        ids = parse_qs(urlparse(uri).query)["id"][0].split(",")
        items = [
            {"id": vid, "snippet": {"title": f'Video "{vid}" & friends', "channelTitle": f"Channel {vid[:3]}"}}
            for vid in ids
            if hashlib.sha1(vid.encode()).digest()[0] >= 13  # 13/256 ~ 5% missing
        ]
        return httplib2.Response({"status": "200"}), json.dumps({"items": items}).encode()


def load_texts(messages: int, link_every: int, pool: int, seed: int = 0) -> tuple[list[str], int]:
    """Corpus texts with synthetic links added; returns (texts, number of links)."""
    csv = DATA_DIR / "ubuntu_irc.csv"
    if csv.is_file():
        texts = pd.read_csv(csv, keep_default_na=False, nrows=messages)["text"].astype(str).tolist()
    else:
        print(f"corpus not found at {csv}; using synthetic messages (set CLONEUS_BENCH_DATA)")
        texts = [f"message {i} about nothing in particular" for i in range(messages)]
    rng = random.Random(seed)
    ids = ["".join(rng.choice(ALPHABET) for _ in range(11)) for _ in range(pool)]
    for i in range(0, len(texts), link_every):
        url = rng.choice(URL_FORMS).format(rng.choice(ids))
        texts[i] = f"{texts[i]} {url}" if rng.random() < 0.7 else url
    return texts, len(range(0, len(texts), link_every))


def run(texts: list[str], db: Path, batched: bool) -> dict:
    http = FakeYouTube()
    links = YouTubeLinks(YoutubeConfig(db_path=str(db), daily_quota=1_000_000), build_service("bench-key", http=http))
    start = time.perf_counter()
    out = links.encode_texts(texts) if batched else [links.encode(t) for t in texts]
    cold = time.perf_counter() - start
    calls = http.calls
    start = time.perf_counter()
    again = links.encode_texts(texts) if batched else [links.encode(t) for t in texts]
    warm = time.perf_counter() - start
    assert again == out and http.calls == calls, "a warm rerun must be identical and make no calls"
    stats = links.stats()
    links.close()
    return {"cold_s": cold, "warm_s": warm, "calls": calls, "units": stats["units_used"], "out": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="corpus messages to read (222k in all)")
    parser.add_argument("--link-every", type=int, default=10, help="add a link to every Nth message")
    parser.add_argument("--pool", type=int, default=8000, help="distinct video ids the links are drawn from")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="assumed API round trip, for projections")
    args = parser.parse_args()

    texts, n_links = load_texts(args.messages, args.link_every, args.pool)
    with tempfile.TemporaryDirectory() as tmp:
        base = run(texts, Path(tmp) / "base.db", batched=False)
        cand = run(texts, Path(tmp) / "cand.db", batched=True)
    assert base["out"] == cand["out"], "both paths must encode identically"
    latency = args.latency_ms / 1000
    rows = [
        ("API calls (= units)", base["calls"], cand["calls"]),
        ("cold wall s (fake API)", base["cold_s"], cand["cold_s"]),
        (
            f"cold s incl. {args.latency_ms:.0f} ms/call",
            base["cold_s"] + base["calls"] * latency,
            cand["cold_s"] + cand["calls"] * latency,
        ),
        ("warm wall s (cache only)", base["warm_s"], cand["warm_s"]),
    ]
    print(f"{len(texts)} messages, {n_links} links, {args.pool} distinct ids\n")
    print(f"{'metric':34} {'per-message':>12} {'batched':>12} {'ratio':>8}")
    for name, b, c in rows:
        cells = [f"{v:12d}" if isinstance(v, int) else f"{v:12.2f}" for v in (b, c)]
        print(f"{name:34} {cells[0]} {cells[1]} {b / c if c else float('inf'):7.1f}x")
    tagged = sum(o.count("<youtube ") for o in cand["out"])
    print(
        f"\nlinks encoded as tags: {tagged} of {n_links}; units per 1000 links: {1000 * cand['units'] / n_links:.1f}"
    )
    print(f"free tier (10,000 units/day) encodes ~{10_000 * 50:,} distinct links/day when batched")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "messages": len(texts),
        "links": n_links,
        "pool": args.pool,
        "tagged": tagged,
        "baseline": {k: v for k, v in base.items() if k != "out"},
        "batched": {k: v for k, v in cand.items() if k != "out"},
        "ratio_calls": base["calls"] / cand["calls"],
        "ratio_cold_s": base["cold_s"] / cand["cold_s"],
        "ratio_warm_s": base["warm_s"] / cand["warm_s"],
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
