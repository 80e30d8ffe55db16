"""An interactive terminal conversation with the clones (`python -m cloneus chat CHECKPOINT`).

You type as yourself; after each of your lines the model picks who speaks next and that clone's reply streams to
the terminal. Commands:

- `/as NAME text`: add a message as someone else, without a reply.
- `/next`: let the model pick who speaks, and have them speak.
- `/set key=value ...`: change sampling options (validated; e.g. `/set temperature=0.7 top_p=0.9`).
- `/help`, `/quit` (or end of input).

The loop reads and writes plain text streams so tests drive it with `io.StringIO`. Each line is kept with the time
it was typed, so the model reads the conversation as training normalised such messages (`Cloneus.normalize_history`):
a line that training would drop as a command (`!play ...`) never reaches the prompt, and lines one person types in
quick succession form one message.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from cloneus.data.normalize import Turn
from cloneus.errors import CloneusError, ConfigError

if TYPE_CHECKING:
    from cloneus.inference.cloneus import Cloneus

logger = logging.getLogger(__name__)

PROMPT = "> "
HELP = (
    "type a message to speak as yourself; /as NAME text  add someone else's message; /next  let a clone speak;\n"
    "/set key=value ...  change sampling; /help; /quit"
)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`["temperature=0.7", "top_k=20"]` → `{"temperature": 0.7, "top_k": 20}` (values parsed as YAML scalars).

    Raises:
        ConfigError: an item without `=`.
    """
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{item!r}: expected key=value, e.g. temperature=0.7")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return values


class ChatSession:
    """The state of one terminal conversation: history, sampling overrides and who you are.

    Args:
        clo (`Cloneus`): the loaded model.
        out (`TextIO`): where replies and messages go.
        me (`str`, *optional*, defaults to `"you"`): your name in the history; never picked to speak.
        sampling (`dict`, *optional*): initial sampling overrides.
        mode (`str`, *optional*, defaults to `"weighted"`): how the next speaker is picked.
    """

    def __init__(self, clo: Cloneus, out: TextIO, *, me: str = "you", sampling: dict | None = None, mode="weighted"):
        self.clo = clo
        self.out = out
        self.me = me
        self.mode = mode
        self.sampling: dict[str, Any] = {}
        self.history: list[Turn] = []
        self.set_sampling(sampling or {})

    def set_sampling(self, values: dict[str, Any]) -> None:
        """Validate new overrides against the model's defaults (a `ConfigError` names the bad key and range)."""
        self.clo.sampling_defaults.merged(**{**self.sampling, **values})
        self.sampling.update(values)

    def speak(self) -> str | None:
        """Let the model choose the next speaker (never you) and stream their reply; returns who spoke."""
        author = self.clo.predict_author(self.history, self.mode, exclude=[self.me])
        if author is None:
            self.out.write("(nobody answers)\n")
            return None
        self.out.write(f"{author}: ")
        pieces = []
        for piece in self.clo.stream_generate(self.history, author, **self.sampling):
            self.out.write(piece)
            self.out.flush()
            pieces.append(piece)
        self.out.write("\n")
        self.add(author, "".join(pieces))
        return author

    def add(self, author: str, text: str) -> None:
        """Append a message to the history, stamped now (burst merging needs the time)."""
        self.history.append(Turn(author, text, datetime.now(timezone.utc)))

    def handle(self, line: str) -> bool:
        """Act on one input line; returns False when the session should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.add(self.me, line)
            self.speak()
            return True
        command, _, rest = line.partition(" ")
        if command == "/quit":
            return False
        if command == "/next":
            self.speak()
        elif command == "/as":
            name, _, text = rest.strip().partition(" ")
            if not name or not text.strip():
                raise ConfigError("usage: /as NAME text")
            self.add(name, text.strip())
        elif command == "/set":
            if not rest.strip():
                self.out.write(f"sampling overrides: {self.sampling or 'none'}\n")
                return True
            self.set_sampling(parse_assignments(rest.split()))
            self.out.write(f"sampling overrides: {self.sampling}\n")
        elif command == "/help":
            self.out.write(HELP + "\n")
        else:
            raise ConfigError(f"unknown command {command!r}; {HELP}")
        return True


def run_chat(clo: Cloneus, lines: TextIO, out: TextIO, **session_kwargs: Any) -> ChatSession:
    """Read lines from `lines` until `/quit` or end of input; errors in a line are shown and the chat goes on."""
    session = ChatSession(clo, out, **session_kwargs)
    names = ", ".join(u.display_name for u in clo.users.trainable())
    out.write(f"chatting as {session.me!r} with {names}\n{HELP}\n")
    while True:
        out.write(PROMPT)
        out.flush()
        line = lines.readline()
        if not line:
            out.write("\n")
            break
        try:
            if not session.handle(line):
                break
        except CloneusError as e:
            out.write(f"error: {e}\n")
    return session
