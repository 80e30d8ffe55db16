"""Preference tuning from reactions, measured: does a clone learn what the group likes?

1. Source: builtin:smollm2-135m LoRA-trained briefly on the demo chat (`cloneus.training.demo`'s config), the
   "served" checkpoint.
2. Simulated group: for contexts from the demo chat, the source clone writes several replies as the real next
   speaker; a rule a real group could have reacts to them: 👍 a short reply (at most `--short-words` words), 👎 a
   wall of text (over `--long-words` words); others get no reaction. The rule only reads the model's own replies.
   (The issue's example, "answers the previous speaker by name", gave no liked reply at all: the untuned SmolLM2
   clone never names the previous speaker, so nothing could be tuned; its rate, and that of other candidate
   behaviours, is still measured and reported.) Versions of one context are stored as regenerated versions of one
   reply, in a real bot database (`bot.store.Store`), so liked/disliked versions make pairs.
3. Tuning: `train_feedback` (KTO or DPO, as `feedback.method: auto` picks) from the source checkpoint.
4. Report, untuned vs tuned in the same run: held-out pair accuracy and margin (`metrics.json`), and the rate of
   the liked behaviour (and of the disliked one) in replies generated for held-out contexts that no reaction came
   from, with the same sampling seeds.

Runs on the CPU (`nice python bench/bench_feedback.py`); sizes are flags, and the defaults are sized for a
shared 2-core machine (34 minutes there with other jobs running); `--source CHECKPOINT` reuses a source
checkpoint. Prints a table and writes bench/results/bench_feedback.json. Timings depend on whatever else the
machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "bench_feedback.json"
HISTORY = 6
SHORT_WORDS = 8
LONG_WORDS = 30


def names_of(users, display: str) -> list[str]:
    """How a reply may name a member: display name, username, first name (any case)."""
    user = users.get(display)
    if user is None:
        return [display]
    return [n for n in {user.display_name, user.username, user.first_name} if n]


def words(text: str) -> int:
    return len(text.split())


def mentions(text: str, names: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(n)}\b", text, re.IGNORECASE) for n in names)


class Rule:
    """The simulated group's taste: 👍 replies of at most `short` words, 👎 replies over `long` words."""

    def __init__(self, short: int, long: int):
        self.short, self.long = short, long

    def __str__(self) -> str:
        return f"likes replies of <= {self.short} words, dislikes replies over {self.long} words"

    def value(self, text: str) -> int:
        n = words(text)
        return 1 if n <= self.short else -1 if n > self.long else 0


def contexts(cfg, users) -> list[tuple[list[tuple[str, str]], str, str]]:
    """`(history, author, previous speaker)` for every message of a trainable author with HISTORY before it."""
    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.training.demo import DEMO_CHAT

    frame = clean_messages(read_chat(DEMO_CHAT), cfg.dataset.cleaning, cfg.dataset.merge_window_minutes).frame
    trainable = {u.display_name for u in users.trainable()}
    rows = list(zip(frame["author"], frame["text"], strict=True))
    out = []
    for i in range(HISTORY, len(rows)):
        author, previous = rows[i][0], rows[i - 1][0]
        if author in trainable and previous != author:
            out.append((rows[i - HISTORY : i], author, previous))
    return out


def sample(clone, ctxs, k: int, max_new_tokens: int, seed: int) -> list[list[str]]:
    return [
        clone.batch_generate(h, [a] * k, temperature=1.0, max_new_tokens=max_new_tokens, seed=seed + i)
        for i, (h, a, _) in enumerate(ctxs)
    ]


