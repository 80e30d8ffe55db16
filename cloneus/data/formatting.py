"""Turn (author, text) messages into the exact text a model trains on and is prompted with.

Training and inference must agree byte for byte on where a turn starts, where its text starts and where it ends,
so both sides go through one `ChatFormatter`. With a chat template, the turn layout is read off probe renders once
(`cloneus.data.chat_template.TemplateTurns`) and conversations are assembled by concatenation; `tag_only` needs no
template. Either way every message's character span is known: the loss mask is built from these spans, and the
generation prompt ends exactly where a reply's text begins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloneus.data.chat_template import TemplateTurns, resolve_chat_template
from cloneus.data.normalize import ControlTokens, find_user, user_lookup
from cloneus.errors import ConfigError

if TYPE_CHECKING:
    from cloneus.config import FormatConfig, PromptConfig
    from cloneus.data.users import User, UserIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    """A formatted conversation.

    Args:
        text (`str`): the full text, including the system prefix.
        label_spans (`list[tuple[int, int]]`): character spans that get loss (merged where adjacent). The system
            prefix and messages of masked or context-only authors are outside them.
        message_spans (`list[tuple[int, int]]`): one span per message: its opening tag, text and end of turn.
        prefix_len (`int`): length of the system prefix, i.e. where the first message's span starts.
    """

    text: str
    label_spans: list[tuple[int, int]]
    message_spans: list[tuple[int, int]] = field(default_factory=list)
    prefix_len: int = 0


class ChatFormatter:
    """Formats conversations for one tokenizer, format and prompt config.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): its chat template is used for `replace_role` and `content_prefix`.
            With `format.custom_chat_template` set, that template (and for `chatml` its tokens) is installed on
            this tokenizer; `tokens_added` lists added tokens.
        fmt (`FormatConfig`): tag placement, author tag f-string, separators.
        prompt (`PromptConfig`): system prompt template and `append_msg`.
        users (`UserIndex`): gives first names for `{fname}`, the name mapping, and who is trainable.
        masked_authors (`Iterable[str]`, *optional*): authors whose messages get no loss (case-insensitive).
    """

    def __init__(
        self,
        tokenizer: Any,
        fmt: FormatConfig,
        prompt: PromptConfig,
        users: UserIndex,
        masked_authors: Iterable[str] = (),
    ):
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.prompt = prompt
        self.users = users
        self.masked_authors = {a.casefold() for a in masked_authors}
        self.tokens_added = resolve_chat_template(tokenizer, fmt.custom_chat_template)
        self.control = ControlTokens(tokenizer)
        self._tags: dict[str, str] = {}
        self._by_name: dict[str, User] | None = None
        self._system = self._format_system_prompt()
        self._sep = fmt.tag_sep or ""
        self._turns: TemplateTurns | None = None
        if fmt.tag_placement == "tag_only":
            self._prefix = self._tag_only_prefix()
        else:
            if not tokenizer.chat_template:
                raise ConfigError(
                    f"format.tag_placement={fmt.tag_placement!r} needs a chat template, and the tokenizer has none; "
                    "set format.custom_chat_template (e.g. 'chatml') or use tag_placement='tag_only'"
                )
            self._turns = TemplateTurns(tokenizer, fmt.tag_placement, self._system, prompt.append_msg)
            self._prefix = self._turns.pre

    # ---- tags and system prompt -------------------------------------------------------------------------------

    def _format_system_prompt(self) -> str | None:
        template = self.prompt.template
        if template is None:
            return None
        mapping = self.prompt.name_mapping
        if mapping is None:
            mapping = ", ".join(self.author_tag(u.display_name) for u in self.users.trainable())
        # Names are chat members' to choose; whichever source the mapping came from, no control token survives.
        mapping = self.control.remove(mapping)
        try:
            return template.format(name_mapping=mapping, append_msg=self.prompt.append_msg or "")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"prompt.template may only use {{name_mapping}} and {{append_msg}}; write literal braces as "
                f"{{{{ and }}}} ({e!r})"
            ) from None

    def system_prompt(self) -> str | None:
        """The system prompt with `{name_mapping}` filled in, or None when `prompt.template` is None."""
        return self._system

    def _user(self, author: str) -> User | None:
        """`UserIndex.get` through a dict: a chat can have tens of thousands of authors, and `get` scans the list."""
        if self._by_name is None:
            self._by_name = user_lookup(self.users)
        return find_user(self._by_name, author)

    def author_tag(self, author: str) -> str:
        """`format.author_tag` filled with the name, first name (falls back to the name) and lower-case name.

        The fields are `UserIndex.tag_fields`'s: an author unknown to the index formats as itself. Special-token
        strings are removed from the names (a nickname is anyone's to set), so a tag never holds a control token.
        """
        tag = self._tags.get(author)
        if tag is None:
            user = self._user(author)
            display = self.control.remove(user.display_name if user else author)
            first = self.control.remove(user.first_name) if user and user.first_name else display
            tag = self._tags[author] = self.fmt.author_tag.format(author=display, fname=first, lauthor=display.lower())
        return tag

    def is_labelled(self, author: str) -> bool:
        """Whether `author`'s messages get loss: a trainable user of the index who is not in `masked_authors`."""
        if author.casefold() in self.masked_authors:
            return False
        user = self._user(author)
        return user is not None and user.included

    def _tag_only_prefix(self) -> str:
        pre = ""
        bos = self.tokenizer.bos_token
        ids = self.tokenizer("a").input_ids
        if bos and ids and ids[0] == self.tokenizer.bos_token_id:
            # The tokenizer adds BOS by default (Llama-style base models expect it); keep it, as text, since
            # rendered text is tokenized without special tokens.
            pre = bos
        if self._system is not None:
            pre += self._system + (self.fmt.postfix or "\n")
        if not self._sep:
            logger.warning("format.tag_sep is empty with tag_only: tags run straight into message text")
        if not self.fmt.postfix:
            logger.warning("format.postfix is empty with tag_only: each message runs straight into the next tag")
        return pre

    # ---- assembly ------------------------------------------------------------------------------------------------

    def _role(self, index: int, author: str) -> str | None:
        if self.fmt.tag_placement == "replace_role":
            return self.author_tag(author)
        if self.fmt.tag_placement == "content_prefix":
            return ("user", "assistant")[(index + self._turns.role_offset) % 2]
        return None

    @property
    def prefix(self) -> str:
        """The text before the first message: BOS where the template writes one, and the system prompt."""
        return self._prefix

    @property
    def position_independent(self) -> bool:
        """Whether a message renders the same wherever it sits (false for content_prefix's user/assistant turns)."""
        return self.fmt.tag_placement != "content_prefix"

    def wrap(self, index: int, author: str) -> tuple[str, str]:
        """Text before and after a message's text, for the message at `index` in a conversation.

        A conversation renders as `prefix + before_0 + text_0 + after_0 + before_1 + ...`.
        """
        role = self._role(index, author)
        if role is None:
            return self.author_tag(author) + self._sep, self.fmt.postfix or ""
        opening, closing = self._turns.turn(role)
        if self.fmt.tag_placement == "content_prefix":
            opening += self.author_tag(author) + self._sep
        return opening, closing

    def _assemble(self, messages: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        parts = [self._prefix]
        spans = []
        pos = len(self._prefix)
        for i, (author, text) in enumerate(messages):
            opening, closing = self.wrap(i, author)
            seg = opening + text + closing
            parts.append(seg)
            spans.append((pos, pos + len(seg)))
            pos += len(seg)
        return "".join(parts), spans

    def render(self, messages: Sequence[tuple[str, str]]) -> Rendered:
        """Format a conversation of `(author, text)` pairs with the system prompt first.

        Each labelled message's span covers its tag, text and end of turn, so the model learns who speaks, what
        they say and when they stop.
        """
        text, spans = self._assemble(messages)
        labels: list[tuple[int, int]] = []
        for (author, _), (start, end) in zip(messages, spans, strict=True):
            if not self.is_labelled(author):
                continue
            if labels and labels[-1][1] == start:
                labels[-1] = (labels[-1][0], end)
            else:
                labels.append((start, end))
        return Rendered(text=text, label_spans=labels, message_spans=spans, prefix_len=len(self._prefix))

    def generation_prompt(self, history: Sequence[tuple[str, str]], author: str, seed_text: str | None = None) -> str:
        """The prompt for `author`'s next message: it ends exactly where that message's text begins.

        Args:
            history (`Sequence[tuple[str, str]]`): earlier messages as `(author, text)`.
            author (`str`): who speaks next.
            seed_text (`str`, *optional*): the start of the reply, appended so the model continues it. Special-token
                strings are removed from it first.
        """
        opening, _ = self.wrap(len(history), author)
        return self._assemble(history)[0] + opening + self.control.remove(seed_text or "")

    def speaker_prompt(self, history: Sequence[tuple[str, str]]) -> tuple[str, dict[str, str]]:
        """The text up to where the next author tag starts, and each trainable author's tag up to its text.

        Scoring each continuation after the prefix gives next-speaker probabilities.
        """
        prefix = self._assemble(history)[0]
        index = len(history)
        names = [u.display_name for u in self.users.trainable()]
        if self.fmt.tag_placement == "content_prefix":
            prefix += self._turns.turn(self._role(index, ""))[0]
        if self.fmt.tag_placement != "replace_role":
            return prefix, {name: self.author_tag(name) + self._sep for name in names}
        if self._turns.role_pattern is not None:
            head, tail = self._turns.role_pattern
            return prefix + head, {name: self.author_tag(name) + tail for name in names}
        openings = {name: self.wrap(index, name)[0] for name in names}
        head = _common_prefix(list(openings.values()))
        return prefix + head, {name: o[len(head) :] for name, o in openings.items()}

    def stop_strings(self) -> list[str]:
        """Strings that end a generated message: the end of turn, and for tag_only also the start of the next tag."""
        if self.fmt.tag_placement == "tag_only":
            postfix = self.fmt.postfix or ""
            stops = [postfix] if postfix else []
            stops += [postfix + self.author_tag(u.display_name) + self._sep for u in self.users.trainable()]
        else:
            stops = [c.strip() for c in self._turns.closes.values() if c.strip()]
        eos = self.tokenizer.eos_token
        if eos:
            stops.append(eos)
        return list(dict.fromkeys(stops))


def _common_prefix(items: list[str]) -> str:
    if not items:
        return ""
    lo, hi = min(items), max(items)
    n = 0
    while n < len(lo) and lo[n] == hi[n]:
        n += 1
    return lo[:n]
