"""How well each member's voice is learned: `python -m cloneus eval CHECKPOINT`.

- `heldout`: the held-out conversations, the turns and the reply moments every figure is computed on;
- `perplexity`: held-out perplexity per member, finetuned and base (adapter disabled);
- `speaker`: next-speaker top-1/top-3 per member against the most-frequent-author guess;
- `style`: an author classifier (char n-gram TF-IDF + logistic regression) that judges real, clone and base text;
- `surface`: length, emoji, links, questions, capitals, distinct-2 and verbatim copying;
- `suite`: runs them all on a checkpoint and writes eval.json, eval.png and eval.html (`report`, `chart`, `html`).
"""
