"""Benchmark: reading and cleaning chat exports, against the bare parse of the same file.

CSV: the real Ubuntu IRC corpus (222k messages, `username,text,timestamp`) replicated `--copies` times (each copy
shifted in time, so the order and the gaps stay real) into one generic CSV of about a million rows.
Baseline: `pd.read_csv(dtype=str, keep_default_na=False)` alone, the floor of any reader.
Candidates: `read_chat` (parse + timestamps + canonical frame) and `read_chat` + `clean_messages` (all rules
on, 7-minute merge window).

JSON: the corpus' DiscordChatExporter export (50k messages) with its messages replicated `--json-copies` times.
Baseline: `json.load` of the whole file, what a non-streaming reader does. Candidate: `read_chat` (ijson
streaming). Memory is the peak RSS growth (VmHWM minus RSS after imports) of a fresh process.

Each measurement runs in its own spawned process.

    python bench/read_clean.py [--copies 5] [--json-copies 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

DATA_DIR = Path(
    os.environ.get("CLONEUS_BENCH_DATA", Path(__file__).resolve().parents[1].parent / "shared/data/ubuntu-irc")
)
RESULTS = Path(__file__).resolve().parent / "results" / "read_clean.json"


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status in MB. VmHWM (peak RSS) starts afresh at exec, unlike ru_maxrss,
    which a spawned child inherits from the parent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _run(task: str, path: str, queue: mp.Queue) -> None:
    """Child process: import everything first, then time one task and report (seconds, peak RSS growth MB, rows)."""
    import pandas as pd

    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat

    base = _status_mb("VmRSS")
    start = time.perf_counter()
    if task == "read_csv":
        rows = len(pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False))
    elif task == "json.load":
        with open(path, encoding="utf-8") as f:
            rows = len(json.load(f)["messages"])
    elif task == "read_chat":
        rows = len(read_chat(path))
    else:
        rows = len(clean_messages(read_chat(path)).frame)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    queue.put((seconds, peak - base, rows))


def measure(task: str, path: Path, repeat: int) -> dict:
    ctx = mp.get_context("spawn")
    runs = []
    for _ in range(repeat):
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(task, str(path), queue))
        proc.start()
        runs.append(queue.get())
        proc.join()
    seconds, memory, rows = min(runs)
    return {"task": task, "seconds": seconds, "peak_rss_growth_mb": memory, "rows": rows}


def write_csv(copies: int, out: Path) -> int:
    import pandas as pd

    frame = pd.read_csv(DATA_DIR / "ubuntu_irc.csv", dtype=str, keep_default_na=False)
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    span = stamps.max() - stamps.min() + pd.Timedelta(days=1)
    parts = []
    for i in range(copies):
        part = frame.copy()
        part["timestamp"] = (stamps + i * span).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        parts.append(part)
    pd.concat(parts).to_csv(out, index=False)
    return len(frame) * copies


def write_json(copies: int, out: Path) -> int:
    export = json.loads((DATA_DIR / "ubuntu_irc_dce.json").read_text(encoding="utf-8"))
    messages = export["messages"]
    export["messages"] = [dict(m, id=f"{m['id']}{i}") for i in range(copies) for m in messages]
    out.write_text(json.dumps(export), encoding="utf-8")
    return len(export["messages"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5, help="CSV corpus copies (5 = 1.1M rows)")
    parser.add_argument("--json-copies", type=int, default=2, help="DCE JSON message copies (2 = 100k messages)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is kept")
    args = parser.parse_args()
    if not (DATA_DIR / "ubuntu_irc.csv").exists():
        print(f"skipped: corpus not found in {DATA_DIR} (set CLONEUS_BENCH_DATA)")
        return 0
    results = {"csv": [], "json": []}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, json_path = Path(tmp) / "chat.csv", Path(tmp) / "chat.json"
        csv_rows = write_csv(args.copies, csv_path)
        json_rows = write_json(args.json_copies, json_path)
        for task in ("read_csv", "read_chat", "read_chat+clean"):
            results["csv"].append(measure(task, csv_path, args.repeat))
        for task in ("json.load", "read_chat"):
            results["json"].append(measure(task, json_path, args.repeat))
        sizes = {"csv_mb": csv_path.stat().st_size / 2**20, "json_mb": json_path.stat().st_size / 2**20}
    print(f"CSV: {csv_rows:,} messages, {sizes['csv_mb']:.0f} MB")
    print(f"JSON: {json_rows:,} messages, {sizes['json_mb']:.0f} MB")
    header = ("input", "task", "seconds", "msgs/s", "x baseline", "peak RSS +MB", "rows out")
    print("{:<5} {:<16} {:>8} {:>10} {:>10} {:>13} {:>10}".format(*header))
    for kind, rows in results.items():
        base = rows[0]
        for r in rows:
            r["ratio_to_baseline"] = r["seconds"] / base["seconds"]
            r["memory_ratio_to_baseline"] = r["peak_rss_growth_mb"] / max(base["peak_rss_growth_mb"], 1e-9)
            rate = (csv_rows if kind == "csv" else json_rows) / r["seconds"]
            print(
                f"{kind:<5} {r['task']:<16} {r['seconds']:>8.2f} {rate:>10,.0f} {r['ratio_to_baseline']:>9.2f}x "
                f"{r['peak_rss_growth_mb']:>13.0f} {r['rows']:>10,}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "sizes": sizes, **results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
