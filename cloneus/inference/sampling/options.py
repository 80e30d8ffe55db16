"""`SamplingOptions`: every text-generation-webui sampler setting, validated.

Field names and units follow text-generation-webui (`epsilon_cutoff`/`eta_cutoff` in units of 1e-4, `seed=-1` for a
random seed, `mirostat_mode=2`), so presets and habits carry over. The model is frozen: callers derive new options
with `merged(**overrides)`, which turns pydantic's errors into one `ConfigError` line per bad key that names the
valid range, so the bot can show it as is. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloneus.errors import ConfigError

# text-generation-webui's default `sampler_priority` with top_n_sigma placed where webui puts it (before top_k).
DEFAULT_SAMPLER_PRIORITY: tuple[str, ...] = (
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "dry",
    "temperature",
    "dynamic_temperature",
    "quadratic_sampling",
    "top_n_sigma",
    "top_k",
    "top_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "tfs",
    "top_a",
    "min_p",
    "mirostat",
    "xtc",
)
SAMPLER_NAMES = frozenset(DEFAULT_SAMPLER_PRIORITY)
# The samplers `temperature_last` moves behind the truncation samplers, as in webui.
TEMPERATURE_SAMPLERS: tuple[str, ...] = ("temperature", "dynamic_temperature", "quadratic_sampling")
SEED_MAX = 2**63 - 1
WORD_BIAS_MAX = 20.0  # logits rarely spread more than ~20 apart, so ±20 already forces or forbids a word


class SamplingOptions(BaseModel):
    """How the next token is chosen. Each sampler is skipped while it sits at its neutral value.

    Build new options with `SamplingOptions.parse(mapping)` or `options.merged(key=value)`: both raise a
    `ConfigError` that names each bad key and its valid range.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_sample: bool = Field(True, description="False decodes greedily: penalties still apply, no sampler runs.")
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="Seed of the per-call generator; -1 picks a random one.")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="Most tokens generated for one reply.")
    min_new_tokens: int = Field(0, ge=0, le=4096, description="End of turn is banned until this many tokens exist.")
    no_repeat_ngram_size: int = Field(0, ge=0, le=20, description="Never repeat an n-gram of this size; 0 is off.")

    temperature: float = Field(0.8, gt=0, le=5, description="Divides the logits; lower is more conservative.")
    temperature_last: bool = Field(
        False, description="Run temperature, dynamic temperature and quadratic sampling after the truncation samplers."
    )
    dynamic_temperature: bool = Field(
        False, description="Replace `temperature` by one scaled with the entropy between dynatemp_low and _high."
    )
    dynatemp_low: float = Field(0.5, gt=0, le=5, description="Temperature used when the distribution is peaked.")
    dynatemp_high: float = Field(1.5, gt=0, le=5, description="Temperature used when the distribution is flat.")
    dynatemp_exponent: float = Field(1.0, gt=0, le=5, description="Exponent on the normalised entropy.")
    smoothing_factor: float = Field(0.0, ge=0, le=10, description="Quadratic sampling strength; 0 is off.")
    smoothing_curve: float = Field(1.0, ge=1, le=10, description="Quadratic sampling curve; 1 is a pure quadratic.")

    top_n_sigma: float = Field(0.0, ge=0, le=5, description="Keep logits within n standard deviations of the max.")
    top_k: int = Field(40, ge=0, le=1000, description="Keep the k most likely tokens; 0 is off.")
    top_p: float = Field(0.95, ge=0, le=1, description="Keep the smallest set whose probability reaches top_p.")
    typical_p: float = Field(1.0, ge=0, le=1, description="Locally typical sampling mass; 1 is off.")
    epsilon_cutoff: float = Field(0.0, ge=0, le=9, description="Drop tokens below this probability, in 1e-4 units.")
    eta_cutoff: float = Field(0.0, ge=0, le=20, description="Eta sampling, entropy-scaled epsilon in 1e-4 units.")
    tfs: float = Field(1.0, ge=0, le=1, description="Tail free sampling z; 1 is off.")
    top_a: float = Field(0.0, ge=0, le=1, description="Drop tokens below top_a * max_prob**2; 0 is off.")
    min_p: float = Field(0.05, ge=0, le=1, description="Drop tokens below min_p * max_prob; 0 is off.")

    mirostat_mode: int = Field(0, ge=0, le=2, description="2 enables Mirostat v2, which then draws the token.")
    mirostat_tau: float = Field(5.0, ge=0, le=10, description="Mirostat target surprise in bits.")
    mirostat_eta: float = Field(0.1, ge=0, le=1, description="Mirostat learning rate.")

    xtc_threshold: float = Field(0.1, ge=0, le=0.5, description="XTC: tokens at least this likely are 'top choices'.")
    xtc_probability: float = Field(0.0, ge=0, le=1, description="XTC: chance per token to drop top choices.")

    dry_multiplier: float = Field(0.0, ge=0, le=5, description="DRY penalty strength; 0 is off.")
    dry_base: float = Field(1.75, ge=1, le=4, description="DRY penalty grows as base ** (match - allowed_length).")
    dry_allowed_length: int = Field(2, ge=1, le=20, description="Repeated sequences this long are not penalised.")
    dry_sequence_breakers: tuple[str, ...] = Field(
        ("\n", ":", '"', "*"), description="Strings that end a repeated sequence for DRY (JSON list or webui string)."
    )
    dry_range: int = Field(1024, ge=0, le=8192, description="Tokens DRY looks back over; 0 is the whole context.")

    repetition_penalty: float = Field(1.0, ge=1, le=3, description="Divides the logits of tokens seen; 1 is off.")
    repetition_penalty_range: int = Field(
        1024, ge=0, le=8192, description="Tokens the three penalties look back over; 0 is the whole context."
    )
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Subtracted once from each token seen.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Subtracted per occurrence of each token seen.")

    sampler_priority: tuple[str, ...] = Field(
        DEFAULT_SAMPLER_PRIORITY, description="Order the samplers run in; unnamed ones run first, in default order."
    )

    banned_words: tuple[str, ...] = Field(
        (), description="Words and phrases never generated, in every tokenisation (leading space, capitalised)."
    )
    word_bias: dict[str, float] = Field(
        {}, description=f"Word or phrase → logit bias in [-{WORD_BIAS_MAX:g}, {WORD_BIAS_MAX:g}], every tokenisation."
    )

    @field_validator("mirostat_mode")
    @classmethod
    def _only_mirostat_v2(cls, value: int) -> int:
        if value == 1:
            raise ValueError("Mirostat v1 is not implemented; use 0 (off) or 2 (Mirostat v2)")
        return value

    @field_validator("dry_sequence_breakers", mode="before")
    @classmethod
    def _parse_breakers(cls, value: Any) -> Any:
        # webui accepts a JSON list or its items without brackets: '"\\n", ":", "\\"", "*"'.
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text if text.startswith("[") else f"[{text}]")
            except json.JSONDecodeError:
                raise ValueError(f'expected a JSON list of strings such as ["\\n", ":"], got {value!r}') from None
        if isinstance(value, (list, tuple)) and any(not isinstance(s, str) or not s for s in value):
            raise ValueError(f"every sequence breaker must be a non-empty string, got {list(value)!r}")
        return value

    @field_validator("banned_words")
    @classmethod
    def _check_banned(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not w.strip() for w in value):
            raise ValueError(f"every banned word must be non-empty, got {list(value)!r}")
        return value

    @field_validator("word_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float]) -> dict[str, float]:
        for word, bias in value.items():
            if not word.strip():
                raise ValueError("a weighted word must be non-empty")
            if not -WORD_BIAS_MAX <= bias <= WORD_BIAS_MAX:
                raise ValueError(f"bias {bias:g} of {word!r} is outside [-{WORD_BIAS_MAX:g}, {WORD_BIAS_MAX:g}]")
        return value

    @field_validator("sampler_priority", mode="before")
    @classmethod
    def _parse_priority(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [name for name in value.replace(",", " ").split()]
        if not isinstance(value, (list, tuple)):
            return value
        unknown = [name for name in value if name not in SAMPLER_NAMES]
        if unknown:
            raise ValueError(f"unknown sampler(s) {unknown}; valid names: {', '.join(DEFAULT_SAMPLER_PRIORITY)}")
        duplicates = sorted({name for name in value if list(value).count(name) > 1})
        if duplicates:
            raise ValueError(f"sampler(s) {duplicates} listed more than once")
        return value

    @model_validator(mode="after")
    def _check_pairs(self) -> SamplingOptions:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens}); "
                "lower min_new_tokens or raise max_new_tokens"
            )
        if self.dynatemp_low > self.dynatemp_high:
            raise ValueError(
                f"dynatemp_low ({self.dynatemp_low}) exceeds dynatemp_high ({self.dynatemp_high}); swap them"
            )
        return self

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "sampling") -> SamplingOptions:
        """Validate a mapping of options (a preset, a saved channel setting, slash-command values).

        Args:
            data (`dict[str, Any]`): option name to value; strings are converted ("0.7", "true", "[...]").
            source (`str`, *optional*, defaults to `"sampling"`): named at the start of every error line.

        Raises:
            ConfigError: one line per bad key, naming the key, the value and the valid range.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_errors(e, source)) from None

    def merged(self, **overrides: Any) -> SamplingOptions:
        """These options with `overrides` applied; `None` values are skipped (an unset slash-command option).

        Raises:
            ConfigError: naming each bad key and its valid range.
        """
        # Only the keys set here are carried over, so `model_dump(exclude_unset=True)` keeps meaning "what differs
        # from the defaults by choice" (fields left unset hold the defaults either way).
        data = self.model_dump(exclude_unset=True)
        data.update({key: value for key, value in overrides.items() if value is not None})
        return type(self).parse(data)


def describe_range(name: str) -> str:
    """The valid values of option `name` in words, e.g. `a number in (0, 5]`; used in errors and help texts."""
    field = SamplingOptions.model_fields[name]
    if field.annotation is bool:
        return "true or false"
    if name == "mirostat_mode":
        return "0 (off) or 2 (Mirostat v2)"
    if name == "sampler_priority":
        return "a list of sampler names from: " + ", ".join(DEFAULT_SAMPLER_PRIORITY)
    if name == "dry_sequence_breakers":
        return 'a JSON list of non-empty strings, e.g. ["\\n", ":"]'
    low = high = None
    low_open = high_open = False
    bounds = (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True))
    for item in field.metadata:
        for attr, is_low, is_open in bounds:
            bound = getattr(item, attr, None)
            if bound is None:
                continue
            if is_low:
                low, low_open = bound, is_open
            else:
                high, high_open = bound, is_open
    kind = "an integer" if field.annotation is int else "a number"
    return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def describe_option(name: str) -> str:
    """One help line for option `name`: range, default and meaning (for `/sampling` autocomplete and docs)."""
    if name not in SamplingOptions.model_fields:
        raise ConfigError(_unknown_key_message(name))
    field = SamplingOptions.model_fields[name]
    return f"{name} ({describe_range(name)}, default {field.default!r}): {field.description}"


def _unknown_key_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(SamplingOptions.model_fields), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown sampling option '{name}'{hint}"


def format_errors(err: ValidationError, source: str) -> str:
    """One line per problem: `source: key=value: expected <range>` or the cross-field rule that failed."""
    lines = []
    for e in err.errors():
        loc = [str(part) for part in e["loc"]]
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: {_unknown_key_message(loc[0])}")
        elif not loc:
            lines.append(f"{source}: {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "value_error":  # our own validators already say what is wrong and how to fix it
            lines.append(f"{source}: {loc[0]}={e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{source}: {loc[0]}={e.get('input')!r}: expected {describe_range(loc[0])}")
    return "\n".join(lines)
