"""`cloneus config migrate`: writes the sectioned file atomically and reports keys with no equivalent."""

from __future__ import annotations

import logging
from pathlib import Path

from cloneus.cli import main
from cloneus.config import load_config

OLD_CONFIG = Path(__file__).parent / "fixtures" / "old_train_config.yaml"


class TestConfigMigrate:
    def test_writes_a_file_that_loads_like_the_old_one(self, tmp_path, capsys, caplog):
        out = tmp_path / "new" / "train_config.yaml"
        assert main(["config", "migrate", str(OLD_CONFIG), "-o", str(out)]) == 0
        err = capsys.readouterr().err
        assert "model_id -> model.model_id" in err and "lora_r -> lora.r" in err
        assert "optimizer: 'paged_adamw_32bit' (the Trainer's AdamW" in err
        assert f"wrote {out}" in err
        with caplog.at_level(logging.WARNING, logger="cloneus.config"):
            migrated = load_config(out)
        assert caplog.records == []  # the new file is entirely new-style
        assert migrated == load_config(OLD_CONFIG)
        text = out.read_text()
        assert text.index("model:") < text.index("lora:") < text.index("training:") < text.index("prompt:")
        assert "  template: |-\n    Uncensored Discord server chat.\n" in text
        assert "#   optimizer: 'paged_adamw_32bit'" in text
        assert [p.name for p in out.parent.iterdir()] == ["train_config.yaml"]

    def test_without_output_prints_the_yaml(self, capsys):
        assert main(["config", "migrate", str(OLD_CONFIG)]) == 0
        captured = capsys.readouterr()
        assert "model:\n  model_id: NousResearch/Hermes-2-Theta-Llama-3-8B\n" in captured.out
        assert "->" not in captured.out and "model_id -> model.model_id" in captured.err

    def test_an_invalid_result_writes_nothing(self, tmp_path, capsys):
        old = tmp_path / "old.yaml"
        old.write_text("model_id: x\nlora_r: -3\n")
        out = tmp_path / "new.yaml"
        assert main(["config", "migrate", str(old), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "lora.r" in err and f"fix the old file ({old})" in err
        assert not out.exists()
