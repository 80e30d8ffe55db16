"""`cloneus export`: a checkpoint's adapter merged into its base, as safetensors or as GGUF.

Merged safetensors (`--merged DIR`, the old system's `qmerge`) load anywhere transformers does, with no peft; GGUF
(`--gguf FILE`) is for llama.cpp and Ollama users. Both are written to a temporary sibling and renamed into place,
so a failed export never leaves a half-written model.

GGUF is written for Llama-family architectures (`LlamaForCausalLM`, e.g. SmolLM2, Llama, many finetunes) with the
`gguf` package's writer and its HF → GGUF tensor-name map. As llama.cpp's own converter does, the query and key
projections are permuted from transformers' rotate-half layout into GGUF's interleaved rotary layout (transformers
undoes it when it reads the file back), the output head is left out when the embeddings are tied, and the
byte-level BPE tokenizer goes in as llama.cpp's `gpt2` model with its merges and special tokens.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.errors import CloneusError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

GGUF_ARCHITECTURES = {"LlamaForCausalLM": "llama"}
# llama.cpp token types (gguf.TokenType): a plain vocabulary entry, a special token, a non-special added token.
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


def merged_model(checkpoint: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The checkpoint's base with its LoRA merged in (float32 on the CPU), and the checkpoint's tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from cloneus.inference.checkpoint import read_checkpoint
    from cloneus.models.loading import load_model

    info = read_checkpoint(checkpoint)
    model_cfg = info.config.model.model_copy(update={"quant_method": "fp32"})
    model, _ = load_model(model_cfg, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(info.path)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # training added tokens (custom chat template)
    merged = PeftModel.from_pretrained(model, str(info.path)).merge_and_unload()
    return merged.to(torch.float32).eval(), tokenizer


def export_merged(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the merged model (safetensors) and tokenizer to `out_dir`.

    Raises:
        CloneusError: `out_dir` exists and is not empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CloneusError(f"{out_dir}: exists and is not empty; choose a new directory")
    model, tokenizer = merged_model(checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("merged %s into %s", checkpoint, out_dir)
    return out_dir


def _rotary_permute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """transformers' rotate-half q/k rows → GGUF's interleaved pairs (llama.cpp's `LlamaModel.permute`)."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _tensors(model: PreTrainedModel):
    """(GGUF name, float32 array) for every weight, in state-dict order."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd.weight
        if "rotary_emb" in hf_name:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise CloneusError(f"GGUF export: no GGUF name for tensor {hf_name!r} of {type(model).__name__}")
        if hf_name.endswith("q_proj.weight"):
            tensor = _rotary_permute(tensor, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            tensor = _rotary_permute(tensor, config.num_key_value_heads)
        yield name, tensor.detach().to("cpu").float().contiguous().numpy()


def _add_tokenizer(writer, tokenizer: PreTrainedTokenizerBase, source_dir: Path) -> None:
    """The byte-level BPE vocabulary, token types, merges and special ids, as llama.cpp's `gpt2` tokenizer."""
    import gguf

    specials = set(tokenizer.all_special_ids)
    added = tokenizer.get_added_vocab()
    tokens, types = [], []
    for token_id in range(len(tokenizer)):
        token = tokenizer.convert_ids_to_tokens(token_id)
        tokens.append(token)
        types.append(CONTROL if token_id in specials else USER_DEFINED if token in added else NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    vocab = gguf.SpecialVocab(source_dir, load_merges=True, n_vocab=len(tokens))
    if not vocab.merges:
        raise CloneusError(f"GGUF export: {source_dir} has no BPE merges; only byte-level BPE tokenizers are written")
    vocab.add_to_gguf(writer)


def check_gguf_architecture(config) -> str:
    """The GGUF architecture name for a transformers config, or a `CloneusError` saying what to use instead."""
    arch = GGUF_ARCHITECTURES.get((config.architectures or ["?"])[0])
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if arch is None or rope_type != "default":
        raise CloneusError(
            f"GGUF export supports {', '.join(GGUF_ARCHITECTURES)} with plain RoPE, not {config.architectures} "
            f"(rope_type {rope_type!r}); use --merged and llama.cpp's convert_hf_to_gguf.py"
        )
    return arch


def export_gguf(checkpoint: str | Path, out_file: str | Path) -> Path:
    """Write the merged model as a float32 GGUF file for llama.cpp.

    Raises:
        CloneusError: the architecture is not Llama-family, or a tensor has no GGUF name.
    """
    import gguf

    out_file = Path(out_file)
    model, tokenizer = merged_model(checkpoint)
    config = model.config
    arch = check_gguf_architecture(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_file.name}.", dir=out_file.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory() as tok_dir:
            tokenizer.save_pretrained(tok_dir)
            writer = gguf.GGUFWriter(str(tmp), arch)
            writer.add_name(Path(checkpoint).name)
            writer.add_context_length(config.max_position_embeddings)
            writer.add_embedding_length(config.hidden_size)
            writer.add_block_count(config.num_hidden_layers)
            writer.add_feed_forward_length(config.intermediate_size)
            writer.add_head_count(config.num_attention_heads)
            writer.add_head_count_kv(config.num_key_value_heads)
            writer.add_rope_dimension_count(head_dim)
            writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
            writer.add_layer_norm_rms_eps(config.rms_norm_eps)
            writer.add_vocab_size(config.vocab_size)
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            _add_tokenizer(writer, tokenizer, Path(tok_dir))
            for name, array in _tensors(model):
                writer.add_tensor(name, array)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s (GGUF, %s, float32)", out_file, arch)
    return out_file
