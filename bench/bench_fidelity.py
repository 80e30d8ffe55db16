"""Clone fidelity on a real multi-party chat: every `cloneus eval` figure for finetuned, base and real, then levers.

Data: a consecutive slice of ../shared/data/ubuntu-irc/ubuntu_irc.csv (or $CLONEUS_BENCH_DATA). The default slice
(messages 170,000-180,000, 2013) is one where the channel's regulars talk in both the train and the held-out part,
so per-member figures have data behind them (14 members at min_share 0.01 on the part before the split).
Model: builtin:smollm2-135m, LoRA, fp32 on the CPU. Training is bounded by a token budget (`--train-tokens`;
the default 57,344 tokens, 112 steps of 512, is about 15 CPU-minutes: a quiet 2-core machine trains ~100 tokens/s
at ~1.5 cores busy); steps follow from it, so a
lever that changes the row size (chunk size) or the batch keeps the same number of training tokens.

Held-out split: the eval's split (latest `eval_frac` of sessions of the slice) is computed first; training then
sees only the messages before it (`eval_frac` 0, so the trainer spends no time on its own eval pass), and the
checkpoint's config is pointed back at the whole slice with `eval_frac` set, so `cloneus eval` rebuilds exactly
that split. Levers that change only training or LoRA settings leave the base model's figures unchanged; those
are scored once (baseline) and reused.

Targets (issue 9): finetuned attribution >= 2x base and >= 0.5x the real ceiling; next-speaker top-1 >= 1.5x the
most-frequent-author guess; held-out perplexity <= 0.7x base. Attribution also gets its 95% Wilson interval (`attr
lo`-`attr hi`) and, for the baseline, the exact McNemar p against base on the same contexts: with tens of
replies, a 2x ratio can be a few hits, and the p says whether it is more than luck.

Levers (`--levers`, one at a time against the baseline, same budget): author tag format, tag placement, system
prompt without the participant list, chunk size, learning rate, steps (smaller batches: more, noisier steps),
LoRA rank, LoRA targets, min_share, burst merging. Results go to bench/results/bench_fidelity.json after every
run, so an interrupted sweep keeps what finished. Timings are wall-clock on whatever else the machine is running:
`--work-dir DIR --train-only` trains while the machine is busy, and `--work-dir DIR --reuse` later evaluates those
runs, so the eval's own time (one of the figures) is measured on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench_train import DATA_DIR, bench_config, slice_chat

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "bench_fidelity.json"
BASELINE = [
    "training.batch_size=1",
    "training.gradient_accumulation_steps=1",
    "training.learning_rate=0.001",
    "lora.r=16",
    "lora.alpha=32",
    "dataset.eval_frac=0.15",
    "dataset.min_share=0.01",
]
# In the order they run: a sweep cut short by its time budget still has the levers most likely to matter.
LEVERS: dict[str, list[str]] = {
    "baseline": [],
    "lr_2e-3": ["training.learning_rate=0.002"],
    "content_prefix": ["format.tag_placement=content_prefix"],
    "rank_4": ["lora.r=4", "lora.alpha=8"],
    "no_participants": ["prompt.template=Group chat between the members of a Discord server."],
    "attn_only": ["lora.target_modules=[q_proj,k_proj,v_proj,o_proj]"],
    "tag_fname": ["format.author_tag='{author} ({fname})'"],
    "lr_5e-4": ["training.learning_rate=0.0005"],
    "no_merge": ["dataset.merge_window_minutes=0"],
    "accum_4": ["training.gradient_accumulation_steps=4"],
    "min_share_0.02": ["dataset.min_share=0.02"],
    "chunk_1024": ["training.chunk_size=1024"],
}
COLUMNS = (
    ("ppl ft", "perplexity", "{:.1f}"),
    ("ppl base", "perplexity_base", "{:.1f}"),
    ("ppl/base", "perplexity_vs_base", "{:.2f}"),
    ("top1", "speaker_top1", "pct"),
    ("top1 freq", "speaker_top1_most_frequent", "pct"),
    ("top1/freq", "speaker_vs_most_frequent", "{:.2f}"),
    ("attr ft", "attribution", "pct"),
    ("attr lo", "attribution_ci95_low", "pct"),
    ("attr hi", "attribution_ci95_high", "pct"),
    ("attr base", "attribution_base", "pct"),
    ("p vs base", "attribution_p_vs_base", "{:.2g}"),
    ("attr real", "attribution_real", "pct"),
    ("ft/base", "attribution_vs_base", "{:.2f}"),
    ("ft/real", "attribution_vs_real", "{:.2f}"),
    ("chance", "chance", "pct"),
)


def cell(value, spec: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if spec == "pct" else spec.format(value)


def targets(summary: dict) -> dict[str, bool | None]:
    """Issue 9's targets, each True/False (None when a figure is missing)."""

    def at_least(a, b, k):
        return None if a is None or b is None else a >= k * b

    return {
        "attribution >= 2x base": at_least(summary.get("attribution"), summary.get("attribution_base"), 2.0),
        "attribution >= 0.5x real": at_least(summary.get("attribution"), summary.get("attribution_real"), 0.5),
        "top1 >= 1.5x most frequent": at_least(
            summary.get("speaker_top1"), summary.get("speaker_top1_most_frequent"), 1.5
        ),
        "ppl <= 0.7x base": None
        if summary.get("perplexity_vs_base") is None
        else summary["perplexity_vs_base"] <= 0.7,
    }