async def write_db(path: Path, ctxs, replies, rule: Rule) -> dict[str, int]:
    """Each context is one clone reply; its versions get the rule's reactions from distinct simulated members."""
    from bot.store import Store

    counts = {"liked": 0, "disliked": 0, "unrated": 0}
    async with await Store.open(path) as store:
        for i, ((history, author, _), versions) in enumerate(zip(ctxs, replies, strict=True)):
            mid = 10_000 + i
            request = {"history": [list(m) for m in history], "author": author, "seed_text": None}
            await store.record_reply(mid, 1, author, 1, request | {"text": versions[-1]})
            for j, text in enumerate(versions):
                value = rule.value(text)
                counts[{1: "liked", -1: "disliked", 0: "unrated"}[value]] += 1
                if value:
                    await store.add_feedback(mid, 100 + j, value, [*request["history"], [author, text]])
    return counts


def behaviour(replies, ctxs, users, rule: Rule) -> dict[str, float]:
    """Rates, over every generated reply, of the rule's liked and disliked behaviour and of candidate behaviours
    another group might react to (so the choice of rule can be checked against what the model does)."""
    flat = [(t, prev) for vs, (_, _, prev) in zip(replies, ctxs, strict=True) for t in vs]
    n = len(flat)
    return {
        "liked_rate": sum(rule.value(t) == 1 for t, _ in flat) / n,
        "disliked_rate": sum(rule.value(t) == -1 for t, _ in flat) / n,
        "mean_words": sum(words(t) for t, _ in flat) / n,
        "names_previous_speaker_rate": sum(mentions(t, names_of(users, p)) for t, p in flat) / n,
        "ends_in_question_rate": sum(t.rstrip().endswith("?") for t, _ in flat) / n,
        "at_mention_rate": sum("@" in t for t, _ in flat) / n,
        "word_counts": sorted(words(t) for t, _ in flat),
        "replies": n,
    }


def _ratio(after: float, before: float) -> float | None:
    return after / before if before else None


