"""Inference benchmark: prefix-cache TTFT, sampler overhead, batch vs sequential, adapter swap vs full reload.

Histories are real multi-party chat from `../shared/data/ubuntu-irc/ubuntu_irc.csv` (override the folder with
`CLONEUS_BENCH_DATA`); without it the bench says so and exits 0. For each model (the tiny random Llama and
`builtin:smollm2-135m`) it builds two LoRA checkpoints laid out like training's, then measures, each against its
baseline in the same run:

- time to first token (TTFT) and decode tokens/s of a reply on a ~1,500-token history: prefix cache cold (cleared)
  vs warm (the previous turn's call cached). Two warm cases: the next turn right after the model's own reply
  (target: warm TTFT <= cold / 10), and after one new human message, whose tokens must be prefilled too.
- decode cost per token with every sampler enabled vs plain top-p (target overhead <= 15%).
- `batch_generate` for 4 authors vs 4 sequential `generate` calls.
- adapter swap (`swap_checkpoint`, same base) vs a full reload (`unload` + `from_pretrained`).

    python bench/bench_infer.py                  # both models, defaults (a few minutes on 2 cores)
    python bench/bench_infer.py --models tiny --history-tokens 3000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloneus.io import atomic_write_json  # noqa: E402

DATA_DIR = Path(
    os.environ.get("CLONEUS_BENCH_DATA", Path(__file__).resolve().parents[1].parent / "shared/data/ubuntu-irc")
)
RESULTS = Path(__file__).resolve().parent / "results" / "bench_infer.json"
N_AUTHORS = 6
PLAIN_TOP_P = {"temperature": 1.0, "top_k": 0, "top_p": 0.9, "min_p": 0.0}
ALL_SAMPLERS = {
    "temperature": 0.8,
    "dynamic_temperature": True,
    "smoothing_factor": 0.3,
    "top_n_sigma": 2.0,
    "top_k": 40,
    "top_p": 0.95,
    "typical_p": 0.95,
    "epsilon_cutoff": 3.0,
    "eta_cutoff": 3.0,
    "tfs": 0.95,
    "top_a": 0.1,
    "min_p": 0.05,
    "mirostat_mode": 2,
    "xtc_probability": 0.5,
    "dry_multiplier": 0.8,
    "repetition_penalty": 1.1,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.1,
}


def load_window(rows: int) -> pd.DataFrame:
    frame = pd.read_csv(DATA_DIR / "ubuntu_irc.csv", keep_default_na=False, nrows=rows)
    return frame[frame["text"].str.strip() != ""]


def build_checkpoints(model_id: str, base_dir: Path, out: Path, authors: list[str]) -> list[Path]:
    """Two checkpoints (LoRA on every linear layer, as training's defaults) of one base model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cloneus.config import config_from_dict
    from cloneus.data.users import User, UserIndex
    from cloneus.io import atomic_write_text
    from cloneus.models.loading import load_model

    config = config_from_dict({"model": {"model_id": model_id}})
    users = UserIndex(
        users=[User(id=str(i), username=a, display_name=a, message_count=10, share=0.1) for i, a in enumerate(authors)]
    )
    paths = []
    for step in (1, 2):
        model, tokenizer = load_model(config.model, device="cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step)
            peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        ckpt = out / f"checkpoint-{step}"
        peft_model.save_pretrained(ckpt)
        tokenizer.save_pretrained(ckpt)
        atomic_write_text(ckpt / "cloneus_config.yaml", config.to_yaml())
        users.save(ckpt / "users.json")
        paths.append(ckpt)
    return paths


def history_of(clo, frame: pd.DataFrame, tokens: int) -> list[tuple[str, str]]:
    """The shortest run of messages from the start of `frame` whose prompt reaches `tokens` tokens."""
    history: list[tuple[str, str]] = []
    author = clo.users.trainable()[0].display_name
    for name, text in zip(frame["username"], frame["text"], strict=True):
        history.append((str(name), str(text)))
        if len(history) % 10 == 0:
            prompt = clo.formatter.generation_prompt(history, author)
            if len(clo.tokenizer(prompt, add_special_tokens=False)["input_ids"]) >= tokens:
                break
    return history


def timed_reply(clo, history, author, sampling) -> dict:
    """Stream one reply; TTFT is the wait for the first piece, tokens/s the decode rate after it."""
    start = time.perf_counter()
    first = None
    pieces = []
    for piece in clo.stream_generate(history, author, **sampling):
        first = first or time.perf_counter()
        pieces.append(piece)
    end = time.perf_counter()
    n = len(clo.tokenizer("".join(pieces), add_special_tokens=False)["input_ids"])  # re-encoded: approximate
    n = min(n, sampling["max_new_tokens"])
    first = first or end
    return {"ttft_s": first - start, "tokens": n, "tok_s": (n - 1) / (end - first) if end > first else 0.0}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def bench_model(label: str, model_id: str, base_dir: Path, frame: pd.DataFrame, args) -> dict:
    from cloneus import Cloneus

    authors = frame["username"].value_counts().index[:N_AUTHORS].astype(str).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ckpts = build_checkpoints(model_id, base_dir, Path(tmp), authors)
        clo = Cloneus.from_pretrained(ckpts[0], device="cpu")
        print(f"[{label}] checkpoints built and loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        history = history_of(clo, frame, args.history_tokens)
        prompt_tokens = len(clo.tokenizer(clo.formatter.generation_prompt(history, authors[0])).input_ids)
        fixed = {"seed": 0, "min_new_tokens": args.decode_tokens, "max_new_tokens": args.decode_tokens}
        speaker = authors[1]

        clo.generate(history, speaker, seed=1, max_new_tokens=2)  # warm-up: first-call overheads out of "cold"
        cold, warm, cold_msg, warm_msg = [], [], [], []
        for _ in range(args.repeats):
            # Next turn after the model's own reply: the history now ends with the reply the cache holds.
            reply = clo.generate(history[:-1], authors[0], seed=1, max_new_tokens=16) or "ok"
            after_reply = history[:-1] + [(authors[0], reply)]
            warm.append(timed_reply(clo, after_reply, speaker, fixed))
            warm[-1]["reused"] = clo.backend.last_reused
            clo.backend.prefix.clear()
            cold.append(timed_reply(clo, after_reply, speaker, fixed))
            # Next turn after the previous call, with one new human message in between (a longer uncached tail).
            clo.generate(history[:-1], authors[0], seed=1, max_new_tokens=16)
            warm_msg.append(timed_reply(clo, history, speaker, fixed))
            clo.backend.prefix.clear()
            cold_msg.append(timed_reply(clo, history, speaker, fixed))
        print(f"[{label}] cache cold/warm done", flush=True)

        plain, every = [], []
        for _ in range(args.repeats):
            clo.generate(history, speaker, seed=1, max_new_tokens=2)  # history cached: measure decoding only
            plain.append(timed_reply(clo, history, speaker, {**fixed, **PLAIN_TOP_P}))
            every.append(timed_reply(clo, history, speaker, {**fixed, **ALL_SAMPLERS}))
        print(f"[{label}] samplers done", flush=True)

        batch_s, seq_s = [], []
        four = authors[1:5]
        small = {**fixed, "min_new_tokens": args.batch_tokens, "max_new_tokens": args.batch_tokens}
        for _ in range(args.repeats):
            clo.generate(history, speaker, seed=1, max_new_tokens=2)
            t = time.perf_counter()
            clo.batch_generate(history, four, **small)
            batch_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            for a in four:
                clo.generate(history, a, **small)
            seq_s.append(time.perf_counter() - t)
        print(f"[{label}] batch done", flush=True)

        swap_s = [clo.swap_checkpoint(ckpts[i % 2]) for i in range(1, args.repeats + 1)]
        reload_s = []
        for i in range(max(1, args.repeats - 1)):
            clo.unload()
            t = time.perf_counter()
            clo = Cloneus.from_pretrained(ckpts[i % 2], device="cpu")
            reload_s.append(time.perf_counter() - t)
        print(f"[{label}] swap done", flush=True)

    plain_ms = 1000 / median_of(plain, "tok_s")
    every_ms = 1000 / median_of(every, "tok_s")
    return {
        "model": model_id if label != "tiny" else "tiny (random 2-layer Llama)",
        "history_messages": len(history),
        "prompt_tokens": prompt_tokens,
        "ttft_cold_s": median_of(cold, "ttft_s"),
        "ttft_warm_s": median_of(warm, "ttft_s"),
        "ttft_cold_new_message_s": median_of(cold_msg, "ttft_s"),
        "ttft_warm_new_message_s": median_of(warm_msg, "ttft_s"),
        "warm_reused_tokens": median_of(warm, "reused"),
        "tok_s_cold": median_of(cold, "tok_s"),
        "tok_s_warm": median_of(warm, "tok_s"),
        "decode_ms_per_token_top_p": plain_ms,
        "decode_ms_per_token_all_samplers": every_ms,
        "batch4_s": statistics.median(batch_s),
        "sequential4_s": statistics.median(seq_s),
        "adapter_swap_s": statistics.median(swap_s),
        "full_reload_s": statistics.median(reload_s),
    }


def print_table(results: dict[str, dict]) -> None:
    rows = [
        ("TTFT after own reply", "ttft_warm_s", "ttft_cold_s", "s", "warm / cold (target <= 0.10)"),
        ("TTFT after a new message", "ttft_warm_new_message_s", "ttft_cold_new_message_s", "s", "warm / cold"),
        ("decode tokens/s", "tok_s_warm", "tok_s_cold", "tok/s", "warm / cold"),
        (
            "decode ms/token, samplers",
            "decode_ms_per_token_all_samplers",
            "decode_ms_per_token_top_p",
            "ms",
            "all / top-p (target <= 1.15)",
        ),
        ("4 authors", "batch4_s", "sequential4_s", "s", "batch / 4 sequential"),
        ("checkpoint swap", "adapter_swap_s", "full_reload_s", "s", "adapter swap / full reload"),
    ]
    for label, r in results.items():
        print(f"\n## {label}: {r['model']} — {r['prompt_tokens']} prompt tokens, {r['history_messages']} messages")
        print(f"{'measure':<28}{'ours':>12}{'baseline':>12}{'ratio':>8}  {'(what)'}")
        for name, ours, base, unit, what in rows:
            ratio = r[ours] / r[base] if r[base] else float("nan")
            print(f"{name:<28}{r[ours]:>9.3f} {unit:<3}{r[base]:>8.3f} {unit:<3}{ratio:>8.3f}  {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,builtin", help="comma list of: tiny, builtin")
    parser.add_argument("--history-tokens", type=int, default=1500)
    parser.add_argument("--decode-tokens", type=int, default=32, help="tokens per measured reply")
    parser.add_argument("--batch-tokens", type=int, default=16, help="tokens per reply in the batch measure")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=3000, help="IRC messages read to build histories from")
    args = parser.parse_args()
    if not (DATA_DIR / "ubuntu_irc.csv").is_file():
        print(f"skipped: {DATA_DIR / 'ubuntu_irc.csv'} not found (set CLONEUS_BENCH_DATA)")
        return 0
    import torch

    from cloneus.models.tiny import build_tiny_model

    frame = load_window(args.rows)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"tiny": None, "builtin": "builtin:smollm2-135m"}
        for label in args.models.split(","):
            if label == "tiny":
                base = build_tiny_model(Path(tmp) / "tiny", corpus=frame["text"].tolist()[:2000], vocab_size=2048)
                results[label] = bench_model(label, str(base), base, frame, args)
            else:
                results[label] = bench_model(label, models[label], Path(tmp), frame, args)
    print_table(results)
    payload = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "load_average": os.getloadavg(),
        "args": vars(args),
        "results": results,
    }
    atomic_write_json(RESULTS, payload)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
