"""HTTP to an OpenAI-compatible server: requests, server-sent events, and errors as one clear line.

Stdlib `urllib` only. Every failure becomes a `CloneusError` whose message is a single line naming the URL and
what went wrong (HTTP status and the server's own `error.message`, a refused connection, a reply cut off when the
server died mid-stream), with the API key scrubbed out, so a bot can show it as it is.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from cloneus.errors import CloneusError

ERROR_BODY_CHARS = 300
# What a connection that breaks while a reply is read raises (the server process died or dropped us).
BROKEN_CONNECTION = (http.client.HTTPException, ConnectionError, TimeoutError, OSError)


def one_line(text: str, limit: int = ERROR_BODY_CHARS) -> str:
    """`text` with runs of whitespace (newlines included) collapsed, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def server_message(raw: bytes) -> str:
    """The human part of an error body: vLLM's and OpenAI's `{"error": {"message"}}`, else the raw text."""
    text = raw.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)
    return str(error)


class ServerClient:
    """JSON requests to one server; the key goes in the `Authorization` header and nowhere else.

    Args:
        base_url (`str`): up to and including `/v1`.
        api_key (`str`, *optional*): sent as a bearer token.
        timeout_s (`float`): per-request socket timeout.
    """

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    def scrub(self, text: str) -> str:
        """`text` made safe to show: the key replaced, everything on one line."""
        text = text.replace(self._api_key, "***") if self._api_key else text
        return one_line(text)

    def error(self, path: str, what: str) -> CloneusError:
        return CloneusError(self.scrub(f"{self.base_url}{path}: {what}"))

    def open(self, path: str, body: dict[str, Any] | None = None):
        """POST `body` (GET when None) to `path`; returns the open response."""
        url = f"{self.base_url}{path}"
        headers = {"Accept": "application/json, text/event-stream"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            detail = server_message(e.read(4 * ERROR_BODY_CHARS))
            raise self.error(path, f"HTTP {e.code} {e.reason}: {detail}") from None
        except urllib.error.URLError as e:
            raise CloneusError(self.scrub(f"cannot reach {url}: {e.reason}")) from None
        except BROKEN_CONNECTION as e:
            raise CloneusError(self.scrub(f"cannot reach {url}: {e}")) from None

    def read(self, path: str, response) -> bytes:
        try:
            with response:
                return response.read()
        except BROKEN_CONNECTION as e:
            what = f"the connection broke before the reply was complete ({type(e).__name__})"
            raise self.error(path, what) from None

    def json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded JSON reply of a request (GET when `body` is None)."""
        raw = self.read(path, self.open(path, body))
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise self.error(path, f"reply is not JSON: {raw[:200]!r}") from None

    def text(self, path: str, body: dict[str, Any]) -> str:
        """The plain-text reply of a POST (vLLM's `/load_lora_adapter` answers with a sentence)."""
        return self.read(path, self.open(path, body)).decode("utf-8", "replace")

    def events(self, path: str, response) -> Iterator[dict[str, Any]]:
        """JSON payloads of a server-sent-event reply's `data:` lines until `[DONE]`.

        An `error` payload raises, and so does a stream that ends without `[DONE]` (the server died mid-reply).
        """
        try:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise self.error(path, f"server error while streaming: {server_message(data.encode())}")
                yield event
        except BROKEN_CONNECTION as e:
            raise self.error(path, f"the connection broke in the middle of the reply ({type(e).__name__})") from None
        except json.JSONDecodeError:
            raise self.error(path, "the stream carried an event that is not JSON") from None
        raise self.error(path, "the stream ended before [DONE]; the server stopped in the middle of the reply")
