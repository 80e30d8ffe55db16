"""SamplingOptions: ranges, error messages that name the key and range, string values, cross-field rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloneus.errors import ConfigError
from cloneus.inference.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingOptions, describe_option, describe_range


class TestSamplingOptions:
    def test_defaults_are_valid_and_frozen(self):
        opts = SamplingOptions()
        assert opts.sampler_priority == DEFAULT_SAMPLER_PRIORITY
        with pytest.raises(ValidationError):
            opts.temperature = 0.5

    def test_unknown_key_is_rejected_with_suggestion(self):
        with pytest.raises(ConfigError, match=r"unknown sampling option 'temprature' \(did you mean 'temperature'"):
            SamplingOptions.parse({"temprature": 0.7})

    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("temperature", 9, r"temperature=9: expected a number in \(0, 5\]"),
            ("temperature", 0, r"temperature=0: expected a number in \(0, 5\]"),
            ("top_p", 1.5, r"top_p=1.5: expected a number in \[0, 1\]"),
            ("top_k", -1, r"top_k=-1: expected an integer in \[0, 1000\]"),
            ("top_k", "many", r"top_k='many': expected an integer in \[0, 1000\]"),
            ("xtc_threshold", 0.7, r"xtc_threshold=0.7: expected a number in \[0, 0.5\]"),
            ("presence_penalty", -3, r"presence_penalty=-3: expected a number in \[-2, 2\]"),
            ("do_sample", "maybe", r"do_sample='maybe': expected true or false"),
        ],
    )
    def test_out_of_range_names_key_and_range(self, key, value, expected):
        with pytest.raises(ConfigError, match=expected):
            SamplingOptions().merged(**{key: value})

    def test_every_bad_key_gets_its_own_line(self):
        with pytest.raises(ConfigError) as info:
            SamplingOptions.parse({"temperature": 9, "top_p": 2, "bogus": 1}, source="preset x")
        lines = str(info.value).splitlines()
        assert len(lines) == 3
        assert all(line.startswith("preset x: ") for line in lines)

    def test_strings_from_slash_commands_are_converted(self):
        opts = SamplingOptions().merged(temperature="0.7", top_k="12", do_sample="false", dynamic_temperature="on")
        assert (opts.temperature, opts.top_k, opts.do_sample, opts.dynamic_temperature) == (0.7, 12, False, True)

    def test_merged_skips_none_and_keeps_other_values(self):
        base = SamplingOptions(temperature=0.5, top_k=7)
        opts = base.merged(temperature=None, min_p=0.2)
        assert (opts.temperature, opts.top_k, opts.min_p) == (0.5, 7, 0.2)
        assert base.min_p == SamplingOptions().min_p

    def test_merged_keeps_track_of_what_was_chosen(self):
        opts = SamplingOptions.parse({"top_k": 7}).merged(min_p=0.2)
        assert opts.model_dump(exclude_unset=True) == {"top_k": 7, "min_p": 0.2}

    def test_mirostat_v1_is_refused_with_the_fix(self):
        with pytest.raises(ConfigError, match=r"mirostat_mode=1: Mirostat v1 is not implemented; use 0 .* or 2"):
            SamplingOptions.parse({"mirostat_mode": 1})

    def test_min_new_tokens_above_max_names_both_keys(self):
        with pytest.raises(ConfigError, match="min_new_tokens .*max_new_tokens"):
            SamplingOptions.parse({"min_new_tokens": 50, "max_new_tokens": 10})

    def test_dynatemp_low_above_high_is_rejected(self):
        with pytest.raises(ConfigError, match="dynatemp_low .*dynatemp_high"):
            SamplingOptions.parse({"dynatemp_low": 2.0, "dynatemp_high": 1.0})


class TestSamplerPriority:
    def test_unknown_name_lists_valid_names(self):
        with pytest.raises(ConfigError) as info:
            SamplingOptions.parse({"sampler_priority": ["top_k", "nucleus"]})
        message = str(info.value)
        assert "['nucleus']" in message
        assert all(name in message for name in DEFAULT_SAMPLER_PRIORITY)

    def test_duplicates_are_rejected(self):
        with pytest.raises(ConfigError, match=r"\['top_k'\] listed more than once"):
            SamplingOptions.parse({"sampler_priority": ["top_k", "min_p", "top_k"]})

    def test_comma_or_newline_separated_string_is_accepted(self):
        opts = SamplingOptions.parse({"sampler_priority": "min_p, temperature\ntop_k"})
        assert opts.sampler_priority == ("min_p", "temperature", "top_k")


class TestDrySequenceBreakers:
    def test_webui_string_without_brackets(self):
        opts = SamplingOptions.parse({"dry_sequence_breakers": '"\\n", ":", "\\"", "*"'})
        assert opts.dry_sequence_breakers == ("\n", ":", '"', "*")

    def test_json_list_string(self):
        assert SamplingOptions.parse({"dry_sequence_breakers": '["a", "b"]'}).dry_sequence_breakers == ("a", "b")

    @pytest.mark.parametrize("value", ["[1", ["ok", ""], '["x", 3]'])
    def test_bad_breakers_are_rejected(self, value):
        with pytest.raises(ConfigError, match="dry_sequence_breakers="):
            SamplingOptions.parse({"dry_sequence_breakers": value})


class TestDescribe:
    def test_describe_option_gives_range_default_and_meaning(self):
        text = describe_option("min_p")
        assert text.startswith("min_p (a number in [0, 1], default 0.05): ")
        assert "max_prob" in text

    def test_every_field_has_a_description_and_a_range(self):
        for name, field in SamplingOptions.model_fields.items():
            assert field.description, name
            assert describe_range(name), name

    def test_describe_unknown_option_suggests(self):
        with pytest.raises(ConfigError, match="did you mean 'top_p'"):
            describe_option("top_pp")


def test_import_does_not_load_torch():
    code = "import sys, cloneus.inference.sampling; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_docs_cover_every_option_and_sampler():
    docs = (Path(__file__).resolve().parents[2] / "docs/sampling.md").read_text()
    missing = [name for name in SamplingOptions.model_fields if f"`{name}`" not in docs]
    missing += [name for name in DEFAULT_SAMPLER_PRIORITY if name not in docs]
    assert not missing
