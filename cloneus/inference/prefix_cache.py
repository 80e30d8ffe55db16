"""The KV cache of the last prompt, reused by the next call for the longest common token prefix.

A chat grows at its end: the next prompt is the previous one plus a reply and a new tag. Prefill of a 1,500-token
history costs seconds on a CPU, while the new tail is a few dozen tokens, so keeping the keys and values of the
previous call and computing only what changed turns most of time-to-first-token into a copy.

`generate` extends the cache it is given, so callers always get a *fork* (a copy cropped to the reused length,
repeated across the batch) and the stored cache is never handed out. Only full-attention layers are cropped
safely; a model with sliding-window layers is not cached (one log line says so).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import DynamicCache

logger = logging.getLogger(__name__)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading ids `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """One stored (token ids, KV cache) pair, bounded to `max_tokens` positions.

    Args:
        max_tokens (`int`): keep at most this many positions; 0 disables caching.
    """

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.ids: list[int] = []
        self._cache: DynamicCache | None = None
        self._refused = False

    @property
    def enabled(self) -> bool:
        return self.max_tokens > 0 and not self._refused

    def __len__(self) -> int:
        return len(self.ids)

    def clear(self) -> None:
        """Drop the stored KV (on swap, unload, or a model change)."""
        self.ids = []
        self._cache = None

    def match(self, ids: list[int]) -> int:
        """How many leading positions of `ids` the stored cache covers."""
        return common_prefix_length(self.ids, ids) if self._cache is not None else 0

    def fork(self, n: int, batch_size: int = 1) -> DynamicCache:
        """A new cache holding the first `n` stored positions, repeated `batch_size` times; safe to extend.

        Args:
            n (`int`): positions to keep; at most `len(self)`.
            batch_size (`int`, *optional*, defaults to 1): rows of the returned cache.
        """
        from transformers import DynamicCache

        if self._cache is None or n > len(self.ids):
            raise ValueError(f"fork({n}) but only {len(self.ids)} positions are cached")
        layers = [(layer.keys[..., :n, :], layer.values[..., :n, :]) for layer in self._cache.layers]
        cache = DynamicCache(ddp_cache_data=layers)  # update() concatenates, so this copies the slices
        if batch_size > 1:
            cache.batch_repeat_interleave(batch_size)
        return cache

    def store(self, ids: list[int], cache: DynamicCache) -> None:
        """Keep `cache` (one row, covering `ids`) for the next call, cropped to `max_tokens`.

        The caller must not use `cache` afterwards: it now belongs to this object.
        """
        from transformers.cache_utils import DynamicLayer

        if not self.enabled:
            return
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            logger.info("prefix cache off: the model has sliding-window or linear-attention layers")
            self._refused = True
            self.clear()
            return
        length = cache.get_seq_length()
        if length != len(ids):
            raise ValueError(f"cache holds {length} positions but {len(ids)} ids were given")
        if length > self.max_tokens:
            cache.crop(self.max_tokens - length)
            ids = ids[: self.max_tokens]
        self.ids = list(ids)
        self._cache = cache
