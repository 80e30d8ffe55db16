"""Where a reply ends, decided on text rather than on token ids.

A reply ends at the end of its turn (`ChatFormatter.stop_strings`: the end-of-turn token, or for `tag_only` the
start of the next author tag) or at any special token. Token-level matching cannot see a stop string that a BPE
merge splits differently each time, so every check decodes the generated tail and looks for the strings in it.
The same `TextStops` cuts the final text and decides how much of a half-finished stream is safe to show: a
suffix that could still grow into a stop string is held back until the next token settles it.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


class TextStops:
    """Cuts generated text at the first stop string.

    Args:
        stops (`list[str]`): strings that end a reply, most important first (a server that takes only a few is
            sent the first ones); empty strings and repeats are ignored.
    """

    def __init__(self, stops: list[str]):
        self.by_priority = list(dict.fromkeys(s for s in stops if s))
        self.stops = sorted(self.by_priority, key=len, reverse=True)

    def cut(self, text: str) -> tuple[str, bool]:
        """Return `text` up to the earliest stop string, and whether one was found."""
        positions = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if not positions:
            return text, False
        return text[: min(positions)], True

    def visible(self, text: str) -> str:
        """The part of an unfinished reply that no later token can turn into (part of) a stop string.

        A trailing fragment that is a prefix of a stop string is held back, and so is trailing whitespace, because
        the finished reply is right-stripped.
        """
        text, stopped = self.cut(text)
        if stopped:
            return text.rstrip()
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:n]):
                    hold = n
                    break
        # A trailing U+FFFD is an incomplete UTF-8 sequence that the next token may complete into a character.
        return text[: len(text) - hold].rstrip().rstrip("\ufffd").rstrip()


class StopOnText(StoppingCriteria):
    """Stops each row once its generated text contains a stop string.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): decodes the generated ids, special tokens kept.
        stops (`TextStops`): the stop strings.
        prompt_length (`int`): columns of `input_ids` that belong to the prompt (padding included).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: TextStops, prompt_length: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=False)
        return torch.tensor([self.stops.cut(t)[1] for t in texts], dtype=torch.bool, device=input_ids.device)


class StopOnEvent(StoppingCriteria):
    """Stops every row when `event` is set: a stream consumer that goes away cancels its generate thread."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TokenQueue(BaseStreamer):
    """Hands generated token ids from the generate thread to the consumer; the first `put` is the prompt, skipped.

    `None` marks the end; an exception object marks a failure in the generate thread.
    """

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)

    def fail(self, error: BaseException) -> None:
        self.queue.put(error)
