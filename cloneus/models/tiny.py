"""A tiny random Llama with a locally trained tokenizer.

Tests, benchmarks and dry runs of the bot need a real `transformers` model that loads in well under a second and
needs no download. This builds one from a config (hidden size 32, 2 layers, as transformers' own Llama tests do)
and trains a byte-level BPE tokenizer on whatever text is given, so tokenization behaves like a real model's:
multi-token words, ChatML special tokens and a chat template. The weights are random, so its text is noise;
everything else (LoRA, packing, generation, KV cache) is the real code path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_CORPUS = [
    "hello there, how is everyone doing today?",
    "pretty good, just got back from the gym",
    "did anyone watch the game last night? it was wild",
    "no, I was stuck debugging a segfault until 2am",
    "lol classic. did you fix it?",
    "yeah it was an off-by-one in the ring buffer",
    "anyone up for pizza on friday?",
    "count me in, but not pineapple this time",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ check this out",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,:;'\"()[]{}<>@#$%^&*-_=+/\\|~`",
]


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    *,
    vocab_size: int = 512,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_positions: int = 8192,
    seed: int = 0,
) -> Path:
    """Write a random Llama + trained tokenizer to `out_dir` and return it.

    Args:
        out_dir (`str | Path`): directory to create; loadable with `from_pretrained`.
        corpus (`Iterable[str]`, *optional*): text the BPE tokenizer is trained on.
        vocab_size (`int`, *optional*, defaults to 512): BPE vocabulary size, special tokens included.
        seed (`int`, *optional*, defaults to 0): weight init seed, so two builds are identical.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    # Weight init draws from torch's global RNG; fork it so building a model never changes the caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    return out_dir
