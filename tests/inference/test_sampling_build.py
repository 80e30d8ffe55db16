"""build_logits_processor / generation_kwargs: order, neutral values skipped, greedy, and seeded generation with
the tiny model through `model.generate(logits_processor=..., **generation_kwargs(opts))`."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cloneus.inference.sampling import SamplingOptions, build_logits_processor, generation_kwargs, sampler_order
from cloneus.inference.sampling.draw import TokenDraw
from cloneus.inference.sampling.dry import DRYPenalty
from cloneus.inference.sampling.mirostat import MirostatV2

# Every sampler away from its neutral value.
EVERYTHING = {
    "repetition_penalty": 1.1,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.1,
    "dry_multiplier": 0.8,
    "temperature": 0.9,
    "smoothing_factor": 0.3,
    "top_n_sigma": 2.0,
    "top_k": 50,
    "top_p": 0.9,
    "typical_p": 0.95,
    "epsilon_cutoff": 3,
    "eta_cutoff": 3,
    "tfs": 0.95,
    "top_a": 0.1,
    "min_p": 0.02,
    "xtc_probability": 0.5,
}


class FakeTokenizer:
    """Maps each character to one id (its code point), enough to turn DRY breaker strings into ids."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def build(opts: SamplingOptions, **kwargs):
    args = {"eos_token_ids": [2], "newline_token_ids": [10], "prompt_length": 3, "tokenizer": FakeTokenizer()}
    return build_logits_processor(opts, **(args | kwargs))


def names(processors) -> list[str]:
    return [type(p).__name__ for p in processors]


class TestBuildLogitsProcessor:
    def test_default_order_ends_with_the_draw(self):
        processors = build(SamplingOptions(**EVERYTHING))
        assert names(processors) == [
            "RepetitionPenalty",
            "PresencePenalty",
            "FrequencyPenalty",
            "DRYPenalty",
            "Temperature",
            "QuadraticSmoothing",
            "TopNSigma",
            "TopK",
            "TopP",
            "TypicalP",
            "EpsilonCutoff",
            "EtaCutoff",
            "TailFree",
            "TopA",
            "MinP",
            "XTC",
            "TokenDraw",
        ]

    def test_neutral_samplers_are_skipped(self):
        opts = SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
        assert names(build(opts)) == ["TokenDraw"]

    def test_temperature_last_moves_temperature_samplers_behind_truncation(self):
        opts = SamplingOptions(temperature_last=True, smoothing_factor=0.5, xtc_probability=0.5)
        assert names(build(opts)) == ["TopK", "TopP", "MinP", "XTC", "Temperature", "QuadraticSmoothing", "TokenDraw"]

    def test_sampler_priority_reorders_and_unnamed_run_first(self):
        opts = SamplingOptions(sampler_priority=["min_p", "temperature"], repetition_penalty=1.2)
        assert names(build(opts)) == ["RepetitionPenalty", "TopK", "TopP", "MinP", "Temperature", "TokenDraw"]
        assert sampler_order(opts)[-2:] == ["min_p", "temperature"]

    def test_dynamic_temperature_replaces_temperature(self):
        assert "Temperature" not in names(build(SamplingOptions(dynamic_temperature=True)))
        assert "DynamicTemperature" in names(build(SamplingOptions(dynamic_temperature=True)))

    def test_mirostat_draws_last_wherever_it_is_listed(self):
        opts = SamplingOptions(mirostat_mode=2, sampler_priority=["mirostat", "min_p"], xtc_probability=0.5)
        processors = build(opts)
        assert names(processors) == ["Temperature", "TopK", "TopP", "XTC", "MinP", "MirostatV2"]
        assert isinstance(processors[-1], MirostatV2)
        assert not any(isinstance(p, TokenDraw) for p in processors)

    def test_greedy_keeps_penalties_and_drops_samplers(self):
        opts = SamplingOptions(do_sample=False, **EVERYTHING)
        assert names(build(opts)) == ["RepetitionPenalty", "PresencePenalty", "FrequencyPenalty", "DRYPenalty"]

    def test_epsilon_and_eta_are_given_in_units_of_1e4(self):
        processors = build(SamplingOptions(epsilon_cutoff=3, eta_cutoff=5))
        epsilon, eta = processors[3:5]
        assert (epsilon.epsilon, eta.eta) == (pytest.approx(3e-4), pytest.approx(5e-4))

    def test_dry_breakers_become_token_ids_with_newline_ids(self):
        dry = next(p for p in build(SamplingOptions(dry_multiplier=1.0)) if isinstance(p, DRYPenalty))
        assert dry.breaker_ids.tolist() == sorted({10, ord(":"), ord('"'), ord("*")})

    def test_dry_without_tokenizer_is_a_clear_error(self):
        with pytest.raises(ValueError, match="needs tokenizer="):
            build(SamplingOptions(dry_multiplier=1.0), tokenizer=None)

    def test_random_seed_is_reported_on_the_last_processor(self):
        seeds = {build(SamplingOptions(seed=-1))[-1].seed for _ in range(3)}
        assert len(seeds) == 3
        assert build(SamplingOptions(seed=42))[-1].seed == 42


