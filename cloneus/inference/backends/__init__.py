"""Where generation runs: `local` (transformers in this process) or `openai` (an OpenAI-compatible server).

Both take a fully formatted prompt and return reply text cut at the stop strings, and score continuations for
next-speaker prediction; `Cloneus` picks one from `inference.backend`.
"""
