"""`cloneus export`: the merged model and the GGUF file load back in transformers with base+adapter's logits."""

from __future__ import annotations

import pytest
import torch

from cloneus.errors import CloneusError
from cloneus.serving import export
from tests.inference.conftest import build_checkpoint

IDS = [[5, 17, 42, 99, 3, 250, 7, 11]]


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    return build_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("export") / "checkpoint-3", seed=4)


@pytest.fixture(scope="module")
def reference_logits(checkpoint, tiny_model_dir):
    """Base plus adapter through peft, unmerged: what the exports must reproduce."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        plain = base(torch.tensor(IDS)).logits
        adapted = PeftModel.from_pretrained(base, str(checkpoint)).eval()(torch.tensor(IDS)).logits
    assert not torch.allclose(plain, adapted, atol=1e-3)  # the adapter changes the model, so the check means something
    return adapted


class TestMerged:
    def test_loads_without_peft_and_matches_base_plus_adapter(self, checkpoint, reference_logits, tmp_path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out = export.export_merged(checkpoint, tmp_path / "merged")
        assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(model(torch.tensor(IDS)).logits, reference_logits, atol=1e-4, rtol=1e-4)
        assert AutoTokenizer.from_pretrained(out).encode("hello there") == AutoTokenizer.from_pretrained(
            checkpoint
        ).encode("hello there")

    def test_refuses_a_non_empty_directory(self, checkpoint, tmp_path):
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "file").write_text("x")
        with pytest.raises(CloneusError, match="not empty"):
            export.export_merged(checkpoint, tmp_path / "taken")


class TestGGUF:
    def test_transformers_reads_it_back_with_the_same_logits(self, checkpoint, reference_logits, tmp_path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out = export.export_gguf(checkpoint, tmp_path / "clone.gguf")
        assert out.is_file() and not list(tmp_path.glob(".clone.gguf.*"))
        model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(model(torch.tensor(IDS)).logits, reference_logits, atol=1e-4, rtol=1e-4)
        original = AutoTokenizer.from_pretrained(checkpoint)
        read_back = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
        text = "hello there, how is everyone doing today?"
        assert read_back.encode(text, add_special_tokens=False) == original.encode(text, add_special_tokens=False)
        assert read_back.eos_token == original.eos_token

    def test_other_architectures_are_refused_with_the_alternative(self):
        from transformers import LlamaConfig

        expected = r"supports LlamaForCausalLM with plain RoPE, not \['GPT2LMHeadModel'\].*--merged"
        with pytest.raises(CloneusError, match=expected):
            export.check_gguf_architecture(LlamaConfig(architectures=["GPT2LMHeadModel"]))