def _cell(value: float | None) -> str:
    return f"{value:>10.3f}" if value is not None else f"{'—':>10}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-steps", type=int, default=2, help="LoRA steps on the demo chat for the source")
    p.add_argument("--source", type=Path, help="reuse this source checkpoint instead of training one")
    p.add_argument("--contexts", type=int, default=12, help="contexts reacted to")
    p.add_argument("--heldout-contexts", type=int, default=6, help="contexts for the generation check")
    p.add_argument("--versions", type=int, default=4, help="replies generated per context (one batch)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--short-words", type=int, default=SHORT_WORDS, help="liked: replies of at most this many words")
    p.add_argument("--long-words", type=int, default=LONG_WORDS, help="disliked: replies over this many words")
    p.add_argument("--steps", type=int, default=24, help="feedback tuning steps")
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--beta", type=float, default=0.1)
    args = p.parse_args()

    from cloneus.data.clean import clean_messages
    from cloneus.data.readers import read_chat
    from cloneus.data.users import UserIndex
    from cloneus.inference.cloneus import Cloneus
    from cloneus.training.demo import DEMO_CHAT, demo_config
    from cloneus.training.feedback import train_feedback
    from cloneus.training.trainer import train

    rule = Rule(args.short_words, args.long_words)
    started, cpu_started = time.monotonic(), time.process_time()
    work = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    source = args.source
    if source is None:
        cfg = demo_config(args.source_steps, work / "users.json")
        cfg.training.output_root = str(work / "runs")
        cleaned = clean_messages(read_chat(DEMO_CHAT), cfg.dataset.cleaning, cfg.dataset.merge_window_minutes)
        users = UserIndex.build(cleaned.frame, min_share=cfg.dataset.min_share)
        source = train(cfg, chatlog=DEMO_CHAT, run_name="source", users=users).checkpoint
    t_source = time.monotonic() - started
    print(f"source checkpoint {source} in {t_source:.0f}s", flush=True)

    clone = Cloneus.from_pretrained(source, device="cpu")
    ctxs = contexts(clone.config, clone.users)
    step = max(1, len(ctxs) // (args.contexts + args.heldout_contexts))
    picked = ctxs[::step][: args.contexts + args.heldout_contexts]
    train_ctxs, held_ctxs = picked[: args.contexts], picked[args.contexts :]
    replies = sample(clone, train_ctxs, args.versions, args.max_new_tokens, seed=1)
    db = work / "cloneus.db"
    reacted = behaviour(replies, train_ctxs, clone.users, rule)
    reactions = asyncio.run(write_db(db, train_ctxs, replies, rule))
    print(f"rule: {rule}; reactions {reactions} after {time.monotonic() - started:.0f}s", flush=True)
    held = sample(clone, held_ctxs, args.versions, args.max_new_tokens, seed=7)
    before = behaviour(held, held_ctxs, clone.users, rule)
    clone.unload()
    t_sample = time.monotonic() - started - t_source

    tune = clone.config.model_copy(deep=True)
    tune.training.output_root = str(work / "runs")
    tune.feedback.max_steps = args.steps
    tune.feedback.learning_rate = args.learning_rate
    tune.feedback.beta = args.beta
    tune.feedback.min_examples = 8
    tune.feedback.min_pairs = 8
    print(f"untuned generation {before} after {time.monotonic() - started:.0f}s", flush=True)
    result = train_feedback(tune, db, source, run_name="tuned")
    scores = result.metrics["feedback"]
    t_tune = time.monotonic() - started - t_source - t_sample

    tuned = Cloneus.from_pretrained(result.checkpoint, device="cpu")
    after = behaviour(
        sample(tuned, held_ctxs, args.versions, args.max_new_tokens, seed=7), held_ctxs, tuned.users, rule
    )
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started

    rows = [
        ("held-out pair accuracy", scores["before"].get("pair_accuracy"), scores["after"].get("pair_accuracy")),
        ("held-out margin (nats/token)", scores["before"].get("margin"), scores["after"].get("margin")),
        ("liked-behaviour rate (gen.)", before["liked_rate"], after["liked_rate"]),
        ("disliked-behaviour rate (gen.)", before["disliked_rate"], after["disliked_rate"]),
        ("mean words per reply (gen.)", before["mean_words"], after["mean_words"]),
        ("names previous speaker (gen.)", before["names_previous_speaker_rate"], after["names_previous_speaker_rate"]),
        ("ends in a question (gen.)", before["ends_in_question_rate"], after["ends_in_question_rate"]),
    ]
    liked_ratio = _ratio(after["liked_rate"], before["liked_rate"])
    print(f"\nfeedback tuning ({scores['method']}, {result.metrics['steps']} steps) on builtin:smollm2-135m")
    print(f"rule: {rule}; liked rate in the reacted-to replies {reacted['liked_rate']:.3f} of {reacted['replies']}")
    print(
        f"reactions: {reactions}; held-out: {scores['before'].get('pairs')} {scores['before'].get('pair_kind')} pairs"
    )
    print(f"{'':<32}{'untuned':>10}{'tuned':>10}{'tuned/untuned':>15}")
    for name, b, a in rows:
        ratio = _ratio(a, b) if a is not None and b is not None else None
        print(f"{name:<32}{_cell(b)}{_cell(a)}{_cell(ratio):>15}")
    print(
        f"held-out replies generated: {before['replies']} per checkpoint ({args.heldout_contexts} contexts x "
        f"{args.versions}, same seeds)"
    )
    print(
        f"wall: source {t_source:.0f}s, sampling {t_sample:.0f}s, tuning {t_tune:.0f}s, total {wall:.0f}s; "
        f"CPU {cpu:.0f}s"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "args": vars(args) | {"source": str(args.source) if args.source else None},
                "rule": str(rule),
                "reactions": reactions,
                "reacted_replies": reacted,
                "method": scores["method"],
                "steps": result.metrics["steps"],
                "heldout_feedback": {"untuned": scores["before"], "tuned": scores["after"]},
                "generation": {"untuned": before, "tuned": after, "liked_rate_ratio": liked_ratio},
                "wall_s": {"source": t_source, "sampling": t_sample, "tuning": t_tune, "total": wall},
                "cpu_s": cpu,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
