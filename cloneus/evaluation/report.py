"""The eval report as terminal text: one row per member, then surface statistics, then a few samples."""

from __future__ import annotations

from typing import Any

SAMPLES_SHOWN = 3
SURFACE_COLUMNS = (
    ("words_mean", "words", "{:.1f}"),
    ("words_p90", "p90", "{:.0f}"),
    ("emoji_rate", "emoji", "pct"),
    ("link_rate", "links", "pct"),
    ("question_rate", "?", "pct"),
    ("caps_rate", "CAPS", "pct"),
    ("lowercase_rate", "lower", "pct"),
    ("distinct_2", "dist-2", "{:.2f}"),
    ("copy_context_rate", "copy ctx", "pct"),
    ("copy_train_rate", "copy train", "pct"),
)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def number(x: float | None, spec: str) -> str:
    """`x` as a percentage (`spec` "pct") or with a format spec; "-" when missing."""
    if x is None:
        return "-"
    return pct(x) if spec == "pct" else spec.format(x)


def member_value(section: dict[str, Any] | None, member: str | None, key: str) -> float | None:
    """`key` of one model's section, overall (`member` None) or for one member; None when absent."""
    if not section:
        return None
    if member is None:
        return section.get(key)
    return section.get("members", {}).get(member, {}).get(key)


def interval(ci: list[float] | None) -> str:
    return "-" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def certainty_lines(report: dict[str, Any]) -> list[str]:
    """How far the headline rates can be trusted: 95% intervals, and whether finetuned beats base on attribution.

    Budgets are small, so a rate may be a handful of hits; these lines keep a reader from ranking on noise.
    """
    spk, attr = report["next_speaker"], report["attribution"]
    lines = []
    for name in ("finetuned", "base"):
        if name in spk:
            s = spk[name]
            ci = interval(s.get("top1_ci95"))
            lines.append(f"next-speaker top-1 {name} {pct(s['top1'])} (95% CI {ci}, {s['turns']} turns)")
    for name in ("real", "finetuned", "base"):
        if name in attr:
            a = attr[name]
            ci = interval(a.get("ci95"))
            lines.append(f"style attribution {name} {pct(a['accuracy'])} (95% CI {ci}, {a['n']} texts)")
    paired = attr.get("finetuned_vs_base")
    if paired:
        lines.append(
            f"attribution, same contexts: only finetuned right {paired['finetuned_only']}, only base right "
            f"{paired['base_only']}, exact McNemar p = {paired['p_value']:.3g}"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Per-member perplexity, next speaker and attribution; overall surface statistics; samples."""
    split, ppl, spk, attr = report["split"], report["perplexity"], report["next_speaker"], report["attribution"]
    lines = [
        f"{report['checkpoint']}",
        f"{split['perplexity_conversations']} conversations for perplexity, {split['turns']} next-speaker turns, "
        f"{split['replies']} replies per model, {split['real_messages']} real held-out messages; "
        f"{len(report['members'])} members, chance {pct(report['chance'])}",
        "",
        f"{'member':<16} {'ppl ft':>8} {'ppl base':>8} {'top1 ft':>8} {'top1 base':>9} {'top1 freq':>9} "
        f"{'top3 ft':>8} {'attr real':>9} {'attr ft':>8} {'attr base':>9}",
    ]
    for member in [None, *report["members"]]:
        ppl_ft = member_value(ppl.get("finetuned"), member, "perplexity")
        ppl_base = member_value(ppl.get("base"), member, "perplexity")
        rates = [
            (spk.get("finetuned"), "top1", 8),
            (spk.get("base"), "top1", 9),
            (spk.get("most_frequent"), "top1", 9),
            (spk.get("finetuned"), "top3", 8),
            (attr.get("real"), "accuracy", 9),
            (attr.get("finetuned"), "accuracy", 8),
            (attr.get("base"), "accuracy", 9),
        ]
        cells = " ".join(f"{pct(member_value(section, member, key)):>{width}}" for section, key, width in rates)
        lines.append(
            f"{(member or 'overall')[:16]:<16} {number(ppl_ft, '{:.2f}'):>8} {number(ppl_base, '{:.2f}'):>8} {cells}"
        )
    if "skipped" in attr:
        lines.append(f"style attribution skipped: {attr['skipped']}")
    lines += ["", *certainty_lines(report)]
    lines += [
        "",
        f"{'text':<10} {'n':>5} " + " ".join(f"{label:>{max(6, len(label))}}" for _, label, _ in SURFACE_COLUMNS),
    ]
    for name, stats in report["surface"].items():
        cells = [f"{number(stats[key], spec):>{max(6, len(label))}}" for key, label, spec in SURFACE_COLUMNS]
        lines.append(f"{name:<10} {stats['n']:>5} " + " ".join(cells))
    for sample in report["samples"][:SAMPLES_SHOWN]:
        lines.append("")
        lines.extend(f"  {a}: {t}" for a, t in sample["context"])
        for name in ("real", "finetuned", "base"):
            if name in sample:
                lines.append(f"  -> {sample['author']} ({name}): {sample[name]}")
    fooled = report["human"]["fooled_rate"]
    lines += ["", f"human fooled rate: {pct(fooled) if fooled is not None else 'not measured yet'}"]
    return "\n".join(lines)


def summary_line(summary: dict[str, Any]) -> str:
    """The headline figures in one line for chat: perplexity, next speaker, attribution, each beside its reference."""

    def num(key: str, spec: str = "{:.1f}") -> str:
        return number(summary.get(key), spec)

    ppl = f"perplexity {num('perplexity')}"
    if summary.get("perplexity_base") is not None:
        ppl += f" (base {num('perplexity_base')}, ×{num('perplexity_vs_base', '{:.2f}')})"
    speaker = f"next speaker {num('speaker_top1', 'pct')} (most frequent {num('speaker_top1_most_frequent', 'pct')})"
    attribution = f"style attribution {num('attribution', 'pct')} ("
    if summary.get("attribution_ci95_low") is not None:
        ci = interval([summary["attribution_ci95_low"], summary["attribution_ci95_high"]])
        attribution += f"95% CI {ci}, "
    if summary.get("attribution_base") is not None:
        attribution += f"base {num('attribution_base', 'pct')}"
        if summary.get("attribution_p_vs_base") is not None:
            attribution += f" at p = {summary['attribution_p_vs_base']:.2g}"
        attribution += ", "
    attribution += f"real {num('attribution_real', 'pct')}, chance {num('chance', 'pct')})"
    parts = [ppl, speaker, attribution]
    if summary.get("fooled_rate") is not None:
        parts.append(f"fooled {num('fooled_rate', 'pct')} of judges")
    return " · ".join(parts)
