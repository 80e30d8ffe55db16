"""The in-process backend: a transformers model (with its LoRA adapter) on this machine.

Every call goes through the prefix cache: the KV of the longest token prefix shared with the previous call is
forked (copied) and handed to `generate` as `cache=`, so only the new tail is prefilled. After a single-row
generate, the extended cache (prompt plus reply) becomes the stored one, so the next turn, whose history now ends
with that reply, reuses all of it. `batch_generate` shares one cached prefix across rows: the rows are
`prefix | left padding | own suffix`, and the attention mask zeroes the padding in the middle (generate derives
position ids from the mask, so each suffix still sits right after the prefix).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cloneus.errors import CheckpointError
from cloneus.inference.prefix_cache import PrefixCache, common_prefix_length
from cloneus.inference.stopping import StopOnEvent, StopOnText, TextStops, TokenQueue

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

    from cloneus.inference.sampling import SamplingOptions

logger = logging.getLogger(__name__)


def _shape_error(path: str | Path, model: PreTrainedModel, err: RuntimeError) -> CheckpointError:
    """peft's state-dict error (one line per tensor) as one line naming the checkpoint, the file and the base."""
    first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
    detail = first.split(": ", 1)[-1].replace("torch.Size(", "").replace(")", "")
    return CheckpointError(
        f"{path}: adapter_model.safetensors does not fit the base model {model.name_or_path} ({detail}); "
        "it was trained on another base: set model.model_id in its cloneus_config.yaml to that base"
    )


