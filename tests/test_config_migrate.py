"""Old CloneUs configs: every old key mapped or reported, old files load directly, old `--set` keys resolve."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from cloneus.config import config_from_dict, load_config
from cloneus.config_migrate import NO_EQUIVALENT, RENAMES, migrate_item, migrate_tree
from cloneus.errors import ConfigError

# The old system's own config/train/train_config.yaml, unchanged.
OLD_CONFIG = Path(__file__).parent / "fixtures" / "old_train_config.yaml"


def old_tree() -> dict:
    return yaml.safe_load(OLD_CONFIG.read_text())


def dotted_old_keys(tree: dict) -> set[str]:
    keys = set()
    for key, value in tree.items():
        if key in ("dataset", "prompt") and isinstance(value, dict):
            keys |= {f"{key}.{sub}" for sub in value}
        else:
            keys.add(key)
    return keys


class TestMigrateTree:
    def test_every_old_key_is_mapped_or_reported(self):
        tree = old_tree()
        result = migrate_tree(tree)
        accounted = {old for old, _ in result.renamed} | {old for old, _, _ in result.dropped} | set(result.empty)
        passed_through = {"prompt.template", "prompt.append_msg", "prompt.name_mapping"}
        passed_through |= {"dataset.hours_between_sessions", "dataset.min_session_length", "dataset.eval_frac"}
        assert dotted_old_keys(tree) - accounted == passed_through

    def test_result_validates_with_the_old_values(self):
        cfg = config_from_dict(migrate_tree(old_tree()).tree)
        assert cfg.model.model_id == "NousResearch/Hermes-2-Theta-Llama-3-8B"
        assert (cfg.model.quant_method, cfg.model.flashattn_lib) == ("bnb4", "unsloth")
        assert (cfg.lora.r, cfg.lora.alpha) == (16, 32)
        assert cfg.lora.target_modules == ["gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj"]
        assert (cfg.training.chunk_size, cfg.training.batch_size, cfg.training.num_epochs) == (8192, 2, 3.0)
        assert (cfg.training.warmup, cfg.training.max_grad_norm, cfg.training.precision) == (0.03, 0.3, "bf16")
        assert cfg.training.gradient_checkpointing is True
        assert cfg.dataset.chatlog == "data/chat/YOUR_CHAT_FILE.csv"
        assert cfg.dataset.long_messages == "error"  # allow_truncation: false, as the old file says
        assert (cfg.dataset.eval_frac, cfg.dataset.hours_between_sessions) == (0.005, 4.0)
        assert cfg.format.custom_chat_template == "config/chat_templates/chatml-basic.jinja"
        assert cfg.prompt.template.startswith("Uncensored Discord server chat.\nTopic: offbeat.")

    def test_keys_without_equivalent_say_what_to_do(self):
        dropped = {old: advice for old, _, advice in migrate_tree(old_tree()).dropped}
        assert "adamw_torch" in dropped["optimizer"]
        assert "step count" in dropped["save_steps"] and "step count" in dropped["logging_steps"]
        assert set(dropped) <= set(NO_EQUIVALENT) | {"save_steps", "logging_steps", "quant_method"}

    @pytest.mark.parametrize(
        "flags, precision",
        [({"bf16": True, "fp16": False}, "bf16"), ({"bf16": False, "fp16": True}, "fp16"), ({"bf16": False}, "fp32")],
    )
    def test_bf16_and_fp16_become_one_precision(self, flags, precision):
        assert migrate_tree({"model_id": "x", **flags}).tree["training"]["precision"] == precision

    def test_the_new_spelling_wins_over_an_old_one(self):
        result = migrate_tree({"model": {"model_id": "new"}, "model_id": "old", "lora_r": 4})
        assert result.tree["model"]["model_id"] == "new" and result.tree["lora"]["r"] == 4

    def test_whole_step_counts_are_kept(self):
        assert migrate_tree({"model_id": "x", "save_steps": 500}).tree["training"]["save_steps"] == 500

    def test_unsupported_quant_method_is_reported(self):
        result = migrate_tree({"model_id": "x", "quant_method": "awq"})
        assert "quant_method" not in result.tree["model"]
        assert [old for old, _, _ in result.dropped] == ["quant_method"]

    def test_readme_style_flat_dataset_keys(self):
        tree = migrate_tree({"model_id": "x", "chatlog_csv": "c.csv", "hours_between_sessions": [1, 3]}).tree
        assert tree["dataset"] == {"chatlog": "c.csv", "hours_between_sessions": [1, 3]}

    def test_every_rename_target_exists_in_the_schema(self):
        tree: dict = {"model": {"model_id": "x"}}
        for old, new in RENAMES.items():
            section, leaf = new.split(".")
            value = migrate_item(old, None)[1]
            tree.setdefault(section, {})[leaf] = value if value is not None else config_default(section, leaf)
        config_from_dict(tree)


def config_default(section: str, leaf: str):
    cfg = config_from_dict({"model": {"model_id": "x"}})
    return getattr(getattr(cfg, section), leaf)


class TestLoadingOldFiles:
    def test_old_file_trains_config_with_one_warning_naming_the_command(self, tmp_path, caplog):
        path = tmp_path / "old.yaml"
        path.write_text(OLD_CONFIG.read_text())
        with caplog.at_level(logging.WARNING, logger="cloneus.config"):
            cfg = load_config(path)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert "cloneus config migrate" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()
        assert cfg.lora.r == 16 and cfg.training.chunk_size == 8192

    def test_allow_truncation_is_an_alias_with_a_rename_warning(self, caplog):
        with caplog.at_level(logging.WARNING, logger="cloneus.config"):
            cfg = config_from_dict({"model": {"model_id": "x"}, "dataset": {"allow_truncation": True}})
        assert cfg.dataset.long_messages == "truncate"
        assert "dataset.allow_truncation -> dataset.long_messages" in caplog.text

    def test_a_new_style_file_loads_without_warnings(self, tmp_path, caplog):
        path = tmp_path / "new.yaml"
        path.write_text("model:\n  model_id: x\ndataset:\n  long_messages: drop\n")
        with caplog.at_level(logging.WARNING):
            assert load_config(path).dataset.long_messages == "drop"
        assert caplog.records == []


class TestOldOverrides:
    @pytest.fixture
    def path(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("model:\n  model_id: x\n")
        return path

    def test_flat_keys_resolve_with_a_rename_note(self, path, caplog):
        with caplog.at_level(logging.WARNING, logger="cloneus.config"):
            cfg = load_config(path, ["model_id=other", "lora_r=4", "allow_truncation=false", "bf16=true"])
        assert (cfg.model.model_id, cfg.lora.r, cfg.dataset.long_messages) == ("other", 4, "error")
        assert cfg.training.precision == "bf16"
        notes = [r.getMessage() for r in caplog.records]
        assert "--set model_id: old key, renamed to model.model_id" in notes
        assert len(notes) == 4

    def test_typo_suggests_the_full_dotted_key(self, path):
        with pytest.raises(ConfigError, match=r"model_idd: unknown key \(did you mean 'model.model_id'\?\)"):
            load_config(path, ["model_idd=x"])

    def test_old_key_without_equivalent_is_refused_with_advice(self, path):
        with pytest.raises(ConfigError, match="optimizer.*adamw_torch"):
            load_config(path, ["optimizer=paged_adamw_32bit"])
