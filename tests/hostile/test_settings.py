"""Settings that validate but cannot work: each is refused when the config is loaded, naming the key.

Every case is a config a user could write (or a `--set` they could type). The outcome is a `ConfigError` whose
message names the file and the dotted key (or the line, for YAML problems) and says what was expected; nothing may
escape as another exception, and loading a config never writes a file.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from cloneus.cli import main
from cloneus.config import load_config
from cloneus.data.users import UserIndex
from cloneus.errors import CloneusError, ConfigError
from tests.training.conftest import AUTHORS, tiny_config, write_chat

BASE = {"model": {"model_id": "some/model"}}

# (case id, overrides of the form key.sub=value, text every message must contain)
BAD_VALUES = [
    ("hours-empty-list", "dataset.hours_between_sessions=[]", "dataset.hours_between_sessions: the list is empty"),
    ("hours-zero", "dataset.hours_between_sessions=0", "dataset.hours_between_sessions: hours of silence"),
    ("hours-negative", "dataset.hours_between_sessions=-4", "dataset.hours_between_sessions: hours of silence"),
    ("hours-nan", "dataset.hours_between_sessions=.nan", "dataset.hours_between_sessions: hours of silence"),
    ("hours-inf", "dataset.hours_between_sessions=.inf", "dataset.hours_between_sessions: hours of silence"),
    ("hours-list-with-zero", "dataset.hours_between_sessions=[4, 0]", "dataset.hours_between_sessions: hours of"),
    ("hours-null", "dataset.hours_between_sessions=", "dataset.hours_between_sessions: Input should be"),
    ("hours-bool", "dataset.hours_between_sessions=true", "dataset.hours_between_sessions: Input should be a valid"),
    ("hours-list-of-bool", "dataset.hours_between_sessions=[true]", "dataset.hours_between_sessions"),
    ("author-tag-empty", "format.author_tag=''", "format.author_tag is empty"),
    ("author-tag-blank", "format.author_tag='  '", "format.author_tag is empty"),
    ("author-tag-chatml", "format.author_tag='<|im_end|>{author}'", "control token '<|im_end|>'"),
    ("author-tag-llama3", "format.author_tag='{author}<|eot_id|>'", "control token '<|eot_id|>'"),
    ("author-tag-inst", "format.author_tag='[INST] {author}'", "control token '[INST]'"),
    ("author-tag-eos", "format.author_tag='</s>{author}'", "control token '</s>'"),
    ("author-tag-gemma", "format.author_tag='<start_of_turn>{author}'", "control token '<start_of_turn>'"),
    ("prefix-empty", "dataset.cleaning.command_prefixes=['!', '']", "dataset.cleaning.command_prefixes: an empty"),
    ("prefix-blank", "dataset.cleaning.command_prefixes=[' ']", "dataset.cleaning.command_prefixes: an empty"),
    ("warmup-past-max-steps", "training.warmup=50", "training.warmup is 50 steps, longer than the run"),
    ("batch-size-bool", "training.batch_size=true", "training.batch_size: Input should be a valid integer"),
    ("max-steps-bool", "training.max_steps=false", "training.max_steps: Input should be a valid integer"),
    ("chunk-size-bool", "training.chunk_size=true", "training.chunk_size: Input should be a valid integer"),
    ("lr-bool", "training.learning_rate=true", "training.learning_rate: Input should be a valid number"),
    ("lora-r-bool", "lora.r=true", "lora.r: Input should be a valid integer"),
    ("min-share-bool", "dataset.min_share=true", "dataset.min_share: Input should be a valid number"),
    ("merge-window-bool", "dataset.merge_window_minutes=true", "dataset.merge_window_minutes: Input should be a"),
    ("timeout-bool", "inference.request_timeout_s=true", "inference.request_timeout_s: Input should be a valid"),
    ("quota-bool", "youtube.daily_quota=true", "youtube.daily_quota: Input should be a valid integer"),
    ("batch-size-string", "training.batch_size='4'", "training.batch_size: Input should be a valid integer"),
]


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def config_file(tmp_path) -> Path:
    return write_config(tmp_path / "cfg.yaml", {**BASE, "training": {"max_steps": 10}})


class TestBadValues:
    @pytest.mark.parametrize(("override", "expected"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
    def test_is_refused_naming_the_key(self, config_file, override, expected, tmp_path):
        before = files_under(tmp_path)
        with pytest.raises(ConfigError) as e:
            load_config(config_file, [override])
        assert str(e.value).startswith(f"{config_file}: ")
        assert expected in str(e.value)
        assert "\n" not in str(e.value)
        assert files_under(tmp_path) == before

    def test_the_same_values_in_the_file_are_refused_alike(self, tmp_path):
        path = write_config(tmp_path / "c.yaml", {**BASE, "training": {"batch_size": True}})
        with pytest.raises(ConfigError, match=r"c.yaml: training.batch_size: Input should be a valid integer"):
            load_config(path)

    def test_valid_neighbours_still_load(self, config_file):
        cfg = load_config(
            config_file,
            ["dataset.hours_between_sessions=[0.5, 4]", "training.warmup=10", "training.learning_rate=1"]
            + ["format.author_tag='[{author}]'", "dataset.cleaning.command_prefixes=['!']", "lora.alpha=16"],
        )
        assert cfg.dataset.hours_between_sessions == [0.5, 4.0] and cfg.training.learning_rate == 1.0
        assert cfg.format.author_tag == "[{author}]" and cfg.training.warmup == 10


class TestPathsOfTheWrongKind:
    def test_users_json_that_is_a_directory(self, config_file, tmp_path):
        (tmp_path / "users").mkdir()
        with pytest.raises(ConfigError, match=r"dataset.users_json: '.*users' is a directory; expected a file"):
            load_config(config_file, [f"dataset.users_json={tmp_path / 'users'}"])

    def test_cache_dir_that_is_a_file(self, config_file, tmp_path):
        (tmp_path / "cache").write_text("x")
        with pytest.raises(ConfigError, match=r"dataset.cache_dir: '.*cache' is a file; expected a directory"):
            load_config(config_file, [f"dataset.cache_dir={tmp_path / 'cache'}"])

    def test_output_root_that_is_a_file(self, config_file, tmp_path):
        (tmp_path / "runs").write_text("x")
        with pytest.raises(ConfigError, match=r"training.output_root: '.*runs' is a file; expected a directory"):
            load_config(config_file, [f"training.output_root={tmp_path / 'runs'}"])

    def test_output_root_below_a_file(self, config_file, tmp_path):
        (tmp_path / "runs").write_text("x")
        with pytest.raises(ConfigError, match=r"training.output_root: '.*runs/a' cannot be created: .* is a file"):
            load_config(config_file, [f"training.output_root={tmp_path / 'runs' / 'a'}"])

    def test_missing_paths_are_fine(self, config_file, tmp_path):
        cfg = load_config(config_file, [f"training.output_root={tmp_path / 'new' / 'runs'}"])
        assert not (tmp_path / "new").exists() and cfg.training.output_root.endswith("runs")


UNREADABLE = [
    (
        "duplicate-key",
        "model:\n  model_id: a\ntraining:\n  max_steps: 3\n  max_steps: 4\n",
        "at line 5: duplicate key",
    ),
    ("duplicate-section", "model:\n  model_id: a\nmodel:\n  model_id: b\n", "at line 3: duplicate key 'model'"),
    ("latin-1", "model:\n  model_id: caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    ("utf-16", "model:\n  model_id: a\n".encode("utf-16"), "not UTF-8 text (byte 0xff"),
    ("bad-indent", "model:\n  model_id: a\n   x: [\n", "not valid YAML at line"),
    ("tab-indent", "model:\n\tmodel_id: a\n", "not valid YAML at line 2"),
    ("a-list", "- model\n- training\n", "expected a mapping of sections at the top level, got list"),
]


class TestUnreadableConfigFiles:
    @pytest.mark.parametrize(("content", "expected"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
    def test_gets_one_clear_error(self, tmp_path, content, expected):
        path = tmp_path / "cfg.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert str(e.value).startswith(f"{path}: ") and expected in str(e.value)

    def test_a_directory(self, tmp_path):
        with pytest.raises(ConfigError, match=r"is a directory; expected a config file"):
            load_config(tmp_path)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
    def test_a_file_without_read_permission(self, tmp_path):
        path = write_config(tmp_path / "cfg.yaml", BASE)
        path.chmod(0)
        with pytest.raises(ConfigError, match="cannot be read"):
            load_config(path)

    @pytest.mark.parametrize("override", ["training.max_steps=[1", "format.author_tag={author", "prompt.template='a"])
    def test_a_set_value_that_is_not_yaml(self, config_file, override):
        with pytest.raises(ConfigError, match=r"--set .*: the value is not valid YAML .*quote it"):
            load_config(config_file, [override])

    def test_the_cli_prints_one_line_and_no_traceback(self, tmp_path, capsys):
        path = tmp_path / "cfg.yaml"
        path.write_bytes(b"model:\n  model_id: a\nmodel:\n  model_id: b\n")
        before = files_under(tmp_path)
        assert main(["train", "-c", str(path), "--set", "training.max_steps=2"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{path}: not valid YAML at line 3: duplicate key 'model'" in err and "Traceback" not in err
        assert len(err.splitlines()) == 1
        assert files_under(tmp_path) == before


CORRUPT_USERS = [
    ("bad-bytes", b'{"users": [{"id": "1", "username": "al\xff"}]}', "not UTF-8 (byte 0xff"),
    ("utf-16", '{"users": []}'.encode("utf-16"), "is UTF-16"),
    ("truncated", b'{"users": [{"id": "1", "username"', "invalid JSON at line 1"),
    ("empty", b"", "invalid JSON at line 1"),
]


class TestCorruptUserIndex:
    @pytest.mark.parametrize(
        ("content", "expected"), [c[1:] for c in CORRUPT_USERS], ids=[c[0] for c in CORRUPT_USERS]
    )
    def test_is_named_with_the_fix(self, tmp_path, content, expected):
        path = tmp_path / "users.json"
        path.write_bytes(content)
        with pytest.raises(CloneusError) as e:
            UserIndex.load(path)
        assert str(e.value).startswith(f"{path}: ") and expected in str(e.value)
        assert path.read_bytes() == content

    def test_a_directory(self, tmp_path):
        with pytest.raises(ConfigError, match=r"is a directory, expected the user index file.*dataset.users_json"):
            UserIndex.load(tmp_path)


class TestSettingsCheckedAgainstTheModel:
    """What the schema cannot know: the model's context, its tokenizer, its modules, what is installed."""

    @pytest.fixture(scope="class")
    def chat(self, tmp_path_factory) -> Path:
        return write_chat(tmp_path_factory.mktemp("chat") / "chat.csv")

    def test_chunk_size_above_the_context_is_refused_before_preparing(self, tiny_model_dir, chat, tmp_path):
        from cloneus.data.dataset import prepare_dataset
        from cloneus.models.loading import load_tokenizer

        cfg = tiny_config(tiny_model_dir, tmp_path, chunk_size=8193)
        with pytest.raises(
            ConfigError, match=r"training.chunk_size: 8193 tokens is above the context .*8192 positions"
        ):
            prepare_dataset(cfg, load_tokenizer(cfg.model), chat)
        assert not (tmp_path / "cache").exists()

    def test_chunk_size_at_the_context_is_fine(self, tiny_model_dir, tmp_path):
        from cloneus.data.preflight import check_model_fit
        from cloneus.models.loading import load_tokenizer

        cfg = tiny_config(tiny_model_dir, tmp_path, chunk_size=8192)
        check_model_fit(cfg, load_tokenizer(cfg.model))

    def test_author_tag_with_a_special_token_of_this_tokenizer(self, tiny_model_dir, tmp_path):
        from cloneus.data.preflight import check_model_fit
        from cloneus.models.loading import load_tokenizer

        cfg = tiny_config(tiny_model_dir, tmp_path)
        tokenizer = load_tokenizer(cfg.model)
        tokenizer.add_special_tokens({"additional_special_tokens": ["[SPEAKER]"]})
        cfg.format.author_tag = "[SPEAKER]{author}"
        with pytest.raises(ConfigError, match=r"format.author_tag .* contains '\[SPEAKER\]', a special token"):
            check_model_fit(cfg, tokenizer)

    def test_a_user_index_that_trains_nobody(self, tiny_model_dir, chat, tmp_path):
        from cloneus.data.users import User
        from cloneus.training.trainer import train

        cfg = tiny_config(tiny_model_dir, tmp_path)
        users = [User(id=n, username=n, display_name=n, message_count=40, share=0.33, excluded=True) for n in AUTHORS]
        UserIndex(users=users).save(cfg.dataset.users_json)
        with pytest.raises(ConfigError, match=r"users.json: no user is trained \(3 users; 3 excluded.*min_share"):
            train(cfg, chatlog=chat, run_name="nobody")
        assert not list((tmp_path / "runs").rglob("config.yaml"))

    def test_warmup_longer_than_an_epoch_based_run(self, tiny_model_dir, chat, tmp_path):
        from cloneus.training.trainer import train

        cfg = tiny_config(tiny_model_dir, tmp_path, max_steps=None, num_epochs=1.0, warmup=10_000)
        with pytest.raises(ConfigError, match=r"training.warmup is 10000 steps, longer than the run \(\d+ steps"):
            train(cfg, chatlog=chat, run_name="warm")
        assert not list((tmp_path / "runs").rglob("checkpoint-*"))

    @pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
    def test_report_to_wandb_without_wandb(self, tiny_model_dir, chat, tmp_path):
        from cloneus.training.trainer import train

        cfg = tiny_config(tiny_model_dir, tmp_path, report_to=["wandb"])
        with pytest.raises(ConfigError, match=r"training.report_to: 'wandb' is not installed; `pip install wandb`"):
            train(cfg, chatlog=chat, run_name="wandb")
        assert not list((tmp_path / "runs").rglob("config.yaml"))

    @pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
    def test_flash_attention_without_the_package(self, tiny_model_dir):
        from cloneus.config import ModelConfig
        from cloneus.models.loading import load_model

        model_cfg = ModelConfig(model_id=str(tiny_model_dir), attn_implementation="flash_attention_2")
        with pytest.raises(ConfigError, match=r"model.attn_implementation: 'flash_attention_2' needs the flash-attn"):
            load_model(model_cfg, device="cpu")

    @pytest.mark.parametrize("targets", [["query_key_value"], ["q_proj", "c_attn"], ["self_attn.qkv"]])
    def test_lora_targets_the_model_lacks_are_named_with_the_ones_it_has(self, tiny_model_dir, targets):
        from cloneus.config import LoraConfig, ModelConfig
        from cloneus.models.loading import load_model
        from cloneus.models.lora import attach_lora

        model, _ = load_model(ModelConfig(model_id=str(tiny_model_dir)), device="cpu")
        with pytest.raises(ConfigError) as e:
            attach_lora(model, LoraConfig(target_modules=targets))
        message = str(e.value)
        assert message.startswith(f"lora.target_modules: {targets[-1]} not found in LlamaForCausalLM")
        assert "its linear modules are" in message and "q_proj" in message and "down_proj" in message

    def test_lora_targets_by_suffix_still_work(self, tiny_model_dir):
        from cloneus.config import LoraConfig, ModelConfig
        from cloneus.models.loading import load_model
        from cloneus.models.lora import attach_lora

        model, _ = load_model(ModelConfig(model_id=str(tiny_model_dir)), device="cpu")
        peft_model = attach_lora(model, LoraConfig(r=2, target_modules=["self_attn.q_proj", "v_proj"]))
        assert peft_model.get_nb_trainable_parameters()[0] > 0
