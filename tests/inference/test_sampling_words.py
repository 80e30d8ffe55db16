"""Word rules: every spelling of a word gets the rule, the local backend never generates a banned word and
prefers a boosted one, and the openai backend sends single-token `logit_bias` or refuses clearly."""

from __future__ import annotations

import pytest

from cloneus.errors import ConfigError
from cloneus.inference.sampling import SamplingOptions
from cloneus.inference.sampling.words import LOGIT_BAN, logit_bias, spellings, token_variants
from tests.inference.conftest import HISTORY

GREEDY = {"do_sample": False, "max_new_tokens": 6}


class TestSpellings:
    def test_leading_space_and_capitalised_forms(self):
        assert spellings("pizza") == ["pizza", " pizza", "Pizza", " Pizza"]
        assert spellings("Bob") == ["Bob", " Bob", "bob", " bob"]

    def test_variants_are_distinct_token_sequences(self, clo):
        variants = token_variants(clo.tokenizer, "hello")
        assert len(variants) == len({tuple(v) for v in variants}) >= 2


class TestLocalBackend:
    def test_a_banned_word_is_never_generated_in_any_spelling(self, clo):
        # A strong boost makes the tiny random model write the word; the ban must still win, in every spelling.
        boost = {"gym": 20.0, "Gym": 20.0}
        assert "gym" in clo.generate(HISTORY, "bob", **GREEDY, word_bias=boost).lower()
        banned = clo.generate(HISTORY, "bob", **GREEDY, word_bias=boost, banned_words=["gym"])
        assert "gym" not in banned.lower()
        ids = clo.tokenizer.encode(banned, add_special_tokens=False)
        for variant in token_variants(clo.tokenizer, "gym"):
            assert all(ids[i : i + len(variant)] != variant for i in range(len(ids)))

    def test_a_boosted_word_is_preferred(self, clo):
        target = "gym"
        assert target not in clo.generate(HISTORY, "bob", **GREEDY)
        boosted = clo.generate(HISTORY, "bob", **GREEDY, word_bias={target: 20.0})
        assert target in boosted.lower()


class TestOptions:
    def test_bias_out_of_range_and_empty_words_are_refused(self):
        with pytest.raises(ConfigError, match="outside"):
            SamplingOptions.parse({"word_bias": {"x": 50}})
        with pytest.raises(ConfigError, match="non-empty"):
            SamplingOptions.parse({"banned_words": ["ok", " "]})


class TestLogitBias:
    def test_single_token_spellings_become_logit_bias(self, clo):
        tok = clo.tokenizer
        single = next(w for w in ("the", "a", "hi", "is") if any(len(v) == 1 for v in token_variants(tok, w)))
        bias = logit_bias(SamplingOptions(banned_words=(single,), word_bias={}), tok)
        ids = {str(v[0]) for v in token_variants(tok, single) if len(v) == 1}
        assert bias == dict.fromkeys(ids, LOGIT_BAN)

    def test_a_word_without_a_single_token_spelling_is_refused(self, clo):
        with pytest.raises(ConfigError, match="single tokens only"):
            logit_bias(SamplingOptions(banned_words=("supercalifragilistic",)), clo.tokenizer)

    def test_the_openai_request_carries_it(self, clo):
        from cloneus.inference.backends.openai import OpenAIBackend

        backend = OpenAIBackend("http://127.0.0.1:9/v1", "m", "vllm", tokenizer=clo.tokenizer)
        opts = SamplingOptions(word_bias={"hi": 3.0})
        body = backend._body("prompt", opts, clo._stops)
        assert body["logit_bias"] == logit_bias(opts, clo.tokenizer) and body["logit_bias"]
        assert "logit_bias" not in backend._body("prompt", SamplingOptions(), clo._stops)
