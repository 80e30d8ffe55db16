"""Serving clones: `Cloneus` (cloneus.py), next-speaker choice (speaker.py), stop strings (stopping.py), the
prefix KV cache (prefix_cache.py), checkpoint reading (checkpoint.py), the terminal chat (chat.py, cli.py),
samplers (sampling/) and backends (backends/: local transformers, OpenAI-compatible HTTP).

Importing this package loads neither torch nor transformers.
"""
