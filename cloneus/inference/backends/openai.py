"""The `openai` backend: an OpenAI-compatible `/v1/completions` server does the generating.

For groups that outgrow one GPU, or a bot host without one: vLLM serves the base model with each checkpoint's
adapter as a LoRA module (`vllm serve BASE --enable-lora --lora-modules name=checkpoint-dir`), or llama.cpp
serves a GGUF. This side still formats the prompt with the checkpoint's `ChatFormatter`, so the server receives
exactly the text training used, and the reply is cut at the same stop strings as the local backend's.

HTTP is stdlib `urllib` (no extra dependency). Streaming reads server-sent events. The API key comes from the
environment only and never appears in a log line, an error or a repr.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError, ConfigError
from cloneus.inference.backends.openai_params import request_fields

if TYPE_CHECKING:
    from cloneus.config import InferenceConfig
    from cloneus.inference.sampling import SamplingOptions
    from cloneus.inference.stopping import TextStops

logger = logging.getLogger(__name__)

ENV_BASE_URL = "CLONEUS_OPENAI_BASE_URL"
ENV_API_KEY = "CLONEUS_OPENAI_API_KEY"
ENV_MODEL = "CLONEUS_OPENAI_MODEL"
TOP_LOGPROBS = 20
ERROR_BODY_CHARS = 300


class OpenAIBackend:
    """Replies from a remote OpenAI-compatible completions server.

    Args:
        base_url (`str`): up to and including `/v1`, e.g. `http://gpu-box:8000/v1`.
        model (`str`): the served model name (under vLLM, the LoRA module's name).
        server_kind (`str`): `vllm`, `llamacpp` or `generic`; decides which samplers may be sent.
        api_key (`str`, *optional*): sent as a bearer token.
        timeout_s (`float`, *optional*, defaults to 120): per-request socket timeout.
    """

    name = "openai"

    def __init__(
        self, base_url: str, model: str, server_kind: str, api_key: str | None = None, timeout_s: float = 120.0
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.server_kind = server_kind
        self._api_key = api_key
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, cfg: InferenceConfig) -> OpenAIBackend:
        """Settings from `inference.*`, with the environment filling what the config leaves empty.

        Raises:
            ConfigError: no base URL or model name anywhere.
        """
        base_url = cfg.openai_base_url or os.environ.get(ENV_BASE_URL)
        model = cfg.openai_model or os.environ.get(ENV_MODEL)
        if not base_url:
            raise ConfigError(f"inference.openai_base_url is not set (nor {ENV_BASE_URL}); e.g. http://host:8000/v1")
        if not model:
            raise ConfigError(f"inference.openai_model is not set (nor {ENV_MODEL}); the name the server serves")
        return cls(base_url, model, cfg.server_kind, os.environ.get(ENV_API_KEY), cfg.request_timeout_s)

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, kind={self.server_kind}, key={key})"

    @property
    def device(self) -> str:
        return self.base_url

    def close(self) -> None:
        """Nothing to free: the server keeps its model."""

    # ---- HTTP -----------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _post(self, body: dict[str, Any]):
        """POST to `/completions`; returns the open response. Errors name the URL and status, never the key."""
        url = f"{self.base_url}/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            detail = e.read(ERROR_BODY_CHARS).decode("utf-8", "replace")
            raise CloneusError(self._scrub(f"{url}: HTTP {e.code} {e.reason}: {detail}")) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise CloneusError(self._scrub(f"cannot reach {url}: {reason}")) from None

    def _post_json(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._post(body) as response:
            raw = response.read()
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise CloneusError(f"{self.base_url}/completions: reply is not JSON: {raw[:200]!r}") from None

    def _body(self, prompt: str | list[str], opts: SamplingOptions, stops: TextStops, **extra: Any) -> dict:
        return {
            "model": self.model,
            "prompt": prompt,
            "stop": stops.stops,
            **request_fields(opts, self.server_kind),
            **extra,
        }

    # ---- generation -----------------------------------------------------------------------------------------

    def complete(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> str:
        """One reply, without streaming."""
        choices = self._post_json(self._body(prompt, opts, stops)).get("choices") or []
        if not choices:
            raise CloneusError(f"{self.base_url}/completions: reply has no choices")
        return stops.cut(choices[0].get("text", ""))[0].rstrip()

    def complete_batch(self, prompts: list[str], opts: SamplingOptions, stops: TextStops) -> list[str]:
        """All prompts in one request (`prompt` as a list); choices are matched back by `index`."""
        choices = self._post_json(self._body(prompts, opts, stops)).get("choices") or []
        texts = {c.get("index", i): c.get("text", "") for i, c in enumerate(choices)}
        if sorted(texts) != list(range(len(prompts))):
            raise CloneusError(f"{self.base_url}/completions: expected {len(prompts)} choices, got {len(choices)}")
        return [stops.cut(texts[i])[0].rstrip() for i in range(len(prompts))]

    def stream(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> Iterator[str]:
        """Text deltas from the server's event stream, held back where a stop string may be forming."""
        text, shown = "", ""
        with self._post(self._body(prompt, opts, stops, stream=True)) as response:
            for event in _sse_events(response):
                choices = event.get("choices") or []
                text += choices[0].get("text", "") if choices else ""
                visible = stops.visible(text)
                if len(visible) > len(shown) and visible.startswith(shown):
                    yield visible[len(shown) :]
                    shown = visible
                if stops.cut(text)[1]:
                    break
        final = stops.cut(text)[0].rstrip()
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]

    # ---- scoring --------------------------------------------------------------------------------------------

    def continuation_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after `prefix`, from the server's `logprobs`.

        vLLM scores the whole continuation (`echo` returns prompt-token logprobs). llama.cpp and generic servers
        only give the top alternatives for the first generated token, so each candidate gets the logprob of the
        longest top token its text starts with; candidates that share a first token tie.
        """
        if self.server_kind == "vllm":
            return self._echo_logprobs(prefix, continuations)
        return self._first_token_logprobs(prefix, continuations)

    def _scoring_body(self, prompt: str | list[str], **extra: Any) -> dict[str, Any]:
        return {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, **extra}

    def _echo_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        prompts = [prefix + c for c in continuations]
        reply = self._post_json(self._scoring_body(prompts, echo=True, logprobs=1))
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise CloneusError(f"{self.base_url}: expected {len(prompts)} choices with logprobs, got {len(choices)}")
        scores = []
        for prompt, choice in zip(prompts, choices, strict=True):
            lp = choice.get("logprobs") or {}
            offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
            if not offsets or not values:
                raise CloneusError(f"{self.base_url}: the server returned no prompt logprobs (echo + logprobs)")
            scores.append(
                sum(
                    v for o, v in zip(offsets, values, strict=True) if len(prefix) <= o < len(prompt) and v is not None
                )
            )
        return scores

    def _first_token_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        reply = self._post_json(self._scoring_body(prefix, logprobs=TOP_LOGPROBS))
        top = _first_top_logprobs(reply)
        if not top:
            raise CloneusError(f"{self.base_url}: the server returned no logprobs; next-speaker scoring needs them")
        scores = []
        for cont in continuations:
            matches = [(len(t), lp) for t, lp in top.items() if t and cont.startswith(t)]
            scores.append(max(matches)[1] if matches else float("-inf"))
        if all(s == float("-inf") for s in scores):
            raise CloneusError(f"{self.base_url}: no candidate author tag is among the top {TOP_LOGPROBS} next tokens")
        return scores


def _sse_events(response) -> Iterator[dict[str, Any]]:
    """JSON payloads of `data:` lines until `[DONE]`; an `error` payload raises."""
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise CloneusError(f"server error while streaming: {str(event['error'])[:ERROR_BODY_CHARS]}")
        yield event


def _first_top_logprobs(reply: dict[str, Any]) -> dict[str, float]:
    """Top alternatives of the first generated token, from the legacy or the chat-style logprobs layout."""
    choices = reply.get("choices") or []
    lp = (choices[0].get("logprobs") if choices else None) or {}
    if lp.get("top_logprobs"):  # legacy completions: [{token: logprob, ...}, ...]
        return dict(lp["top_logprobs"][0])
    if lp.get("content"):  # llama.cpp: {"content": [{"top_logprobs": [{"token", "logprob"}]}]}
        return {t["token"]: t["logprob"] for t in lp["content"][0].get("top_logprobs", [])}
    return {}
