"""Where replies end: stop strings cut on text, and streaming holds back what may become a stop string."""

from __future__ import annotations

from cloneus.inference.stopping import TextStops


class TestTextStops:
    def test_cut_at_the_earliest_stop(self):
        stops = TextStops(["<|im_end|>", "\nbob: ", ""])
        assert stops.cut("hi there<|im_end|>\n<|im_start|>bob") == ("hi there", True)
        assert stops.cut("one\nbob: two<|im_end|>") == ("one", True)
        assert stops.cut("no stop here") == ("no stop here", False)

    def test_visible_holds_back_partial_stops_and_trailing_space(self):
        stops = TextStops(["<|im_end|>", "\nbob: "])
        assert stops.visible("hello <|im_") == "hello"
        assert stops.visible("hello\nbo") == "hello"
        assert stops.visible("hello\nbob: more") == "hello"
        assert stops.visible("a <b") == "a <b"
        assert stops.visible("caf\ufffd") == "caf"

    def test_tag_only_stops_at_the_next_author_tag(self, clo):
        from cloneus.data.formatting import ChatFormatter

        fmt = clo.config.format.model_copy(update={"tag_placement": "tag_only", "tag_sep": ": ", "postfix": "\n\n"})
        stops = TextStops(ChatFormatter(clo.tokenizer, fmt, clo.config.prompt, clo.users).stop_strings())
        assert stops.cut("sure thing\n\ncarol: me too") == ("sure thing", True)