def lever_config(args, work: Path, overrides: list[str]):
    """The baseline bench config with `overrides`; steps from the token budget and the row size."""
    from cloneus.config import apply_overrides, config_from_dict

    base = bench_config("builtin:smollm2-135m", work, args.chunk_size, logging_steps=5)
    tree = apply_overrides(base.model_dump(mode="json"), BASELINE + overrides)
    tree["dataset"]["users_json"] = str(work / "users.json")  # per lever: min_share builds its own index
    t = tree["training"]
    steps = max(1, args.train_tokens // (t["chunk_size"] * t["batch_size"] * t["gradient_accumulation_steps"]))
    t.update(max_steps=steps, save_steps=steps, warmup=0.1)
    return config_from_dict(tree)


def train_part(cfg, chat: Path, out: Path) -> Path:
    """The raw rows before the first message the eval will hold out (its split of the whole slice, in time)."""
    import pandas as pd

    from cloneus.data.normalize import clean
    from cloneus.data.readers import read_chat
    from cloneus.data.sessions import eval_split_index, session_ranges, silence_hours

    frame = clean(read_chat(chat, date_format=cfg.dataset.date_format), cfg.dataset).frame
    hours = cfg.dataset.hours_between_sessions
    coarsest = max(hours) if isinstance(hours, list) else hours
    sessions = session_ranges(
        silence_hours(frame["timestamp"]), 0, len(frame), coarsest, cfg.dataset.min_session_length
    )
    first_held_out = frame["timestamp"].iloc[eval_split_index(sessions, cfg.dataset.eval_frac)]
    raw = pd.read_csv(chat, keep_default_na=False)
    raw[pd.to_datetime(raw["timestamp"], utc=True, format="mixed") < first_held_out].to_csv(out, index=False)
    return out


def point_at_slice(checkpoint: Path, chat: Path, eval_frac: float) -> None:
    """Make the checkpoint's config name the whole slice and its eval fraction, so eval rebuilds the split."""
    from cloneus.config import load_config
    from cloneus.io import atomic_write_text
    from cloneus.training.rundir import CHECKPOINT_CONFIG

    path = checkpoint / CHECKPOINT_CONFIG
    cfg = load_config(path, [f"dataset.chatlog={chat}", f"dataset.eval_frac={eval_frac}"])
    atomic_write_text(path, cfg.to_yaml())


def training_only(overrides: list[str]) -> bool:
    """A lever that changes neither data nor prompt: the base model's figures are the baseline's."""
    return bool(overrides) and all(o.startswith(("training.", "lora.")) and "chunk_size" not in o for o in overrides)


def with_base_of(report: dict, baseline: dict) -> dict:
    """`report` (scored without base) plus the baseline's base figures, and its summary recomputed."""
    from cloneus.evaluation.suite import summarise

    for section in ("perplexity", "next_speaker", "attribution"):
        if "base" in baseline[section]:
            report[section]["base"] = baseline[section]["base"]
    report["summary"] = summarise(report)
    return report


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads): what a run costs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def finished_run(lever_dir: Path, name: str, steps: int) -> tuple[Path, dict] | None:
    """The checkpoint and metrics a run in this work dir already trained to `steps`, if any (`--reuse`)."""
    for metrics_file in sorted((lever_dir / "runs").glob(f"*/{name}/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        checkpoint = metrics_file.parent / f"checkpoint-{steps}"
        if metrics.get("steps") == steps and checkpoint.is_dir():
            return checkpoint, metrics
    return None


def train_lever(cfg, name: str, lever_dir: Path, chat: Path, reuse: bool) -> tuple[Path, dict, float, float | None]:
    """Train on the part before the held-out split (or reuse that run); checkpoint, metrics, wall and CPU s."""
    from cloneus.training.trainer import train

    done = finished_run(lever_dir, name, cfg.training.max_steps) if reuse else None
    if done is not None:
        print(f"reusing {done[0]} (trained earlier; its CPU time was not measured here)", flush=True)
        return done[0], done[1], done[1]["wall_s"], None
    lever_dir.mkdir(parents=True, exist_ok=True)
    train_chat = train_part(cfg, chat, lever_dir / "train.csv")
    train_cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"eval_frac": 0.0})})
    start, cpu = time.perf_counter(), cpu_seconds()
    result = train(train_cfg, chatlog=train_chat, run_name=name)
    point_at_slice(result.checkpoint, chat, cfg.dataset.eval_frac)
    return result.checkpoint, result.metrics, time.perf_counter() - start, cpu_seconds() - cpu


