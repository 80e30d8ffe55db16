"""Attach LoRA adapters (peft) to a loaded base model, as the `lora` config section says."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cloneus.errors import ConfigError
from cloneus.library_bars import verbose

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from cloneus.config import LoraConfig

logger = logging.getLogger(__name__)

# unsloth's get_peft_model wants explicit names; these are the linear layers of Llama-style blocks.
UNSLOTH_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def check_target_modules(model: PreTrainedModel, target_modules: list[str] | str) -> None:
    """Refuse target module names the model does not have, naming the linear modules it does have.

    peft matches a target against the end of each module's dotted name, so `q_proj` and `self_attn.q_proj` both
    name `model.layers.0.self_attn.q_proj`.

    Raises:
        ConfigError: some targets match no module; names them and the model's own linear module names.
    """
    import torch

    if isinstance(target_modules, str):
        return
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
        )
        raise ConfigError(
            f"lora.target_modules: {', '.join(missing)} not found in {type(model).__name__}; its linear modules are "
            f"{', '.join(linear)} (or use 'all-linear')"
        )


@contextlib.contextmanager
def peft_model_init() -> Iterator[None]:
    """Wrap every `PeftModel` construction (`get_peft_model`, `PeftModel.from_pretrained`) in this.

    peft 0.21's `PeftModel.__init__` reads the base model's `is_gradient_checkpointing`, which transformers 5
    deprecates with a FutureWarning on every read. The value is the same under its new name, so that one warning
    is ignored here, for this call only; every other warning still shows, and under `-v` this one too.
    """
    if verbose():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def peft_lora_config(lora_cfg: LoraConfig, trainable_token_ids: list[int] | None = None):
    """The `peft.LoraConfig` for our `lora` section (`all-linear` means every linear layer except the LM head).

    `trainable_token_ids` are embedding rows trained in full (tokens the formatter added, which start random).
    """
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=lora_cfg.target_modules,
        use_rslora=lora_cfg.use_rslora,
        use_dora=lora_cfg.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
        trainable_token_indices=trainable_token_ids or None,
    )


def attach_lora(
    model: PreTrainedModel,
    lora_cfg: LoraConfig,
    *,
    use_unsloth: bool = False,
    gradient_checkpointing: bool = False,
    trainable_token_ids: list[int] | None = None,
) -> PeftModel:
    """Wrap `model` in trainable LoRA adapters; base weights are frozen.

    Args:
        model (`PreTrainedModel`): the base model from `load_model`.
        lora_cfg (`LoraConfig`): rank, alpha, dropout, target modules, rslora/dora.
        use_unsloth (`bool`, *optional*, defaults to `False`): the model was loaded by unsloth, whose own
            `get_peft_model` patches in its fused kernels.
        gradient_checkpointing (`bool`, *optional*, defaults to `False`): only used by unsloth, which sets up its
            own checkpointing here.
        trainable_token_ids (`list[int]`, *optional*): embedding rows to train in full, for added tokens.

    Raises:
        ConfigError: DoRA asked for together with unsloth, or a target module the model does not have.
    """
    check_target_modules(model, lora_cfg.target_modules)
    if use_unsloth:
        if lora_cfg.use_dora:
            raise ConfigError("lora.use_dora is not supported by unsloth; set model.flashattn_lib=huggingface")
        from unsloth import FastLanguageModel

        targets = UNSLOTH_ALL_LINEAR if lora_cfg.target_modules == "all-linear" else lora_cfg.target_modules
        return FastLanguageModel.get_peft_model(
            model,
            r=lora_cfg.r,
            lora_alpha=lora_cfg.alpha,
            lora_dropout=lora_cfg.dropout,
            target_modules=targets,
            use_rslora=lora_cfg.use_rslora,
            use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        )
    from peft import get_peft_model

    with peft_model_init():
        peft_model = get_peft_model(model, peft_lora_config(lora_cfg, trainable_token_ids))
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d on %s: %d of %d params trainable", lora_cfg.r, lora_cfg.target_modules, trainable, total)
    return peft_model
