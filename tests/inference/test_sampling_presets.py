"""Presets: the shipped file, the user copy taking over, and errors naming the file, preset and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloneus.errors import ConfigError
from cloneus.inference.sampling import SamplingOptions, load_preset_file, load_presets
from cloneus.inference.sampling.presets import PACKAGED_PRESETS_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"cs", "ms", "gd", "mp", "miro", "dyna", "xtc"}


class TestShippedPresets:
    def test_has_the_seed_presets_each_with_a_one_line_description(self):
        presets = load_preset_file(PACKAGED_PRESETS_PATH)
        assert REQUIRED <= set(presets)
        for preset in presets.values():
            assert preset.description and "\n" not in preset.description

    def test_presets_turn_on_what_their_name_says(self):
        presets = load_presets(PACKAGED_PRESETS_PATH)
        assert presets["gd"].do_sample is False
        assert presets["miro"].mirostat_mode == 2
        assert presets["dyna"].dynamic_temperature is True
        assert presets["xtc"].xtc_probability > 0
        assert presets["ms"].min_p > 0 and presets["ms"].top_k == 0
        assert presets["mp"].repetition_penalty > 1

    def test_config_copy_matches_the_packaged_file(self):
        assert (REPO_ROOT / "config/sampling_presets.yaml").read_text() == PACKAGED_PRESETS_PATH.read_text()


class TestLoadPresets:
    def test_user_copy_in_working_directory_is_read_instead(self, tmp_path, monkeypatch):
        (tmp_path / "config").mkdir()
        (tmp_path / "config/sampling_presets.yaml").write_text("mine:\n  description: Mine.\n  top_k: 3\n")
        monkeypatch.chdir(tmp_path)
        presets = load_presets()
        assert list(presets) == ["mine"]
        assert presets["mine"] == SamplingOptions(top_k=3)

    def test_packaged_file_is_the_fallback(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert REQUIRED <= set(load_presets())

    def test_unset_fields_are_the_defaults(self, tmp_path):
        path = tmp_path / "p.yaml"
        path.write_text("a:\n  description: A.\n  temperature: 0.3\n")
        preset = load_preset_file(path)["a"]
        assert preset.options == SamplingOptions(temperature=0.3)
        assert preset.options.model_dump(exclude_unset=True) == {"temperature": 0.3}

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a:\n  description: A.\n  temperature: 9\n", r"p.yaml: preset 'a': temperature=9: expected a number in"),
            ("a:\n  description: A.\n  topk: 3\n", r"p.yaml: preset 'a': unknown sampling option 'topk' \(did you"),
            ("a:\n  top_k: 3\n", r"p.yaml: preset 'a': missing 'description'"),
            ("a: 3\n", r"p.yaml: preset 'a': expected a mapping"),
            ("- a\n", r"p.yaml: expected a mapping of preset name"),
            ("a: [\n", r"p.yaml: not valid YAML"),
        ],
    )
    def test_errors_name_file_preset_and_key(self, tmp_path, text, expected):
        path = tmp_path / "p.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            load_presets(path)

    def test_missing_file_is_a_config_error(self, tmp_path):
        with pytest.raises(ConfigError, match="nope.yaml: sampling presets file not found"):
            load_presets(tmp_path / "nope.yaml")