def run_lever(args, name: str, overrides: list[str], work: Path, chat: Path, baseline: dict | None) -> dict:
    from cloneus.evaluation.suite import evaluate_checkpoint, write_outputs

    lever_dir = work / name
    cfg = lever_config(args, lever_dir, overrides)
    checkpoint, metrics, trained, train_cpu = train_lever(cfg, name, lever_dir, chat, args.reuse)
    if args.train_only:
        return {"overrides": overrides, "checkpoint": str(checkpoint), "train_wall_s": round(trained, 1)}
    if baseline is None and args.baseline_report is not None and args.baseline_report.is_file():
        baseline = json.loads(args.baseline_report.read_text())  # written by a baseline run in another process
    reuse = baseline is not None and training_only(overrides)
    start, cpu = time.perf_counter(), cpu_seconds()
    report = evaluate_checkpoint(
        checkpoint,
        base=not reuse,
        max_conversations=args.max_conversations,
        max_turns=args.max_turns,
        max_replies=args.max_replies,
        out_dir=args.reports / name,
    )
    eval_wall, eval_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if reuse:
        report = with_base_of(report, baseline)
        write_outputs(report, args.reports / name)
    return {
        "base_reused_from_baseline": reuse,
        "overrides": overrides,
        "train_steps": metrics["steps"],
        "train_tokens": metrics["train_tokens"],
        "train_wall_s": round(trained, 1),
        "train_cpu_s": None if train_cpu is None else round(train_cpu, 1),
        "eval_wall_s": round(eval_wall, 1),
        "eval_cpu_s": round(eval_cpu, 1),
        "eval_stage_s": report.get("stage_seconds"),
        "summary": report["summary"],
        "targets": targets(report["summary"]),
        "split": report["split"],
        "members": report["members"],
        "report": str(args.reports / name / "eval.json"),
    }


def print_table(runs: dict[str, dict]) -> None:
    head = " ".join(f"{label:>9}" for label, _, _ in COLUMNS)
    print(f"{'lever':<16} {head} {'train s':>8} {'eval s':>7}")
    for name, run in runs.items():
        if "error" in run:
            print(f"{name:<16} error: {run['error']}")
            continue
        if "summary" not in run:
            print(f"{name:<16} trained only: {run['checkpoint']} ({run['train_wall_s']:.0f} s)")
            continue
        s = run["summary"]
        cells = " ".join(f"{cell(s.get(key), spec):>9}" for _, key, spec in COLUMNS)
        print(f"{name:<16} {cells} {run['train_wall_s']:>8.0f} {run['eval_wall_s']:>7.0f}")
    base = runs.get("baseline", {})
    for target, met in base.get("targets", {}).items():
        print(f"baseline target {target}: {'met' if met else 'NOT met' if met is False else 'n/a'}")


