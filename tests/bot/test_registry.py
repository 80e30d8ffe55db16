"""models.json: both layouts, atomic register, clear errors."""

from __future__ import annotations

import json

import pytest

from bot.registry import ModelRegistry
from cloneus.errors import CloneusError


class TestModelRegistry:
    def test_missing_file_is_empty(self, tmp_path):
        reg = ModelRegistry(tmp_path / "models.json")
        assert reg.entries == [] and reg.default is None and reg.get("x") is None

    def test_reads_new_layout_with_default(self, tmp_path):
        path = tmp_path / "models.json"
        path.write_text(
            json.dumps(
                {"default": "b", "models": [{"name": "a", "ckpt": "runs/a"}, {"name": "b", "desc": "B", "ckpt": "b"}]}
            )
        )
        reg = ModelRegistry(path)
        assert reg.names() == ["a", "b"]
        assert reg.default.name == "b" and reg.default.desc == "B"

    def test_reads_seed_best_layout(self, tmp_path):
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"BEST": [{"name": "m1", "desc": "d", "ckpt": "x/checkpoint-5"}]}))
        reg = ModelRegistry(path)
        assert reg.default.name == "m1" and str(reg.get("m1").path) == "x/checkpoint-5"

    def test_old_server_layout_best_last_entry_is_default_and_micro_era_are_read(self, tmp_path):
        """The old server's models_example.json shape: BEST, MICRO and ERA (ERA entries have no name)."""
        path = tmp_path / "models.json"
        old = {
            "BEST": [{"name": "old", "desc": "first", "ckpt": "a/checkpoint-1"}, {"name": "new", "ckpt": "b/c-2"}],
            "MICRO": [{"name": "ex_smollm2", "desc": "SmolLM2 - 135m", "ckpt": "s/checkpoint-9"}],
            "ERA": [{"years": "2020-2022", "gconf": "ms", "ckpt": "y/checkpoint-3"}],
        }
        path.write_text(json.dumps(old))
        reg = ModelRegistry(path)
        assert reg.names() == ["old", "new", "ex_smollm2", "era-2020-2022"]
        assert reg.default.name == "new"
        era = reg.get("era-2020-2022")
        assert era.ckpt == "y/checkpoint-3" and era.desc == "trained on 2020-2022" and era.model_extra["gconf"] == "ms"
        assert reg.get("ex_smollm2").model_extra["group"] == "MICRO"

    def test_old_layout_without_best_defaults_to_the_last_micro(self, tmp_path):
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"MICRO": [{"name": "a", "ckpt": "a"}, {"name": "b", "ckpt": "b"}]}))
        assert ModelRegistry(path).default.name == "b"

    def test_register_keeps_the_old_entries_in_the_new_layout(self, tmp_path):
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"BEST": [{"name": "a", "ckpt": "a"}, {"name": "b", "ckpt": "b"}]}))
        ModelRegistry(path).register("c", "", "c")
        raw = json.loads(path.read_text())
        assert raw["default"] == "b" and [m["name"] for m in raw["models"]] == ["a", "b", "c"]
        assert ModelRegistry(path).get("a").model_extra["group"] == "BEST"

    def test_old_layout_duplicate_names_are_refused(self, tmp_path):
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"BEST": [{"name": "a", "ckpt": "a"}], "MICRO": [{"name": "a", "ckpt": "b"}]}))
        with pytest.raises(CloneusError, match="MICRO entry 'a' has the name of a BEST entry"):
            ModelRegistry(path)

    def test_register_writes_and_rereads(self, tmp_path):
        path = tmp_path / "cfg" / "models.json"
        reg = ModelRegistry(path)
        reg.register("first", "one", tmp_path / "c1", {"eval_perplexity": 12.5})
        reg.register("second", "two", tmp_path / "c2")
        reg.register("first", "one again", tmp_path / "c3")
        again = ModelRegistry(path)
        assert again.names() == ["second", "first"]
        assert again.default.name == "first"
        assert again.get("first").desc == "one again" and again.get("first").metrics is None
        assert again.get("second").ckpt == str(tmp_path / "c2")
        assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    def test_record_eval_keeps_the_entry_and_survives_a_reread(self, tmp_path):
        path = tmp_path / "models.json"
        reg = ModelRegistry(path)
        reg.register("a", "first", tmp_path / "ck", {"eval_loss": 2.0})
        reg.register("b", "second", tmp_path / "ck2")
        reg.record_eval("a", {"perplexity": 12.5})
        again = ModelRegistry(path)
        assert again.get("a").eval == {"perplexity": 12.5} and again.get("a").metrics == {"eval_loss": 2.0}
        assert again.names() == ["a", "b"] and again.default.name == "a" and again.get("b").eval is None
        with pytest.raises(CloneusError, match="no model registered as 'gone'"):
            reg.record_eval("gone", {})

    def test_register_make_default(self, tmp_path):
        reg = ModelRegistry(tmp_path / "m.json")
        reg.register("a", "", "a")
        reg.register("b", "", "b", make_default=True)
        assert ModelRegistry(tmp_path / "m.json").default.name == "b"

    @pytest.mark.parametrize(
        "content, message",
        [
            ("{not json", "line 1"),
            ('{"models": [{"name": "a"}]}', r"models\[0\].ckpt"),
            ('{"default": "zz", "models": [{"name": "a", "ckpt": "c"}]}', "default 'zz'"),
            ("[1, 2]", "expected an object"),
            ('{"ERA": [{"gconf": "ms", "ckpt": "c"}]}', r"ERA\[0\].name"),
        ],
    )
    def test_bad_file_names_the_problem(self, tmp_path, content, message):
        path = tmp_path / "models.json"
        path.write_text(content)
        with pytest.raises(CloneusError, match=message):
            ModelRegistry(path)
