"""The user index, `config/users.json`: who is in the chat and who may be cloned.

One object per user, written one per line so the file reads and diffs well by hand. `excluded`, `opted_out`,
`first_name` and `is_bot` are the user's edits and survive a rebuild; counts and shares are recomputed from
the data. `included` is derived (share at least `min_share`, and not a bot, excluded or opted out) and is
recomputed whenever the index is built, loaded or edited, so a hand edit of it alone has no effect.
Users below `min_share` stay in the chat as context; they are just not trained as speakers. Excluded and
opted-out users, and bots, never reach training data or generation at all (DESIGN.md, "Users").
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cloneus.data.readers.frames import strip_invisible
from cloneus.errors import CloneusError, ConfigError, UnknownAuthorError
from cloneus.io import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_MIN_SHARE = 0.005
# The old scripts/build.py wrote a JSON list of these per user; "b0" marked the Cloneus bot's own account.
LEGACY_FIELDS = {"id", "firstName", "authorInitial", "username", "displayName", "isBot"}
LEGACY_BOT_INITIAL = "b0"


class User(BaseModel):
    """One person (or bot) in the chat."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str = Field(description="Stable author id from the export (the username when the format has none).")
    username: str = Field(description="Account name.")
    display_name: str = Field(description="Name shown in chat and used for {author} in tags.")
    first_name: str | None = Field(None, description="Used for {fname} in tags; set with `index set --first-name`.")
    is_bot: bool = Field(False, description="Bots are never trained or generated.")
    excluded: bool = Field(False, description="Left out of training data and generation entirely.")
    opted_out: bool = Field(False, description="The person withdrew consent: never trained or generated.")
    message_count: int = Field(0, ge=0, description="Messages in the data the index was built from.")
    share: float = Field(0.0, ge=0, le=1, description="message_count / all messages.")
    included: bool = Field(False, description="Derived: trained as a speaker. Recomputed, not an input.")

    @field_validator("id", "username", "display_name")
    @classmethod
    def _visible(cls, name: str) -> str:
        """Readers drop invisible characters from names (`canonical_name`); an index written before they did must
        still match them, or an opt-out stored under "\ufeffalice" would miss the "alice" of a new read."""
        return strip_invisible(name)

    def eligible(self, min_share: float) -> bool:
        """Whether this user is trained: enough messages, and not a bot, excluded or opted out."""
        enough = self.message_count >= min_share if min_share > 1 else self.share >= min_share
        return enough and self.message_count > 0 and not (self.is_bot or self.excluded or self.opted_out)


