"""Batched streaming: each row's pieces join into exactly its `batch_generate` reply, seeds first, and arrive
token by token (a strong word bias makes the tiny random model write whole words, so pieces are visible)."""

from __future__ import annotations

import pytest

from tests.inference.conftest import HISTORY

GREEDY = {"do_sample": False, "max_new_tokens": 8}
WORDY = {**GREEDY, "word_bias": {"gym": 20.0}}


def joined(pieces, rows: int) -> list[str]:
    texts = [""] * rows
    for row, piece in pieces:
        texts[row] += piece
    return texts


@pytest.mark.parametrize("options", [GREEDY, WORDY], ids=["raw", "wordy"])
@pytest.mark.parametrize("seed", [None, "well,"])
def test_rows_join_into_the_batch_replies(clo, seed, options):
    authors = ["alice", "bob", "carol"]
    expected = clo.batch_generate(HISTORY, authors, [seed] * 3, **options)
    pieces = list(clo.stream_batch(HISTORY, authors, seed, **options))
    assert joined(pieces, 3) == expected
    if seed:
        assert pieces[:3] == [(0, seed), (1, seed), (2, seed)]


def test_pieces_arrive_per_token_for_every_row(clo):
    pieces = list(clo.stream_batch(HISTORY, ["alice", "bob"], None, **WORDY))
    assert all(sum(1 for row, _ in pieces if row == r) > 3 for r in (0, 1))
