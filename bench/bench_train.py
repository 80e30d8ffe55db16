"""Training throughput (and, with --quality, clone quality) on a real multi-party chat.

Throughput: the same conversations (the same number of useful tokens) are trained for one epoch three ways, each
in its own process (so peak RSS is per variant), with the same model, LoRA and HF Trainer settings:
  (a) packed    ours: conversations packed into rows of chunk_size, padding-free, block-diagonal attention
  (b) padded    baseline: HF Trainer + DataCollatorForSeq2Seq, dynamic padding, no packing; its batch size is
                chosen so a batch holds about as many useful tokens as one packed row
  (c) floor     full rows of chunk_size with no padding and no boundaries: the model's own forward+backward speed
Targets: (a) >= 1.5x (b) and (a) >= 0.85x (c) in useful (non-padding) tokens per second.

Quality (--quality): LoRA-train builtin:smollm2-135m on a slice of the chat (bounded to a few minutes of steps),
then report held-out perplexity against the base model and next-speaker top-1 against always guessing the most
frequent author (`cloneus.evaluation`; `bench_fidelity.py` reports every eval figure and the lever sweep).

Data: ../shared/data/ubuntu-irc/ubuntu_irc.csv (or $CLONEUS_BENCH_DATA); skipped with a message when absent.
Timings are wall-clock on whatever else the machine is running; compare ratios from the same run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CLONEUS_BENCH_DATA") or REPO.parent / "shared/data/ubuntu-irc")
RESULTS = REPO / "bench" / "results" / "bench_train.json"
MODELS = {"tiny": None, "smollm2": "builtin:smollm2-135m"}
DEFAULT_TOKENS = {"tiny": 60_000, "smollm2": 6_000}
VARIANTS = ("packed", "padded", "floor")


def slice_chat(messages: int, out: Path, skip: int = 0) -> Path:
    """`messages` consecutive rows of the IRC CSV, after the first `skip`, as a generic CSV chat."""
    import pandas as pd

    frame = pd.read_csv(
        DATA_DIR / "ubuntu_irc.csv", keep_default_na=False, nrows=messages, skiprows=range(1, skip + 1)
    )
    frame[["username", "text", "timestamp"]].to_csv(out, index=False)
    return out


def bench_config(model_id: str, work: Path, chunk_size: int, **training):
    from cloneus.config import config_from_dict

    return config_from_dict(
        {
            "model": {"model_id": model_id, "quant_method": "fp32"},
            "training": {"chunk_size": chunk_size, "output_root": str(work / "runs"), **training},
            "dataset": {
                "users_json": str(work / "users.json"),
                "cache_dir": str(work / "cache"),
                "eval_frac": 0.05,
                "hours_between_sessions": 1.0,
                # IRC has hundreds of speakers; clone the regulars so the system prompt's name list stays short.
                "min_share": 0.02,
                "long_messages": "truncate",
            },
        }
    )


def conversations(cfg, chat: Path, budget: int) -> tuple[list[list[int]], list[list[int]]]:
    """Tokenized training conversations, in order, until `budget` tokens."""
    from cloneus.data.dataset import prepare_dataset
    from cloneus.models.loading import load_tokenizer

    data = prepare_dataset(cfg, load_tokenizer(cfg.model), chat)
    ids, labels, total = [], [], 0
    for row in data.train:
        if total >= budget:
            break
        ids.append(row["input_ids"])
        labels.append(row["labels"])
        total += len(row["input_ids"])
    return ids, labels


def variant_dataset(variant: str, ids, labels, chunk_size: int, baseline_batch: int | None = None):
    """Rows and collator for one variant; all three see the same tokens."""
    from datasets import Dataset

    from cloneus.training.packing import PaddingFreeCollator, pack_rows

    if variant == "packed":
        rows = pack_rows(ids, labels, chunk_size)
        return Dataset.from_dict(rows), PaddingFreeCollator(), 1
    if variant == "floor":
        flat = [t for conv in ids for t in conv]
        rows = [flat[i : i + chunk_size] for i in range(0, len(flat) - chunk_size + 1, chunk_size)]
        return Dataset.from_dict({"input_ids": rows, "labels": rows}), PaddingFreeCollator(), 1
    mean = sum(map(len, ids)) / len(ids)
    batch = baseline_batch or max(1, round(chunk_size / mean))
    return Dataset.from_dict({"input_ids": ids, "labels": labels}), "seq2seq", batch


def run_worker(args) -> None:
    """One variant in this process; prints a JSON line."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from cloneus.config import LoraConfig, ModelConfig
    from cloneus.models.loading import load_model
    from cloneus.models.lora import attach_lora

    spec = json.loads(Path(args.worker_spec).read_text())
    model, tokenizer = load_model(ModelConfig(model_id=spec["model_id"], quant_method="fp32"), for_training=True)
    model = attach_lora(model, LoraConfig())
    dataset, collator, batch = variant_dataset(
        spec["variant"], spec["ids"], spec["labels"], spec["chunk_size"], spec["baseline_batch"]
    )
    if collator == "seq2seq":
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    padded = {"n": 0}

    def counting(features):
        out = collator(features)
        padded["n"] += out["input_ids"].numel()
        return out

    targs = TrainingArguments(
        output_dir=spec["out"],
        per_device_train_batch_size=batch,
        num_train_epochs=1,
        learning_rate=1e-4,
        save_strategy="no",
        report_to="none",
        logging_steps=10_000,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        seed=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=counting)
    start = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - start
    useful = sum(len(r) for r in dataset["input_ids"])
    result = {
        "variant": spec["variant"],
        "batch_size": batch,
        "steps": output.global_step,
        "useful_tokens": useful,
        "computed_tokens": padded["n"],
        "runtime_s": wall,
        "useful_tokens_per_s": useful / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_loss": output.training_loss,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_variant(model_id: str, variant: str, ids, labels, args, work: Path) -> dict:
    spec = work / f"spec-{variant}.json"
    spec.write_text(
        json.dumps(
            {
                "model_id": model_id,
                "variant": variant,
                "ids": ids,
                "labels": labels,
                "chunk_size": args.chunk_size,
                "baseline_batch": args.baseline_batch,
                "out": str(work / variant),
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--worker-spec", str(spec)], capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def throughput(args, work: Path, chat: Path) -> list[dict]:
    from cloneus.models.tiny import build_tiny_model

    rows = []
    for name in args.models:
        model_id = MODELS[name] or str(build_tiny_model(work / "tiny-model"))
        cfg = bench_config(model_id, work, args.chunk_size)
        budget = args.tokens or DEFAULT_TOKENS[name]
        ids, labels = conversations(cfg, chat, budget)
        # Variants alternate across repeats and the fastest run of each counts, so a burst of load from other
        # processes on a shared machine hits one run, not one variant.
        results: dict[str, dict] = {}
        for _ in range(args.repeats):
            for v in VARIANTS:
                r = run_variant(model_id, v, ids, labels, args, work)
                if v not in results or r["useful_tokens_per_s"] > results[v]["useful_tokens_per_s"]:
                    results[v] = r
        a, b, c = (results[v]["useful_tokens_per_s"] for v in VARIANTS)
        rows.append(
            {
                "model": name,
                "conversations": len(ids),
                "chunk_size": args.chunk_size,
                "results": results,
                "packed_vs_padded": a / b,
                "packed_vs_floor": a / c,
            }
        )
    return rows


def quality(args, work: Path, chat: Path) -> dict:
    from cloneus.evaluation.suite import evaluate_checkpoint
    from cloneus.training.trainer import train

    cfg = bench_config(
        MODELS["smollm2"],
        work,
        args.chunk_size,
        max_steps=args.quality_steps,
        save_steps=args.quality_steps,
        gradient_accumulation_steps=1,
        learning_rate=5e-4,
        logging_steps=10,
    )
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"eval_frac": 0.1})})
    start = time.perf_counter()
    result = train(cfg, chatlog=chat, run_name="quality")
    trained = time.perf_counter() - start
    report = evaluate_checkpoint(
        result.checkpoint,
        max_conversations=args.eval_conversations,
        max_turns=args.max_turns,
        max_replies=args.max_replies,
    )
    report["train_wall_s"] = trained
    report["train_steps"] = result.metrics["steps"]
    report["train_tokens"] = result.metrics["train_tokens"]
    return report


