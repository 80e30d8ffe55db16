"""The `openai` backend against a fake OpenAI-compatible server on 127.0.0.1.

`FakeCompletions` is a minimal `/v1/completions` written here (http.server in a thread) because no real vLLM or
llama.cpp can run in tests: it records each request, streams SSE when asked, and answers scoring requests with
logprobs from a fixed rule (`char_logprob`) so expected probabilities can be computed independently.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloneus import Cloneus
from cloneus.config import InferenceConfig
from cloneus.errors import CloneusError, ConfigError
from cloneus.inference.backends.openai import OpenAIBackend
from cloneus.inference.backends.openai_params import request_fields
from cloneus.inference.sampling import SamplingOptions
from cloneus.inference.speaker import normalise
from tests.inference.conftest import HISTORY

SECRET = "sk-test-very-secret-key"
REPLY = "sounds good to me<|im_end|>\n<|im_start|>carol\nleaked"


def char_logprob(ch: str) -> float:
    """The fake server's 'model': every character is a token; vowels are less likely."""
    return -0.5 if ch in "aeiou" else -0.1


class FakeCompletions(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.server.require_key and self.headers.get("Authorization") != f"Bearer {self.server.require_key}":
            return self._send(401, {"error": f"bad key {self.headers.get('Authorization')}"})
        if body.get("stream"):
            return self._stream(REPLY)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if body.get("echo"):
            return self._send(200, {"choices": [self._echo(i, p) for i, p in enumerate(prompts)]})
        if body.get("logprobs"):
            top = self.server.top_logprobs
            return self._send(200, {"choices": [{"index": 0, "text": "x", "logprobs": top}]})
        choices = [{"index": i, "text": f"reply {i}<|im_end|>junk"} for i in range(len(prompts))]
        return self._send(200, {"choices": choices[::-1]})  # out of order on purpose: matched by index

    def _echo(self, index: int, prompt: str) -> dict:
        text = prompt + "x"
        values = [None] + [char_logprob(c) for c in text[1:]]
        return {
            "index": index,
            "text": text,
            "logprobs": {"tokens": list(text), "token_logprobs": values, "text_offset": list(range(len(text)))},
        }

    def _stream(self, text: str):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(0, len(text), 3):
            event = {"choices": [{"index": 0, "text": text[i : i + 3]}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeServer(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeCompletions)
        self.requests: list[dict] = []
        self.require_key: str | None = None
        self.top_logprobs: dict = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture
def server():
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def remote(checkpoint, server, kind="vllm") -> Cloneus:
    cfg = InferenceConfig(backend="openai", openai_base_url=server.url, openai_model="clone-a", server_kind=kind)
    return Cloneus.from_pretrained(checkpoint, inference=cfg)


class TestGeneration:
    def test_stream_sends_the_formatted_prompt_and_cuts_at_the_stop(self, checkpoint, server):
        clo = remote(checkpoint, server)
        assert clo.device == server.url
        pieces = list(clo.stream_generate(HISTORY, "bob", temperature=0.7, top_k=20))
        assert "".join(pieces) == "sounds good to me"
        assert len(pieces) > 1
        body = server.requests[-1]["body"]
        assert server.requests[-1]["path"] == "/v1/completions"
        assert body["prompt"] == clo.formatter.generation_prompt(HISTORY, "bob")
        assert body["model"] == "clone-a" and body["stream"] is True
        assert "<|im_end|>" in body["stop"]
        assert (body["temperature"], body["top_k"], body["min_p"]) == (0.7, 20, 0.05)

    def test_generate_and_batch(self, checkpoint, server):
        clo = remote(checkpoint, server)
        assert clo.generate(HISTORY, "bob", seed_text="well") == "wellreply 0"
        assert clo.batch_generate(HISTORY, ["alice", "bob", "carol"]) == ["reply 0", "reply 1", "reply 2"]
        assert len(server.requests[-1]["body"]["prompt"]) == 3

    def test_unsupported_sampler_is_refused_before_any_request(self, checkpoint, server):
        clo = remote(checkpoint, server)
        with pytest.raises(ConfigError, match=r"typical_p .*off: 1.*llamacpp"):
            clo.generate(HISTORY, "bob", typical_p=0.5)
        generic = remote(checkpoint, server, kind="generic")
        with pytest.raises(ConfigError, match="top_k"):
            generic.generate(HISTORY, "bob")
        assert server.requests == []
        assert generic.generate(HISTORY, "bob", top_k=0, min_p=0) == "reply 0"


class TestScoring:
    def test_vllm_echo_logprobs_score_whole_tags(self, checkpoint, server):
        clo = remote(checkpoint, server)
        probs = clo.author_probabilities(HISTORY)
        _, continuations = clo.formatter.speaker_prompt(HISTORY)
        expected = normalise({a: sum(char_logprob(c) for c in cont) for a, cont in continuations.items()})
        assert probs == pytest.approx(expected)
        assert server.requests[-1]["body"]["echo"] is True

    @pytest.mark.parametrize("layout", ["legacy", "content"])
    def test_llamacpp_first_token_logprobs(self, checkpoint, server, layout):
        top = {"alice": -0.2, "bo": -1.0, "b": -3.0, "zed": -0.1}
        if layout == "legacy":
            server.top_logprobs = {"top_logprobs": [top]}
        else:
            entries = [{"token": t, "logprob": lp} for t, lp in top.items()]
            server.top_logprobs = {"content": [{"token": "alice", "logprob": -0.2, "top_logprobs": entries}]}
        clo = remote(checkpoint, server, kind="llamacpp")
        probs = clo.author_probabilities(HISTORY)
        assert probs == pytest.approx(normalise({"alice": -0.2, "bob": -1.0, "carol": float("-inf")}))
        assert clo.predict_author(HISTORY, "top") == "alice"

    def test_no_logprobs_is_a_clear_error(self, checkpoint, server):
        clo = remote(checkpoint, server, kind="llamacpp")
        with pytest.raises(CloneusError, match="no logprobs"):
            clo.author_probabilities(HISTORY)


class TestSecretsAndSettings:
    def test_key_is_sent_but_never_shown(self, checkpoint, server, monkeypatch, caplog):
        monkeypatch.setenv("CLONEUS_OPENAI_API_KEY", SECRET)
        clo = remote(checkpoint, server)
        caplog.set_level(logging.DEBUG)
        server.require_key = SECRET
        assert clo.generate(HISTORY, "bob") == "reply 0"
        assert server.requests[-1]["auth"] == f"Bearer {SECRET}"
        assert SECRET not in repr(clo.backend)
        server.require_key = "another-key"
        with pytest.raises(CloneusError, match="HTTP 401") as err:
            clo.generate(HISTORY, "bob")
        assert SECRET not in str(err.value)
        assert SECRET not in caplog.text

    def test_settings_from_env_and_missing_url(self, monkeypatch, server):
        monkeypatch.setenv("CLONEUS_OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("CLONEUS_OPENAI_MODEL", "clone-b")
        backend = OpenAIBackend.from_config(InferenceConfig(backend="openai"))
        assert (backend.base_url, backend.model) == (server.url, "clone-b")
        monkeypatch.delenv("CLONEUS_OPENAI_BASE_URL")
        with pytest.raises(ConfigError, match="openai_base_url"):
            OpenAIBackend.from_config(InferenceConfig(backend="openai"))

    def test_unreachable_server(self, checkpoint, server):
        clo = remote(checkpoint, server)
        server.shutdown()
        server.server_close()
        with pytest.raises(CloneusError, match="cannot reach"):
            clo.generate(HISTORY, "bob")


class TestRequestFields:
    def test_greedy_is_temperature_zero(self):
        fields = request_fields(SamplingOptions(do_sample=False, typical_p=0.5), "vllm")
        assert fields["temperature"] == 0.0 and fields["top_k"] == -1

    def test_llamacpp_maps_its_extra_samplers(self):
        opts = SamplingOptions(
            dynamic_temperature=True,
            dynatemp_low=0.5,
            dynatemp_high=1.5,
            dry_multiplier=0.8,
            xtc_probability=0.5,
            mirostat_mode=2,
            typical_p=0.9,
            repetition_penalty=1.1,
            repetition_penalty_range=0,
            temperature_last=True,
        )
        fields = request_fields(opts, "llamacpp")
        assert (fields["temperature"], fields["dynatemp_range"]) == (1.0, 0.5)
        assert (fields["dry_multiplier"], fields["xtc_probability"], fields["mirostat"]) == (0.8, 0.5, 2)
        assert (fields["typical_p"], fields["repeat_penalty"], fields["repeat_last_n"]) == (0.9, 1.1, -1)
        assert fields["samplers"][0] == "penalties" and fields["samplers"][-1] == "temperature"

    def test_penalty_range_is_not_silently_dropped_on_vllm(self):
        with pytest.raises(ConfigError, match="repetition_penalty_range"):
            request_fields(SamplingOptions(repetition_penalty=1.2), "vllm")
        assert request_fields(SamplingOptions(repetition_penalty=1.2, repetition_penalty_range=0), "vllm")[
            "repetition_penalty"
        ] == pytest.approx(1.2)
