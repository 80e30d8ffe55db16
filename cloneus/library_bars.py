"""The libraries' progress bars around our own steps: off, unless `-v`.

Loading weights, writing checkpoint shards, converting a GGUF file and saving the dataset cache each draw a bar
from transformers or datasets; in a run they are noise between our own lines (a log line says what is happening).
`library_bars_off` switches them off for the steps inside it only and puts them back as they were, so nothing
is changed for code that runs outside it. Under `-v` (DEBUG logging) it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


def verbose() -> bool:
    """True under `-v`: the user asked to see every library message as it is."""
    return logging.getLogger("cloneus").isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def library_bars_off() -> Iterator[None]:
    """Switch transformers' and datasets' progress bars off for the steps inside, then restore them."""
    if verbose():
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    hf_was_on = hf_logging.is_progress_bar_enabled()
    ds_was_on = not datasets.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hf_was_on:
            hf_logging.enable_progress_bar()
        if ds_was_on:
            datasets.enable_progress_bars()
