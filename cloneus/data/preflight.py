"""Settings that pass the schema but cannot work with this model or this user index, refused before any work.

The schema (`cloneus.config`) cannot know the model's context length, its tokenizer's special tokens or who the
user index trains; these checks run where those are known, at the start of `prepare` and `train`, and each error
names the key to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloneus.errors import ConfigError

if TYPE_CHECKING:
    from cloneus.config import CloneusConfig
    from cloneus.data.users import UserIndex


def check_model_fit(cfg: CloneusConfig, tokenizer: Any) -> None:
    """`training.chunk_size` within the model's context, and no special token of this tokenizer in the author tag.

    Raises:
        ConfigError: naming the key, the model and the limit or token.
    """
    from cloneus.data.normalize import ControlTokens
    from cloneus.models.loading import context_length

    limit = context_length(cfg.model)
    if limit is not None and cfg.training.chunk_size > limit:
        raise ConfigError(
            f"training.chunk_size: {cfg.training.chunk_size} tokens is above the context of {cfg.model.model_id} "
            f"({limit} positions); set it to at most {limit}"
        )
    token = next((t for t in ControlTokens(tokenizer).tokens if t in cfg.format.author_tag), None)
    if token is not None:
        raise ConfigError(
            f"format.author_tag {cfg.format.author_tag!r} contains {token!r}, a special token of "
            f"{cfg.model.model_id}'s tokenizer, which would end or open a turn; remove it"
        )


def check_trainable_users(users: UserIndex, source: str) -> None:
    """Refuse a user index that trains nobody: training would 'finish' having learned no speaker.

    Raises:
        ConfigError: naming the index and why each kind of user is left out.
    """
    if users.trainable():
        return
    reasons = {
        "bots": sum(u.is_bot for u in users.users),
        "excluded": sum(u.excluded for u in users.users),
        "opted out": sum(u.opted_out for u in users.users),
    }
    why = ", ".join(f"{n} {what}" for what, n in reasons.items() if n)
    raise ConfigError(
        f"{source}: no user is trained ({len(users.users)} users"
        + (f"; {why}" if why else "")
        + f"; the rest are below min_share={users.min_share:g}); lower dataset.min_share or include someone with "
        "`python -m cloneus index set NAME --include`"
    )
