"""Zero-shot authors: a name the user index never saw is written into the tag as typed; known names still go
through the index, so opted-out and excluded members stay refused."""

from __future__ import annotations

import pytest

from cloneus.errors import UnknownAuthorError
from tests.inference.conftest import HISTORY

GREEDY = {"do_sample": False, "max_new_tokens": 4}


class TestNewAuthor:
    def test_an_unknown_name_is_refused_without_new_author(self, clo):
        with pytest.raises(UnknownAuthorError, match="unknown author 'zed'"):
            clo.generate(HISTORY, "zed", **GREEDY)

    def test_the_prompt_carries_the_new_name_in_the_tag(self, clo):
        prompt = clo._prompt(HISTORY, "Zed", None, clo._options(GREEDY), new_author=True)
        assert prompt == clo.formatter.generation_prompt(clo.normalizer.pairs(HISTORY), "Zed")
        assert clo.prompt_text(HISTORY, "alice") == clo.formatter.generation_prompt(
            clo.normalizer.pairs(HISTORY), "alice"
        )
        assert isinstance(clo.generate(HISTORY, "Zed", new_author=True, **GREEDY), str)
        assert "".join(clo.stream_generate(HISTORY, "Zed", new_author=True, **GREEDY)) == clo.generate(
            HISTORY, "Zed", new_author=True, **GREEDY
        )

    @pytest.mark.parametrize(("name", "why"), [("dave", "opted out"), ("eve", "excluded")])
    def test_a_known_member_who_may_not_be_cloned_stays_refused(self, clo, name, why):
        with pytest.raises(UnknownAuthorError, match=why):
            clo.generate(HISTORY, name, new_author=True, **GREEDY)

    @pytest.mark.parametrize("name", ["", "x" * 33, "two\nlines", "[tag]"])
    def test_unusable_names_are_refused(self, clo, name):
        with pytest.raises(UnknownAuthorError, match="new author"):
            clo.generate(HISTORY, name, new_author=True, **GREEDY)
