from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from cloneus.config import CloneusConfig, apply_overrides, config_from_dict, load_config
from cloneus.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


class TestShippedConfig:
    def test_documented_defaults_match_the_schema(self):
        """config/train_config.yaml lists every option with its default; the schema must agree with it."""
        cfg = load_config(REPO / "config/train_config.yaml")
        defaults = CloneusConfig(model={"model_id": cfg.model.model_id})
        assert cfg.model_dump() == defaults.model_dump()

    def test_every_option_is_listed(self):
        """A field added to the schema but not to the YAML would be undocumented."""
        raw = yaml.safe_load((REPO / "config/train_config.yaml").read_text())

        def missing(model: type[BaseModel], tree: dict, prefix: str) -> list[str]:
            out = []
            for name, field in model.model_fields.items():
                if name not in tree:
                    out.append(prefix + name)
                elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                    out += missing(field.annotation, tree[name], f"{prefix}{name}.")
            return out

        assert missing(CloneusConfig, raw, "") == []


class TestValidation:
    def test_unknown_key_names_the_key_and_suggests(self):
        with pytest.raises(ConfigError) as e:
            config_from_dict({"model": {"model_id": "x"}, "training": {"learnig_rate": 1e-4}}, "cfg.yaml")
        assert "cfg.yaml: training.learnig_rate: unknown key (did you mean 'training.learning_rate'?)" in str(e.value)

    def test_key_in_the_wrong_section_suggests_its_full_key(self):
        with pytest.raises(ConfigError, match=r"training.model_id: unknown key \(did you mean 'model.model_id'\?\)"):
            config_from_dict({"model": {"model_id": "x"}, "training": {"model_id": "y"}})

    def test_unknown_section_suggests(self):
        with pytest.raises(ConfigError, match="'lora'"):
            config_from_dict({"model": {"model_id": "x"}, "lorra": {}})

    def test_bad_value_names_the_key_and_value(self):
        with pytest.raises(ConfigError, match=r"training.batch_size: .*got 0"):
            config_from_dict({"model": {"model_id": "x"}, "training": {"batch_size": 0}})

    def test_model_id_is_required(self):
        with pytest.raises(ConfigError, match="model"):
            config_from_dict({})

    def test_author_tag_rejects_unknown_fields(self):
        with pytest.raises(ConfigError, match=r"\{nick\}|nick"):
            config_from_dict({"model": {"model_id": "x"}, "format": {"author_tag": "{nick}"}})


class TestOverrides:
    def test_values_are_parsed_as_yaml(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("model:\n  model_id: x\n")
        cfg = load_config(path, ["training.max_steps=10", "dataset.hours_between_sessions=[1, 3]", "lora.r=8"])
        assert cfg.training.max_steps == 10
        assert cfg.dataset.hours_between_sessions == [1.0, 3.0]
        assert cfg.lora.r == 8

    def test_override_is_validated_like_the_file(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("model:\n  model_id: x\n")
        with pytest.raises(ConfigError, match="training.max_stepz"):
            load_config(path, ["training.max_stepz=3"])

    def test_malformed_override(self):
        with pytest.raises(ConfigError, match="key.sub=value"):
            apply_overrides({}, ["nonsense"])


class TestFiles:
    def test_missing_file(self, tmp_path):
        with pytest.raises(ConfigError, match="not found"):
            load_config(tmp_path / "nope.yaml")

    def test_invalid_yaml_names_the_file(self, tmp_path):
        path = tmp_path / "bad.yaml"
        path.write_text("model: [unclosed\n")
        with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
            load_config(path)

    def test_round_trip_through_yaml(self, tmp_path):
        cfg = CloneusConfig(model={"model_id": "builtin:smollm2-135m"}, training={"max_steps": 3})
        path = tmp_path / "resolved.yaml"
        path.write_text(cfg.to_yaml())
        assert load_config(path) == cfg
