"""The prefix KV cache: reuse across calls must never change what greedy decoding produces."""

from __future__ import annotations

import pytest
import torch

from cloneus import Cloneus
from cloneus.config import InferenceConfig
from cloneus.inference.prefix_cache import PrefixCache, common_prefix_length
from tests.inference.conftest import HISTORY

GREEDY = {"do_sample": False, "max_new_tokens": 10}
TURNS = ["bob", "carol", "alice", "bob"]


def load(checkpoint, tokens: int) -> Cloneus:
    return Cloneus.from_pretrained(checkpoint, device="cpu", inference=InferenceConfig(prefix_cache_tokens=tokens))


@pytest.fixture(scope="module")
def pair(checkpoint):
    """The same checkpoint twice: with the prefix cache, and with it off."""
    return load(checkpoint, 16_384), load(checkpoint, 0)


class TestPrefixCacheUnit:
    def test_common_prefix_length(self):
        assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
        assert common_prefix_length([1, 2], [1, 2, 3]) == 2
        assert common_prefix_length([], [1]) == 0

    def test_fork_is_independent_of_the_stored_cache(self):
        from transformers import DynamicCache

        keys = torch.arange(2 * 1 * 5 * 3, dtype=torch.float32).reshape(2, 1, 5, 3)[:1]  # (B=1, H, T=5, D)
        stored = DynamicCache(ddp_cache_data=[(keys, keys + 1)])
        prefix = PrefixCache(max_tokens=100)
        prefix.store([1, 2, 3, 4, 5], stored)
        fork = prefix.fork(3, batch_size=2)
        fork.update(torch.zeros(2, 1, 4, 3), torch.zeros(2, 1, 4, 3), layer_idx=0)
        assert fork.get_seq_length() == 7
        assert prefix.match([1, 2, 3, 4, 5, 6]) == 5
        torch.testing.assert_close(prefix.fork(5).layers[0].keys, keys)

    def test_store_is_bounded(self):
        from transformers import DynamicCache

        keys = torch.zeros(1, 1, 10, 2)
        prefix = PrefixCache(max_tokens=4)
        prefix.store(list(range(10)), DynamicCache(ddp_cache_data=[(keys, keys)]))
        assert len(prefix) == 4 and prefix.fork(4).get_seq_length() == 4


class TestPrefixCacheReuse:
    def test_growing_history_greedy_output_is_identical(self, pair):
        cached, plain = pair
        history = list(HISTORY)
        reused = []
        for author in TURNS:
            reply = cached.generate(history, author, **GREEDY)
            reused.append(cached.backend.last_reused)
            assert reply == plain.generate(history, author, **GREEDY)
            assert plain.backend.last_reused == 0
            history.append((author, reply or "ok"))
        # After the first call, every call reuses the system prompt and history it has seen before.
        assert all(r > 20 for r in reused[1:])

    def test_stream_and_seed_text_through_the_cache(self, pair):
        cached, plain = pair
        for seed_text in (None, "so", None):
            text = "".join(cached.stream_generate(HISTORY, "carol", seed_text=seed_text, **GREEDY))
            assert text == plain.generate(HISTORY, "carol", seed_text=seed_text, **GREEDY)

    def test_batch_and_author_probabilities_match_uncached(self, pair):
        cached, plain = pair
        cached.generate(HISTORY, "bob", **GREEDY)  # warm the cache with this history
        authors = ["alice", "bob", "carol", "bob"]
        assert cached.batch_generate(HISTORY, authors, **GREEDY) == plain.batch_generate(HISTORY, authors, **GREEDY)
        assert cached.backend.last_reused > 20
        probs, expected = cached.author_probabilities(HISTORY), plain.author_probabilities(HISTORY)
        assert cached.backend.last_reused > 20
        assert probs.keys() == expected.keys()
        torch.testing.assert_close(list(probs.values()), list(expected.values()), atol=1e-5, rtol=1e-4)

    def test_small_bound_still_correct(self, checkpoint, pair):
        _, plain = pair
        small = load(checkpoint, 16)
        history = list(HISTORY)
        for author in TURNS[:2]:
            reply = small.generate(history, author, **GREEDY)
            assert reply == plain.generate(history, author, **GREEDY)
            assert len(small.backend.prefix) <= 16
            history.append((author, reply or "ok"))
