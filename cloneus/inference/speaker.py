"""Choosing who speaks next from next-speaker probabilities.

Modes, as the bot and the chat CLI name them:

- `weighted`: draw an author with their probability (the group's natural rhythm).
- `top`: the most likely author.
- `uniform`: any author with equal chance; needs no model call.
- `inverse`: draw an author with weight 1 - probability, favouring the quiet members (the old server's `irbest`).
- `lurk` with a threshold: the most likely author only when their probability reaches the threshold, else
  nobody (None): the clones stay quiet unless someone is clearly due to talk.
"""

from __future__ import annotations

import math
import random
import re

LURK_PATTERN = re.compile(r"^lurk\s*\(\s*([0-9]*\.?[0-9]+)\s*\)$")
MODES = ("weighted", "top", "uniform", "inverse", "lurk")

Mode = str | tuple[str, float]


def parse_mode(mode: Mode, threshold: float | None = None) -> tuple[str, float | None]:
    """Normalise `"top"`, `("lurk", 0.5)`, `"lurk(0.5)"` or `"lurk"` + `threshold` into (name, threshold).

    Raises:
        ValueError: unknown mode, or lurk without a threshold in [0, 1].
    """
    if isinstance(mode, tuple):
        if len(mode) != 2:
            raise ValueError(f"mode {mode!r}: expected a (name, threshold) pair such as ('lurk', 0.5)")
        mode, threshold = mode
    name = str(mode).strip().lower()
    if m := LURK_PATTERN.match(name):
        name, threshold = "lurk", float(m.group(1))
    if name not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)} (lurk as 'lurk(0.5)' or ('lurk', 0.5))")
    if name == "lurk":
        if threshold is None or not 0 <= float(threshold) <= 1:
            raise ValueError(f"mode 'lurk' needs a threshold in [0, 1], got {threshold!r}")
        return name, float(threshold)
    return name, None


def choose_author(probs: dict[str, float], mode: str, threshold: float | None, rng: random.Random) -> str | None:
    """Pick an author from normalised probabilities according to a parsed mode."""
    if not probs:
        return None
    names = list(probs)
    if mode == "uniform":
        return rng.choice(names)
    if mode == "weighted":
        return rng.choices(names, weights=[probs[n] for n in names])[0]
    if mode == "inverse":
        weights = [1 - probs[n] for n in names]
        # A lone candidate has weight 0; it is still the only one who can speak.
        return rng.choices(names, weights=weights)[0] if sum(weights) > 0 else rng.choice(names)
    best = max(names, key=probs.__getitem__)
    if mode == "lurk" and probs[best] < threshold:
        return None
    return best


def normalise(scores: dict[str, float]) -> dict[str, float]:
    """Softmax of log-probabilities over the candidates."""
    if not scores:
        return {}
    top = max(scores.values())
    weights = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}