def print_markdown(runs: dict[str, dict]) -> None:
    """The table as markdown (for docs/training.md), each lever's change against the baseline in brackets."""
    base = runs.get("baseline", {}).get("summary", {})
    print("| lever | " + " | ".join(label for label, _, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, run in runs.items():
        if "summary" not in run:
            continue
        cells = []
        for _, key, spec in COLUMNS:
            value, ref = run["summary"].get(key), base.get(key)
            text = cell(value, spec)
            if name != "baseline" and value is not None and ref and key in ("perplexity", "attribution"):
                text += f" ({value / ref:.2f}x)"
            cells.append(text)
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", type=int, default=170_000, help="IRC rows skipped before the slice")
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the slice")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--train-tokens", type=int, default=57_344, help="training budget (~15 CPU-min default)")
    parser.add_argument("--max-conversations", type=int, default=40)
    parser.add_argument("--max-turns", type=int, default=300)
    parser.add_argument("--max-replies", type=int, default=200, help="replies per model (the slice has 197 turns)")
    parser.add_argument("--levers", default="all", help=f"comma list of {','.join(LEVERS)} (default all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep the slice and every lever's run here (default: a temp dir)"
    )
    parser.add_argument(
        "--baseline-report",
        type=Path,
        default=None,
        help="eval.json of a baseline run at the same budget (read once a lever has trained), so training-only "
        "levers reuse its base figures when they run in a separate process",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="with --work-dir: evaluate runs already trained there to the same steps"
    )
    parser.add_argument("--train-only", action="store_true", help="train (into --work-dir) and skip the eval")
    parser.add_argument(
        "--markdown", action="store_true", help="print the results JSON (--out) as markdown, run nothing"
    )
    args = parser.parse_args()
    if args.markdown:
        print_markdown(json.loads(args.out.read_text())["runs"])
        return 0
    if (args.reuse or args.train_only) and args.work_dir is None:
        parser.error("--reuse and --train-only need --work-dir (a temp dir is gone when the bench ends)")
    names = list(LEVERS) if args.levers == "all" else args.levers.split(",")
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        parser.error(f"unknown levers {unknown}; choose from {list(LEVERS)}")
    if not (DATA_DIR / "ubuntu_irc.csv").is_file():
        print(f"skipped: {DATA_DIR / 'ubuntu_irc.csv'} not found (set CLONEUS_BENCH_DATA)")
        return 0
    args.reports = args.out.with_suffix("")  # bench/results/bench_fidelity/<lever>/eval.{json,png,html}
    out = {
        "slice": {"skip": args.skip, "messages": args.messages},
        "budget": {k: getattr(args, k) for k in ("chunk_size", "train_tokens", "max_conversations", "max_turns")}
        | {"max_replies": args.max_replies},
        "baseline_overrides": BASELINE,
        "load_average_start": os.getloadavg(),
        "runs": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fidelity-")))
        chat = slice_chat(args.messages, work / "irc.csv", skip=args.skip)
        baseline = None
        for name in names:
            print(f"== {name}: {LEVERS[name] or 'baseline'}", flush=True)
            try:
                out["runs"][name] = run_lever(args, name, LEVERS[name], work, chat, baseline)
                if name == "baseline" and not args.train_only:
                    baseline = json.loads(Path(out["runs"][name]["report"]).read_text())
            except Exception as e:  # a bench keeps going: one lever's failure is a result too
                traceback.print_exc()
                out["runs"][name] = {"overrides": LEVERS[name], "error": f"{type(e).__name__}: {e}"}
            out["load_average_end"] = os.getloadavg()
            args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
            print(json.dumps(out["runs"][name].get("summary", out["runs"][name]), default=str), flush=True)
    print_table(out["runs"])
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
