"""Read a chat template's turn layout off a few probe renders.

`ChatFormatter` never asks the chat template to render a whole conversation. `TemplateTurns` renders a few probe
conversations with sentinel strings once, reads off each turn's opening (`<|im_start|>alice\\n`) and closing
(`<|im_end|>\\n`) and the prefix before the first turn, so conversations can be assembled by concatenation with the
exact character span of every turn. The assembly of a probe with real-looking roles is checked against the
template's own rendering, so a template this decomposition does not fit fails with a `ConfigError` instead of
producing data that differs from what the template would produce.

Templates that add a default system prompt when the first message is not a system message (SmolLM2 adds "You are
a helpful AI assistant named SmolLM...") are detected: with no system prompt configured, that block is left out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from cloneus.errors import ConfigError

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
ROLE_A = "\ue005"
ROLE_B = "\ue006"
# What a template can raise while probing: jinja errors (its `raise_exception`) and our failed splits.
TEMPLATE_ERRORS = (TemplateError, ValueError)
# Roles for validating the fast assembly against the template; lower case and spaced, so a template that
# capitalises or strips roles fails validation rather than producing data that differs from its own rendering.
_CHECK_ROLES = ("alice probe", "Bob_probe")

Messages = list[dict[str, str]]


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


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise ValueError(f"cannot separate {what}; {text!r} does not end with {suffix!r}")
    return text[: len(text) - len(suffix)]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"cannot separate {what}; {text!r} does not start with {prefix!r}")
    return text[len(prefix) :]


class TemplateTurns:
    """How a chat template wraps turns: `pre + open(r0) + text0 + close(r0) + open(r1) + ...`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): with a chat template.
        placement (`str`): `replace_role` (any role, probed per role pattern) or `content_prefix` (user/assistant).
        system (`str`, *optional*): the system prompt; None for none.
        append_msg (`str`, *optional*): with no system role, the assistant's reply to the system prompt.

    Raises:
        ConfigError: the template cannot be decomposed this way, or lacks a system role that replace_role needs.
    """

    def __init__(self, tokenizer: Any, placement: str, system: str | None, append_msg: str | None):
        self.tokenizer = tokenizer
        self.placement = placement
        self.system = system
        self.append_msg = append_msg
        roles = ("user", "assistant") if placement == "content_prefix" else (ROLE_A, ROLE_B)
        try:
            supports_system = self._supports_system(roles[0])
            self.sys_msgs, self.role_offset = self._system_messages(supports_system)
            r0, r1 = roles[self.role_offset], roles[1 - self.role_offset]
            self.pre, self.opens, self.closes = self._decompose(self.sys_msgs, r0, r1)
            if system is None and supports_system:
                self.pre = self._clean_prefix(self.pre, r0, r1)
        except TEMPLATE_ERRORS as e:
            raise ConfigError(
                f"chat template cannot be used with tag_placement={placement!r}: {e}. Try another "
                "tag_placement or set format.custom_chat_template"
            ) from None
        self.role_pattern = self._derive_role_pattern() if placement == "replace_role" else None

    def _render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _system_messages(self, supports_system: bool) -> tuple[Messages, int]:
        """The messages that carry the system prompt, and the parity offset of the first chat message."""
        if self.system is None:
            return [], 0
        if supports_system:
            return [{"role": "system", "content": self.system}], 0
        if self.placement == "replace_role":
            raise ConfigError(
                "the chat template has no system role, which replace_role needs for prompt.template; use "
                "tag_placement='content_prefix', set prompt.template to null, or set format.custom_chat_template"
            )
        msgs = [{"role": "user", "content": self.system}]
        if self.append_msg is None:
            return msgs, 1
        return msgs + [{"role": "assistant", "content": self.append_msg}], 0

    def _decompose(self, sys_msgs: Messages, r0: str, r1: str) -> tuple[str, dict[str, str], dict[str, str]]:
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
        return pre, {r0: open0, r1: open1}, {r0: close0, r1: close1}

    def _supports_system(self, role: str) -> bool:
        """A template supports a system role when it renders it as its own block before the first turn."""
        try:
            text = self._render([{"role": "system", "content": _SYS}, {"role": role, "content": _CONTENT[0]}])
        except TEMPLATE_ERRORS:
            return False
        return _SYS in text and text.index(_SYS) < text.index(_CONTENT[0])

    def _clean_prefix(self, pre: str, r0: str, r1: str) -> str:
        """Drop a default system prompt that the template injects when no system message is given."""
        with_sys = self._decompose([{"role": "system", "content": _SYS}], r0, r1)[0]
        before, after = with_sys.split(_SYS)
        if not (pre.startswith(before) and pre.endswith(after) and len(pre) > len(before) + len(after)):
            return pre
        injected = pre[len(before) : len(pre) - len(after)]
        try:
            system_open = self._decompose([], "system", r1)[1]["system"]
        except TEMPLATE_ERRORS:
            system_open = None
        if system_open is None or not before.endswith(system_open):
            logger.warning("chat template injects a default system prompt %r that cannot be removed", injected)
            return pre
        logger.info("chat template injects a default system prompt when none is given; leaving it out")
        return before[: len(before) - len(system_open)]

    def _derive_role_pattern(self) -> tuple[str, str] | None:
        """Opening text as `head + role + tail` when the template inserts the role verbatim; checked on real roles."""
        open_a, close_a = self.opens[ROLE_A], self.closes[ROLE_A]
        if open_a.count(ROLE_A) != 1 or ROLE_A in close_a or close_a != self.closes[ROLE_B]:
            return None
        head, tail = open_a.split(ROLE_A)
        check = [(_CHECK_ROLES[i % 2], c) for i, c in enumerate(_CONTENT[:3])]
        turns = "".join(head + role + tail + text + close_a for role, text in check)
        slow = self._render(self.sys_msgs + [{"role": r, "content": c} for r, c in check])
        # Without a system prompt the template may inject its own; only the turns must then match.
        if not (slow.endswith(turns) if self.system is None else slow == self.pre + turns):
            logger.debug("chat template does not insert roles verbatim; probing each author's tag")
            return None
        return head, tail

    def turn(self, role: str) -> tuple[str, str]:
        """(opening, closing) text of a turn with this role."""
        if role not in self.opens:
            if self.role_pattern is not None:
                self.opens[role] = self.role_pattern[0] + role + self.role_pattern[1]
                self.closes[role] = self.closes[ROLE_A]
            else:
                try:
                    _, opens, closes = self._decompose(self.sys_msgs, role, ROLE_B)
                except TEMPLATE_ERRORS as e:
                    raise ConfigError(f"chat template cannot render role {role!r}: {e}") from None
                self.opens[role], self.closes[role] = opens[role], closes[role]
        return self.opens[role], self.closes[role]
