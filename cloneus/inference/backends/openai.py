"""The `openai` backend: an OpenAI-compatible `/v1/completions` server does the generating.

For groups that outgrow one GPU, or a bot host without one: vLLM serves the base model with each checkpoint's
adapter as a LoRA module (`cloneus serve`), or llama.cpp serves a GGUF (`cloneus export --gguf`). This side
still formats the prompt with the checkpoint's `ChatFormatter`, so the server receives exactly the text training
used (vLLM is told not to add a BOS of its own), and the reply is cut at the same stop strings as the local
backend's, so for the same tokens the reply text is identical.

Stop strings: vLLM (like OpenAI) takes at most 4. The most important ones (the end of turn first) are sent; every
reply is streamed, and all stop strings are checked here as the text arrives: on a match the stream is closed,
which cancels the request on the server. `complete_batch` runs one such stream per prompt, concurrently.

Serving a checkpoint: under vLLM each LoRA module has a name; `use_checkpoint` finds the module whose path is the
checkpoint (`GET /v1/models`) or loads it at run time (`POST /v1/load_lora_adapter`, which needs the server to
run with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`), then sends requests under that name: a swap is one lookup.

HTTP is stdlib `urllib` (`openai_http`). The API key comes from the environment only and never appears in a log
line, an error or a repr.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import CloneusError, ConfigError
from cloneus.inference.backends import openai_scoring
from cloneus.inference.backends.openai_http import ServerClient
from cloneus.inference.backends.openai_params import PLUGIN_XARG, plugin_needed, request_fields

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from cloneus.config import InferenceConfig
    from cloneus.inference.sampling import SamplingOptions
    from cloneus.inference.stopping import TextStops

logger = logging.getLogger(__name__)

ENV_BASE_URL = "CLONEUS_OPENAI_BASE_URL"
ENV_API_KEY = "CLONEUS_OPENAI_API_KEY"
ENV_MODEL = "CLONEUS_OPENAI_MODEL"
TOP_LOGPROBS = 20
# How many stop strings each server kind accepts in one request (None: no limit).
STOP_LIMITS = {"vllm": 4, "generic": 4, "llamacpp": None}
COMPLETIONS = "/completions"


class OpenAIBackend:
    """Replies from a remote OpenAI-compatible completions server.

    Args:
        base_url (`str`): up to and including `/v1`, e.g. `http://gpu-box:8000/v1`.
        model (`str | None`): the served model name (under vLLM, the LoRA module's name); None until
            `use_checkpoint` picks one.
        server_kind (`str`): `vllm`, `llamacpp` or `generic`; decides which samplers may be sent.
        api_key (`str`, *optional*): sent as a bearer token.
        timeout_s (`float`, *optional*, defaults to 120): per-request socket timeout.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): the checkpoint's tokenizer; vLLM next-speaker scoring
            needs it to split candidate tags into the same tokens as the local backend.
        sampler_plugin (`bool`, *optional*): the vLLM server runs `cloneus.serving.vllm_plugin`, so every
            sampler of ours is available there.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None,
        server_kind: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        sampler_plugin: bool = False,
    ):
        self._http = ServerClient(base_url, api_key, timeout_s)
        self.model = model
        self.server_kind = server_kind
        self.tokenizer = tokenizer
        self.sampler_plugin = sampler_plugin
        self.context_window: int | None = None  # the server's max_model_len, once /v1/models has told it

    @classmethod
    def from_config(
        cls,
        cfg: InferenceConfig,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        checkpoint: Path | None = None,
    ) -> OpenAIBackend:
        """Settings from `inference.*`, with the environment filling what the config leaves empty.

        With no model name configured, a vLLM server serves `checkpoint` under the name of its LoRA module.

        Raises:
            ConfigError: no base URL, or no model name and nothing to look one up by.
        """
        base_url = cfg.openai_base_url or os.environ.get(ENV_BASE_URL)
        model = cfg.openai_model or os.environ.get(ENV_MODEL)
        if not base_url:
            raise ConfigError(f"inference.openai_base_url is not set (nor {ENV_BASE_URL}); e.g. http://host:8000/v1")
        if not model and not (checkpoint is not None and cfg.server_kind == "vllm"):
            raise ConfigError(f"inference.openai_model is not set (nor {ENV_MODEL}); the name the server serves")
        backend = cls(
            base_url,
            model,
            cfg.server_kind,
            os.environ.get(ENV_API_KEY),
            cfg.request_timeout_s,
            tokenizer=tokenizer,
            sampler_plugin=cfg.vllm_sampler_plugin,
        )
        if not model:
            backend.use_checkpoint(checkpoint)
        return backend

    def __repr__(self) -> str:
        key = "set" if self._http.has_key else "unset"
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, kind={self.server_kind}, key={key})"

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def device(self) -> str:
        return self.base_url

    def close(self) -> None:
        """Nothing to free: the server keeps its model."""

    # ---- served adapters (vLLM) -----------------------------------------------------------------------------

    def served_models(self) -> list[dict[str, Any]]:
        """The server's `/v1/models` entries (`id`, and under vLLM `root` = path, `parent` = base for a LoRA)."""
        return list(self._http.json("/models").get("data") or [])

    def load_lora(self, name: str, path: str | Path) -> None:
        """Load the adapter at `path` into the running server as `name` (vLLM runtime LoRA loading)."""
        self._http.text("/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        logger.info("loaded LoRA %r from %s into %s", name, path, self.base_url)

    def use_checkpoint(self, checkpoint: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        """Serve `checkpoint`: find the LoRA module with its path, or load it at run time; returns its name.

        Raises:
            CloneusError: the server is not vLLM, or refused to load the adapter (its message, one line).
        """
        if self.server_kind != "vllm":
            raise CloneusError(
                f"inference.server_kind={self.server_kind!r}: switching checkpoints needs a vLLM server serving "
                "them as LoRA modules; set inference.openai_model to what this server serves instead"
            )
        path = Path(checkpoint).resolve()
        served = {m.get("id"): m for m in self.served_models()}
        windows = [m["max_model_len"] for m in served.values() if not m.get("parent") and m.get("max_model_len")]
        self.context_window = int(windows[0]) if windows else None
        name = next((i for i, m in served.items() if m.get("root") and Path(m["root"]).resolve() == path), None)
        if name is None:
            name = f"{path.parent.name}/{path.name}"
            if name in served:  # same run and step name, another directory: keep both apart
                name = str(path)
            self.load_lora(name, path)
        self.model = name
        if tokenizer is not None:
            self.tokenizer = tokenizer
        logger.info("%s serves %s as %r", self.base_url, path, name)
        return name

    # ---- generation -----------------------------------------------------------------------------------------

    def _body(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> dict[str, Any]:
        if self.model is None:
            raise CloneusError("the openai backend has no served model yet; call use_checkpoint(path) first")
        limit = STOP_LIMITS[self.server_kind]
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "stop": stops.by_priority[:limit] if limit is not None else stops.by_priority,
            "stream": True,
            **request_fields(opts, self.server_kind, plugin=self.sampler_plugin),
            **self._word_fields(opts),
        }
        if self.server_kind == "vllm":
            # The prompt text already holds any BOS the chat template writes; special tokens stay in the text so
            # the stop strings made of them are seen.
            body |= {"add_special_tokens": False, "skip_special_tokens": False}
            if self.sampler_plugin and plugin_needed(opts, self.server_kind):
                body["vllm_xargs"] = {PLUGIN_XARG: json.dumps(opts.model_dump(mode="json"))}
        return body

    def _word_fields(self, opts: SamplingOptions) -> dict[str, Any]:
        """`logit_bias` for the word rules (banned and weighted words); nothing when there are none."""
        if not opts.banned_words and not opts.word_bias:
            return {}
        if self.tokenizer is None:
            raise CloneusError("word rules need the checkpoint's tokenizer to find their token ids; none was given")
        from cloneus.inference.sampling.words import logit_bias

        return {"logit_bias": logit_bias(opts, self.tokenizer)}

    def _raw_stream(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> Iterator[str]:
        """The reply text so far, after each event; stops (closing the request) once a stop string appears."""
        text = ""
        response = self._http.open(COMPLETIONS, self._body(prompt, opts, stops))
        with response:
            for event in self._http.events(COMPLETIONS, response):
                choices = event.get("choices") or []
                text += choices[0].get("text", "") if choices else ""
                yield text
                if stops.cut(text)[1]:
                    return

    def complete(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> str:
        """One reply, cut at the first stop string."""
        text = ""
        for text in self._raw_stream(prompt, opts, stops):  # noqa: B007 (the last value is the reply)
            pass
        return stops.cut(text)[0].rstrip()

    def complete_batch(self, prompts: list[str], opts: SamplingOptions, stops: TextStops) -> list[str]:
        """One reply per prompt, requested concurrently (the server batches them)."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=len(prompts), thread_name_prefix="cloneus-openai") as pool:
            return list(pool.map(lambda p: self.complete(p, opts, stops), prompts))

    def stream(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> Iterator[str]:
        """Text deltas from the server's event stream, held back where a stop string may be forming."""
        text, shown = "", ""
        for text in self._raw_stream(prompt, opts, stops):
            visible = stops.visible(text)
            if len(visible) > len(shown) and visible.startswith(shown):
                yield visible[len(shown) :]
                shown = visible
        final = stops.cut(text)[0].rstrip()
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]

    # ---- scoring --------------------------------------------------------------------------------------------

    def continuation_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after `prefix`.

        vLLM scores every token of every candidate (`openai_scoring`). llama.cpp and generic servers only give
        the top alternatives for the first generated token, so each candidate gets the logprob of the longest
        top token its text starts with; candidates that share a first token tie.
        """
        if self.server_kind == "vllm":
            return self._vllm_logprobs(prefix, continuations)
        return self._first_token_logprobs(prefix, continuations)

    def _vllm_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        if self.tokenizer is None:
            raise CloneusError("next-speaker scoring on vLLM needs the checkpoint's tokenizer (tokenizer=)")
        shared, tails = openai_scoring.candidate_tails(self.tokenizer, prefix, continuations)
        nodes = openai_scoring.trie_nodes(tails)
        if not nodes:
            return [0.0] * len(tails)
        reply = self._http.json(COMPLETIONS, openai_scoring.scoring_body(self.model, shared, nodes))
        return openai_scoring.tail_scores(reply, nodes, tails)

    def _first_token_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        body = {"model": self.model, "prompt": prefix, "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}
        top = _first_top_logprobs(self._http.json(COMPLETIONS, body))
        if not top:
            raise CloneusError(f"{self.base_url}: the server returned no logprobs; next-speaker scoring needs them")
        scores = []
        for cont in continuations:
            matches = [(len(t), lp) for t, lp in top.items() if t and cont.startswith(t)]
            scores.append(max(matches)[1] if matches else float("-inf"))
        if all(s == float("-inf") for s in scores):
            raise CloneusError(f"{self.base_url}: no candidate author tag is among the top {TOP_LOGPROBS} next tokens")
        return scores


def _first_top_logprobs(reply: dict[str, Any]) -> dict[str, float]:
    """Top alternatives of the first generated token, from the legacy or the chat-style logprobs layout."""
    choices = reply.get("choices") or []
    lp = (choices[0].get("logprobs") if choices else None) or {}
    if lp.get("top_logprobs"):  # legacy completions: [{token: logprob, ...}, ...]
        return dict(lp["top_logprobs"][0])
    if lp.get("content"):  # llama.cpp: {"content": [{"top_logprobs": [{"token", "logprob"}]}]}
        return {t["token"]: t["logprob"] for t in lp["content"][0].get("top_logprobs", [])}
    return {}
