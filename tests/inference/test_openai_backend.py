"""The `openai` backend against a fake OpenAI-compatible server on 127.0.0.1.

`FakeCompletions` is a minimal `/v1/completions` (plus vLLM's `/v1/models` and `/v1/load_lora_adapter`) written
here (http.server in a thread). The real vLLM server is exercised in tests/serve (`make test-serve`); this fake is
for what a real one cannot be made to do on demand (die mid-stream, answer with a multi-line error, a llama.cpp
logprobs layout) and for the exact request bodies. It records each request, streams SSE, and answers scoring
requests with logprobs from a fixed rule (`token_logprob`) so expected probabilities can be computed independently.
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


def token_logprob(token_id: int) -> float:
    """The fake vLLM's scoring 'model': a fixed logprob per token id."""
    return -0.1 - (token_id % 7) / 10


def echo_reply(prompt: str) -> str:
    """The fake's streamed reply: names the prompt's end (so each prompt of a batch gets its own), then a stop."""
    return f"re {prompt[-5:].strip()}<|im_end|>junk"


class FakeCompletions(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.requests.append({"path": self.path, "body": None, "auth": self.headers.get("Authorization")})
        if self.path == "/v1/models":
            return self._send(200, {"data": self.server.models})
        return self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.server.require_key and self.headers.get("Authorization") != f"Bearer {self.server.require_key}":
            return self._send(401, {"error": f"bad key {self.headers.get('Authorization')}"})
        if self.path == "/v1/load_lora_adapter":
            self.server.models.append({"id": body["lora_name"], "root": body["lora_path"], "parent": "base"})
            return self._send(200, "Success: LoRA adapter loaded.")
        if self.server.error_body is not None:
            return self._send(500, self.server.error_body)
        if body.get("stream") and self.server.die_mid_stream:
            return self._stream("the server dies before this rep", done=False)
        if body.get("stream"):
            return self._stream(echo_reply(body["prompt"]))
        if body.get("logprob_token_ids"):
            return self._send(200, {"choices": [self._scored(i, p, body) for i, p in enumerate(body["prompt"])]})
        if body.get("logprobs"):
            top = self.server.top_logprobs
            return self._send(200, {"choices": [{"index": 0, "text": "x", "logprobs": top}]})
        return self._send(400, {"error": {"message": "this fake only streams"}})

    def _scored(self, index: int, prompt: list[int], body: dict) -> dict:
        top = {f"token_id:{t}": token_logprob(t) for t in body["logprob_token_ids"]}
        return {"index": index, "text": "x", "logprobs": {"top_logprobs": [top]}}

    def _stream(self, text: str, done: bool = True):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for i in range(0, len(text), 3):
                event = {"choices": [{"index": 0, "text": text[i : i + 3]}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            if done:
                self.wfile.write(b"data: [DONE]\n\n")
        except BrokenPipeError:  # the client closed the stream at a stop string, as it should
            pass

    def _send(self, status: int, payload):
        data = (json.dumps(payload) if not isinstance(payload, str) else payload).encode()
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
        self.models: list[dict] = [{"id": "base", "root": "/models/base", "parent": None, "max_model_len": 4096}]
        self.error_body = None
        self.die_mid_stream = False

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


def expected_reply(clo: Cloneus, author: str, seed_text: str | None = None) -> str:
    return echo_reply(clo.formatter.generation_prompt(HISTORY, author, seed_text)).split("<|im_end|>")[0]


class TestGeneration:
    def test_stream_sends_the_formatted_prompt_and_cuts_at_the_stop(self, checkpoint, server):
        clo = remote(checkpoint, server)
        assert clo.device == server.url
        pieces = list(clo.stream_generate(HISTORY, "bob", temperature=0.7, top_k=20))
        assert "".join(pieces) == expected_reply(clo, "bob")
        assert len(pieces) > 1
        body = server.requests[-1]["body"]
        assert server.requests[-1]["path"] == "/v1/completions"
        assert body["prompt"] == clo.formatter.generation_prompt(HISTORY, "bob")
        assert body["model"] == "clone-a" and body["stream"] is True
        assert (body["add_special_tokens"], body["skip_special_tokens"]) == (False, False)
        assert body["stop"][0] == "<|im_end|>"
        assert (body["temperature"], body["top_k"], body["min_p"]) == (0.7, 20, 0.05)

    def test_at_most_four_stop_strings_are_sent_the_rest_are_enforced_here(self, checkpoint, server):
        from cloneus.inference.stopping import TextStops

        clo = remote(checkpoint, server)
        prompt = clo.formatter.generation_prompt(HISTORY, "bob")
        stops = TextStops(["<a>", "<b>", "<c>", "<d>", "<e>", " "])
        assert clo.backend.complete(prompt, SamplingOptions(), stops) == "re"
        assert server.requests[-1]["body"]["stop"] == ["<a>", "<b>", "<c>", "<d>"]
        llamacpp = remote(checkpoint, server, kind="llamacpp")
        llamacpp.backend.complete(prompt, SamplingOptions(), stops)
        assert len(server.requests[-1]["body"]["stop"]) == 6

    def test_generate_and_batch(self, checkpoint, server):
        clo = remote(checkpoint, server)
        assert clo.generate(HISTORY, "bob", seed_text="well") == "well" + expected_reply(clo, "bob", "well")
        authors = ["alice", "bob", "carol"]
        assert clo.batch_generate(HISTORY, authors) == [expected_reply(clo, a) for a in authors]

    def test_unsupported_sampler_is_refused_before_any_request(self, checkpoint, server):
        clo = remote(checkpoint, server)
        with pytest.raises(ConfigError, match=r"typical_p .*off: 1.*llamacpp.*vllm_sampler_plugin"):
            clo.generate(HISTORY, "bob", typical_p=0.5)
        generic = remote(checkpoint, server, kind="generic")
        with pytest.raises(ConfigError, match="top_k"):
            generic.generate(HISTORY, "bob")
        assert server.requests == []
        assert generic.generate(HISTORY, "bob", top_k=0, min_p=0) == expected_reply(generic, "bob")

    def test_with_the_plugin_our_samplers_travel_in_vllm_xargs(self, checkpoint, server):
        cfg = InferenceConfig(
            backend="openai", openai_base_url=server.url, openai_model="clone-a", vllm_sampler_plugin=True
        )
        clo = Cloneus.from_pretrained(checkpoint, inference=cfg)
        clo.generate(HISTORY, "bob", typical_p=0.5, dry_multiplier=0.8, seed=3)
        body = server.requests[-1]["body"]
        sent = SamplingOptions(**json.loads(body["vllm_xargs"]["cloneus_sampling"]))
        assert (sent.typical_p, sent.dry_multiplier, sent.seed) == (0.5, 0.8, 3)
        assert (body["temperature"], body["top_k"], body["min_p"], body["repetition_penalty"]) == (0.0, -1, 0.0, 1.0)
        clo.generate(HISTORY, "bob", top_k=20)  # nothing vLLM lacks: its own samplers, no plugin
        assert "vllm_xargs" not in server.requests[-1]["body"]

    def test_a_stream_cut_off_by_a_dying_server_is_a_clear_error(self, checkpoint, server):
        clo = remote(checkpoint, server)
        server.die_mid_stream = True
        with pytest.raises(CloneusError, match="before \\[DONE\\]") as err:
            clo.generate(HISTORY, "bob")
        assert "\n" not in str(err.value)

    def test_a_multi_line_server_error_is_one_line(self, checkpoint, server):
        clo = remote(checkpoint, server)
        server.error_body = {"error": {"message": "EngineDeadError\n  Traceback\n    add_lora_logits"}}
        with pytest.raises(CloneusError, match="HTTP 500 .*EngineDeadError Traceback add_lora_logits") as err:
            clo.generate(HISTORY, "bob")
        assert "\n" not in str(err.value)


class TestServedAdapters:
    def test_no_model_name_finds_the_lora_module_serving_the_checkpoint(self, checkpoint, server):
        server.models.append({"id": "clone-x", "root": str(checkpoint), "parent": "base"})
        cfg = InferenceConfig(backend="openai", openai_base_url=server.url)
        clo = Cloneus.from_pretrained(checkpoint, inference=cfg)
        assert clo.backend.model == "clone-x"
        assert not [r for r in server.requests if r["path"] == "/v1/load_lora_adapter"]
        assert clo.backend.context_window == 4096  # the server's max_model_len bounds the prompt

    def test_switch_loads_an_unserved_checkpoint_at_run_time(self, run_dir, checkpoint, server):
        server.models.append({"id": "clone-x", "root": str(checkpoint), "parent": "base"})
        clo = Cloneus.from_pretrained(
            checkpoint, inference=InferenceConfig(backend="openai", openai_base_url=server.url)
        )
        clo.swap_checkpoint(run_dir / "checkpoint-10")
        loads = [r["body"] for r in server.requests if r["path"] == "/v1/load_lora_adapter"]
        assert loads == [{"lora_name": f"{run_dir.name}/checkpoint-10", "lora_path": str(run_dir / "checkpoint-10")}]
        assert clo.backend.model == f"{run_dir.name}/checkpoint-10"
        assert clo.checkpoint == run_dir / "checkpoint-10"
        clo.swap_checkpoint(checkpoint)  # back: found by path, no second load
        assert clo.backend.model == "clone-x"
        assert len([r for r in server.requests if r["path"] == "/v1/load_lora_adapter"]) == 1

    def test_switching_needs_vllm(self, checkpoint, server):
        clo = remote(checkpoint, server, kind="llamacpp")
        with pytest.raises(CloneusError, match="needs a vLLM server"):
            clo.backend.use_checkpoint(checkpoint)


class TestScoring:
    def test_vllm_scores_every_tag_token_through_logprob_token_ids(self, checkpoint, server):
        clo = remote(checkpoint, server)
        probs = clo.author_probabilities(HISTORY)
        prefix, continuations = clo.formatter.speaker_prompt(HISTORY)
        fulls = {a: clo.tokenizer(prefix + c, add_special_tokens=False)["input_ids"] for a, c in continuations.items()}
        shared = 0
        while len({tuple(f[: shared + 1]) for f in fulls.values()}) == 1:
            shared += 1
        expected = normalise({a: sum(token_logprob(t) for t in f[shared:]) for a, f in fulls.items()})
        assert probs == pytest.approx(expected)
        body = server.requests[-1]["body"]
        assert body["max_tokens"] == 1 and body["return_tokens_as_token_ids"] is True
        assert all(p[:shared] == next(iter(fulls.values()))[:shared] for p in body["prompt"])
        assert "echo" not in body and "prompt_logprobs" not in body

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
        assert clo.generate(HISTORY, "bob") == expected_reply(clo, "bob")
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
        monkeypatch.delenv("CLONEUS_OPENAI_MODEL")
        with pytest.raises(ConfigError, match="openai_model"):
            OpenAIBackend.from_config(InferenceConfig(backend="openai"))
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
