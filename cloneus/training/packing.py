"""Padding-free packing: many conversations per row, none of them seeing another.

Conversations are binned into rows of at most `chunk_size` tokens (best-fit decreasing, so rows come out nearly
full), concatenated, and given `position_ids` that restart at 0 for each conversation. No attention mask is
passed: transformers reads the restarts in `position_ids` and builds a block-diagonal causal mask (sdpa, eager)
or variable-length attention (flash_attention_2), provided the model runs without a KV cache (`load_model(...,
for_training=True)` turns it off). The first label of every conversation is -100, so the last token of one
conversation is never trained to predict the first token of the next.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def pack_lengths(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins whose lengths sum to at most `capacity` (best-fit decreasing).

    Args:
        lengths (`Sequence[int]`): token count of each conversation.
        capacity (`int`): tokens per row (`training.chunk_size`).

    Returns:
        `list[list[int]]`: indices per bin, longest-first within each bin; every index appears exactly once.

    Raises:
        ValueError: a conversation is longer than `capacity` (the dataset step should have split it).
    """
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(
            f"{len(too_long)} conversation(s) exceed chunk_size={capacity} tokens (first: #{too_long[0]} with "
            f"{lengths[too_long[0]]}); prepare the dataset with the same chunk_size"
        )
    bins: list[list[int]] = []
    # (free space, bin index), sorted, so the tightest bin that still fits is found by bisection.
    free: list[tuple[int, int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        pos = bisect.bisect_left(free, (lengths[i], -1))
        if pos == len(free):
            bins.append([i])
            space, b = capacity - lengths[i], len(bins) - 1
        else:
            space, b = free.pop(pos)
            bins[b].append(i)
            space -= lengths[i]
        bisect.insort(free, (space, b))
    return bins


def pack_rows(input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], chunk_size: int) -> dict:
    """Pack tokenized conversations into rows of at most `chunk_size` tokens.

    Returns:
        `dict`: columns `input_ids`, `labels`, `position_ids` (one list per row) and `length`, ready for
        `Dataset.from_dict`. Labels are -100 at the first token of each conversation.
    """
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "length": []}
    for members in pack_lengths([len(ids) for ids in input_ids], chunk_size):
        ids_row, labels_row, pos_row = [], [], []
        for i in members:
            assert len(input_ids[i]) == len(labels[i]), f"conversation {i}: input_ids and labels differ in length"
            ids_row.extend(input_ids[i])
            labels_row.append(IGNORE_INDEX)
            labels_row.extend(labels[i][1:])
            pos_row.extend(range(len(input_ids[i])))
        rows["input_ids"].append(ids_row)
        rows["labels"].append(labels_row)
        rows["position_ids"].append(pos_row)
        rows["length"].append(len(ids_row))
    return rows


def pack_dataset(dataset: Dataset, chunk_size: int) -> Dataset:
    """`pack_rows` over a tokenized `datasets.Dataset` with `input_ids` and `labels` columns."""
    from datasets import Dataset

    packed = Dataset.from_dict(pack_rows(dataset["input_ids"], dataset["labels"], chunk_size))
    logger.info(
        "packed %d conversations into %d rows of <= %d tokens (%.1f%% full)",
        len(dataset),
        len(packed),
        chunk_size,
        100 * sum(packed["length"]) / max(1, len(packed) * chunk_size),
    )
    return packed


@dataclass
class PaddingFreeCollator:
    """Concatenate a batch of rows into a single row with no padding; boundaries live in `position_ids`.

    A row without `position_ids` counts as one conversation. Labels are -100 wherever a conversation starts.

    Example:
        in:  `[{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, -100, 8], "position_ids": [0, 1, 0, 1]},
              {"input_ids": [9, 4], "labels": [9, 4]}]`
        out: `{"input_ids": tensor([[5, 6, 7, 8, 9, 4]]),
               "labels": tensor([[-100, 6, -100, 8, -100, 4]]),
               "position_ids": tensor([[0, 1, 0, 1, 0, 1]])}`
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        labels = [torch.as_tensor(f["labels"], dtype=torch.long) for f in features]
        positions = [
            torch.as_tensor(f["position_ids"], dtype=torch.long) if "position_ids" in f else torch.arange(len(i))
            for f, i in zip(features, ids, strict=True)
        ]
        input_ids = torch.cat(ids)[None]  # (1, T)
        position_ids = torch.cat(positions)[None]  # (1, T)
        label_row = torch.cat(labels)[None].masked_fill(position_ids == 0, IGNORE_INDEX)  # (1, T)
        return {"input_ids": input_ids, "labels": label_row, "position_ids": position_ids}
