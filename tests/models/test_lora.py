"""LoRA options reach peft, and added tokens get trainable embedding rows."""

from __future__ import annotations

import pytest

from cloneus.config import LoraConfig, ModelConfig, config_from_dict
from cloneus.errors import ConfigError
from cloneus.models.loading import load_model
from cloneus.models.lora import attach_lora, peft_lora_config


class TestPeftConfig:
    def test_options_map_onto_peft(self):
        cfg = peft_lora_config(LoraConfig(r=4, alpha=8, dropout=0.1, target_modules=["q_proj"], use_rslora=True))
        assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_rslora, cfg.use_dora) == (4, 8, 0.1, True, False)
        assert set(cfg.target_modules) == {"q_proj"}

    def test_dora_with_unsloth_is_refused(self):
        with pytest.raises(ConfigError, match="use_dora"):
            attach_lora(object(), LoraConfig(use_dora=True), use_unsloth=True)


class TestAttachLora:
    def test_listed_modules_only_are_adapted_and_base_is_frozen(self, tiny_model_dir):
        model, _ = load_model(ModelConfig(model_id=str(tiny_model_dir)), device="cpu")
        peft_model = attach_lora(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}

    def test_all_linear_with_dora_adapts_every_projection(self, tiny_model_dir):
        model, _ = load_model(ModelConfig(model_id=str(tiny_model_dir)), device="cpu")
        peft_model = attach_lora(model, LoraConfig(r=2, use_dora=True))
        adapted = {n.split(".")[-4] for n, p in peft_model.named_parameters() if "lora_A" in n}
        assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert any("lora_magnitude_vector" in n for n, _ in peft_model.named_parameters())


class TestAddedTokens:
    def test_embeddings_grow_and_new_rows_train(self, tiny_model_dir):
        from transformers import AutoTokenizer

        from cloneus.training.trainer import _prepare_model

        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        before = len(tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|turn|>"]})
        cfg = config_from_dict({"model": {"model_id": str(tiny_model_dir)}})
        model = _prepare_model(cfg, tokenizer, ["<|turn|>"])
        assert model.get_base_model().config.vocab_size == before + 1
        trainable = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
        assert any("trainable_tokens" in n for n in trainable)