class TestGenerationKwargs:
    def test_greedy_with_our_lengths_and_hf_warpers_off(self):
        kwargs = generation_kwargs(SamplingOptions(max_new_tokens=12, min_new_tokens=3, no_repeat_ngram_size=4))
        assert kwargs["do_sample"] is False
        assert (kwargs["max_new_tokens"], kwargs["min_new_tokens"], kwargs["no_repeat_ngram_size"]) == (12, 3, 4)
        assert all(kwargs[key] is None for key in ("temperature", "top_k", "top_p", "repetition_penalty"))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generation_config.temperature = 0.01  # a config default that must not leak into our sampling
    model.generation_config.do_sample = True
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def generate(tiny, opts: SamplingOptions, prompt: str = "hello there, how are you doing today?") -> list[list[int]]:
    model, tokenizer = tiny
    ids = tokenizer([prompt, prompt], return_tensors="pt").input_ids
    processors = build_logits_processor(
        opts,
        eos_token_ids=[tokenizer.eos_token_id],
        newline_token_ids=tokenizer.encode("\n", add_special_tokens=False),
        prompt_length=ids.shape[1],
        tokenizer=tokenizer,
    )
    with torch.no_grad():
        out = model.generate(
            ids, logits_processor=processors, pad_token_id=tokenizer.pad_token_id, **generation_kwargs(opts)
        )
    return out[:, ids.shape[1] :].tolist()


class TestSeededGeneration:
    def test_same_seed_same_tokens_different_seed_different_tokens(self, tiny):
        opts = SamplingOptions(seed=1234, max_new_tokens=8, **EVERYTHING)
        first = generate(tiny, opts)
        assert first == generate(tiny, opts)
        assert first != generate(tiny, opts.merged(seed=4321))
        assert first[0] != first[1]  # rows of one batch draw independently

    def test_mirostat_generation_is_reproducible(self, tiny):
        opts = SamplingOptions(seed=7, max_new_tokens=8, mirostat_mode=2, mirostat_tau=3.0)
        assert generate(tiny, opts) == generate(tiny, opts)

    def test_greedy_options_decode_greedily(self, tiny):
        opts = SamplingOptions(do_sample=False, max_new_tokens=8)
        assert generate(tiny, opts) == generate(tiny, opts.merged(seed=99))

    def test_min_new_tokens_holds_back_eos(self, tiny):
        model, tokenizer = tiny
        eos = tokenizer.eos_token_id

        def favour_eos(input_ids, scores):
            """Make end-of-turn all but certain (unless transformers already banned it)."""
            return scores.index_add(1, torch.tensor([eos]), torch.full((scores.shape[0], 1), 100.0))

        ids = tokenizer(["hello there"], return_tensors="pt").input_ids
        lengths = []
        for min_new in (0, 6):
            opts = SamplingOptions(seed=3, max_new_tokens=6, min_new_tokens=min_new)
            processors = build_logits_processor(
                opts, eos_token_ids=[eos], newline_token_ids=[], prompt_length=ids.shape[1]
            )
            processors.insert(0, favour_eos)
            with torch.no_grad():
                out = model.generate(
                    ids, logits_processor=processors, pad_token_id=tokenizer.pad_token_id, **generation_kwargs(opts)
                )
            lengths.append(out.shape[1] - ids.shape[1])
            assert (eos in out[0, ids.shape[1] :].tolist()) == (min_new == 0)
        assert lengths == [1, 6]
