"""The public `Cloneus` API on the tiny model with random LoRA checkpoints (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from cloneus import Cloneus
from cloneus.errors import CloneusError, ConfigError, ModelNotFoundError, UnknownAuthorError
from tests.inference.conftest import AUTHORS, HISTORY, build_checkpoint

GREEDY = {"do_sample": False, "max_new_tokens": 12}
SPECIAL_MARKERS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


class TestLoading:
    def test_run_dir_loads_its_latest_checkpoint(self, run_dir):
        clo = Cloneus.from_pretrained(checkpoint_path=run_dir, device="cpu")
        assert clo.checkpoint == run_dir / "checkpoint-10"
        assert clo.loaded and clo.device == "cpu"
        assert [u.display_name for u in clo.users.trainable()] == AUTHORS

    def test_missing_checkpoint_names_the_path(self, tmp_path):
        with pytest.raises(ModelNotFoundError, match="no such checkpoint"):
            Cloneus.from_pretrained(tmp_path / "nope")
        with pytest.raises(ModelNotFoundError, match="not a checkpoint"):
            Cloneus.from_pretrained(tmp_path)

    def test_from_model_id_is_zero_shot_with_the_given_names(self, tiny_model_dir):
        clo = Cloneus.from_model_id(str(tiny_model_dir), author_names=["JohnnyFish", "Balbo23"], device="cpu")
        assert clo.checkpoint is None
        assert "JohnnyFish, Balbo23" in clo.formatter.system_prompt()
        text = "".join(clo.stream_generate([("Balbo23", "blub blub")], "JohnnyFish", **GREEDY))
        assert text == clo.generate([("Balbo23", "blub blub")], "JohnnyFish", **GREEDY)
        with pytest.raises(UnknownAuthorError):
            clo.generate([], "nobody")


class TestGenerate:
    def test_reply_has_no_tags_or_special_tokens(self, clo):
        for author in AUTHORS:
            reply = clo.generate(HISTORY, author, do_sample=False, max_new_tokens=40)
            assert not any(marker in reply for marker in SPECIAL_MARKERS), reply
            assert reply == reply.strip()

    def test_stream_joins_to_generate(self, clo):
        pieces = list(clo.stream_generate(HISTORY, "bob", **GREEDY))
        assert "".join(pieces) == clo.generate(HISTORY, "bob", **GREEDY)

    def test_closing_a_stream_stops_generation(self, clo):
        stream = clo.stream_generate(HISTORY, "alice", do_sample=False, min_new_tokens=60, max_new_tokens=60)
        first = next(stream)
        stream.close()  # joins the generate thread, which stops at its next step
        full = clo.generate(HISTORY, "alice", do_sample=False, min_new_tokens=60, max_new_tokens=60)
        assert full.startswith(first) and len(full) > len(first)

    def test_seed_text_starts_the_reply(self, clo):
        reply = clo.generate(HISTORY, "carol", seed_text="I think", **GREEDY)
        assert reply.startswith("I think")
        assert next(iter(clo.stream_generate(HISTORY, "carol", seed_text="I think", **GREEDY))) == "I think"

    def test_same_seed_same_sample(self, clo):
        a = clo.generate(HISTORY, "bob", seed=7, max_new_tokens=12)
        assert a == clo.generate(HISTORY, "bob", seed=7, max_new_tokens=12)

    def test_batch_matches_sequential_greedy(self, clo):
        authors = ["bob", "carol", "alice"]
        seeds = [None, "well", None]
        batched = clo.batch_generate(HISTORY, authors, seed_texts=seeds, **GREEDY)
        sequential = [clo.generate(HISTORY, a, seed_text=s, **GREEDY) for a, s in zip(authors, seeds, strict=True)]
        assert batched == sequential

    def test_many_histories_match_sequential_greedy_in_request_order(self, clo):
        requests = [
            (HISTORY[:k], author) for k, author in [(3, "bob"), (1, "carol"), (len(HISTORY), "alice"), (2, "bob")]
        ]
        sizes = []
        batched = clo.generate_many(requests, batch_size=3, on_batch=sizes.append, **GREEDY)
        assert batched == [clo.generate(h, a, **GREEDY) for h, a in requests]
        assert sizes == [3, 1]

    def test_many_histories_seed_each_batch(self, clo):
        requests = [(HISTORY, "bob"), (HISTORY[:2], "carol")]
        first = clo.generate_many(requests, batch_size=1, seed=5, max_new_tokens=12)
        assert first == clo.generate_many(requests, batch_size=1, seed=5, max_new_tokens=12)
        # Batches run shortest prompt first: the short history is batch 0 (seed 5), the full one batch 1 (seed 6).
        assert first[1] == clo.generate(HISTORY[:2], "carol", seed=5, max_new_tokens=12)
        assert first[0] == clo.generate(HISTORY, "bob", seed=6, max_new_tokens=12)

    @pytest.mark.parametrize(("author", "why"), [("zed", "unknown"), ("dave", "opted out"), ("eve", "excluded")])
    def test_uncloneable_author_is_refused(self, clo, author, why):
        with pytest.raises(UnknownAuthorError, match=why):
            clo.generate(HISTORY, author)
        with pytest.raises(UnknownAuthorError):
            clo.stream_generate(HISTORY, author)  # raises before iteration
        with pytest.raises(UnknownAuthorError):
            clo.batch_generate(HISTORY, ["bob", author])

    def test_bad_sampling_option_names_the_key(self, clo):
        with pytest.raises(ConfigError, match="temperature"):
            clo.generate(HISTORY, "bob", temperature=-1)


class TestSamplingDefaults:
    def test_generation_config_sets_defaults_and_kwargs_override(self, tiny_model_dir, tmp_path):
        ckpt = build_checkpoint(tiny_model_dir, tmp_path / "checkpoint-1", seed=3)
        (ckpt / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "top_k": 5, "eos_token_id": 2}))
        clo = Cloneus.from_pretrained(ckpt, device="cpu")
        assert (clo.sampling_defaults.temperature, clo.sampling_defaults.top_k) == (0.3, 5)
        assert clo._options({"temperature": 1.1}).temperature == 1.1
        assert clo._options({"temperature": 1.1}).top_k == 5

    def test_save_never_silently_overwrites(self, tiny_model_dir, tmp_path):
        from cloneus.inference.checkpoint import read_sampling_defaults, save_sampling_defaults

        ckpt = build_checkpoint(tiny_model_dir, tmp_path / "checkpoint-1", seed=3)
        opts = read_sampling_defaults(ckpt).merged(temperature=0.5)
        save_sampling_defaults(ckpt, opts)
        with pytest.raises(CloneusError, match="overwrite=True"):
            save_sampling_defaults(ckpt, opts.merged(temperature=0.9))
        assert read_sampling_defaults(ckpt).temperature == 0.5
        save_sampling_defaults(ckpt, opts.merged(temperature=0.9), overwrite=True)
        assert read_sampling_defaults(ckpt).temperature == 0.9


class TestLifecycle:
    def test_swap_same_base_replaces_only_the_adapter(self, run_dir):
        clo = Cloneus.from_pretrained(run_dir / "checkpoint-5", device="cpu")
        before = clo.generate(HISTORY, "bob", **GREEDY)
        base_weight = clo.backend.model.get_input_embeddings().weight
        seconds = clo.swap_checkpoint(run_dir / "checkpoint-10")
        assert seconds > 0
        assert clo.checkpoint == run_dir / "checkpoint-10"
        assert clo.backend.model.get_input_embeddings().weight is base_weight  # base not reloaded
        assert len(clo.backend.prefix) == 0
        after = clo.generate(HISTORY, "bob", **GREEDY)
        fresh = Cloneus.from_pretrained(run_dir / "checkpoint-10", device="cpu").generate(HISTORY, "bob", **GREEDY)
        assert after == fresh
        assert after != before

    def test_swap_to_an_adapter_of_another_shape(self, run_dir, tiny_model_dir, tmp_path):
        other = build_checkpoint(tiny_model_dir, tmp_path / "checkpoint-1", seed=4, r=8)
        clo = Cloneus.from_pretrained(run_dir / "checkpoint-5", device="cpu")
        clo.swap_checkpoint(other)
        assert clo.backend.model.active_peft_config.r == 8
        assert list(clo.backend.model.peft_config) == [clo.backend.model.active_adapter]
        fresh = Cloneus.from_pretrained(other, device="cpu")
        assert clo.generate(HISTORY, "bob", **GREEDY) == fresh.generate(HISTORY, "bob", **GREEDY)

    @pytest.mark.parametrize("rank", [4, 8], ids=["hot-swap", "replace"])
    def test_failed_swap_keeps_serving_the_old_checkpoint(self, run_dir, tiny_model_dir, tmp_path, rank):
        broken = build_checkpoint(tiny_model_dir, tmp_path / "checkpoint-1", seed=4, r=rank)
        (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
        clo = Cloneus.from_pretrained(run_dir / "checkpoint-5", device="cpu")
        before = clo.generate(HISTORY, "bob", **GREEDY)
        with pytest.raises(Exception, match="safetensors|header|deserializ"):
            clo.swap_checkpoint(broken)
        assert clo.checkpoint == run_dir / "checkpoint-5"
        assert list(clo.backend.model.peft_config) == [clo.backend.model.active_adapter]
        assert clo.generate(HISTORY, "bob", **GREEDY) == before

    def test_swap_other_base_reloads(self, run_dir, tmp_path):
        from cloneus.models.tiny import build_tiny_model

        other = build_tiny_model(tmp_path / "other-base", seed=5)
        ckpt = build_checkpoint(other, tmp_path / "checkpoint-1", seed=1)
        clo = Cloneus.from_pretrained(run_dir, device="cpu")
        old_backend = clo.backend
        clo.swap_checkpoint(ckpt)
        assert clo.backend is not old_backend and old_backend.model is None
        assert clo.config.model.model_id == str(other)
        fresh = Cloneus.from_pretrained(ckpt, device="cpu")
        assert clo.generate(HISTORY, "bob", **GREEDY) == fresh.generate(HISTORY, "bob", **GREEDY)

    def test_unload_then_swap_loads_again(self, run_dir):
        clo = Cloneus.from_pretrained(run_dir, device="cpu")
        clo.unload()
        assert not clo.loaded and clo.device is None
        with pytest.raises(CloneusError, match="unloaded"):
            clo.generate(HISTORY, "bob")
        clo.swap_checkpoint(run_dir / "checkpoint-5")
        assert clo.loaded
        assert isinstance(clo.generate(HISTORY, "bob", **GREEDY), str)
