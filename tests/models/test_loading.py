"""Model resolution and loading: every kind of model id, the errors for bad ones, and the builtin conversion."""

from __future__ import annotations

import logging

import pytest

from cloneus.config import ModelConfig
from cloneus.errors import ConfigError, ModelNotFoundError
from cloneus.models import loading
from cloneus.models.loading import load_model, load_tokenizer, resolve_model


class TestResolveModel:
    def test_local_directory_resolves_to_itself_with_its_name_as_alias(self, tiny_model_dir):
        resolved = resolve_model(str(tiny_model_dir))
        assert resolved.path == tiny_model_dir
        assert resolved.alias == tiny_model_dir.name
        assert resolved.gguf_file is None

    def test_missing_path_raises_model_not_found(self, tmp_path):
        with pytest.raises(ModelNotFoundError, match="no such model file"):
            resolve_model(str(tmp_path / "nope"))

    def test_missing_gguf_file_raises_model_not_found(self):
        with pytest.raises(ModelNotFoundError, match="no such model file"):
            resolve_model("weights/model.Q4.gguf")

    def test_directory_without_config_is_rejected(self, tmp_path):
        with pytest.raises(ModelNotFoundError, match="config.json"):
            resolve_model(str(tmp_path))

    def test_unknown_builtin_lists_known_ones(self):
        with pytest.raises(ModelNotFoundError, match="builtin:smollm2-135m"):
            resolve_model("builtin:gpt-17")

    def test_uncached_hub_id_offline_says_so_in_one_line(self, monkeypatch):
        monkeypatch.setattr("huggingface_hub.constants.is_offline_mode", lambda: True)
        with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as err:
            resolve_model("cloneus-test/no-such-model-xyz")
        assert "\n" not in str(err.value)

    def test_uncached_hub_id_with_unreachable_hub_says_so(self, monkeypatch):
        """The conftest network guard makes every hub request fail, as on a machine without internet."""
        monkeypatch.setattr("huggingface_hub.constants.is_offline_mode", lambda: False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        with pytest.raises(ModelNotFoundError, match="could not be reached|no such repository"):
            resolve_model("cloneus-test/no-such-model-xyz")

    def test_garbage_id_is_rejected(self):
        with pytest.raises(ModelNotFoundError, match="neither an existing path"):
            resolve_model("what is this?")


class TestLoadModel:
    def test_bnb_on_cpu_is_a_config_error(self, tiny_model_dir):
        cfg = ModelConfig(model_id=str(tiny_model_dir), quant_method="bnb4")
        with pytest.raises(ConfigError, match="quant_method.*CUDA"):
            load_model(cfg, device="cpu")

    def test_training_load_disables_cache_and_picks_a_packing_aware_attention(self, tiny_model_dir):
        model, tokenizer = load_model(ModelConfig(model_id=str(tiny_model_dir)), device="cpu", for_training=True)
        assert model.config.use_cache is False
        assert model.config._attn_implementation == "sdpa"
        assert tokenizer.pad_token is not None

    def test_unsloth_fallback_is_logged_once(self, tiny_model_dir, caplog):
        with caplog.at_level(logging.INFO, logger="cloneus.models.loading"):
            load_model(ModelConfig(model_id=str(tiny_model_dir), flashattn_lib="unsloth"), device="cpu")
        assert sum("unsloth not used" in r.message for r in caplog.records) == 1

    def test_attn_implementation_option_is_honoured(self, tiny_model_dir):
        cfg = ModelConfig(model_id=str(tiny_model_dir), attn_implementation="eager", quant_method="bf16")
        model, _ = load_model(cfg, device="cpu")
        assert model.config._attn_implementation == "eager"
        assert str(model.dtype) == "torch.bfloat16"

    def test_tokenizer_comes_from_the_model_directory(self, tiny_model_dir):
        tokenizer = load_tokenizer(ModelConfig(model_id=str(tiny_model_dir)))
        assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
class TestBuiltinModel:
    def test_builtin_converts_once_then_loads_from_safetensors(self, tmp_path, monkeypatch):
        monkeypatch.setenv("CLONEUS_MODEL_CACHE", str(tmp_path))
        resolved = resolve_model("builtin:smollm2-135m")
        assert resolved.alias == "smollm2-135m"
        assert (resolved.path / "model.safetensors").is_file()
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temp conversion dir left behind"

        def fail(*args, **kwargs):
            raise AssertionError("converted twice")

        monkeypatch.setattr(loading, "convert_gguf", fail)
        model, tokenizer = load_model(ModelConfig(model_id="builtin:smollm2-135m"), device="cpu")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is the capital of France?"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
        assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])

    def test_interrupted_conversion_leaves_no_cache_entry(self, tmp_path, monkeypatch):
        monkeypatch.setenv("CLONEUS_MODEL_CACHE", str(tmp_path))
        from transformers import AutoModelForCausalLM

        def crash(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", crash)
        with pytest.raises(KeyboardInterrupt):
            resolve_model("builtin:smollm2-135m")
        assert list(tmp_path.iterdir()) == []
