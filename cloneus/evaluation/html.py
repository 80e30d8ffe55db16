"""eval.html: one self-contained page (chart inline as base64 PNG) with the per-member table and samples.

Every piece of chat text and every name is escaped: the page shows what members wrote, and a message such as
`<script>` must render as text, not run.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from cloneus.evaluation.report import SURFACE_COLUMNS, certainty_lines, member_value, number, pct

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td.t,th.t{text-align:left;vertical-align:top;white-space:pre-wrap;max-width:28em}
.ctx{color:#666;font-size:90%}img{max-width:100%}.note{color:#555}
"""


def _row(cells: list[str], header: bool = False, text_cols: int = 1) -> str:
    tag = "th" if header else "td"
    return (
        "<tr>"
        + "".join(
            f'<{tag} class="t">{c}</{tag}>' if i < text_cols else f"<{tag}>{c}</{tag}>" for i, c in enumerate(cells)
        )
        + "</tr>"
    )


def _member_table(report: dict[str, Any]) -> str:
    ppl, spk, attr = report["perplexity"], report["next_speaker"], report["attribution"]
    head = [
        "member",
        "ppl finetuned",
        "ppl base",
        "top-1 finetuned",
        "top-1 base",
        "top-1 most frequent",
        "top-3 finetuned",
        "attribution real",
        "attribution finetuned",
        "attribution base",
        "replies",
    ]
    rows = [_row(head, header=True)]
    for member in [None, *report["members"]]:
        rows.append(
            _row(
                [
                    escape(member or "overall"),
                    number(member_value(ppl.get("finetuned"), member, "perplexity"), "{:.2f}"),
                    number(member_value(ppl.get("base"), member, "perplexity"), "{:.2f}"),
                    pct(member_value(spk.get("finetuned"), member, "top1")),
                    pct(member_value(spk.get("base"), member, "top1")),
                    pct(member_value(spk.get("most_frequent"), member, "top1")),
                    pct(member_value(spk.get("finetuned"), member, "top3")),
                    pct(member_value(attr.get("real"), member, "accuracy")),
                    pct(member_value(attr.get("finetuned"), member, "accuracy")),
                    pct(member_value(attr.get("base"), member, "accuracy")),
                    str(member_value(attr.get("finetuned"), member, "n") or 0),
                ]
            )
        )
    return "<table>" + "".join(rows) + "</table>"


def _surface_table(report: dict[str, Any]) -> str:
    rows = [
        _row(["text", "member", "n", *(escape(label) for _, label, _ in SURFACE_COLUMNS)], header=True, text_cols=2)
    ]
    for member in [None, *report["members"]]:
        for name, stats in report["surface"].items():
            s = stats if member is None else stats["members"].get(member, {"n": 0})
            cells = [number(s.get(key), spec) for key, _, spec in SURFACE_COLUMNS]
            rows.append(_row([escape(name), escape(member or "all"), str(s["n"]), *cells], text_cols=2))
    return "<table>" + "".join(rows) + "</table>"


def _samples_table(report: dict[str, Any]) -> str:
    names = [n for n in ("real", "finetuned", "base") if report["samples"] and n in report["samples"][0]]
    rows = [_row(["context", "author", *names], header=True, text_cols=2 + len(names))]
    for s in report["samples"]:
        context = "<br>".join(f"<b>{escape(a)}</b>: {escape(t)}" for a, t in s["context"])
        cells = [f'<span class="ctx">{context}</span>', escape(s["author"]), *(escape(s[n]) for n in names)]
        rows.append(_row(cells, text_cols=len(cells)))
    return "<table>" + "".join(rows) + "</table>"


def _human_section(report: dict[str, Any]) -> str:
    human = report["human"]
    if human["fooled_rate"] is None:
        body = "Not measured yet: people have not judged real against clone messages for this checkpoint."
    else:
        source = escape(str(human["source"]))
        body = f"Fooled rate {pct(human['fooled_rate'])} over {human['judgements']} judgements ({source})."
    return f'<section id="human"><h2>Human judges</h2><p class="note">{body}</p></section>'


def render_html(report: dict[str, Any], png: bytes) -> str:
    """The whole page as a string."""
    split = report["split"]
    chart = base64.b64encode(png).decode("ascii")
    intro = (
        f"{split['perplexity_conversations']} held-out conversations for perplexity, {split['turns']} next-speaker "
        f"turns, {split['replies']} replies per model, {split['real_messages']} real held-out messages. "
        f"{len(report['members'])} members: chance attribution is {pct(report['chance'])}."
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>CloneUs eval</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Eval of {escape(report['checkpoint'])}</h1>",
        f"<p class='note'>{escape(intro)} Written {escape(report['created'])}.</p>",
        f"<img alt='per-member chart' src='data:image/png;base64,{chart}'>",
        "<h2>Per member</h2>",
        _member_table(report),
        "<ul class='note'>" + "".join(f"<li>{escape(line)}</li>" for line in certainty_lines(report)) + "</ul>",
        "<h2>Surface statistics</h2>",
        _surface_table(report),
        _human_section(report),
        "<h2>Samples: real, finetuned clone and base model on the same context</h2>",
        _samples_table(report),
        "</body></html>",
    ]
    return "\n".join(parts)
