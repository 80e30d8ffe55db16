"""A vLLM V1 logits-processor plugin that runs our samplers inside the server, per request.

Start vLLM with `--logits-processors cloneus.serving.vllm_plugin:CloneusSamplers` (`cloneus serve` does) and
`cloneus` importable in the server's Python. A request that carries our options as JSON in
`vllm_xargs.cloneus_sampling` (the openai backend sends them when an active sampler is one vLLM lacks, with
`inference.vllm_sampler_plugin: true`) gets the same processor list the local backend builds
(`build_logits_processor`): penalties, DRY, XTC, Mirostat, every webui truncation sampler and the seeded draw,
which leaves one finite logit, so vLLM's own sampling is told to be greedy and neutral. transformers' own
`no_repeat_ngram_size` and `min_new_tokens` processors run first, as they do inside `generate`. Requests without
the argument are left alone.

Per-request state (Mirostat's running estimate) lives on the request's processor object, which vLLM keeps for
the request's lifetime through `AdapterLogitsProcessor`. The code imports `cloneus.inference.sampling`; nothing
here re-implements a sampler.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from cloneus.inference.backends.openai_params import PLUGIN_XARG

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

    from cloneus.inference.sampling import SamplingOptions

logger = logging.getLogger(__name__)


def _options(params: SamplingParams) -> SamplingOptions | None:
    """The request's `SamplingOptions`, or None when it carries none.

    Raises:
        ValueError: the argument is not JSON or not valid options (vLLM answers HTTP 400 with the message).
    """
    from pydantic import ValidationError

    from cloneus.inference.sampling import SamplingOptions

    raw = (params.extra_args or {}).get(PLUGIN_XARG)
    if raw is None:
        return None
    try:
        return SamplingOptions(**json.loads(raw))
    except (json.JSONDecodeError, TypeError, ValidationError) as e:
        raise ValueError(f"vllm_xargs.{PLUGIN_XARG}: not valid cloneus sampling options ({e})") from None


class RequestSamplers:
    """One request's processor list, built at its first step (the draw is keyed on the prompt length).

    Args:
        opts (`SamplingOptions`): the request's options.
        tokenizer: the served model's tokenizer (DRY breakers, newline ids).
        eos_token_ids (`list[int]`): ids that end generation; XTC never removes them, min_new_tokens bans them.
    """

    def __init__(self, opts: SamplingOptions, tokenizer, eos_token_ids: list[int]):
        self.opts = opts
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.processors = None

    def _build(self, prompt_length: int):
        from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, NoRepeatNGramLogitsProcessor

        from cloneus.inference.sampling import build_logits_processor

        first = LogitsProcessorList()
        if self.opts.no_repeat_ngram_size > 0:
            first.append(NoRepeatNGramLogitsProcessor(self.opts.no_repeat_ngram_size))
        if self.opts.min_new_tokens > 0:
            min_new = MinNewTokensLengthLogitsProcessor(prompt_length, self.opts.min_new_tokens, self.eos_token_ids)
            first.append(min_new)
        ours = build_logits_processor(
            self.opts,
            eos_token_ids=self.eos_token_ids,
            newline_token_ids=self.tokenizer.encode("\n", add_special_tokens=False),
            prompt_length=prompt_length,
            tokenizer=self.tokenizer,
        )
        return LogitsProcessorList([*first, *ours])

    def __call__(self, prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.processors is None:
            self.processors = self._build(len(prompt_ids))
        input_ids = torch.tensor([prompt_ids + list(output_ids)], device=logits.device)  # (1, T)
        return self.processors(input_ids, logits.unsqueeze(0).float())[0].to(logits.dtype)  # (V,)


class CloneusSamplers(AdapterLogitsProcessor):
    """The plugin class vLLM loads; builds a `RequestSamplers` for each request that asks for one."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        from transformers import AutoTokenizer, GenerationConfig

        from cloneus.inference.backends.local import eos_token_ids

        model_config = vllm_config.model_config
        self.tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer)
        try:
            config_eos = GenerationConfig.from_pretrained(model_config.model).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            config_eos = None
        self.eos_token_ids = eos_token_ids(self.tokenizer, config_eos)
        logger.info("cloneus sampler plugin ready (eos ids %s)", self.eos_token_ids)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        _options(sampling_params)

    def is_argmax_invariant(self) -> bool:
        """False: penalties and DRY change the greedy choice, so vLLM must run this for greedy requests too."""
        return False

    def new_req_logits_processor(self, params: SamplingParams) -> RequestSamplers | None:
        opts = _options(params)
        return RequestSamplers(opts, self.tokenizer, self.eos_token_ids) if opts is not None else None
