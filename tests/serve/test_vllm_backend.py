"""The `openai` backend against a real vLLM server, each result checked against the local backend.

Greedy decoding makes the two comparable token for token: the same checkpoint and prompt must give the same
reply text. Replies are kept short (a few dozen tokens): float differences between vLLM's CPU kernels and
transformers' are far below the gaps between top tokens over that length.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloneus.errors import CloneusError, ConfigError
from cloneus.inference.sampling import SamplingOptions
from cloneus.inference.stopping import TextStops
from tests.serve.conftest import HISTORY, remote_config

pytestmark = pytest.mark.serve

GREEDY = {"do_sample": False, "max_new_tokens": 24}
REPEATING = [("alice", "the build is red again"), ("bob", "the build is red again")] * 2 + [
    ("alice", "the build is red again")
]


class TestGeneration:
    @pytest.mark.parametrize("name", ["alpha", "beta"])
    def test_greedy_generate_and_stream_equal_the_local_backend(self, name, local, remote, adapters):
        local.swap_checkpoint(adapters[name])
        remote.swap_checkpoint(adapters[name])
        assert remote.backend.model == name  # served under its cloneus-serve name, found by path
        expected = local.generate(HISTORY, "bob", **GREEDY)
        assert expected
        assert remote.generate(HISTORY, "bob", **GREEDY) == expected
        pieces = list(remote.stream_generate(HISTORY, "bob", **GREEDY))
        assert "".join(pieces) == expected
        assert remote.generate(HISTORY, "carol", seed_text="well", **GREEDY) == local.generate(
            HISTORY, "carol", seed_text="well", **GREEDY
        )

    def test_the_two_adapters_serve_their_own_weights(self, local, remote, adapters):
        """Each served name scores like its own checkpoint, and the two score far apart.

        Greedy text is too coarse for this: a few training steps leave both adapters with the same short reply to
        some histories. Author probabilities are continuous, and a few steps move them by tenths.
        """
        scores = {}
        for name in ("alpha", "beta"):
            local.swap_checkpoint(adapters[name])
            remote.swap_checkpoint(adapters[name])
            scores[name] = remote.author_probabilities(HISTORY)
            assert scores[name] == pytest.approx(local.author_probabilities(HISTORY), abs=2e-3)
        assert max(abs(scores["alpha"][a] - scores["beta"][a]) for a in scores["alpha"]) > 0.05

    def test_stop_strings_beyond_the_servers_four_are_enforced_here(self, local, remote, adapters):
        local.swap_checkpoint(adapters["alpha"])
        prompt = local.formatter.generation_prompt(HISTORY, "bob")
        opts = SamplingOptions(do_sample=False, max_new_tokens=40)
        free = local.backend.complete(prompt, opts, TextStops(["<never-generated>"]))
        words = free.split()
        assert len(words) >= 3, free
        # Five decoys take the four slots sent to the server; the real stop (a word mid-reply) is fifth.
        stops = TextStops([f"<decoy{i}>" for i in range(5)] + [" " + words[2]])
        expected = local.backend.complete(prompt, opts, stops)
        assert expected == free[: free.index(" " + words[2])].rstrip()
        assert remote.backend.complete(prompt, opts, stops) == expected
        assert "".join(remote.backend.stream(prompt, opts, stops)) == expected
        assert remote.backend.complete_batch([prompt, prompt], opts, stops) == [expected, expected]

    def test_concurrent_requests_on_both_adapters(self, server, remote, adapters):
        from cloneus import Cloneus

        other = Cloneus.from_pretrained(adapters["beta"], inference=remote_config(server))
        clones = [remote, other] * 4
        authors = ["alice", "bob", "carol", "bob"] * 2
        sequential = [c.generate(HISTORY, a, **GREEDY) for c, a in zip(clones, authors, strict=True)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            together = list(pool.map(lambda c, a: c.generate(HISTORY, a, **GREEDY), clones, authors))
        assert together == sequential
        assert remote.batch_generate(HISTORY, ["alice", "carol"], **GREEDY) == [sequential[0], sequential[2]]


class TestNextSpeaker:
    @pytest.mark.parametrize("history", [HISTORY, REPEATING])
    def test_author_probabilities_match_the_local_backend(self, history, local, remote, adapters):
        local.swap_checkpoint(adapters["alpha"])
        expected = local.author_probabilities(history)
        got = remote.author_probabilities(history)
        assert got == pytest.approx(expected, abs=2e-3)
        assert sorted(got, key=got.get) == sorted(expected, key=expected.get)
        assert remote.predict_author(history, "top") == local.predict_author(history, "top")


class TestAdapters:
    def test_switch_is_a_name_change_and_a_new_checkpoint_loads_at_run_time(self, local, remote, adapters):
        served_before = {m["id"] for m in remote.backend.served_models()}
        assert {"alpha", "beta"} <= served_before and "alpha/checkpoint-2" not in served_before
        start = time.perf_counter()
        remote.swap_checkpoint(adapters["beta"])
        assert remote.backend.model == "beta"
        remote.swap_checkpoint(adapters["alpha-early"])  # never passed to the server at start-up
        assert remote.backend.model == "alpha/checkpoint-2"
        assert time.perf_counter() - start < 120  # a name change and one adapter load, not a server restart
        assert "alpha/checkpoint-2" in {m["id"] for m in remote.backend.served_models()}
        local.swap_checkpoint(adapters["alpha-early"])
        assert remote.generate(HISTORY, "bob", **GREEDY) == local.generate(HISTORY, "bob", **GREEDY)

    def test_an_adapter_the_server_cannot_load_is_one_clear_line(self, remote, adapters, tmp_path):
        broken = tmp_path / "checkpoint-1"
        broken.mkdir()
        with pytest.raises(CloneusError) as err:
            remote.backend.use_checkpoint(broken)
        assert "load_lora_adapter" in str(err.value) and "\n" not in str(err.value)
        assert remote.backend.model == "alpha"


class TestSamplerPlugin:
    def test_dry_penalised_greedy_reply_equals_the_local_backend(self, local, remote, adapters):
        local.swap_checkpoint(adapters["alpha"])
        dry = {**GREEDY, "dry_multiplier": 3.0, "dry_allowed_length": 1}
        plain = local.generate(REPEATING, "bob", **GREEDY)
        expected = local.generate(REPEATING, "bob", **dry)
        assert expected != plain  # the prompt repeats, and DRY changes the reply
        assert remote.generate(REPEATING, "bob", **dry) == expected

    def test_truncation_samplers_and_xtc_run_with_a_seed(self, remote):
        opts = {"max_new_tokens": 16, "seed": 7, "typical_p": 0.9, "tfs": 0.95, "top_a": 0.1, "xtc_probability": 0.5}
        first = remote.generate(HISTORY, "bob", **opts)
        assert first and remote.generate(HISTORY, "bob", **opts) == first

    def test_without_the_plugin_they_stay_a_clear_error(self, server, adapters):
        from cloneus import Cloneus

        plain = Cloneus.from_pretrained(adapters["alpha"], inference=remote_config(server, vllm_sampler_plugin=False))
        with pytest.raises(ConfigError, match=r"dry .*vllm_sampler_plugin"):
            plain.generate(HISTORY, "bob", **GREEDY, dry_multiplier=0.8)
        assert plain.generate(HISTORY, "bob", **GREEDY)


class TestServerErrors:
    def test_a_history_over_the_context_is_fitted_to_it(self, remote):
        long_history = [("alice", "word " * 400)] * 6
        assert isinstance(remote.generate(long_history, "bob", max_new_tokens=8), str)

    def test_a_prompt_over_the_context_is_one_clear_line(self, remote):
        """`Cloneus` fits histories to the server's context, so the backend is called directly to make it refuse."""
        with pytest.raises(CloneusError, match="HTTP 400") as err:
            remote.backend.complete("word " * 4000, SamplingOptions(max_new_tokens=8), TextStops([]))
        assert "\n" not in str(err.value)

    @pytest.mark.kills_server
    def test_the_servers_death_is_a_clear_error_not_a_hang(self, server, remote):
        stream = remote.stream_generate(HISTORY, "bob", do_sample=False, max_new_tokens=1500, min_new_tokens=1400)
        assert next(stream)
        outcome: dict = {}

        def drain():
            try:
                for _ in stream:
                    pass
                outcome["error"] = None
            except CloneusError as e:
                outcome["error"] = e

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        server.stop()
        reader.join(timeout=90)
        assert not reader.is_alive(), "the stream hung after the server died"
        assert outcome["error"] is not None and "\n" not in str(outcome["error"])
        with pytest.raises(CloneusError, match="cannot reach"):
            remote.generate(HISTORY, "bob", **GREEDY)
