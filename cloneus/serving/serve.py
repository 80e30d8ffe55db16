"""`cloneus serve`: one vLLM server for every registered checkpoint, each as a LoRA module under its name.

vLLM holds one base model and applies any number of LoRA adapters per request (multi-LoRA), so every clone of a
group, and several groups' clones, share one GPU. This module reads `config/models.json`, checks that all
checkpoints were trained on the same base, builds the `vllm.entrypoints.openai.api_server` command (our sampler
plugin loaded, runtime LoRA loading on, bound to 127.0.0.1 unless told otherwise), starts it, waits until
`/health` answers, and prints the `inference:` settings a bot or `cloneus chat` needs to use it.

The server runs in its own Python (`--python`, e.g. `.venv-serve/bin/python`): vLLM pins its own torch and
transformers versions. `cloneus` must be importable there for the plugin, so the repository goes on its
`PYTHONPATH`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cloneus.errors import CloneusError

logger = logging.getLogger(__name__)

PLUGIN = "cloneus.serving.vllm_plugin:CloneusSamplers"
REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_POLL_S = 2.0


@dataclass(frozen=True)
class ServePlan:
    """What one server serves.

    Args:
        base (`Path`): the base model directory (transformers layout) the checkpoints were trained on.
        modules (`dict[str, Path]`): served LoRA name → checkpoint directory.
        max_lora_rank (`int`): the largest adapter rank among them (vLLM allocates for it).
    """

    base: Path
    modules: dict[str, Path]
    max_lora_rank: int


def read_models_json(path: str | Path) -> dict[str, Path]:
    """Registered name → checkpoint path from a `models.json` (`models` list, or the older `BEST` list).

    Raises:
        CloneusError: missing file, bad JSON, or an entry without `name` and `ckpt` (naming the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise CloneusError(f"{path}: models file not found; /admin train or `cloneus train` registers checkpoints")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CloneusError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    key = "models" if isinstance(raw, dict) and "models" in raw else "BEST"
    items = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise CloneusError(f"{path}: expected a non-empty 'models' list of {{name, desc, ckpt}} objects")
    modules: dict[str, Path] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("name") or not item.get("ckpt"):
            raise CloneusError(f"{path}: {key}[{i}] needs a 'name' and a 'ckpt'")
        modules[item["name"]] = Path(item["ckpt"]).expanduser()
    return modules


def plan(modules: dict[str, Path]) -> ServePlan:
    """Check the checkpoints share one base model and resolve it.

    Raises:
        CloneusError: a checkpoint does not load, or two were trained on different bases (both named).
    """
    from cloneus.inference.checkpoint import read_checkpoint
    from cloneus.models.loading import resolve_model

    resolved = {name: read_checkpoint(path) for name, path in modules.items()}
    bases = {name: info.config.model.model_id for name, info in resolved.items()}
    first = next(iter(bases))
    for name, base in bases.items():
        if base != bases[first]:
            raise CloneusError(
                f"{name!r} was trained on {base!r} but {first!r} on {bases[first]!r}; one vLLM server serves one "
                "base model, so start one server per base"
            )
    ranks = [max(_adapter_ranks(info.path)) for info in resolved.values()]
    return ServePlan(
        base=resolve_model(bases[first]).path,
        modules={name: info.path.resolve() for name, info in resolved.items()},
        max_lora_rank=max(ranks),
    )


def _adapter_ranks(checkpoint: Path) -> list[int]:
    """The adapter's rank `r` and any per-module ranks (`rank_pattern`), from its adapter_config.json."""
    config = json.loads((checkpoint / "adapter_config.json").read_text(encoding="utf-8"))
    return [int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())]


def vllm_command(
    plan: ServePlan, *, python: str, host: str, port: int, dtype: str, max_model_len: int, extra: list[str]
) -> list[str]:
    """The server command line: base, LoRA modules, our sampler plugin, then any extra vLLM flags."""
    rank = next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= plan.max_lora_rank)
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        host,
        "--port",
        str(port),
        "--model",
        str(plan.base),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--enable-lora",
        "--max-lora-rank",
        str(rank),
        "--max-loras",
        str(max(len(plan.modules), 1)),
        "--enable-prefix-caching",
        "--logits-processors",
        PLUGIN,
        "--lora-modules",
        *[f"{name}={path}" for name, path in plan.modules.items()],
        *extra,
    ]


def server_env(kv_cache_gib: int | None = None) -> dict[str, str]:
    """The environment for the server: runtime LoRA loading on, `cloneus` importable, offline hub, and vLLM's
    usage statistics (a report sent over the network at start-up) off."""
    env = dict(os.environ)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["DO_NOT_TRACK"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    return env


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> float:
    """Poll `url/health` until it answers 200; returns the seconds it took.

    Raises:
        CloneusError: the process exited first (with its exit code), or `timeout_s` passed.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            raise CloneusError(f"the vLLM server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=HEALTH_POLL_S) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(HEALTH_POLL_S)
    raise CloneusError(f"the vLLM server at {url} was not healthy after {timeout_s:.0f} s")


def start(
    plan: ServePlan,
    *,
    python: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str = "auto",
    max_model_len: int = 2048,
    kv_cache_gib: int | None = None,
    extra: list[str] = (),
    log_file: Path | None = None,
) -> subprocess.Popen:
    """Start the server in its own process group (so it and its engine workers stop together)."""
    command = vllm_command(
        plan, python=python, host=host, port=port, dtype=dtype, max_model_len=max_model_len, extra=list(extra)
    )
    logger.info("starting: %s", " ".join(command))
    output = log_file.open("ab") if log_file is not None else None
    return subprocess.Popen(
        command, env=server_env(kv_cache_gib), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )


def inference_settings(host: str, port: int) -> str:
    """The `inference:` YAML block that points a bot or `cloneus chat` at this server.

    `openai_model` stays empty: the backend looks up the LoRA module serving each checkpoint it loads, so
    `/model switch` changes the served name and a new checkpoint is loaded into the server at run time.
    """
    return (
        "inference:\n"
        "  backend: openai\n"
        f"  openai_base_url: http://{host}:{port}/v1\n"
        "  openai_model: null\n"
        "  server_kind: vllm\n"
        "  vllm_sampler_plugin: true\n"
    )
