"""`Cloneus`: the public API for talking to a trained clone (or to a base model, zero-shot).

It owns the parts every backend shares: the checkpoint's config and user index, the `ChatFormatter` that turns a
history into the exact prompt text training used, author validation, seed text, and next-speaker choice. A
backend only turns prompt text into reply text (and scores continuations): `local` runs transformers in this
process, `openai` calls an OpenAI-compatible server such as vLLM with the adapter loaded as a LoRA module.

History is a list of `(author, text)` pairs, `(author, text, timestamp)` triples or `Turn`s, oldest first. Every
call first normalises it with the checkpoint's own cleaning rules and user index (`cloneus.data.normalize`, the
path the training data took), then keeps the newest turns that fit the model's context with the reply budget.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.data.normalize import History, MessageNormalizer, Turn
from cloneus.errors import CloneusError, UnknownAuthorError
from cloneus.inference.checkpoint import read_checkpoint, read_sampling_defaults
from cloneus.inference.context_budget import context_tokens, fit_history
from cloneus.inference.sampling.options import SEED_MAX
from cloneus.inference.speaker import Mode, choose_author, normalise, parse_mode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from cloneus.config import CloneusConfig, InferenceConfig
    from cloneus.data.users import UserIndex
    from cloneus.inference.sampling import SamplingOptions

logger = logging.getLogger(__name__)

NEW_AUTHOR_MAX_CHARS = 32  # a zero-shot name goes into the author tag as typed; Discord names are at most 32


def _open_backend(config: CloneusConfig, tokenizer: PreTrainedTokenizerBase, adapter: Path | None, device: str | None):
    """Build the configured backend; for `local` this loads the base weights and the adapter."""
    if config.inference.backend == "openai":
        from cloneus.inference.backends.openai import OpenAIBackend

        return OpenAIBackend.from_config(config.inference, tokenizer=tokenizer, checkpoint=adapter)
    from cloneus.inference.backends.local import LocalBackend
    from cloneus.models.loading import load_model

    model, _ = load_model(config.model, device=device)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # The checkpoint's tokenizer gained tokens in training (custom_chat_template: chatml); the adapter holds
        # the trained rows of the resized embeddings.
        model.resize_token_embeddings(len(tokenizer))
    backend = LocalBackend(model, tokenizer, prefix_cache_tokens=config.inference.prefix_cache_tokens)
    if adapter is not None:
        backend.load_adapter(adapter, tokenizer)
    return backend


def _formatting(config: CloneusConfig, users: UserIndex, tokenizer: PreTrainedTokenizerBase):
    """The prompt formatter and the stop strings (end of turn, next tag, every special token) for a checkpoint."""
    from cloneus.data.formatting import ChatFormatter
    from cloneus.inference.stopping import TextStops

    formatter = ChatFormatter(tokenizer, config.format, config.prompt, users)
    # The strings removed from chat text are the ones a reply must never contain either.
    return formatter, TextStops(formatter.stop_strings() + formatter.control.tokens)


def _model_context(backend: Any) -> int | None:
    """The loaded model's `max_position_embeddings`, or a vLLM server's `max_model_len` (None when not known)."""
    return backend.model.config.max_position_embeddings if backend.name == "local" else backend.context_window


def _users_from_names(names: Iterable[str]) -> UserIndex:
    """A user index of equally weighted members, for zero-shot use without a trained checkpoint."""
    from cloneus.data.users import User, UserIndex

    names = list(dict.fromkeys(names))
    if not names:
        raise CloneusError("author_names is empty; name at least one chat member")
    share = 1 / len(names)
    return UserIndex(
        users=[User(id=str(i), username=n, display_name=n, message_count=1, share=share) for i, n in enumerate(names)]
    )


class Cloneus:
    """A loaded clone model. Build one with `from_pretrained` or `from_model_id`.

    Attributes:
        config (`CloneusConfig`): the checkpoint's config (with this process' `inference` section).
        users (`UserIndex`): who can be cloned.
        checkpoint (`Path | None`): the loaded checkpoint directory; None for a zero-shot base model.
        sampling_defaults (`SamplingOptions`): the checkpoint's saved defaults; per-call keyword arguments
            override them.
        normalizer (`MessageNormalizer`): turns a history into what training saw (see the module docstring).
        context_tokens (`int`): the model's context window; a prompt plus its reply budget stays within it.
        youtube (`YouTubeLinks | None`): encodes YouTube links in histories as training did; None leaves them.
    """

    def __init__(
        self,
        config: CloneusConfig,
        users: UserIndex,
        tokenizer: PreTrainedTokenizerBase,
        backend: Any,
        *,
        checkpoint: Path | None = None,
        sampling_defaults: SamplingOptions | None = None,
        device: str | None = None,
        youtube: Any = None,
    ):
        self._backend = backend
        self._device_request = device
        self.youtube = youtube
        defaults = sampling_defaults or read_sampling_defaults(None)
        self._install(config, users, tokenizer, checkpoint, defaults, _formatting(config, users, tokenizer))

    def _install(self, config, users, tokenizer, checkpoint, sampling_defaults, formatting) -> None:
        self.config = config
        self.users = users
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint
        self.sampling_defaults = sampling_defaults
        self.formatter, self._stops = formatting
        self.normalizer = MessageNormalizer(config.dataset, users, tokenizer, self.youtube)
        self.context_tokens = context_tokens(tokenizer, _model_context(self._backend), config.training.chunk_size)

    # ---- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_path: str | Path,
        *,
        device: str | None = None,
        inference: InferenceConfig | None = None,
        youtube: Any = None,
    ) -> Cloneus:
        """Load a checkpoint (a `checkpoint-<step>` directory, or a run directory for its latest checkpoint).

        Args:
            checkpoint_path (`str | Path`): where the checkpoint is.
            device (`str`, *optional*): `cuda`, `cpu`, ...; defaults to CUDA when available.
            inference (`InferenceConfig`, *optional*): backend settings; defaults to the checkpoint's own.
            youtube (`YouTubeLinks`, *optional*): encode YouTube links in histories, as training did
                (`YouTubeLinks.from_env(config.youtube)`); None leaves links as they are.
        """
        from transformers import AutoTokenizer

        info = read_checkpoint(checkpoint_path)
        config = info.config if inference is None else info.config.model_copy(update={"inference": inference})
        tokenizer = AutoTokenizer.from_pretrained(info.path)
        backend = _open_backend(config, tokenizer, info.path, device)
        logger.info("loaded %s (%s backend)", info.path, config.inference.backend)
        return cls(
            config,
            info.users,
            tokenizer,
            backend,
            checkpoint=info.path,
            sampling_defaults=read_sampling_defaults(info.path),
            device=device,
            youtube=youtube,
        )

    @classmethod
    def from_model_id(
        cls,
        model_id: str,
        author_names: Iterable[str],
        *,
        device: str | None = None,
        overrides: list[str] | None = None,
    ) -> Cloneus:
        """A base model with no finetune, prompted as a chat between `author_names` (expect generic replies).

        Args:
            model_id (`str`): hub id, local directory, `.gguf` file, or `builtin:smollm2-135m`.
            author_names (`Iterable[str]`): the chat members it may speak as.
            overrides (`list[str]`, *optional*): `key.sub=value` config overrides, e.g. `format.tag_placement=...`.
        """
        from cloneus.config import apply_overrides, config_from_dict
        from cloneus.models.loading import load_tokenizer

        config = config_from_dict(apply_overrides({"model": {"model_id": model_id}}, overrides or []))
        users = _users_from_names(author_names)
        tokenizer = load_tokenizer(config.model)
        backend = _open_backend(config, tokenizer, None, device)
        return cls(config, users, tokenizer, backend, device=device)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    @property
    def device(self) -> str | None:
        """Where the model runs (`cpu`, `cuda:0`, or the server URL); None once unloaded."""
        return self._backend.device if self._backend is not None else None

    @property
    def backend(self) -> Any:
        self._require_loaded()
        return self._backend

    def unload(self) -> None:
        """Free the model (and on CUDA its cached memory); `swap_checkpoint` loads one again."""
        if self._backend is None:
            return
        self._backend.close()
        self._backend = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("model unloaded")

    def swap_checkpoint(self, checkpoint_path: str | Path) -> float:
        """Serve another checkpoint; returns the seconds it took.

        A checkpoint of the same base model (same `model` config and vocabulary) only replaces the LoRA adapter
        (on a vLLM server: switches the served LoRA name, loading the adapter there when it is new, with no reload);
        anything else unloads the current model first, then loads the new one. The `inference` settings of this
        process are kept. The prefix cache is emptied either way. Everything that can be checked without the
        model (config, user index, tokenizer, prompt format) is checked first, and an adapter that fails to load
        leaves the current one in place, so a bad checkpoint never leaves the clone half-swapped.
        """
        from transformers import AutoTokenizer

        start = time.perf_counter()
        info = read_checkpoint(checkpoint_path)
        config = info.config.model_copy(update={"inference": self.config.inference})
        tokenizer = AutoTokenizer.from_pretrained(info.path)
        formatting = _formatting(config, info.users, tokenizer)
        defaults = read_sampling_defaults(info.path)
        same_base = (
            self._backend is not None and config.model == self.config.model and len(tokenizer) == len(self.tokenizer)
        )
        if same_base and self._backend.name == "openai":
            # The server keeps its base model; only the served LoRA name changes (loaded there when it is new).
            self._backend.use_checkpoint(info.path, tokenizer)
        elif same_base and self._backend.name == "local":
            self._backend.load_adapter(info.path, tokenizer)
        else:
            self.unload()
            self._backend = _open_backend(config, tokenizer, info.path, self._device_request)
        self._install(config, info.users, tokenizer, info.path, defaults, formatting)
        seconds = time.perf_counter() - start
        logger.info("swapped to %s in %.2fs (%s)", info.path, seconds, "adapter only" if same_base else "full load")
        return seconds

    def _require_loaded(self) -> None:
        if self._backend is None:
            raise CloneusError("the model is unloaded; call swap_checkpoint(path) to load one")

    # ---- generation -----------------------------------------------------------------------------------------

    def _speaker(self, author: str, new_author: bool = False) -> str:
        """The name to write in `author`'s tag, or `UnknownAuthorError` when they cannot be cloned.

        With `new_author`, a name the index does not know is written as given (zero-shot: the model never saw
        them speak); a name it knows still goes through the index, so an opted-out member stays refused.
        """
        if new_author and self.users.get(author) is None:
            name = author.strip()
            if not 1 <= len(name) <= NEW_AUTHOR_MAX_CHARS or any(c in name for c in "\n[]"):
                raise UnknownAuthorError(
                    f"new author {author!r}: expected 1-{NEW_AUTHOR_MAX_CHARS} characters without line breaks or []"
                )
            return name
        return self.users.resolve(author).display_name

    def _options(self, sampling: dict[str, Any]) -> SamplingOptions:
        return self.sampling_defaults.merged(**sampling) if sampling else self.sampling_defaults

    def normalize_history(
        self, chat_history: History, names: dict[str, str] | None = None, youtube: Any = None
    ) -> list[Turn]:
        """`chat_history` as training saw such messages: commands, bots, opted-out users and empty messages
        dropped, bursts merged, names resolved to the user index, links tagged, special tokens removed.

        Args:
            chat_history (`Sequence`): `(author, text)`, `(author, text, timestamp)` or `Turn`, oldest first.
            names (`dict[str, str]`, *optional*): id → name for `<@id>` mentions of people outside the index.
            youtube (`YouTubeLinks`, *optional*): encodes links with these instead of `self.youtube`.
        """
        normalizer = self.normalizer if youtube is None else self.normalizer.with_links(youtube)
        return normalizer.turns(chat_history, names)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _fit(self, turns: list[tuple[str, str]], render, reserve: int) -> list[tuple[str, str]]:
        """The newest turns whose prompt leaves `reserve` tokens of the model's context free."""
        return fit_history(turns, render, self._count_tokens, self.context_tokens - reserve)

    def _prompt(
        self, chat_history: History, author: str, seed_text: str | None, opts: SamplingOptions, new_author=False
    ) -> str:
        self._require_loaded()
        speaker = self._speaker(author, new_author)
        turns = self.normalizer.pairs(chat_history)
        turns = self._fit(
            turns, lambda h: self.formatter.generation_prompt(h, speaker, seed_text), opts.max_new_tokens
        )
        return self.formatter.generation_prompt(turns, speaker, seed_text)

    def prompt_text(self, chat_history: History, author: str, seed_text: str | None = None, **sampling: Any) -> str:
        """The exact prompt `generate(chat_history, author, seed_text, **sampling)` sends to the model: the
        history normalised and fitted to the context, in the training format, up to where the reply begins."""
        opts, seed_text = self._options(sampling), self._seed(seed_text)
        return self._prompt(chat_history, author, seed_text, opts)

    def _seed(self, seed_text: str | None) -> str | None:
        """The seed as the prompt carries it (special-token strings removed)."""
        return self.formatter.control.remove(seed_text) if seed_text else seed_text

    def generate(
        self,
        chat_history: History,
        author: str,
        seed_text: str | None = None,
        *,
        new_author: bool = False,
        **sampling: Any,
    ) -> str:
        """`author`'s next message after `chat_history`.

        Args:
            chat_history (`Sequence`): `(author, text)` pairs, `(author, text, timestamp)` triples or `Turn`s,
                oldest first; normalised as training data was (see `normalize_history`).
            author (`str`): who speaks; must be a trainable user of the index.
            seed_text (`str`, *optional*): words the reply starts with; the returned text includes them.
            new_author (`bool`, *optional*, defaults to `False`): allow a name the index does not know (zero-shot).
            **sampling: `SamplingOptions` fields, overriding `sampling_defaults` for this call.

        Raises:
            UnknownAuthorError: `author` is unknown (without `new_author`), excluded or opted out.
        """
        opts, seed_text = self._options(sampling), self._seed(seed_text)
        prompt = self._prompt(chat_history, author, seed_text, opts, new_author)
        return _with_seed(seed_text, self._backend.complete(prompt, opts, self._stops))

    def stream_generate(
        self,
        chat_history: History,
        author: str,
        seed_text: str | None = None,
        *,
        new_author: bool = False,
        **sampling: Any,
    ) -> Iterator[str]:
        """Like `generate`, but yields the reply in pieces as it is produced (the seed text comes first).

        Arguments are checked before the first piece, so a bad author raises here, not on iteration.
        """
        opts, seed_text = self._options(sampling), self._seed(seed_text)
        return self._stream(self._prompt(chat_history, author, seed_text, opts, new_author), seed_text, opts)

    def _stream(self, prompt: str, seed_text: str | None, opts: SamplingOptions) -> Iterator[str]:
        started = bool(seed_text)
        if seed_text:
            yield seed_text
        for piece in self._backend.stream(prompt, opts, self._stops):
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece

    def base_stream(
        self, messages: Sequence[tuple[str, str]], system: str | None = None, **sampling: Any
    ) -> Iterator[str]:
        """The untuned base model's reply to a short chat, in pieces: the same weights with the adapter off, in
        the tokenizer's chat template (see `cloneus.inference.base_chat`). Arguments are checked before the
        first piece.

        Args:
            messages (`Sequence[tuple[str, str]]`): `(role, text)` with role `user` or `assistant`, oldest first,
                the user's message last.
            system (`str`, *optional*): a system message.
            **sampling: `SamplingOptions` fields, overriding `sampling_defaults` for this call.

        Raises:
            `CloneusError`: not the local backend (an OpenAI-compatible server serves the adapter only), no chat
                template, or malformed messages.
        """
        from cloneus.inference.base_chat import base_prompt, base_stops

        self._require_loaded()
        if self._backend.name != "local":
            raise CloneusError(
                f"base-model chat needs the local backend; the {self._backend.name} backend serves the adapter only"
            )
        prompt = base_prompt(self.tokenizer, messages, system)
        return self._base_pieces(prompt, self._options(sampling), base_stops(self.tokenizer))

    def _base_pieces(self, prompt: str, opts: SamplingOptions, stops) -> Iterator[str]:
        started = False
        for piece in self._backend.stream(prompt, opts, stops, adapter=False):
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece

    def batch_generate(
        self,
        chat_history: History,
        authors: Sequence[str],
        seed_texts: Sequence[str | None] | None = None,
        **sampling: Any,
    ) -> list[str]:
        """One reply per author to the same history, generated as one batch.

        Args:
            authors (`Sequence[str]`): who speaks in each row (repeats allowed).
            seed_texts (`Sequence[str | None]`, *optional*): a seed per author.
        """
        seed_texts = [self._seed(s) for s in seed_texts] if seed_texts is not None else [None] * len(authors)
        if len(seed_texts) != len(authors):
            raise ValueError(f"got {len(seed_texts)} seed_texts for {len(authors)} authors")
        if not authors:
            return []
        opts = self._options(sampling)
        prompts = [self._prompt(chat_history, a, s, opts) for a, s in zip(authors, seed_texts, strict=True)]
        replies = self._backend.complete_batch(prompts, opts, self._stops)
        return [_with_seed(s, r) for s, r in zip(seed_texts, replies, strict=True)]

    def generate_many(
        self,
        requests: Sequence[tuple[History, str]],
        *,
        batch_size: int = 8,
        on_batch: Callable[[int], None] | None = None,
        **sampling: Any,
    ) -> list[str]:
        """One reply per `(chat_history, author)` request, each history its own, generated in batches.

        For many independent contexts (eval, benches): decoding on a CPU is bound by reading the weights, so a
        batch of 8 rows costs little more per step than one. Prompts are batched by length, shortest first, so
        little padding is prefilled. A `seed` in `sampling` seeds batch `k` with `seed + k`; `on_batch` gets the
        number of replies each finished batch adds (for progress).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        opts = self._options(sampling)
        prompts = [self._prompt(history, author, None, opts) for history, author in requests]
        order = sorted(range(len(prompts)), key=lambda i: self._count_tokens(prompts[i]))
        replies: list[str] = [""] * len(prompts)
        for k, start in enumerate(range(0, len(order), batch_size)):
            rows = order[start : start + batch_size]
            batch_opts = opts if opts.seed == -1 else opts.merged(seed=(opts.seed + k) % SEED_MAX)
            done = self._backend.complete_batch([prompts[i] for i in rows], batch_opts, self._stops)
            for i, reply in zip(rows, done, strict=True):
                replies[i] = _with_seed(None, reply)
            if on_batch is not None:
                on_batch(len(rows))
        return replies

    def stream_batch(
        self, chat_history: History, authors: Sequence[str], seed_text: str | None = None, **sampling: Any
    ) -> Iterator[tuple[int, str]]:
        """Like `batch_generate` (one seed for every row), but yields `(row, piece)` while the batch is generated,
        each row's seed text first; a row's pieces join into its `batch_generate` reply. The local backend
        streams; another backend yields each whole reply once the batch is done. Arguments are checked before
        the first piece.
        """
        opts, seed_text = self._options(sampling), self._seed(seed_text)
        prompts = [self._prompt(chat_history, a, seed_text, opts) for a in authors]
        return self._batch_pieces(prompts, seed_text, opts)

    def _batch_pieces(self, prompts: list[str], seed_text: str | None, opts: SamplingOptions):
        started = [bool(seed_text)] * len(prompts)
        if seed_text:
            yield from ((row, seed_text) for row in range(len(prompts)))
        if self._backend.name == "local":
            pieces = self._backend.stream_batch(prompts, opts, self._stops)
        else:
            pieces = enumerate(self._backend.complete_batch(prompts, opts, self._stops))
        for row, piece in pieces:
            if not started[row]:
                piece = piece.lstrip()
                started[row] = bool(piece)
            if piece:
                yield row, piece

    # ---- next speaker ---------------------------------------------------------------------------------------

    def author_probabilities(self, chat_history: History) -> dict[str, float]:
        """Probability that each trainable author writes the next message, normalised over them.

        Each candidate's tag is scored after the history in one batched pass (the history prefilled once). The
        history is cut, oldest turns first, so that the prefix plus the longest tag fits the model's context.
        """
        self._require_loaded()
        turns = self.normalizer.pairs(chat_history)
        prefix, continuations = self.formatter.speaker_prompt(turns)
        names = list(continuations)
        if not names:
            raise UnknownAuthorError("the user index has no trainable authors to choose from")
        longest = max(self._count_tokens(c) for c in continuations.values())
        kept = self._fit(turns, lambda h: self.formatter.speaker_prompt(h)[0], longest)
        if len(kept) < len(turns):
            prefix, continuations = self.formatter.speaker_prompt(kept)
        scores = self._backend.continuation_logprobs(prefix, [continuations[n] for n in names])
        return normalise(dict(zip(names, scores, strict=True)))

    def predict_author(
        self,
        chat_history: History,
        mode: Mode = "weighted",
        *,
        threshold: float | None = None,
        exclude: Iterable[str] = (),
        seed: int | None = None,
    ) -> str | None:
        """Who speaks next: `weighted` (sampled), `top`, `uniform`, or `lurk` (None below `threshold`).

        Args:
            mode (`str | tuple[str, float]`): also `("lurk", 0.5)` or `"lurk(0.5)"`.
            threshold (`float`, *optional*): lurk's threshold when `mode` is plain `"lurk"`.
            exclude (`Iterable[str]`, *optional*): authors never picked (e.g. the human in a chat).
            seed (`int`, *optional*): seeds the draw of `weighted` and `uniform`.
        """
        name, threshold = parse_mode(mode, threshold)
        if name == "uniform":
            probs = {u.display_name: 1.0 for u in self.users.trainable()}
        else:
            probs = self.author_probabilities(chat_history)
        skip = {e.casefold() for e in exclude}
        kept = {k: v for k, v in probs.items() if k.casefold() not in skip}
        total = sum(kept.values())
        kept = {k: v / total for k, v in kept.items()} if total > 0 else kept
        return choose_author(kept, name, threshold, random.Random(seed))


def _with_seed(seed_text: str | None, reply: str) -> str:
    return seed_text + reply if seed_text else reply.lstrip()
