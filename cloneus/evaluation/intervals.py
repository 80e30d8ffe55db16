"""How sure a rate is: Wilson intervals for one rate, an exact McNemar test for two models on the same items.

Eval budgets are small (40 replies, a few hundred turns), so a rate like "25% attributed" can be a handful of
hits. The interval says how far the true rate may be from it; the paired test says whether the finetuned model
beats the base model on the same contexts or only seems to. Both are closed-form, so they cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(hits: int, n: int, z: float = Z_95) -> list[float] | None:
    """The Wilson score interval of `hits`/`n`: unlike the normal one, it stays inside [0, 1] at 0 or n hits."""
    if n <= 0:
        return None
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return [max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)]


def mcnemar_exact(first_only: int, second_only: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, each discordant item is a fair coin."""
    n = first_only + second_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(first_only, second_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(
    first: str, first_correct: Sequence[bool], second: str, second_correct: Sequence[bool]
) -> dict[str, float]:
    """How many items only `first` got right, only `second` got right, and the McNemar p-value of that split.

    Returns:
        `dict`: `{first}_only`, `{second}_only` (counts) and `p_value`.
    """
    if len(first_correct) != len(second_correct):
        counts = f"{len(first_correct)} against {len(second_correct)}"
        raise ValueError(f"a paired comparison needs the same items: {counts}")
    pairs = list(zip(first_correct, second_correct, strict=True))
    first_only = sum(a and not b for a, b in pairs)
    second_only = sum(b and not a for a, b in pairs)
    p_value = mcnemar_exact(first_only, second_only)
    return {f"{first}_only": first_only, f"{second}_only": second_only, "p_value": p_value}
