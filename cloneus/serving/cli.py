"""Commands of this package for `python -m cloneus`: `serve` and `export`.

Nothing heavy is imported here; vLLM runs in its own process, torch loads when `export` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cloneus.errors import CloneusError
from cloneus.io import write_line

SERVE_VENV_PYTHON = Path(".venv-serve/bin/python")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this package's subcommands; each sets `func(args) -> int`."""
    p = sub.add_parser(
        "serve",
        help="start vLLM with every config/models.json checkpoint as a LoRA module",
        description="One base model, each registered checkpoint served under its name, our sampler plugin "
        "loaded. Flags after `--` go to vLLM, e.g. `-- --tensor-parallel-size 2`.",
    )
    p.add_argument("--models", default="config/models.json", help="the registry (default: config/models.json)")
    p.add_argument(
        "--python",
        default=None,
        help=f"the Python that has vLLM (default: {SERVE_VENV_PYTHON} when present, else this one)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="auto", help="auto, float16, bfloat16, float32 (CPU: float32)")
    p.add_argument("--max-model-len", type=int, default=2048, help="context length the server allocates for")
    p.add_argument("--kv-cache-gib", type=int, default=None, help="CPU only: VLLM_CPU_KVCACHE_SPACE in GiB")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the server to be healthy")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: extra vLLM flags")
    p.set_defaults(func=serve_command)

    p = sub.add_parser(
        "export",
        help="merge a checkpoint's LoRA into its base: safetensors (--merged) or GGUF (--gguf)",
        description="Writes the base model with the adapter merged in, loadable without peft. GGUF is for "
        "llama.cpp and Ollama (Llama-family architectures).",
    )
    p.add_argument("checkpoint", help="a checkpoint-<step> directory, or a run directory (its latest checkpoint)")
    p.add_argument("--merged", type=Path, metavar="DIR", help="write safetensors and the tokenizer to DIR")
    p.add_argument("--gguf", type=Path, metavar="FILE", help="write a float32 GGUF file")
    p.set_defaults(func=export_command)


def serve_command(args: argparse.Namespace) -> int:
    from cloneus.serving import serve

    python = args.python or (str(SERVE_VENV_PYTHON) if SERVE_VENV_PYTHON.is_file() else sys.executable)
    extra = [a for a in args.vllm_args if a != "--"]
    served = serve.plan(serve.read_models_json(args.models))
    process = serve.start(
        served,
        python=python,
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        extra=extra,
    )
    try:
        seconds = serve.wait_healthy(f"http://{args.host}:{args.port}", process, args.timeout)
        write_line(f"vLLM is ready after {seconds:.0f} s, serving {', '.join(served.modules)} on {served.base.name}")
        write_line("Put these settings in your config (or pass them with --set):\n")
        write_line(serve.inference_settings(args.host, args.port))
        return process.wait()
    except (CloneusError, KeyboardInterrupt):
        process.terminate()
        process.wait()
        raise


def export_command(args: argparse.Namespace) -> int:
    from cloneus.serving import export

    if not args.merged and not args.gguf:
        raise CloneusError("cloneus export: give --merged DIR, --gguf FILE, or both")
    if args.merged:
        write_line(f"merged model written to {export.export_merged(args.checkpoint, args.merged)}")
    if args.gguf:
        write_line(f"GGUF written to {export.export_gguf(args.checkpoint, args.gguf)}")
    return 0