class LocalBackend:
    """Generation and scoring with a loaded model; one call at a time (guarded by a lock).

    Args:
        model (`PreTrainedModel`): the base model, or a `PeftModel` around it.
        tokenizer (`PreTrainedTokenizerBase`): the checkpoint's tokenizer.
        prefix_cache_tokens (`int`): bound on cached KV positions; 0 disables the prefix cache.
    """

    name = "local"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, prefix_cache_tokens: int):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prefix = PrefixCache(prefix_cache_tokens)
        self._lock = threading.RLock()
        self._adapter_serial = 0
        self.last_reused = 0  # prompt tokens the last call took from the prefix cache (for benches and tests)
        self.eos_token_ids = eos_token_ids(tokenizer, model.generation_config.eos_token_id)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        self.newline_token_ids = tokenizer.encode("\n", add_special_tokens=False)

    @property
    def device(self) -> str:
        return str(self.model.device)

    def close(self) -> None:
        """Drop the cached KV and this backend's reference to the model, so its memory can be freed."""
        with self._lock:
            self.prefix.clear()
            self.model = None

    # ---- adapters -------------------------------------------------------------------------------------------

    def load_adapter(self, path: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Serve the LoRA adapter at `path` (and its tokenizer), replacing the current one; base weights stay.

        An adapter of the same shape (targets, rank, alpha, variants) is hot-swapped: peft copies its weights into
        the live LoRA layers, with no module surgery. Any other adapter is loaded beside the current one, made
        active, and the old one deleted. Either way a file that fails to load leaves the current adapter serving.
        """
        from peft import PeftConfig, PeftModel
        from peft.utils.hotswap import hotswap_adapter

        from cloneus.models.lora import peft_model_init

        with self._lock:
            try:
                if not isinstance(self.model, PeftModel):
                    base = self.model
                    with peft_model_init():
                        self.model = PeftModel.from_pretrained(base, str(path), adapter_name=self._next_adapter_name())
                elif _hot_swappable(self.model.active_peft_config, PeftConfig.from_pretrained(str(path))):
                    hotswap_adapter(
                        self.model, str(path), self.model.active_adapter, torch_device=str(self.model.device)
                    )
                else:
                    self._replace_adapter(path)
            except RuntimeError as e:
                if "size mismatch" not in str(e):
                    raise
                raise _shape_error(path, self.model, e) from None
            self.model.eval()
            self.tokenizer = tokenizer
            self.prefix.clear()

    def _next_adapter_name(self) -> str:
        self._adapter_serial += 1
        return f"ckpt{self._adapter_serial}"

    def _replace_adapter(self, path: str | Path) -> None:
        old, name = self.model.active_adapter, self._next_adapter_name()
        try:
            self.model.load_adapter(str(path), adapter_name=name)
        except BaseException:
            # peft injects the new adapter's layers before reading its weights; drop the half-loaded one.
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            raise
        self.model.set_adapter(name)
        self.model.delete_adapter(old)

    # ---- token plumbing -------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of a fully rendered prompt; the chat template already wrote any BOS into the text."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _reusable(self, ids: list[int]) -> DynamicCache | None:
        """A fork of the stored prefix that `ids` starts with (empty when nothing matches), for one-row generate.

        generate prefills the rest of the prompt itself in the same forward pass that yields the first token, and
        the caller stores the extended cache afterwards. None when the prefix cache is off.
        """
        from transformers import DynamicCache

        self.last_reused = 0
        if not self.prefix.enabled:
            return None
        reused = self.last_reused = self.prefix.match(ids[:-1][: self.prefix.max_tokens])
        logger.debug("prefix cache: reused %d of %d prompt tokens", reused, len(ids))
        return self.prefix.fork(reused) if reused else DynamicCache(config=self.model.config)

    def _prefilled(self, ids: list[int], batch_size: int = 1) -> DynamicCache | None:
        """A fork of the prefix cache covering as much of `ids[:-1]` as the bound allows, prefilling (and storing)
        what's new; `batch_size` rows, each the caller's to extend.

        Returns None when the prefix cache is off; the caller then prefills everything itself.
        """
        import torch
        from transformers import DynamicCache

        self.last_reused = 0
        if not self.prefix.enabled:
            return None
        target = ids[:-1][: self.prefix.max_tokens]
        if not target:
            return None
        reused = self.last_reused = self.prefix.match(target)
        if reused < len(target):
            cache = self.prefix.fork(reused) if reused else DynamicCache(config=self.model.config)
            tail = torch.tensor([target[reused:]], device=self.model.device)  # (1, T)
            positions = torch.arange(reused, len(target), device=self.model.device).unsqueeze(0)
            with torch.no_grad():
                self.model(input_ids=tail, cache=cache, position_ids=positions, use_cache=True)
            self.prefix.store(target, cache)
            if not self.prefix.enabled:
                return None
        logger.debug("prefix cache: reused %d of %d prompt tokens", reused, len(ids))
        return self.prefix.fork(len(target), batch_size)

    def _generate(
        self,
        rows: torch.Tensor,
        mask: torch.Tensor,
        cache: DynamicCache | None,
        opts: SamplingOptions,
        stops: TextStops,
        *,
        streamer: TokenQueue | None = None,
        cancel: threading.Event | None = None,
    ) -> torch.Tensor:
        """`model.generate` with our samplers and stop criteria; returns the generated columns only."""
        import torch
        from transformers import StoppingCriteriaList

        from cloneus.inference.sampling import build_logits_processor, generation_kwargs
        from cloneus.inference.sampling.words import word_generation_kwargs

        prompt_length = rows.shape[1]
        processors = build_logits_processor(
            opts,
            eos_token_ids=self.eos_token_ids,
            newline_token_ids=self.newline_token_ids,
            prompt_length=prompt_length,
            tokenizer=self.tokenizer,
        )
        criteria = StoppingCriteriaList([StopOnText(self.tokenizer, stops, prompt_length)])
        if cancel is not None:
            criteria.append(StopOnEvent(cancel))
        with torch.no_grad():
            out = self.model.generate(
                input_ids=rows,
                attention_mask=mask,
                cache=cache,
                logits_processor=processors,
                stopping_criteria=criteria,
                streamer=streamer,
                eos_token_id=self.eos_token_ids,
                pad_token_id=self.pad_token_id,
                **generation_kwargs(opts),
                **word_generation_kwargs(opts, self.tokenizer),
            )  # (B, prompt + new)
        return out

    def _decode_reply(self, ids: list[int], stops: TextStops) -> str:
        return stops.cut(self.tokenizer.decode(ids, skip_special_tokens=False))[0].rstrip()

    # ---- public calls ---------------------------------------------------------------------------------------

    def complete(self, prompt: str, opts: SamplingOptions, stops: TextStops) -> str:
        """The reply to a rendered prompt, cut at the first stop string."""
        ids = self.encode(prompt)
        return self._decode_reply(self._generate_one(ids, opts, stops), stops)

    def _generate_one(self, ids: list[int], opts, stops, streamer=None, cancel=None, adapter=True) -> list[int]:
        """Generate after `ids` through the prefix cache, then keep the extended cache; returns the new ids.

        With `adapter=False` the LoRA adapter is switched off for this call (the base model answers), and the
        prefix cache is neither read nor written: its KV was computed with the adapter on.
        """
        import torch

        if not adapter:
            with self._lock, self._adapter_disabled():
                rows = torch.tensor([ids], device=self.model.device)  # (1, T)
                out = self._generate(rows, torch.ones_like(rows), None, opts, stops, streamer=streamer, cancel=cancel)
            return out[0, len(ids) :].tolist()
        with self._lock:
            cache = self._reusable(ids)
            rows = torch.tensor([ids], device=self.model.device)  # (1, T)
            out = self._generate(rows, torch.ones_like(rows), cache, opts, stops, streamer=streamer, cancel=cancel)
            if cache is not None:
                # The cache now holds prompt + reply minus the last token (whose KV was never computed).
                self.prefix.store(out[0, : cache.get_seq_length()].tolist(), cache)
        return out[0, len(ids) :].tolist()

    def _adapter_disabled(self):
        """A context in which the base weights answer alone (peft's `disable_adapter`; a no-op without one)."""
        from contextlib import nullcontext

        from peft import PeftModel

        return self.model.disable_adapter() if isinstance(self.model, PeftModel) else nullcontext()

    def stream(self, prompt: str, opts: SamplingOptions, stops: TextStops, *, adapter: bool = True) -> Iterator[str]:
        """Yield the reply as text deltas while it is generated; closing the iterator stops generation.

        Generate runs in a worker thread and hands token ids over a queue; this side decodes and holds back any
        tail that may still become a stop string, so the deltas always join into exactly `complete()`'s text.
        `adapter=False` asks the base model (see `_generate_one`).
        """
        ids = self.encode(prompt)
        streamer, cancel = TokenQueue(), threading.Event()

        def work() -> None:
            try:
                self._generate_one(ids, opts, stops, streamer, cancel, adapter)
            except BaseException as e:  # a thread boundary: hand the error to the consumer, which re-raises it
                streamer.fail(e)

        thread = threading.Thread(target=work, name="cloneus-generate", daemon=True)
        thread.start()
        generated: list[int] = []
        shown = ""
        try:
            while (item := streamer.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                generated.extend(item)
                visible = stops.visible(self.tokenizer.decode(generated, skip_special_tokens=False))
                if len(visible) > len(shown) and visible.startswith(shown):
                    yield visible[len(shown) :]
                    shown = visible
            final = self._decode_reply(generated, stops)
            if final.startswith(shown) and len(final) > len(shown):
                yield final[len(shown) :]
        finally:
            cancel.set()
            thread.join()

    def complete_batch(self, prompts: list[str], opts: SamplingOptions, stops: TextStops) -> list[str]:
        """One batched generate over several prompts that share a history; returns one reply per prompt."""
        return [self._decode_reply(ids, stops) for ids in self._batch_ids(prompts, opts, stops)]

    def _batch_ids(self, prompts: list[str], opts, stops, streamer=None, cancel=None) -> list[list[int]]:
        """The generated ids of each row of one batched generate (rows: shared prefix | padding | suffix)."""
        import torch

        rows = [self.encode(p) for p in prompts]
        shared = min(common_prefix_length(rows[0], r) for r in rows)
        shared = min(shared, min(len(r) for r in rows) - 1)
        suffixes = [r[shared:] for r in rows]
        width = max(len(s) for s in suffixes)
        input_ids, masks = [], []
        for suffix in suffixes:
            pad = width - len(suffix)
            input_ids.append(rows[0][:shared] + [self.pad_token_id] * pad + suffix)
            masks.append([1] * shared + [0] * pad + [1] * len(suffix))
        device = self.model.device
        with self._lock:
            cache = self._prefilled(rows[0][: shared + 1], batch_size=len(rows)) if shared else None
            out = self._generate(
                torch.tensor(input_ids, device=device),
                torch.tensor(masks, device=device),
                cache,
                opts,
                stops,
                streamer=streamer,
                cancel=cancel,
            )  # (B, shared + width + new)
        return [row.tolist() for row in out[:, shared + width :]]

    def stream_batch(self, prompts: list[str], opts: SamplingOptions, stops: TextStops) -> Iterator[tuple[int, str]]:
        """Yield `(row, delta)` while one batched generate runs; each row's deltas join into exactly its
        `complete_batch` reply. Closing the iterator stops generation.

        The streamer gets one new token per row at each step (a finished row gets padding, which its stop
        strings hide), so row `i`'s ids are the `i`-th entries of every step.
        """
        streamer, cancel = TokenQueue(), threading.Event()

        def work() -> None:
            try:
                self._batch_ids(prompts, opts, stops, streamer, cancel)
            except BaseException as e:  # a thread boundary: hand the error to the consumer, which re-raises it
                streamer.fail(e)

        thread = threading.Thread(target=work, name="cloneus-generate-batch", daemon=True)
        thread.start()
        generated: list[list[int]] = [[] for _ in prompts]
        shown = [""] * len(prompts)
        try:
            while (item := streamer.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                for row, token in enumerate(item):
                    generated[row].append(token)
                for row, ids in enumerate(generated):
                    visible = stops.visible(self.tokenizer.decode(ids, skip_special_tokens=False))
                    if len(visible) > len(shown[row]) and visible.startswith(shown[row]):
                        yield row, visible[len(shown[row]) :]
                        shown[row] = visible
            for row, ids in enumerate(generated):
                final = self._decode_reply(ids, stops)
                if final.startswith(shown[row]) and len(final) > len(shown[row]):
                    yield row, final[len(shown[row]) :]
        finally:
            cancel.set()
            thread.join()

    def continuation_logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        """Log-probability of each continuation after `prefix`, all scored in one batched forward pass.

        The shared prefix comes from the prefix cache (prefilled once); each row then holds the last uncached
        prefix token(s) plus that candidate's tokens but its last, right-padded.
        """
        import torch
        from transformers import DynamicCache

        fulls = [self.encode(prefix + c) for c in continuations]
        shared = min(common_prefix_length(fulls[0], f) for f in fulls)
        if shared == 0:
            raise ValueError("the candidate continuations share no prefix tokens")
        tails = [f[shared:] for f in fulls]
        with self._lock:
            cache = self._prefilled(fulls[0][:shared], batch_size=len(fulls))
            cached = cache.get_seq_length() if cache is not None else 0
            if cache is None:
                cache = DynamicCache(config=self.model.config)
            head = fulls[0][cached:shared]  # at least the last shared token, whose logits predict each tail
            # A tail's last token is predicted but never fed: nothing is scored after it.
            inputs = [head + t[:-1] for t in tails]
            width = max(len(i) for i in inputs)
            input_ids = [i + [self.pad_token_id] * (width - len(i)) for i in inputs]
            mask = [[1] * (cached + len(i)) + [0] * (width - len(i)) for i in inputs]
            device = self.model.device
            positions = torch.arange(cached, cached + width, device=device).expand(len(tails), -1)
            with torch.no_grad():
                logits = self.model(
                    input_ids=torch.tensor(input_ids, device=device),
                    attention_mask=torch.tensor(mask, device=device),
                    position_ids=positions,
                    cache=cache,
                    use_cache=True,
                ).logits  # (B, width, V)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, tail in enumerate(tails):
            steps = torch.arange(len(head) - 1, len(head) - 1 + len(tail), device=device)
            tokens = torch.tensor(tail, device=device)
            scores.append(logprobs[row, steps, tokens].sum().item())
        return scores


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, config_eos: int | list[int] | None) -> list[int]:
    """The ids that end generation: the tokenizer's EOS and the generation config's (one id or a list)."""
    config_eos = config_eos if isinstance(config_eos, list) else [config_eos]
    return sorted({i for i in [tokenizer.eos_token_id, *config_eos] if i is not None})


def _hot_swappable(current, new) -> bool:
    """Two LoRA configs with the same modules and scaling: the new weights can be copied into the live layers."""
    keys = ("r", "lora_alpha", "use_rslora", "use_dora", "lora_dropout", "bias", "modules_to_save")
    keys += ("rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern")

    def targets(config) -> str | list[str]:
        return config.target_modules if isinstance(config.target_modules, str) else sorted(config.target_modules)

    if not (current.peft_type == new.peft_type == "LORA"):
        return False
    return targets(current) == targets(new) and all(getattr(current, k) == getattr(new, k) for k in keys)