def print_throughput(rows: list[dict]) -> None:
    print(
        f"{'model':<8} {'variant':<8} {'batch':>5} {'steps':>5} {'useful tok':>10} {'computed':>9} "
        f"{'tok/s':>8} {'peak RSS MB':>11} {'loss':>7}"
    )
    for row in rows:
        for v in VARIANTS:
            r = row["results"][v]
            print(
                f"{row['model']:<8} {v:<8} {r['batch_size']:>5} {r['steps']:>5} {r['useful_tokens']:>10} "
                f"{r['computed_tokens']:>9} {r['useful_tokens_per_s']:>8.1f} {r['peak_rss_mb']:>11.0f} "
                f"{r['train_loss']:>7.3f}"
            )
        print(
            f"{row['model']:<8} ratios: packed/padded = {row['packed_vs_padded']:.2f}x (target >= 1.5), "
            f"packed/floor = {row['packed_vs_floor']:.2f}x (target >= 0.85)"
        )


def print_quality(report: dict) -> None:
    from cloneus.evaluation.report import format_report

    print(
        f"quality run: {report['train_steps']} steps, {report['train_tokens']} tokens, "
        f"{report['train_wall_s']:.0f} s of training"
    )
    print(format_report(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=["tiny", "smollm2"], help="tiny,smollm2")
    parser.add_argument("--messages", type=int, default=4000, help="first N messages of the IRC log")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the fastest counts")
    parser.add_argument("--baseline-batch", type=int, default=None, help="padded baseline's batch size")
    parser.add_argument("--tokens", type=int, default=None, help="training tokens per variant (default per model)")
    parser.add_argument("--quality", action="store_true", help="also run the smollm2 quality comparison")
    parser.add_argument("--quality-only", action="store_true", help="skip the throughput part")
    parser.add_argument("--quality-steps", type=int, default=40)
    parser.add_argument("--eval-conversations", type=int, default=30)
    parser.add_argument("--max-turns", type=int, default=300, help="next-speaker turns scored in the quality run")
    parser.add_argument("--max-replies", type=int, default=12, help="replies generated per model in the quality run")
    parser.add_argument("--worker-spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_spec:
        run_worker(args)
        return 0
    if not (DATA_DIR / "ubuntu_irc.csv").is_file():
        print(f"skipped: {DATA_DIR / 'ubuntu_irc.csv'} not found (set CLONEUS_BENCH_DATA)")
        return 0
    out: dict = {"messages": args.messages, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        chat = slice_chat(args.messages, work / "irc.csv")
        if not args.quality_only:
            out["throughput"] = throughput(args, work, chat)
            print_throughput(out["throughput"])
        if args.quality or args.quality_only:
            out["quality"] = quality(args, work, chat)
            print_quality(out["quality"])
    # One file per kind of run, so a throughput run and a quality run started side by side both keep their numbers.
    suffix = "_" + "_".join(args.models) if args.models != ["tiny", "smollm2"] else ""
    suffix = "_quality" if args.quality_only else suffix
    results = RESULTS.with_name(f"bench_train{suffix}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"written to {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
