"""`cloneus serve`'s planning: the registry read, the shared-base check, the vLLM command and printed settings.

Starting the server itself is covered by tests/serve (`make test-serve`), whose fixture goes through
`serve.start` and `serve.wait_healthy` against real vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from cloneus.config import InferenceConfig
from cloneus.errors import CloneusError
from cloneus.serving import serve
from tests.inference.conftest import build_checkpoint


@pytest.fixture(scope="module")
def two_checkpoints(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-plan")
    return {
        "first": build_checkpoint(tiny_model_dir, root / "a" / "checkpoint-1", seed=1, r=4),
        "second": build_checkpoint(tiny_model_dir, root / "b" / "checkpoint-1", seed=2, r=12),
    }


class TestReadModelsJson:
    def test_both_layouts(self, tmp_path):
        new = tmp_path / "models.json"
        new.write_text(json.dumps({"default": "a", "models": [{"name": "a", "desc": "", "ckpt": "runs/a"}]}))
        old = tmp_path / "old.json"
        old.write_text(json.dumps({"BEST": [{"name": "b", "desc": "", "ckpt": "runs/b"}]}))
        assert {k: str(v) for k, v in serve.read_models_json(new).items()} == {"a": "runs/a"}
        assert {k: str(v) for k, v in serve.read_models_json(old).items()} == {"b": "runs/b"}

    def test_errors_name_the_file_and_entry(self, tmp_path):
        path = tmp_path / "models.json"
        with pytest.raises(CloneusError, match="not found"):
            serve.read_models_json(path)
        path.write_text('{"models": [{"name": "a", "ckpt": "x"}, {"name": "b"}]}')
        with pytest.raises(CloneusError, match=r"models\.json: models\[1\] needs a 'name' and a 'ckpt'"):
            serve.read_models_json(path)
        path.write_text('{"models": [\n')
        with pytest.raises(CloneusError, match="line 2: not valid JSON"):
            serve.read_models_json(path)


class TestPlan:
    def test_one_base_every_checkpoint_and_the_largest_rank(self, two_checkpoints, tiny_model_dir):
        plan = serve.plan(two_checkpoints)
        assert plan.base == tiny_model_dir
        assert plan.modules == {k: v.resolve() for k, v in two_checkpoints.items()}
        assert plan.max_lora_rank == 12
        command = serve.vllm_command(
            plan, python="py", host="127.0.0.1", port=9, dtype="float32", max_model_len=512, extra=["--seed", "1"]
        )
        assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
        assert command[command.index("--host") + 1] == "127.0.0.1"
        assert command[command.index("--max-lora-rank") + 1] == "16"  # the next size vLLM accepts
        assert command[command.index("--logits-processors") + 1] == serve.PLUGIN
        assert f"first={two_checkpoints['first'].resolve()}" in command
        assert command[-2:] == ["--seed", "1"]

    def test_different_bases_are_refused(self, two_checkpoints, tiny_model_dir, tmp_path):
        other = build_checkpoint(
            tiny_model_dir, tmp_path / "checkpoint-1", seed=3, overrides=["model.model_id=builtin:smollm2-135m"]
        )
        with pytest.raises(CloneusError, match=r"'other' was trained on 'builtin:smollm2-135m' but 'first'"):
            serve.plan({**two_checkpoints, "other": other})

    def test_printed_settings_are_a_valid_inference_section(self):
        section = yaml.safe_load(serve.inference_settings("127.0.0.1", 8000))["inference"]
        cfg = InferenceConfig(**section)
        assert (cfg.backend, cfg.openai_base_url, cfg.openai_model) == ("openai", "http://127.0.0.1:8000/v1", None)
        assert cfg.vllm_sampler_plugin and cfg.server_kind == "vllm"


class TestServerProcess:
    def test_environment_turns_on_runtime_loading_and_keeps_vllm_offline(self):
        env = serve.server_env(kv_cache_gib=1)
        assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
        assert env["VLLM_NO_USAGE_STATS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(serve.REPO_ROOT)

    def test_a_server_that_exits_before_it_is_healthy_is_reported_with_its_code(self):
        process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        with pytest.raises(CloneusError, match="exited with code 3 before it was ready"):
            serve.wait_healthy("http://127.0.0.1:9", process, timeout_s=60)
