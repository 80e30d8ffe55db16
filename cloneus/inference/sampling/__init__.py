"""Sampling: validated options, every text-generation-webui sampler as a logits processor, and presets.

Importing this package loads neither torch nor transformers; the processor modules are imported when
`build_logits_processor` runs.
"""

from cloneus.inference.sampling.build import build_logits_processor, generation_kwargs, sampler_order
from cloneus.inference.sampling.options import (
    DEFAULT_SAMPLER_PRIORITY,
    SAMPLER_NAMES,
    SamplingOptions,
    describe_option,
    describe_range,
)
from cloneus.inference.sampling.presets import Preset, load_preset_file, load_presets

__all__ = [
    "DEFAULT_SAMPLER_PRIORITY",
    "SAMPLER_NAMES",
    "Preset",
    "SamplingOptions",
    "build_logits_processor",
    "describe_option",
    "describe_range",
    "generation_kwargs",
    "load_preset_file",
    "load_presets",
    "sampler_order",
]