class UserIndex(BaseModel):
    """All users of one chat, with the threshold that decides who is trained.

    Args:
        users (`list[User]`): in descending message count.
        min_share (`float`, *optional*, defaults to `0.005`): a share of all messages, or an absolute message
            count when > 1, that a user needs to be trained.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    users: list[User] = Field(default_factory=list)
    min_share: float = Field(DEFAULT_MIN_SHARE, ge=0, description="Share (or count when > 1) needed for training.")
    _old_layout: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _derive_included(self) -> UserIndex:
        for user in self.users:
            included = user.eligible(self.min_share)
            if user.included != included:
                object.__setattr__(user, "included", included)
        return self

    @classmethod
    def load(cls, path: str | Path) -> UserIndex:
        """Read and validate a user index.

        Raises:
            CloneusError: the file does not exist (run `python -m cloneus index build`).
            ConfigError: the JSON is invalid or a field is wrong; names the file, the user and the field.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CloneusError(
                f"{path}: user index not found; create it with `python -m cloneus index build CHAT_EXPORT`"
            ) from None
        except IsADirectoryError:
            raise ConfigError(
                f"{path}: is a directory, expected the user index file; point dataset.users_json at a file "
                "(create it with `python -m cloneus index build CHAT_EXPORT`)"
            ) from None
        except UnicodeDecodeError as e:
            utf16 = e.object[:2] in (b"\xff\xfe", b"\xfe\xff")
            raise ConfigError(
                f"{path}: user index is {'UTF-16' if utf16 else 'not UTF-8'} (byte {e.object[e.start]:#04x} at "
                f"offset {e.start}); save it as UTF-8, or rebuild it with `python -m cloneus index build CHAT_EXPORT`"
            ) from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        if isinstance(raw, list):
            return cls.from_old_layout(raw, path)
        try:
            index = cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(_describe_errors(path, raw, e)) from None
        pairs = list(zip(index.users, raw.get("users", []), strict=True))
        stale = [u.display_name for u, entry in pairs if entry.get("included", u.included) != u.included]
        renamed = [
            repr(e.get("display_name"))
            for u, e in pairs
            if (e.get("id"), e.get("display_name")) != (u.id, u.display_name)
        ]
        if renamed:
            logger.warning(
                "%s: %d user(s) had invisible characters in their id or name, now read without them: %s",
                path,
                len(renamed),
                ", ".join(renamed[:5]),
            )
        if stale:
            logger.warning(
                "%s: 'included' is derived and was recomputed for %s; edit excluded/opted_out/min_share instead",
                path,
                ", ".join(stale),
            )
        return index

    @classmethod
    def from_old_layout(cls, entries: list, path: str | Path) -> UserIndex:
        """Read the old `scripts/build.py` index: a list of `{id, firstName, authorInitial, username, displayName,
        isBot}`. It lists only the users the old system trained, and has no message counts.

        The result keeps names, first names and bot flags; `needs_counts` is True, and `build(frame, existing=...)`
        counts the chat and marks everyone the old index did not list as excluded, because the old system left
        their messages out entirely (too few messages, or excluded with `build.py -e`).

        Raises:
            ConfigError: an entry is not an object with the old fields; names the file and the entry.
        """
        users = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "username" not in entry or "id" not in entry:
                raise ConfigError(
                    f"{path}: entry #{i + 1}: expected an object with the old scripts/build.py fields "
                    f'{sorted(LEGACY_FIELDS)}, or a new index ({{"min_share": ..., "users": [...]}})'
                )
            username = str(entry["username"])
            users.append(
                User(
                    id=str(entry["id"]),
                    username=username,
                    display_name=str(entry.get("displayName") or username),
                    first_name=entry.get("firstName") or None,
                    is_bot=bool(entry.get("isBot")) or entry.get("authorInitial") == LEGACY_BOT_INITIAL,
                )
            )
        logger.warning(
            "%s is an old scripts/build.py user index (%d users, no message counts); it is read with counts from "
            "the chat. Convert it once with `python -m cloneus index build CHAT_EXPORT -o %s`",
            path,
            len(users),
            path,
        )
        index = cls(users=users)
        index._old_layout = True
        return index

    @property
    def needs_counts(self) -> bool:
        """True for an index read from the old layout: it must be rebuilt against the chat before training."""
        return self._old_layout

    def save(self, path: str | Path) -> None:
        """Write atomically: the old file stays intact if anything fails. One user object per line."""
        lines = [json.dumps(u.model_dump(), ensure_ascii=False) for u in self.users]
        body = ",\n    ".join(lines)
        users = f"[\n    {body}\n  ]" if lines else "[]"
        atomic_write_text(path, f'{{\n  "min_share": {json.dumps(self.min_share)},\n  "users": {users}\n}}\n')

    @classmethod
    def build(
        cls,
        frame: pd.DataFrame,
        min_share: float = DEFAULT_MIN_SHARE,
        existing: UserIndex | None = None,
        exclude: Iterable[str] = (),
        bots: Iterable[str] = (),
    ) -> UserIndex:
        """Count messages per author and merge in the edits of an existing index.

        Args:
            frame (`pd.DataFrame`): canonical messages, normally cleaned (commands and bots dropped, unmerged).
            min_share (`float`, *optional*, defaults to `0.005`): share, or count when > 1, needed to be trained.
            existing (`UserIndex`, *optional*): its first names, exclusions, opt-outs and bot flags are kept
                (matched by id, then username). Its users missing from `frame` stay, with zero messages, so an
                opt-out is never forgotten. An old-layout index (`needs_counts`) also excludes everyone it does
                not list, as the old system did.
            exclude (`Iterable[str]`): names (username or display name) to mark excluded.
            bots (`Iterable[str]`): names to mark as bots.

        Raises:
            UnknownAuthorError: a name in `exclude` or `bots` matches nobody.
        """
        total = len(frame)
        users: list[User] = []
        if total:
            columns = ["author_id", "author"] + (["username"] if "username" in frame.columns else [])
            columns += ["is_bot"] if "is_bot" in frame.columns else []
            # Column-wise zip instead of iterrows: a chat like #ubuntu has ~18k authors, and iterrows builds a
            # Series per row (seconds); this is one pass over plain lists.
            latest = frame.drop_duplicates("author_id", keep="last").set_index("author_id")
            counts = frame["author_id"].value_counts(sort=False).reindex(latest.index)
            usernames = latest["username"] if "username" in columns else latest["author"]
            bot_flags = latest["is_bot"] if "is_bot" in columns else [False] * len(latest)
            for author_id, author, username, is_bot, count in zip(
                latest.index, latest["author"], usernames, bot_flags, counts, strict=True
            ):
                users.append(
                    User(
                        id=str(author_id),
                        username=str(username),
                        display_name=str(author),
                        is_bot=bool(is_bot),
                        message_count=int(count),
                        share=int(count) / total,
                    )
                )
        if existing is not None:
            listed = {u.id for u in existing.users} | {u.username.casefold() for u in existing.users}
            users = _merge_edits(users, existing)
            if existing.needs_counts:
                for user in users:
                    user.excluded = user.excluded or not ({user.id, user.username.casefold()} & listed)
        index = cls(users=sorted(users, key=lambda u: (-u.message_count, u.display_name.lower())), min_share=min_share)
        for name in exclude:
            index.set(name, excluded=True)
        for name in bots:
            index.set(name, is_bot=True)
        _warn_duplicate_names(index.users)
        return index

    def get(self, name: str) -> User | None:
        """The user whose id, username or display name is `name` (names case-insensitively, and without invisible
        characters: `strip_invisible`), else None."""
        name = strip_invisible(name)
        for user in self.users:
            if user.id == name:
                return user
        wanted = name.casefold()
        for user in self.users:
            if user.display_name.casefold() == wanted or user.username.casefold() == wanted:
                return user
        return None

    def resolve(self, name: str) -> User:
        """The user called `name`, if they may be cloned.

        Raises:
            UnknownAuthorError: unknown (with close matches), a bot, excluded or opted out.
        """
        user = self.get(name)
        if user is None:
            known = [u.display_name for u in self.users]
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownAuthorError(f"unknown author {name!r}{hint}")
        for flag, why in (("opted_out", "opted out"), ("excluded", "excluded"), ("is_bot", "a bot")):
            if getattr(user, flag):
                raise UnknownAuthorError(f"{user.display_name!r} is {why} and cannot be cloned")
        return user

    def trainable(self) -> list[User]:
        """Users trained as speakers, in descending message count."""
        return [u for u in self.users if u.included]

    def set(
        self,
        name: str,
        *,
        first_name: str | None = None,
        excluded: bool | None = None,
        opted_out: bool | None = None,
        is_bot: bool | None = None,
    ) -> User:
        """Edit one user (fields left None are unchanged) and recompute who is included.

        Raises:
            UnknownAuthorError: no user is called `name`.
        """
        user = self.get(name)
        if user is None:
            close = difflib.get_close_matches(name, [u.display_name for u in self.users], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownAuthorError(f"no user {name!r} in the index{hint}")
        updates = {"first_name": first_name, "excluded": excluded, "opted_out": opted_out, "is_bot": is_bot}
        for key, value in updates.items():
            if value is not None:
                setattr(user, key, value)
        self._derive_included()
        return user

    def tag_fields(self, name: str) -> dict[str, str]:
        """Values for an author tag f-string: `author` (display name), `fname` (first name, else display name)
        and `lauthor` (lower-case display name). Unknown names format as themselves."""
        user = self.get(name)
        display = user.display_name if user else name
        first = user.first_name if user and user.first_name else display
        return {"author": display, "fname": first, "lauthor": display.lower()}

    def name_mapping(self, author_tag: str) -> str:
        """Comma-joined author tags of the trainable users, for the system prompt's `{name_mapping}`."""
        return ", ".join(author_tag.format(**self.tag_fields(u.display_name)) for u in self.trainable())


def _merge_edits(users: list[User], existing: UserIndex) -> list[User]:
    by_id = {u.id: u for u in existing.users}
    by_username = {u.username.casefold(): u for u in existing.users}
    seen: set[int] = set()
    for user in users:
        old = by_id.get(user.id) or by_username.get(user.username.casefold())
        if old is None:
            continue
        seen.add(id(old))
        user.first_name = old.first_name
        user.excluded = old.excluded
        user.opted_out = old.opted_out
        user.is_bot = old.is_bot or user.is_bot
    for old in existing.users:
        if id(old) not in seen:
            users.append(old.model_copy(update={"message_count": 0, "share": 0.0}))
    return users


def _warn_duplicate_names(users: list[User]) -> None:
    """Log once if display names collide (case-insensitively): lookups by name then find only the first."""
    owners: dict[str, set[str]] = {}
    for user in users:
        owners.setdefault(user.display_name.casefold(), set()).add(user.id)
    shared = [name for name, ids in owners.items() if len(ids) > 1]
    if shared:
        logger.warning(
            "%d display name(s) belong to more than one user id (%s); name lookups pick the most active one - "
            "set distinct first names or mark the extra accounts excluded",
            len(shared),
            ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else ""),
        )


def _describe_errors(path: Path, raw: object, err: ValidationError) -> str:
    """One line per problem naming the file, the user (by position and name) and the field."""
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "users" and isinstance(loc[1], int) and isinstance(raw, dict):
            entry = raw["users"][loc[1]]
            who = entry.get("display_name") or entry.get("username") if isinstance(entry, dict) else None
            field = ".".join(str(p) for p in loc[2:]) or "(entry)"
            where = f"user #{loc[1] + 1}" + (f" ({who})" if who else "") + f", field '{field}'"
        lines.append(f"{path}: {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)
