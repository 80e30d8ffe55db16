"""The one message-normalisation path: training data and every serving prompt go through it.

Why: a clone is only worth serving if the prompt at serving time is byte for byte what training saw. The dataset
builder runs `MessageNormalizer.frame` on a whole export; the bot's context, the `Cloneus` API and `cloneus chat`
run `MessageNormalizer.turns` on a short history, which builds the same canonical frame from it and applies the
very same rules, driven by the checkpoint's own `dataset` config and user index. Serving never re-implements a rule.

The steps, in order:

1. `clean_messages` (`cloneus.data.clean`): command prefixes, bots, CDN links, mentions and emoji, blank lines,
   display-name unification, burst merging within `dataset.merge_window_minutes`;
2. opted-out, excluded and bot users of the index are dropped;
3. YouTube links become tags (when a `YouTubeLinks` is given);
4. the tokenizer's special-token strings are removed from the text (`ControlTokens`), after step 3 so a video
   title cannot smuggle one in either;
5. with `dataset.other_tag`, untrained users appear under that tag.

Serving histories name authors any way Discord shows them (username, display name, nickname) or by id; each is
resolved to its user-index entry first, so the tag is the one training used. Entries without a timestamp are
taken as whole messages and never merged into a burst: merging needs the times training had.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cloneus.data.clean import CleanResult, clean_messages

if TYPE_CHECKING:
    import pandas as pd

    from cloneus.config import DatasetConfig
    from cloneus.data.users import User, UserIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    """One message of a serving history.

    Args:
        author (`str`): the name as shown (username, display name or nickname), or a user-index id.
        text (`str`): the message as posted (Discord markup such as `<@id>` is resolved like an export's).
        timestamp (`datetime`, *optional*): when it was posted (aware, or naive UTC); needed for burst merging.
        author_id (`str`, *optional*): the author's id in the export (Discord user id); preferred to the name.
        is_bot (`bool`, *optional*, defaults to `False`): posted by a bot account (dropped like in training).
    """

    author: str
    text: str
    timestamp: datetime | None = None
    author_id: str | None = None
    is_bot: bool = False


HistoryEntry = tuple[str, str] | tuple[str, str, datetime | None] | Turn
History = Sequence[HistoryEntry]


def as_turn(entry: HistoryEntry) -> Turn:
    """A `Turn` from a `Turn`, an `(author, text)` pair or an `(author, text, timestamp)` triple.

    Raises:
        TypeError: anything else, naming what was given.
    """
    if isinstance(entry, Turn):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) in (2, 3) and all(isinstance(v, str) for v in entry[:2]):
        stamp = entry[2] if len(entry) == 3 else None
        if stamp is None or isinstance(stamp, datetime):
            return Turn(entry[0], entry[1], stamp)
    raise TypeError(f"history entry {entry!r}: expected (author, text), (author, text, datetime) or a Turn")


class ControlTokens:
    """Removes the tokenizer's special-token strings from untrusted text (messages, names, seed text).

    Why: `<|im_end|>\\n<|im_start|>system` typed into a message, a nickname or a seed would otherwise be tokenized
    as real control tokens and open a fake turn. Every added token counts (special or not: the tokenizer splits
    both off as whole tokens), except whitespace-only ones, which some tokenizers add for runs of spaces. Removal
    repeats until nothing matches, so `<|im_<|im_end|>end|>` cannot reassemble one.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the checkpoint's tokenizer.
    """

    def __init__(self, tokenizer: Any):
        tokens = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()}
        self.tokens = sorted((t for t in tokens if t and t.strip()), key=len, reverse=True)
        self.pattern = "|".join(re.escape(t) for t in self.tokens)
        self._regex = re.compile(self.pattern) if self.tokens else None

    def remove(self, text: str) -> str:
        """`text` without any special-token string."""
        if self._regex is None:
            return text
        while True:
            text, n = self._regex.subn("", text)
            if not n:
                return text

    def remove_series(self, texts: pd.Series, dropped: dict[str, int] | None = None) -> pd.Series:
        """`remove` over a text column, vectorised; counts the rows touched under `special_tokens_stripped`."""
        if self._regex is None or texts.empty:
            return texts
        hit = texts.str.contains(self.pattern, regex=True)
        if not hit.any():
            return texts
        logger.warning("removed special-token text from %d messages", int(hit.sum()))
        if dropped is not None:
            dropped["special_tokens_stripped"] = dropped.get("special_tokens_stripped", 0) + int(hit.sum())
        touched = texts[hit]
        while True:
            again = touched.str.contains(self.pattern, regex=True)
            if not again.any():
                break
            touched = touched.where(~again, touched[again].str.replace(self.pattern, "", regex=True))
        return texts.where(~hit, touched)


def clean(frame: pd.DataFrame, dataset: DatasetConfig, *, merge_untimed: bool = True) -> CleanResult:
    """Step 1: `clean_messages` with the config's cleaning rules and merge window."""
    return clean_messages(frame, dataset.cleaning, dataset.merge_window_minutes, merge_untimed=merge_untimed)


def user_lookup(users: UserIndex) -> dict[str, User]:
    """Id (exact) and username/display name (case-folded) → user; the first user of the index wins a name."""
    lookup: dict[str, User] = {}
    for user in reversed(users.users):
        lookup[user.display_name.casefold()] = user
        lookup[user.username.casefold()] = user
    lookup.update({user.id: user for user in users.users})
    return lookup


def find_user(lookup: Mapping[str, User], key: str) -> User | None:
    return lookup.get(key) or lookup.get(key.casefold())


class MessageNormalizer:
    """Normalises messages for one checkpoint (or one training config): see the module docstring.

    Args:
        dataset (`DatasetConfig`): cleaning rules, merge window and `other_tag`.
        users (`UserIndex`): who is dropped, who is trained, and the names tags use.
        tokenizer (`PreTrainedTokenizerBase`): its special tokens are removed from text.
        links (`YouTubeLinks`, *optional*): encodes YouTube links as training did; None leaves links as they are.
            The caller owns (and closes) them.
    """

    def __init__(self, dataset: DatasetConfig, users: UserIndex, tokenizer: Any, links: Any = None):
        self.dataset = dataset
        self.users = users
        self.control = ControlTokens(tokenizer)
        self.links = links
        self._lookup = user_lookup(users)
        self._names = {u.id: u.display_name for u in users.users}  # `<@id>` mentions, as an export's list has them

    def with_links(self, links: Any) -> MessageNormalizer:
        """The same normaliser encoding YouTube links with `links` (the bot's own, for its context)."""
        twin = copy.copy(self)
        twin.links = links
        return twin

    def user(self, author: str, author_id: str | None = None) -> User | None:
        """The index entry for an author: by id when it is known to the index, else by any of their names."""
        found = self._lookup.get(author_id) if author_id is not None else None
        return found or find_user(self._lookup, author)

    # ---- whole frames (training) ------------------------------------------------------------------------------

    def _drop_unwanted_users(self, frame: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
        """Step 2: messages of opted-out, excluded and bot users never reach training data or a prompt."""
        reasons = {}
        for author_id in frame["author_id"].unique():
            user = self.user(str(author_id), str(author_id))
            if user is None:
                continue
            reason = "opted_out" if user.opted_out else "excluded" if user.excluded else "bot" if user.is_bot else None
            if reason:
                reasons[author_id] = reason
        if not reasons:
            return frame
        why = frame["author_id"].map(reasons)
        for reason, count in why.value_counts().items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
        return frame[why.isna()].reset_index(drop=True)

    def _encode_youtube(self, texts: pd.Series) -> pd.Series:
        encoded = self.links.encode_texts(texts.tolist())  # the links' owner closes them, not each use
        return texts.__class__(encoded, index=texts.index, dtype=texts.dtype)

    def _tag_context_authors(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Step 5: with `dataset.other_tag`, users who are not trained appear under that one tag."""
        other_tag = self.dataset.other_tag
        if other_tag is None:
            return frame
        trained = {u.display_name for u in self.users.trainable()}
        frame = frame.copy()
        frame["author"] = frame["author"].where(frame["author"].isin(trained), other_tag)
        return frame

    def filter(self, frame: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
        """Steps 2 to 5 on a cleaned frame; `dropped` gains the rows removed per reason."""
        frame = self._drop_unwanted_users(frame, dropped)
        if self.links is not None and not frame.empty:
            frame["text"] = self._encode_youtube(frame["text"])
        frame["text"] = self.control.remove_series(frame["text"], dropped)
        return self._tag_context_authors(frame)

    def frame(self, frame: pd.DataFrame, *, merge_untimed: bool = True) -> tuple[pd.DataFrame, dict[str, int]]:
        """All steps on a canonical frame: the normalised frame and the rows dropped per reason."""
        result = clean(frame, self.dataset, merge_untimed=merge_untimed)
        dropped = dict(result.dropped)
        return self.filter(result.frame, dropped), dropped

    # ---- histories (serving) ----------------------------------------------------------------------------------

    def turns(self, history: History, names: Mapping[str, str] | None = None) -> list[Turn]:
        """A serving history as training would have it: dropped, merged, renamed and stripped the same way.

        Args:
            history (`Sequence`): `(author, text)` pairs, `(author, text, timestamp)` triples or `Turn`s, oldest
                first.
            names (`Mapping[str, str]`, *optional*): id → name for `<@id>` mentions of people outside the index
                (an export's mention list plays this part in training).

        Returns:
            `list[Turn]` with each author's index display name and id, and the timestamp of each message's first
            part. Feeding the result back in gives it back unchanged.

        Raises:
            ValueError: some entries have a timestamp and others do not.
        """
        import pandas as pd

        turns = [as_turn(entry) for entry in history]
        if not turns:
            return []
        out, _ = self.frame(self._history_frame(turns, names), merge_untimed=False)
        stamps = [None if pd.isna(s) else s.to_pydatetime() for s in out["timestamp"]]
        return [
            Turn(a, t, s, str(i))
            for a, t, s, i in zip(out["author"], out["text"], stamps, out["author_id"], strict=True)
        ]

    def texts(self, history: History, names: Mapping[str, str] | None = None) -> list[str | None]:
        """Each message's own text as training would have it, without burst merging; None where training drops
        the message (a command, a bot's, an opted-out member's, empty after cleaning). For showing single messages
        (the game's real ones) in the form the model knows them."""
        turns = [as_turn(entry) for entry in history]
        if not turns:
            return []
        cleaned = clean_messages(self._history_frame(turns, names), self.dataset.cleaning, 0, merge_untimed=False)
        out = self.filter(cleaned.frame, dict(cleaned.dropped))
        kept = dict(zip(out["message_id"], out["text"], strict=True))
        return [kept.get(str(i)) for i in range(len(turns))]

    def _history_frame(self, turns: list[Turn], names: Mapping[str, str] | None) -> pd.DataFrame:
        """The canonical frame a reader would give for these turns, each author resolved to the user index."""
        import pandas as pd

        timed = sum(t.timestamp is not None for t in turns)
        if 0 < timed < len(turns):
            # Cleaning sorts by time, as training sorts an export; untimed entries would silently move to the end.
            raise ValueError(
                f"history mixes {timed} entries with a timestamp and {len(turns) - timed} without; give every "
                "entry a timestamp (for burst merging) or none"
            )
        ids, authors = [], []
        for turn in turns:
            user = self.user(turn.author, turn.author_id)
            ids.append(user.id if user else turn.author_id or turn.author)
            authors.append(user.display_name if user else turn.author)
        frame = pd.DataFrame(
            {
                "message_id": [str(i) for i in range(len(turns))],
                "author_id": ids,
                "author": authors,
                "text": [t.text for t in turns],
                # Naive datetimes are taken as UTC (what `datetime.utcnow()` and SQLite round trips give).
                "timestamp": pd.to_datetime([t.timestamp for t in turns], utc=True),
                "reply_to": [None] * len(turns),
                "is_bot": [t.is_bot for t in turns],
            }
        )
        frame.attrs = {"user_names": {**(names or {}), **self._names}}
        return frame

    def pairs(self, history: History, names: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """`turns` as the `(author, text)` pairs the formatter renders."""
        return [(t.author, t.text) for t in self.turns(history, names)]
