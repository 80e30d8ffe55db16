"""Compile `SamplingOptions` into the `LogitsProcessorList` and keyword arguments for `model.generate`.

Nothing in transformers is patched: `generate` runs greedy (`do_sample=False`) and our list does all the
sampling, its last processor drawing the token with a seeded per-call generator (see `draw.py`). transformers'
own processors from `generation_kwargs` (min_new_tokens, no_repeat_ngram_size) run before ours; its warpers are
switched off so a model's `generation_config.json` cannot apply a second temperature or top-p.

Build a new list for every generate call: the draw is keyed on the call's prompt length and Mirostat keeps state.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from cloneus.inference.sampling.options import DEFAULT_SAMPLER_PRIORITY, TEMPERATURE_SAMPLERS, SamplingOptions

if TYPE_CHECKING:
    from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

PENALTY_SAMPLERS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "dry")
# webui gives epsilon and eta cutoffs in units of 1e-4.
CUTOFF_UNIT = 1e-4


def sampler_order(opts: SamplingOptions) -> list[str]:
    """Names in the order they run: unnamed samplers first (default order), then `sampler_priority`, with
    temperature, dynamic temperature and quadratic sampling moved to the end when `temperature_last` is set.

    Mirostat stays in the list for reference, but `build_logits_processor` always runs it last, as the drawer.
    """
    named = list(opts.sampler_priority)
    order = [name for name in DEFAULT_SAMPLER_PRIORITY if name not in named] + named
    if opts.temperature_last:
        order = [name for name in order if name not in TEMPERATURE_SAMPLERS] + list(TEMPERATURE_SAMPLERS)
    return order


def dry_breaker_ids(
    tokenizer: PreTrainedTokenizerBase, breakers: tuple[str, ...], newline_token_ids: list[int]
) -> list[int]:
    """Token ids that end a DRY sequence: each breaker string's token as it appears after text (webui encodes
    `"a" + breaker` and takes the last id), plus every newline id when "\\n" is a breaker."""
    ids = {tokenizer.encode(f"a{breaker}", add_special_tokens=False)[-1] for breaker in breakers}
    if "\n" in breakers:
        ids.update(newline_token_ids)
    return sorted(ids)


def _penalty(name: str, opts: SamplingOptions, breaker_ids: list[int]) -> LogitsProcessor | None:
    from cloneus.inference.sampling.dry import DRYPenalty
    from cloneus.inference.sampling.penalties import FrequencyPenalty, PresencePenalty, RepetitionPenalty

    last_n = opts.repetition_penalty_range
    if name == "repetition_penalty" and opts.repetition_penalty != 1:
        return RepetitionPenalty(opts.repetition_penalty, last_n)
    if name == "presence_penalty" and opts.presence_penalty != 0:
        return PresencePenalty(opts.presence_penalty, last_n)
    if name == "frequency_penalty" and opts.frequency_penalty != 0:
        return FrequencyPenalty(opts.frequency_penalty, last_n)
    if name == "dry" and opts.dry_multiplier > 0:
        return DRYPenalty(opts.dry_multiplier, opts.dry_base, opts.dry_allowed_length, breaker_ids, opts.dry_range)
    return None


def _sampler(
    name: str, opts: SamplingOptions, seed: int, protected_ids: list[int], prompt_length: int
) -> LogitsProcessor | None:
    from cloneus.inference.sampling import temperature as t
    from cloneus.inference.sampling import truncation as tr
    from cloneus.inference.sampling.xtc import XTC

    # Dynamic temperature replaces the plain temperature (webui and llama.cpp both use one or the other).
    if name == "temperature" and opts.temperature != 1 and not opts.dynamic_temperature:
        return t.Temperature(opts.temperature)
    if name == "dynamic_temperature" and opts.dynamic_temperature:
        return t.DynamicTemperature(opts.dynatemp_low, opts.dynatemp_high, opts.dynatemp_exponent)
    if name == "quadratic_sampling" and opts.smoothing_factor > 0:
        return t.QuadraticSmoothing(opts.smoothing_factor, opts.smoothing_curve)
    if name == "top_n_sigma" and opts.top_n_sigma > 0:
        return tr.TopNSigma(opts.top_n_sigma)
    if name == "top_k" and opts.top_k > 0:
        return tr.TopK(opts.top_k)
    if name == "top_p" and opts.top_p < 1:
        return tr.TopP(opts.top_p)
    if name == "typical_p" and opts.typical_p < 1:
        return tr.TypicalP(opts.typical_p)
    if name == "epsilon_cutoff" and opts.epsilon_cutoff > 0:
        return tr.EpsilonCutoff(opts.epsilon_cutoff * CUTOFF_UNIT)
    if name == "eta_cutoff" and opts.eta_cutoff > 0:
        return tr.EtaCutoff(opts.eta_cutoff * CUTOFF_UNIT)
    if name == "tfs" and opts.tfs < 1:
        return tr.TailFree(opts.tfs)
    if name == "top_a" and opts.top_a > 0:
        return tr.TopA(opts.top_a)
    if name == "min_p" and opts.min_p > 0:
        return tr.MinP(opts.min_p)
    if name == "xtc" and opts.xtc_probability > 0:
        return XTC(opts.xtc_threshold, opts.xtc_probability, protected_ids, seed, prompt_length)
    return None


def build_logits_processor(
    opts: SamplingOptions,
    *,
    eos_token_ids: list[int],
    newline_token_ids: list[int],
    prompt_length: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> LogitsProcessorList:
    """The processors for one generate call, in `sampler_order`, ending with the draw.

    Samplers at their neutral value are left out. With `do_sample=False` only the penalties and DRY are built
    and no draw, so greedy decoding picks the best penalised token. The seed actually used (random when
    `opts.seed` is -1) is the `seed` attribute of the last processor.

    Args:
        opts (`SamplingOptions`): validated options.
        eos_token_ids (`list[int]`): end-of-turn ids; XTC never removes them.
        newline_token_ids (`list[int]`): newline ids; XTC never removes them, and DRY treats them as breakers
            when "\\n" is in `dry_sequence_breakers`.
        prompt_length (`int`): `input_ids.shape[1]` passed to `generate` (padded length for a batch).
        tokenizer (`PreTrainedTokenizerBase`, *optional*): needed only when DRY is on, to turn
            `dry_sequence_breakers` into token ids.

    Raises:
        ValueError: DRY is on but no tokenizer was given.
    """
    from transformers import LogitsProcessorList

    from cloneus.inference.sampling.draw import TokenDraw
    from cloneus.inference.sampling.mirostat import MirostatV2

    breaker_ids: list[int] = []
    if opts.dry_multiplier > 0:
        if tokenizer is None:
            raise ValueError("dry_multiplier > 0 needs tokenizer= to map dry_sequence_breakers to token ids")
        breaker_ids = dry_breaker_ids(tokenizer, opts.dry_sequence_breakers, newline_token_ids)

    seed = opts.seed if opts.seed >= 0 else secrets.randbits(63)
    protected_ids = sorted(set(eos_token_ids) | set(newline_token_ids))
    processors = LogitsProcessorList()
    names = []
    for name in sampler_order(opts):
        if name in PENALTY_SAMPLERS:
            processor = _penalty(name, opts, breaker_ids)
        elif opts.do_sample and name != "mirostat":
            processor = _sampler(name, opts, seed, protected_ids, prompt_length)
        else:
            processor = None
        if processor is not None:
            processors.append(processor)
            names.append(name)
    if opts.do_sample and opts.mirostat_mode == 2:
        processors.append(MirostatV2(opts.mirostat_tau, opts.mirostat_eta, seed, prompt_length))
        names.append("mirostat")
    elif opts.do_sample:
        processors.append(TokenDraw(seed, prompt_length))
        names.append("draw")
    logger.debug("sampling order: %s (seed %s)", " -> ".join(names) or "greedy", seed)
    return processors


def generation_kwargs(opts: SamplingOptions) -> dict[str, Any]:
    """Keyword arguments for `model.generate` that go with `build_logits_processor(opts, ...)`.

    `do_sample=False` because the processor list draws the token itself; the warpers transformers would read
    from the model's generation config (temperature, top_k, top_p...) and its repetition penalty are set to None
    so they cannot apply on top of ours.
    """
    return {
        "max_new_tokens": opts.max_new_tokens,
        "min_new_tokens": opts.min_new_tokens,
        "no_repeat_ngram_size": opts.no_repeat_ngram_size,
        "do_sample": False,
        "num_beams": 1,
        "temperature": None,
        "top_k": None,
        "top_p": None,
        "min_p": None,
        "typical_p": None,
        "epsilon_cutoff": None,
        "eta_cutoff": None,
        "repetition_penalty": None,
    }
