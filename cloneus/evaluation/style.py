"""Style attribution: an author classifier that says whose writing a text is.

Character n-grams (inside word boundaries) weighted by TF-IDF, then a logistic regression, fit on the real train
messages of the cloned members only. It judges held-out real messages (how far style alone identifies a member:
the ceiling), the finetuned clone's replies and the base model's replies. A clone that writes like the member it
plays is attributed to that member about as often as that member's real messages are. Classes are balanced, so
a prolific member does not win by default and chance is 1/members.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from cloneus.evaluation.intervals import wilson_interval

MAX_TRAIN_MESSAGES = 20000  # bounds fit time (~seconds on a CPU); sampled evenly at random past that
NGRAM_RANGE = (2, 4)
MAX_FEATURES = 100000
SEED = 0


class StyleClassifier:
    """Char n-gram TF-IDF + logistic regression over the given members.

    Args:
        texts (`Sequence[str]`): real training messages.
        authors (`Sequence[str]`): the author of each; messages of anyone outside `members` are ignored.
        members (`Sequence[str]`): the classes. At least two must have a non-empty message.

    Raises:
        ValueError: fewer than two members have training messages.
    """

    def __init__(self, texts: Sequence[str], authors: Sequence[str], members: Sequence[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        wanted = set(members)
        pairs = [(t, a) for t, a in zip(texts, authors, strict=True) if a in wanted and t.strip()]
        if len(pairs) > MAX_TRAIN_MESSAGES:
            pairs = random.Random(SEED).sample(pairs, MAX_TRAIN_MESSAGES)
        self.members = sorted({a for _, a in pairs})
        if len(self.members) < 2:
            raise ValueError(f"style attribution needs training messages of two members; found {self.members}")
        self.train_messages = len(pairs)
        self.pipeline = make_pipeline(
            TfidfVectorizer(
                analyzer="char_wb", ngram_range=NGRAM_RANGE, sublinear_tf=True, min_df=2, max_features=MAX_FEATURES
            ),
            LogisticRegression(max_iter=1000, class_weight="balanced"),
        )
        self.pipeline.fit([t for t, _ in pairs], [a for _, a in pairs])

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely member for each text."""
        return list(self.pipeline.predict(list(texts))) if texts else []

    def correct(self, texts: Sequence[str], authors: Sequence[str]) -> list[bool]:
        """Whether each text is attributed to its stated author (never, for an author outside the classes)."""
        return [guess == author for guess, author in zip(self.predict(texts), authors, strict=True)]

    def attribution(
        self, texts: Sequence[str], authors: Sequence[str], correct: Sequence[bool] | None = None
    ) -> dict[str, Any]:
        """How often each text is attributed to its stated author, per member and overall.

        `correct` is `self.correct(texts, authors)` when the caller already has it (the paired test needs it too).

        Returns:
            `dict`: `accuracy`, its Wilson `ci95` and `n` overall, `chance` (1/members), and `members` mapping each
            member to its own `accuracy` and `n` (None accuracy when it has no text here).
        """
        per = {m: [0, 0] for m in self.members}
        for right, author in zip(
            correct if correct is not None else self.correct(texts, authors), authors, strict=True
        ):
            if author in per:
                per[author][0] += right
                per[author][1] += 1
        hits, n = sum(h for h, _ in per.values()), sum(c for _, c in per.values())
        return {
            "accuracy": hits / n if n else None,
            "ci95": wilson_interval(hits, n),
            "n": n,
            "chance": 1 / len(self.members),
            "members": {m: {"accuracy": h / c if c else None, "n": c} for m, (h, c) in per.items()},
        }
