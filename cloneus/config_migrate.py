"""Old CloneUs configs (flat keys such as `model_id:`, `lora_r:`, `dataset.chatlog_csv:`) read as sectioned ones.

The old `config/train/train_config.yaml` kept most options at the top level; ours groups them into sections. This
module holds the one map between the two, used three ways: `cloneus config migrate` writes the sectioned file,
`load_config` reads an old file directly (with one warning naming that command), and `--set model_id=...` resolves
an old key to its new one. Every old key is either renamed (`RENAMES`, values unchanged), converted (a few whose
meaning changed, e.g. `bf16`/`fp16` → `training.precision`), or has no equivalent (`NO_EQUIVALENT`, with what to
do instead). Keys that are the same in both layouts (`prompt.template`, `dataset.eval_frac`, ...) pass through.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

MIGRATE_COMMAND = "python -m cloneus config migrate"

# Old dotted key -> new dotted key, value unchanged.
RENAMES: dict[str, str] = {
    "model_id": "model.model_id",
    "flashattn_lib": "model.flashattn_lib",
    "attn_implementation": "model.attn_implementation",
    "chunk_size": "training.chunk_size",
    "batch_size": "training.batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "num_epochs": "training.num_epochs",
    "learning_rate": "training.learning_rate",
    "lr_scheduler": "training.lr_scheduler",
    "weight_decay": "training.weight_decay",
    "warmup_steps": "training.warmup",
    "max_grad_norm": "training.max_grad_norm",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "tag_placement": "format.tag_placement",
    "author_tag": "format.author_tag",
    "tag_sep": "format.tag_sep",
    "postfix": "format.postfix",
    "custom_chat_template": "format.custom_chat_template",
    "masked_authors": "dataset.masked_authors",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_use_rslora": "lora.use_rslora",
    "lora_use_dora": "lora.use_dora",
    "lora_target_modules": "lora.target_modules",
    "dataset.chatlog_csv": "dataset.chatlog",
    # The old README shows the dataset and prompt options without their section header.
    "chatlog_csv": "dataset.chatlog",
    "hours_between_sessions": "dataset.hours_between_sessions",
    "min_session_length": "dataset.min_session_length",
    "template": "prompt.template",
    "append_msg": "prompt.append_msg",
    "name_mapping": "prompt.name_mapping",
}

# Old keys whose meaning changed: converted by `_convert`.
CONVERTED: dict[str, str] = {
    "bf16": "training.precision",
    "fp16": "training.precision",
    "quant_method": "model.quant_method",
    "logging_steps": "training.logging_steps",
    "save_steps": "training.save_steps",
    "dataset.eval_frac": "dataset.eval_frac",
    "eval_frac": "dataset.eval_frac",
    "dataset.allow_truncation": "dataset.long_messages",
    "allow_truncation": "dataset.long_messages",
}

# Old key -> why it has no equivalent and what to do instead.
_WRITTEN_BY_OLD_TRAINER = "filled in by the old trainer; a run's resolved config.yaml and metrics.json hold this now"
NO_EQUIVALENT: dict[str, str] = {
    "notes": "keep notes as YAML comments",
    "custom_scheduler": "pick training.lr_scheduler (e.g. constant_with_warmup or cosine) and training.warmup",
    "use_sft_trainer": "training always uses the Trainer with padding-free packing (training.packing)",
    "group_by_length": "padding-free packing (training.packing: true) already avoids padding",
    "padding_side": "packed rows have no padding",
    "mask_roletag_template": "loss masks come from the chat template itself (system prompt and role tags get no loss)",
    "base_forced_thought": "not supported; the base model is asked through the bot's /clone ask",
    "lora_use_loftq": "not supported; LoRA starts from the standard initialisation",
    "lora_fan_in_fan_out": "detected by peft from the model's layer type",
    "optimizer": "the Trainer's AdamW (adamw_torch) is used; lower batch_size or chunk_size to save memory",
    "neftune_noise_alpha": "not supported",
    "tf32": "PyTorch's default matmul precision is used",
    "resume_from_checkpoint": "run `python -m cloneus train --resume runs/<alias>/<run>/checkpoint-N`",
    "pad_vocab_to": "embeddings are resized only for tokens the chat template adds",
    "custom_tokens": "custom_chat_template: chatml adds the ChatML tokens; other tokens are not added",
    "special_tokens": "the tokenizer's own special tokens are used",
    "dataset.name": "sessions are cut at silences when the chat has timestamps, by token budget otherwise",
    "dataset.train_jsonl": "give the chat export (-d or dataset.chatlog); `python -m cloneus prepare` builds the set",
    "dataset.eval_jsonl": "the eval split is the latest dataset.eval_frac of sessions",
    "model_capabilities": _WRITTEN_BY_OLD_TRAINER,
    "model_architecture": _WRITTEN_BY_OLD_TRAINER,
    "ctx_len": _WRITTEN_BY_OLD_TRAINER,
    "has_custom_tokens": _WRITTEN_BY_OLD_TRAINER,
    "dtype": _WRITTEN_BY_OLD_TRAINER,
    "fprompt": _WRITTEN_BY_OLD_TRAINER,
    "base_dir": _WRITTEN_BY_OLD_TRAINER,
    "train_loss": _WRITTEN_BY_OLD_TRAINER,
    "eval_loss": _WRITTEN_BY_OLD_TRAINER,
    "sample_output": _WRITTEN_BY_OLD_TRAINER,
}

_QUANT_METHODS = {"auto", "bf16", "fp32", "bnb4", "bnb8"}
# Sections that exist in both layouts: their keys are looked up as `section.key`.
_SHARED_SECTIONS = {"dataset", "prompt"}


def old_keys() -> list[str]:
    """Every old key this module knows, dotted."""
    return [*RENAMES, *CONVERTED, *NO_EQUIVALENT]


@dataclass
class Migration:
    """What `migrate_tree` did.

    Args:
        tree (`dict`): the sectioned config.
        renamed (`list[tuple[str, str]]`): `(old, new)` key pairs, conversions included.
        dropped (`list[tuple[str, Any, str]]`): `(old key, its value, what to do instead)` for keys with no
            equivalent (or a value with none, e.g. a fractional `save_steps`).
        empty (`list[str]`): old keys left out because they were empty or off (the new default applies).
    """

    tree: dict[str, Any] = field(default_factory=dict)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, Any, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    node = tree
    for part in sections:
        node = node.setdefault(part, {})
    node[leaf] = value


def _convert(old: str, value: Any) -> tuple[Any, str | None]:
    """The new value of a `CONVERTED` key, or `(None, advice)` when the old value has no equivalent."""
    if old in ("bf16", "fp16"):
        return (old if value else "fp32"), None
    if old == "quant_method":
        if value in _QUANT_METHODS:
            return value, None
        return None, f"{value!r} is not supported; model.quant_method is one of {sorted(_QUANT_METHODS)}"
    if old in ("logging_steps", "save_steps"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            return int(value), None
        return None, f"{value!r} was a fraction of the run; training.{old} takes a step count (default kept)"
    old = old.removeprefix("dataset.")
    if old == "eval_frac":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value, None
        return None, f"{value!r} is not supported; dataset.eval_frac is a fraction of sessions (default kept)"
    if old == "allow_truncation":
        return ("truncate" if value else "error"), None
    raise KeyError(old)


def migrate_item(old: str, value: Any) -> tuple[str | None, Any, str | None]:
    """Map one old key and value: `(new key, new value, None)`, or `(None, None, advice)` when it has no equivalent.

    Keys that are not old ones come back unchanged.
    """
    if old in RENAMES:
        return RENAMES[old], value, None
    if old in CONVERTED:
        new_value, advice = _convert(old, value)
        return (None, None, advice) if advice else (CONVERTED[old], new_value, None)
    if old in NO_EQUIVALENT:
        return None, None, NO_EQUIVALENT[old]
    return old, value, None


def _old_items(tree: dict[str, Any]) -> list[tuple[str, Any]]:
    """The tree as `(dotted key, value)` pairs in the old layout's terms: shared sections are flattened one level,
    new-only sections stay whole."""
    items = []
    for key, value in tree.items():
        if key in _SHARED_SECTIONS and isinstance(value, dict):
            items += [(f"{key}.{sub}", v) for sub, v in value.items()]
        else:
            items.append((key, value))
    return items


def is_old_style(tree: dict[str, Any]) -> bool:
    """Whether the tree has any key of the old layout (keys spelled the same in both layouts do not count)."""
    known = {key for key in old_keys() if CONVERTED.get(key) != key}
    return any(key in known for key, _ in _old_items(tree))


def migrate_tree(tree: dict[str, Any]) -> Migration:
    """Rewrite an old-layout (or mixed) config tree into the sectioned layout.

    `bf16` and `fp16` together become one `training.precision` (fp16 if set, else bf16 if set, else fp32).
    A key already in its new place keeps its value when an old key maps onto it too: the new spelling wins.
    """
    result = Migration()
    known = set(old_keys())
    items = _old_items(copy.deepcopy(tree))
    for key, value in items:
        if key in known:
            continue
        if "." in key:
            _set(result.tree, key, value)
        elif isinstance(value, dict) and isinstance(result.tree.get(key), dict):
            result.tree[key].update(value)
        else:
            result.tree[key] = value
    flags = {k: v for k, v in items if k in ("bf16", "fp16")}
    if flags:
        precision = "fp16" if flags.get("fp16") else "bf16" if flags.get("bf16") else "fp32"
        _set_unless_present(result.tree, "training.precision", precision)
        result.renamed += [(k, "training.precision") for k in flags]
    for key, value in items:
        if key not in known or key in flags:
            continue
        new, new_value, advice = migrate_item(key, value)
        if _all_empty(value) or (new is None and value is False):
            result.empty.append(key)
        elif new is None:
            result.dropped.append((key, value, advice or ""))
        else:
            if new != key:
                result.renamed.append((key, new))
            _set_unless_present(result.tree, new, new_value)
    return result


def _set_unless_present(tree: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, leaf = dotted.partition(".")
    if not isinstance(tree.get(section), dict) or leaf not in tree[section]:
        _set(tree, dotted, value)


def _all_empty(value: Any) -> bool:
    """True for an empty value, or a mapping of empty values (the old `special_tokens:` block)."""
    if isinstance(value, dict):
        return all(_all_empty(v) for v in value.values())
    return value is None or value == "" or value == []


def summary(migration: Migration) -> str:
    """One line: how many keys were renamed, and which were ignored for having no equivalent."""
    parts = [f"{len(migration.renamed)} renamed"]
    if len(migration.renamed) <= 3:
        parts = [", ".join(f"{old} -> {new}" for old, new in migration.renamed) or "none renamed"]
    if migration.dropped:
        parts.append(f"ignored, no equivalent: {', '.join(old for old, _, _ in migration.dropped)}")
    return "; ".join(parts)


def describe(migration: Migration, source: str) -> list[str]:
    """The report lines of a migration: renames, then keys with no equivalent and what to do instead."""
    lines = [f"{source}: {len(migration.renamed)} old keys mapped to their sections"]
    lines += [f"  {old} -> {new}" for old, new in migration.renamed]
    if migration.dropped:
        lines.append(f"{len(migration.dropped)} old keys have no equivalent and were left out:")
        lines += [f"  {old}: {value!r} ({advice})" for old, value, advice in migration.dropped]
    if migration.empty:
        lines.append(f"empty or switched-off old keys left out (defaults apply): {', '.join(migration.empty)}")
    return lines
