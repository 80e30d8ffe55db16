"""Serving at scale: `cloneus serve` (vLLM with every registered checkpoint as a LoRA module), `cloneus export`
(merged safetensors, GGUF) and the vLLM logits-processor plugin that runs our samplers inside the server."""
