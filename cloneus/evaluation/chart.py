"""eval.png: per-member bars for the three headline figures, real vs finetuned vs base."""

from __future__ import annotations

import io
from typing import Any

COLOURS = {"real": "#4c72b0", "finetuned": "#dd8452", "base": "#8c8c8c", "most_frequent": "#c4ad66"}


def _bars(ax, groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> None:
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name, color=COLOURS.get(name))
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def _member_values(section: dict[str, Any], groups: list[str], key: str) -> list[float | None]:
    return [section.get(key) if g == "overall" else section["members"].get(g, {}).get(key) for g in groups]


def render_chart(report: dict[str, Any]) -> bytes:
    """The PNG bytes: attribution accuracy (with chance), next-speaker top-1, held-out perplexity; per member."""
    from matplotlib.figure import Figure

    groups = ["overall", *report["members"]]
    fig = Figure(figsize=(max(8, 1.1 * len(groups) * 3), 4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    attr = report["attribution"]
    models = [m for m in ("real", "finetuned", "base") if m in attr]
    _bars(
        axes[0],
        groups,
        {m: _member_values(attr[m], groups, "accuracy") for m in models},
        "style attribution",
        "accuracy",
    )
    if report["chance"] is not None:
        axes[0].axhline(report["chance"], color="black", linestyle="--", linewidth=1)
    spk = report["next_speaker"]
    models = [m for m in ("finetuned", "base", "most_frequent") if m in spk]
    _bars(
        axes[1], groups, {m: _member_values(spk[m], groups, "top1") for m in models}, "next speaker top-1", "accuracy"
    )
    ppl = report["perplexity"]
    models = [m for m in ("finetuned", "base") if m in ppl]
    _bars(
        axes[2],
        groups,
        {m: _member_values(ppl[m], groups, "perplexity") for m in models},
        "held-out perplexity",
        "ppl",
    )
    axes[2].set_yscale("log")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
