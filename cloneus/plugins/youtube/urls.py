"""Finding YouTube links in text, and the tag a link becomes.

A link is recognised in any of the forms people paste: `youtube.com/watch?v=`, `youtu.be/`, `/shorts/`, `/embed/`,
`/live/`, on `www.`, `m.` or `music.` hosts, with or without a scheme, with extra query parameters or a timestamp,
and optionally wrapped in Discord's embed-suppressing `<...>`. Punctuation that ends a sentence is not part of the
link.

The tag is built from `youtube.tag_format`. Its placeholders are `{id}`, `{title}` and `{channel}`; each must be
followed by a punctuation character (the closing quote in the default format). That character, and `&`, are escaped
inside values as HTML entities (`&quot;`, `&amp;`, `&#93;`, ...), so a value never contains its own terminator and
the tag parses back exactly, whatever the title holds.

Parsing is lenient where a small model slips: a generated tag may drop later fields
(`<youtube id="..." title="...">` with no channel), and a tag cut off at the end of a reply is still found
(`complete=False`), so neither reaches the chat as raw markup.
"""

from __future__ import annotations

import html
import re
import string
from dataclasses import dataclass

from cloneus.errors import ConfigError

VIDEO_ID_RE = re.compile(r"[A-Za-z0-9_-]{11}")
URL_RE = re.compile(
    r"(?P<open><)?(?<![\w./=-])(?i:https?://)?(?i:(?:www|m|music)\.)?"
    r"(?i:youtube\.com/(?:watch\?(?:[^\s#<>]*?&)?v=|shorts/|embed/|live/|v/)|youtu\.be/)"
    r"(?P<id>[A-Za-z0-9_-]{11})(?![A-Za-z0-9_-])"
    # Extra parameters or a timestamp, but not the sentence's closing punctuation.
    r"(?:[?&#/][^\s<>]*[^\s<>.,!?;:'\")\]])?(?(open)>)"
)
# Every link contains this; testing for it first skips the full pattern on the ~99% of messages without one.
LINK_HINT = re.compile("youtu", re.IGNORECASE)
FIELDS = ("id", "title", "channel")
_NAMED_ENTITIES = {"&": "&amp;", '"': "&quot;", "<": "&lt;", ">": "&gt;"}


def watch_url(video_id: str) -> str:
    """The canonical URL of a video, the only form decode ever emits."""
    return f"https://www.youtube.com/watch?v={video_id}"


def is_video_id(text: str) -> bool:
    """Whether `text` has the shape of a video id (11 of `A-Z a-z 0-9 _ -`); says nothing about it existing."""
    return VIDEO_ID_RE.fullmatch(text) is not None


def find_links(text: str) -> list[re.Match[str]]:
    """Every YouTube link in `text`, in order; `match["id"]` is the video id and `match.group()` the whole link."""
    return list(URL_RE.finditer(text)) if LINK_HINT.search(text) else []


@dataclass(frozen=True)
class TagMatch:
    """A tag found in text: its span and its unescaped fields (absent fields are empty strings)."""

    start: int
    end: int
    id: str
    title: str
    channel: str
    complete: bool = True


class TagFormat:
    """Renders and parses the tag a link becomes, from a format such as `<youtube id="{id}" title="{title}">`.

    Args:
        fmt (`str`): the format; placeholders `{id}`, `{title}`, `{channel}`, at least one of `{id}` and `{title}`,
            each followed by a punctuation character that ends its value.

    Raises:
        ConfigError: naming `youtube.tag_format` and the placeholder that breaks the rule.
    """

    def __init__(self, fmt: str):
        self.fmt = fmt
        parts = self._parse(fmt)
        self.terminators = frozenset(nxt[0] for _, field, nxt in parts if field)
        # The first field is required, later ones optional. A tag cut off at the very end of the text may stop after
        # any field, or part-way into any literal that could follow it.
        (head, first, _), *rest = parts
        groups = {field: f"(?P<{field}>[^{re.escape(nxt[:1])}\\n]*)" for _, field, nxt in parts if field}
        pattern = re.escape(head) + groups[first]
        pattern += "".join(f"(?:{re.escape(lit)}{groups[field]})?" for lit, field, _ in rest if field)
        partial = sorted({lit[:k] for lit, _, _ in rest for k in range(len(lit))}, key=len, reverse=True)
        cut = "|".join(re.escape(p) for p in partial)
        self.regex = re.compile(f"{pattern}(?:{re.escape(rest[-1][0])}|(?P<cut>{cut})\\s*\\Z)")

    @staticmethod
    def _parse(fmt: str) -> list[tuple[str, str | None, str]]:
        """Split `fmt` into (literal, field, following literal) triples, checking the rules in the class docstring."""
        try:
            raw = list(string.Formatter().parse(fmt))
        except ValueError as e:
            raise ConfigError(f"youtube.tag_format {fmt!r}: {e}") from None
        # `{{` splits the literal text into several pieces; join each run of text back onto its placeholder.
        pieces, text = [], ""
        for literal, field, spec, conv in raw:
            text += literal
            if field is not None:
                pieces.append((text, field, spec, conv))
                text = ""
        pieces.append((text, None, None, None))
        if not pieces[0][0]:
            raise ConfigError("youtube.tag_format: must start with fixed text such as '<youtube ', to tell tags apart")
        parts: list[tuple[str, str | None, str]] = []
        seen: set[str] = set()
        for i, (literal, field, spec, conv) in enumerate(pieces):
            nxt = pieces[i + 1][0] if i + 1 < len(pieces) else ""
            if field is not None:
                if field not in FIELDS or spec or conv:
                    raise ConfigError(
                        f"youtube.tag_format: unknown placeholder {{{field}}}; use {{id}}, {{title}}, {{channel}}"
                    )
                if field in seen:
                    raise ConfigError(f"youtube.tag_format: {{{field}}} appears twice; use each placeholder once")
                if not nxt or nxt[0].isalnum() or nxt[0].isspace() or nxt[0] in "&#;":
                    raise ConfigError(
                        f"youtube.tag_format: {{{field}}} must be followed by a punctuation character such as "
                        f"'\"' or ']' that ends its value, got {nxt[:1]!r}"
                    )
                seen.add(field)
            parts.append((literal, field, nxt))
        if not seen & {"id", "title"}:
            raise ConfigError("youtube.tag_format: needs {id} or {title}, or a tag cannot be turned back into a link")
        return parts

    def escape(self, value: str) -> str:
        """Make `value` safe inside the tag: `&` and every terminator become entities; newlines become spaces."""
        value = value.replace("&", "&amp;").replace("\r", " ").replace("\n", " ")
        for ch in self.terminators:
            value = value.replace(ch, _NAMED_ENTITIES.get(ch, f"&#{ord(ch)};"))
        return value

    def render(self, video_id: str, title: str, channel: str) -> str:
        """The tag for one video."""
        return self.fmt.format(id=self.escape(video_id), title=self.escape(title), channel=self.escape(channel))

    def find(self, text: str) -> list[TagMatch]:
        """Every tag in `text`, fields unescaped; tags missing later fields or cut off at the end included."""
        found = []
        for m in self.regex.finditer(text):
            values = {f: html.unescape(m.groupdict().get(f) or "").strip() for f in FIELDS}
            found.append(TagMatch(m.start(), m.end(), **values, complete=m["cut"] is None))
        return found
