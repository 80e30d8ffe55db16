"""Turn (author, text) messages into the exact text a model trains on and is prompted with.

Training and inference must agree byte for byte on where a turn starts, where its text starts and where it ends,
so both sides go through one `ChatFormatter`. It never asks the chat template to render a whole conversation.
Instead it renders a few probe conversations with sentinel strings once, reads off each turn's opening
(`<|im_start|>alice\\n`) and closing (`<|im_end|>\\n`) text and the prefix before the first turn, and from then on
assembles conversations by string concatenation. That makes a million-message export cheap to format, gives the
exact character span of every turn (the loss mask is built from these spans), and lets the generation prompt end
exactly where a reply's text begins. A fast assembly of a probe is checked against the template's own rendering,
so a template this decomposition does not fit fails at construction with a `ConfigError`, not with silently
wrong data.

Templates that add a default system prompt when the first message is not a system message (SmolLM2 adds "You
are a helpful AI assistant named SmolLM...") are detected: with no system prompt configured, that injected block
is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

from cloneus.errors import ConfigError

if TYPE_CHECKING:
    from cloneus.config import FormatConfig, PromptConfig
    from cloneus.data.users import User, UserIndex

logger = logging.getLogger(__name__)

CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>' }}{% endif %}"
)
# Sentinels for probing a template. Private-use code points never occur in templates, and each is one character
# that no template transforms (no case, no whitespace to trim).
_SYS = "\ue000"
_CONTENT = ["\ue001", "\ue002", "\ue003", "\ue004"]
_ROLE_A = "\ue005"
_ROLE_B = "\ue006"
# What a template can raise while probing: jinja errors (its `raise_exception`) and our failed splits.
_TEMPLATE_ERRORS = (TemplateError, ValueError)
# Roles for validating the fast assembly against the template; lower case and spaced, so a template that
# capitalises or strips roles fails validation rather than producing data that differs from its own rendering.
_CHECK_ROLES = ("alice probe", "Bob_probe")


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


@dataclass(frozen=True)
class _Layout:
    """How a template wraps turns: `pre + open(r0) + body0 + close(r0) + open(r1) + ...`."""

    pre: str
    opens: dict[str, str]
    closes: dict[str, str]


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise ValueError(f"cannot separate {what}; {text!r} does not end with {suffix!r}")
    return text[: len(text) - len(suffix)]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"cannot separate {what}; {text!r} does not start with {prefix!r}")
    return text[len(prefix) :]


def resolve_chat_template(tokenizer: Any, custom: str | None) -> list[str]:
    """Install `format.custom_chat_template` on the tokenizer; return the special tokens that had to be added.

    `custom` is a path to a jinja file, a jinja string, or `chatml`. `chatml` also adds `<|im_start|>` and
    `<|im_end|>` when the vocabulary lacks them; the model's embeddings must then be resized, which is why the added
    tokens are returned.
    """
    if custom is None:
        return []
    if custom == "chatml":
        missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
            logger.info("added %s to the tokenizer; the model's embeddings must be resized", missing)
        bos = tokenizer.bos_token
        tokenizer.chat_template = ("{{ bos_token }}" if bos and bos not in CHATML_TOKENS else "") + CHATML_TEMPLATE
        return missing
    if "{%" in custom or "{{" in custom:
        tokenizer.chat_template = custom
        return []
    path = Path(custom)
    if not path.is_file():
        raise ConfigError(
            f"format.custom_chat_template: {custom!r} is neither 'chatml', a jinja string, nor an existing file"
        )
    tokenizer.chat_template = path.read_text(encoding="utf-8")
    return []


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
        self._system = self._format_system_prompt()
        self._tags: dict[str, str] = {}
        self._by_name: dict[str, User] | None = None
        self._sep = fmt.tag_sep or ""
        self._sys_msgs: list[dict[str, str]] = []
        if fmt.tag_placement == "tag_only":
            self._role_offset = 0
            self._layout = self._tag_only_layout()
        else:
            if not tokenizer.chat_template:
                raise ConfigError(
                    f"format.tag_placement={fmt.tag_placement!r} needs a chat template, and the tokenizer has none; "
                    "set format.custom_chat_template (e.g. 'chatml') or use tag_placement='tag_only'"
                )
            self._layout, self._role_offset = self._template_layout()
        self._role_pattern: tuple[str, str] | None = None
        if fmt.tag_placement == "replace_role":
            self._role_pattern = self._derive_role_pattern()

    # ---- tags and system prompt -------------------------------------------------------------------------------

    def _format_system_prompt(self) -> str | None:
        template = self.prompt.template
        if template is None:
            return None
        mapping = self.prompt.name_mapping
        if mapping is None:
            mapping = self.users.name_mapping(self.fmt.author_tag)
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
            self._by_name = {}
            for user in reversed(self.users.users):  # reversed, so the first user wins a shared name, as in `get`
                self._by_name[user.display_name.casefold()] = user
                self._by_name[user.username.casefold()] = user
            self._by_name.update({user.id: user for user in self.users.users})
        return self._by_name.get(author) or self._by_name.get(author.casefold())

    def author_tag(self, author: str) -> str:
        """`format.author_tag` filled with the name, first name (falls back to the name) and lower-case name.

        The fields are `UserIndex.tag_fields`'s: an author unknown to the index formats as itself.
        """
        tag = self._tags.get(author)
        if tag is None:
            user = self._user(author)
            display = user.display_name if user else author
            first = user.first_name if user and user.first_name else display
            tag = self._tags[author] = self.fmt.author_tag.format(author=display, fname=first, lauthor=display.lower())
        return tag

    def is_labelled(self, author: str) -> bool:
        """Whether `author`'s messages get loss: a trainable user of the index who is not in `masked_authors`."""
        if author.casefold() in self.masked_authors:
            return False
        user = self._user(author)
        return user is not None and user.included

    # ---- layout derivation --------------------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _tag_only_layout(self) -> _Layout:
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
        return _Layout(pre=pre, opens={}, closes={})

    def _system_messages(self, system: str | None, supports_system: bool) -> tuple[list[dict[str, str]], int]:
        """The messages that carry the system prompt, and the parity offset of the first chat message."""
        if system is None:
            return [], 0
        if supports_system:
            return [{"role": "system", "content": system}], 0
        if self.fmt.tag_placement == "replace_role":
            raise ConfigError(
                "the chat template has no system role, which replace_role needs for prompt.template; use "
                "tag_placement='content_prefix', set prompt.template to null, or set format.custom_chat_template"
            )
        msgs = [{"role": "user", "content": system}]
        if self.prompt.append_msg is None:
            return msgs, 1
        return msgs + [{"role": "assistant", "content": self.prompt.append_msg}], 0

    def _decompose(self, sys_msgs: list[dict[str, str]], r0: str, r1: str) -> _Layout:
        """Read pre/open/close for roles r0, r1 off two probe renders: [r0] and [r0, r1, r0, r1]."""
        one = self._render(sys_msgs + [{"role": r0, "content": _CONTENT[0]}])
        four = self._render(sys_msgs + [{"role": (r0, r1)[i % 2], "content": c} for i, c in enumerate(_CONTENT)])
        head0, close0 = one.split(_CONTENT[0])
        s0, rest = four.split(_CONTENT[0])
        s1, rest = rest.split(_CONTENT[1])
        s2, rest = rest.split(_CONTENT[2])
        s3, close1 = rest.split(_CONTENT[3])
        if s3 != s1:
            raise ValueError("turns render differently depending on their position")
        open0 = _strip_prefix(s2, close1, f"the end of a {r1!r} turn from the next turn")
        open1 = _strip_prefix(s1, close0, f"the end of a {r0!r} turn from the next turn")
        pre = _strip_suffix(s0, open0, "the prefix from the first turn")
        if _strip_suffix(head0, open0, "the prefix from the first turn") != pre:
            raise ValueError("the prefix depends on the number of messages")
        return _Layout(pre=pre, opens={r0: open0, r1: open1}, closes={r0: close0, r1: close1})

    def _template_layout(self) -> tuple[_Layout, int]:
        roles = ("user", "assistant") if self.fmt.tag_placement == "content_prefix" else (_ROLE_A, _ROLE_B)
        try:
            supports_system = self._supports_system(roles[0])
            self._sys_msgs, offset = self._system_messages(self._system, supports_system)
            r0, r1 = roles[offset], roles[1 - offset]
            layout = self._decompose(self._sys_msgs, r0, r1)
            if self._system is None and supports_system:
                layout = _Layout(self._clean_prefix(layout.pre, r0, r1), layout.opens, layout.closes)
        except _TEMPLATE_ERRORS as e:
            raise ConfigError(
                f"chat template cannot be used with tag_placement={self.fmt.tag_placement!r}: {e}. Try another "
                "tag_placement or set format.custom_chat_template"
            ) from None
        return layout, offset

    def _supports_system(self, role: str) -> bool:
        """A template supports a system role when it renders it as its own block before the first turn."""
        try:
            text = self._render([{"role": "system", "content": _SYS}, {"role": role, "content": _CONTENT[0]}])
        except _TEMPLATE_ERRORS:
            return False
        return _SYS in text and text.index(_SYS) < text.index(_CONTENT[0])

    def _clean_prefix(self, pre: str, r0: str, r1: str) -> str:
        """Drop a default system prompt that the template injects when no system message is given."""
        with_sys = self._decompose([{"role": "system", "content": _SYS}], r0, r1).pre
        before, after = with_sys.split(_SYS)
        if not (pre.startswith(before) and pre.endswith(after) and len(pre) > len(before) + len(after)):
            return pre
        injected = pre[len(before) : len(pre) - len(after)]
        try:
            system_open = self._decompose([], "system", r1).opens["system"]
        except _TEMPLATE_ERRORS:
            logger.warning("chat template injects a default system prompt %r that cannot be removed", injected)
            return pre
        if not before.endswith(system_open):
            logger.warning("chat template injects a default system prompt %r that cannot be removed", injected)
            return pre
        logger.info("chat template injects a default system prompt when none is given; leaving it out")
        return before[: len(before) - len(system_open)]

    def _derive_role_pattern(self) -> tuple[str, str] | None:
        """Opening text as `head + role + tail` when the template inserts the role verbatim; checked on real roles."""
        open_a, close_a = self._layout.opens[_ROLE_A], self._layout.closes[_ROLE_A]
        if open_a.count(_ROLE_A) != 1 or _ROLE_A in close_a or close_a != self._layout.closes[_ROLE_B]:
            return None
        head, tail = open_a.split(_ROLE_A)
        check = [(_CHECK_ROLES[i % 2], c) for i, c in enumerate(_CONTENT[:3])]
        turns = "".join(head + role + tail + text + close_a for role, text in check)
        slow = self._render(self._sys_msgs + [{"role": r, "content": c} for r, c in check])
        # Without a system prompt the template may inject its own; only the turns must then match.
        if not (slow.endswith(turns) if self._system is None else slow == self._layout.pre + turns):
            logger.debug("chat template does not insert roles verbatim; probing each author's tag")
            return None
        return head, tail

    def _turn(self, role: str) -> tuple[str, str]:
        """(opening, closing) text of a turn with this role."""
        opens, closes = self._layout.opens, self._layout.closes
        if role not in opens:
            if self._role_pattern is not None:
                opens[role] = self._role_pattern[0] + role + self._role_pattern[1]
                closes[role] = closes[_ROLE_A]
            else:
                try:
                    probe = self._decompose(self._sys_msgs, role, _ROLE_B)
                except _TEMPLATE_ERRORS as e:
                    raise ConfigError(f"chat template cannot render role {role!r}: {e}") from None
                opens[role], closes[role] = probe.opens[role], probe.closes[role]
        return opens[role], closes[role]

    # ---- assembly ------------------------------------------------------------------------------------------------

    def _role(self, index: int, author: str) -> str | None:
        if self.fmt.tag_placement == "replace_role":
            return self.author_tag(author)
        if self.fmt.tag_placement == "content_prefix":
            return ("user", "assistant")[(index + self._role_offset) % 2]
        return None

    def _body(self, author: str, text: str) -> str:
        if self.fmt.tag_placement == "replace_role":
            return text
        return self.author_tag(author) + self._sep + text

    @property
    def prefix(self) -> str:
        """The text before the first message: BOS where the template writes one, and the system prompt."""
        return self._layout.pre

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
        opening, closing = self._turn(role)
        if self.fmt.tag_placement == "content_prefix":
            opening += self.author_tag(author) + self._sep
        return opening, closing

    def _assemble(self, messages: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        parts = [self._layout.pre]
        spans = []
        pos = len(self._layout.pre)
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
        return Rendered(text=text, label_spans=labels, message_spans=spans, prefix_len=len(self._layout.pre))

    def generation_prompt(self, history: Sequence[tuple[str, str]], author: str, seed_text: str | None = None) -> str:
        """The prompt for `author`'s next message: it ends exactly where that message's text begins.

        Args:
            history (`Sequence[tuple[str, str]]`): earlier messages as `(author, text)`.
            author (`str`): who speaks next.
            seed_text (`str`, *optional*): the start of the reply, appended so the model continues it.
        """
        opening, _ = self.wrap(len(history), author)
        return self._assemble(history)[0] + opening + (seed_text or "")

    def speaker_prompt(self, history: Sequence[tuple[str, str]]) -> tuple[str, dict[str, str]]:
        """The text up to where the next author tag starts, and each trainable author's tag up to its text.

        Scoring each continuation after the prefix gives next-speaker probabilities.
        """
        prefix = self._assemble(history)[0]
        index = len(history)
        names = [u.display_name for u in self.users.trainable()]
        if self.fmt.tag_placement == "content_prefix":
            prefix += self._turn(self._role(index, ""))[0]
        if self.fmt.tag_placement != "replace_role":
            return prefix, {name: self.author_tag(name) + self._sep for name in names}
        if self._role_pattern is not None:
            head, tail = self._role_pattern
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
            stops = [c.strip() for c in self._layout.closes.values() if c.strip()]
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
