"""`SamplingOptions` → request fields of an OpenAI-compatible `/v1/completions` server.

Servers differ in which samplers they implement, and most silently ignore a field they don't know, so a sampler
that a server lacks would vanish without a trace. Instead every sampler that is *active* (away from its off
value) must be in the server kind's supported set, or the request is refused with the list of offenders and
what to set them to.

- `vllm`: temperature, top_p, top_k, min_p, repetition_penalty, presence/frequency penalty, seed, max_tokens,
  min_tokens (vLLM's `SamplingParams`).
- `llamacpp`: llama.cpp's server adds typical_p, tfs_z, top_n_sigma, mirostat, dry_*, xtc_*, dynatemp_*,
  penalty ranges (`repeat_last_n`), and the sampler order (`samplers`). Its defaults are not neutral (top_k 40,
  top_p 0.95, min_p 0.05), so every mapped field is always sent.
- `generic`: the OpenAI API itself: temperature, top_p, presence/frequency penalty, seed, max_tokens.

A vLLM server started with our logits-processor plugin (`cloneus.serving.vllm_plugin`, set
`inference.vllm_sampler_plugin: true`) runs every sampler of ours. A request that needs one vLLM lacks is then
sent with vLLM's own samplers neutral and greedy, and the whole option set in `vllm_xargs`: the plugin applies
our processor list, draw included, so the reply is what the local backend would generate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloneus.errors import ConfigError

if TYPE_CHECKING:
    from cloneus.inference.sampling import SamplingOptions

_COMMON = {"temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"}
SUPPORTED: dict[str, frozenset[str]] = {
    "generic": frozenset(_COMMON),
    "vllm": frozenset(_COMMON | {"top_k", "min_p", "repetition_penalty", "min_new_tokens"}),
    "llamacpp": frozenset(
        _COMMON
        | {"top_k", "min_p", "repetition_penalty", "repetition_penalty_range", "typical_p", "tfs", "top_n_sigma"}
        | {"mirostat", "xtc", "dry", "dynamic_temperature", "temperature_last", "sampler_priority"}
    ),
}
# Every option our own processors implement: what a vLLM server with the plugin supports.
PLUGIN_SUPPORTED = frozenset(SUPPORTED["vllm"] | SUPPORTED["llamacpp"]) | {
    "smoothing_factor",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_a",
    "no_repeat_ngram_size",
}
# The `vllm_xargs` key that carries the JSON options to the plugin.
PLUGIN_XARG = "cloneus_sampling"
# Our sampler names → llama.cpp's `samplers` entries (those it has).
LLAMACPP_SAMPLERS = {
    "dry": "dry",
    "top_n_sigma": "top_n_sigma",
    "top_k": "top_k",
    "typical_p": "typ_p",
    "top_p": "top_p",
    "min_p": "min_p",
    "xtc": "xtc",
    "temperature": "temperature",
}
OFF_VALUES = {
    "smoothing_factor": "0",
    "top_n_sigma": "0",
    "top_k": "0",
    "top_p": "1",
    "typical_p": "1",
    "epsilon_cutoff": "0",
    "eta_cutoff": "0",
    "tfs": "1",
    "top_a": "0",
    "min_p": "0",
    "mirostat": "mirostat_mode=0",
    "xtc": "xtc_probability=0",
    "dry": "dry_multiplier=0",
    "dynamic_temperature": "false",
    "temperature_last": "false",
    "sampler_priority": "the default order",
    "repetition_penalty": "1",
    "repetition_penalty_range": "0 (whole context)",
    "presence_penalty": "0",
    "frequency_penalty": "0",
    "no_repeat_ngram_size": "0",
    "min_new_tokens": "0",
    "seed": "-1",
}


def active_samplers(opts: SamplingOptions) -> list[str]:
    """Names of the options that change what this request generates (off values excluded)."""
    from cloneus.inference.sampling.options import DEFAULT_SAMPLER_PRIORITY

    active = []
    if opts.do_sample:
        checks = {
            "temperature": True,
            "dynamic_temperature": opts.dynamic_temperature,
            "smoothing_factor": opts.smoothing_factor > 0,
            "top_n_sigma": opts.top_n_sigma > 0,
            "top_k": opts.top_k > 0,
            "top_p": opts.top_p < 1,
            "typical_p": opts.typical_p < 1,
            "epsilon_cutoff": opts.epsilon_cutoff > 0,
            "eta_cutoff": opts.eta_cutoff > 0,
            "tfs": opts.tfs < 1,
            "top_a": opts.top_a > 0,
            "min_p": opts.min_p > 0,
            "mirostat": opts.mirostat_mode == 2,
            "xtc": opts.xtc_probability > 0,
            "temperature_last": opts.temperature_last,
            "sampler_priority": tuple(opts.sampler_priority) != DEFAULT_SAMPLER_PRIORITY,
            "seed": opts.seed != -1,
        }
        active += [name for name, on in checks.items() if on]
    penalties = {
        "repetition_penalty": opts.repetition_penalty > 1,
        "presence_penalty": opts.presence_penalty != 0,
        "frequency_penalty": opts.frequency_penalty != 0,
    }
    active += [name for name, on in penalties.items() if on]
    if any(penalties.values()) and opts.repetition_penalty_range != 0:
        active.append("repetition_penalty_range")
    if opts.dry_multiplier > 0:
        active.append("dry")
    if opts.no_repeat_ngram_size > 0:
        active.append("no_repeat_ngram_size")
    if opts.min_new_tokens > 0:
        active.append("min_new_tokens")
    return active


def plugin_needed(opts: SamplingOptions, server_kind: str) -> bool:
    """Whether `opts` has an active sampler that the server kind itself lacks."""
    return any(name not in SUPPORTED[server_kind] for name in active_samplers(opts))


def check_supported(opts: SamplingOptions, server_kind: str, *, plugin: bool = False) -> None:
    """Raise `ConfigError` naming every active sampler the server kind lacks and its off value.

    Args:
        plugin (`bool`, *optional*): the vLLM server runs our sampler plugin (only meaningful for `vllm`).
    """
    supported = PLUGIN_SUPPORTED if plugin and server_kind == "vllm" else SUPPORTED[server_kind]
    missing = [name for name in active_samplers(opts) if name not in supported]
    if missing:
        fixes = ", ".join(f"{name} (off: {OFF_VALUES[name]})" for name in missing)
        kinds = ", ".join(k for k in SUPPORTED if set(missing) <= SUPPORTED[k]) or "none"
        hint = ""
        if server_kind == "vllm" and set(missing) <= PLUGIN_SUPPORTED:
            hint = " or run vLLM with our sampler plugin (cloneus serve) and set inference.vllm_sampler_plugin"
        raise ConfigError(
            f"inference.server_kind={server_kind!r} does not support {fixes}; turn them off, use a server kind "
            f"that has them ({kinds}){hint}"
        )


def _llamacpp_fields(opts: SamplingOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "top_k": opts.top_k if opts.do_sample else 0,
        "min_p": opts.min_p if opts.do_sample else 0.0,
        "typical_p": opts.typical_p if opts.do_sample else 1.0,
        "tfs_z": opts.tfs if opts.do_sample else 1.0,
        "top_n_sigma": opts.top_n_sigma if opts.do_sample and opts.top_n_sigma > 0 else -1,
        "repeat_penalty": opts.repetition_penalty,
        "repeat_last_n": opts.repetition_penalty_range or -1,
        "mirostat": opts.mirostat_mode if opts.do_sample else 0,
        "mirostat_tau": opts.mirostat_tau,
        "mirostat_eta": opts.mirostat_eta,
        "xtc_probability": opts.xtc_probability if opts.do_sample else 0.0,
        "xtc_threshold": opts.xtc_threshold,
        "dry_multiplier": opts.dry_multiplier,
        "dry_base": opts.dry_base,
        "dry_allowed_length": opts.dry_allowed_length,
        "dry_penalty_last_n": opts.dry_range or -1,
        "dry_sequence_breakers": list(opts.dry_sequence_breakers),
        "dynatemp_range": 0.0,
        "dynatemp_exponent": opts.dynatemp_exponent,
    }
    if opts.do_sample and opts.dynamic_temperature:
        # llama.cpp samples the temperature in [temperature - range, temperature + range].
        fields["temperature"] = (opts.dynatemp_low + opts.dynatemp_high) / 2
        fields["dynatemp_range"] = (opts.dynatemp_high - opts.dynatemp_low) / 2
    order = [name for name in opts.sampler_priority if name in LLAMACPP_SAMPLERS]
    if opts.temperature_last:
        order = [n for n in order if n != "temperature"] + ["temperature"]
    fields["samplers"] = ["penalties"] + [LLAMACPP_SAMPLERS[n] for n in order]
    return fields


def _plugin_fields(opts: SamplingOptions) -> dict[str, Any]:
    """vLLM's own samplers off and greedy: the plugin's processors leave one finite logit (the drawn token)."""
    neutral = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
    return {"max_tokens": opts.max_new_tokens, "presence_penalty": 0.0, "frequency_penalty": 0.0, **neutral}


def request_fields(opts: SamplingOptions, server_kind: str, *, plugin: bool = False) -> dict[str, Any]:
    """The sampling part of a `/v1/completions` request body for `server_kind`.

    Args:
        plugin (`bool`, *optional*): a vLLM server with our sampler plugin; options vLLM lacks then go to it.

    Raises:
        ConfigError: an active option the server does not implement.
    """
    check_supported(opts, server_kind, plugin=plugin)
    if plugin and server_kind == "vllm" and plugin_needed(opts, server_kind):
        return _plugin_fields(opts)
    fields: dict[str, Any] = {
        "max_tokens": opts.max_new_tokens,
        "temperature": opts.temperature if opts.do_sample else 0.0,
        "top_p": opts.top_p if opts.do_sample else 1.0,
        "presence_penalty": opts.presence_penalty,
        "frequency_penalty": opts.frequency_penalty,
    }
    if opts.seed != -1:
        fields["seed"] = opts.seed
    if server_kind == "vllm":
        fields |= {
            "top_k": opts.top_k if opts.do_sample and opts.top_k > 0 else -1,
            "min_p": opts.min_p if opts.do_sample else 0.0,
            "repetition_penalty": opts.repetition_penalty,
            "min_tokens": opts.min_new_tokens,
        }
    elif server_kind == "llamacpp":
        fields |= _llamacpp_fields(opts)
    return fields
