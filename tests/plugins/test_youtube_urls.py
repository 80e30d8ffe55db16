"""Link recognition and the tag format (`cloneus/plugins/youtube/urls.py`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloneus.errors import ConfigError
from cloneus.plugins.youtube.urls import TagFormat, find_links, watch_url

VID = "dQw4w9WgXcQ"
DEFAULT_FORMAT = '<youtube id="{id}" title="{title}" channel="{channel}">'
FULL_TAG = f'<youtube id="{VID}" title="Half a Title" channel="Some Channel">'


class TestFindLinks:
    @pytest.mark.parametrize(
        "link",
        [
            f"https://www.youtube.com/watch?v={VID}",
            f"http://youtube.com/watch?v={VID}",
            f"youtube.com/watch?v={VID}",
            f"www.youtube.com/watch?v={VID}",
            f"https://youtu.be/{VID}",
            f"youtu.be/{VID}",
            f"https://youtu.be/{VID}?si=AbCdEf123&t=42",
            f"https://www.youtube.com/shorts/{VID}",
            f"youtube.com/shorts/{VID}?feature=share",
            f"https://music.youtube.com/watch?v={VID}&list=RDAMVM{VID}",
            f"https://m.youtube.com/watch?v={VID}",
            f"https://m.youtube.com/watch?feature=youtu.be&v={VID}",
            f"https://www.youtube.com/watch?v={VID}&t=1m30s",
            f"https://www.youtube.com/watch?v={VID}#t=90",
            f"https://www.youtube.com/embed/{VID}",
            f"<https://www.youtube.com/watch?v={VID}>",
            f"HTTPS://WWW.YouTube.com/watch?v={VID}",
            f"Youtu.be/{VID}",
        ],
    )
    def test_recognises_form_with_surrounding_text(self, link):
        text = f"lol check this {link} right now"
        (match,) = find_links(text)
        assert match["id"] == VID
        assert match.group() == link

    @pytest.mark.parametrize("end", [".", ",", "!", "?", ")", "'", '"', "..."])
    def test_sentence_punctuation_is_not_part_of_the_link(self, end):
        link = f"https://youtu.be/{VID}?t=42"
        (match,) = find_links(f"(watch {link}{end}")
        assert match.group() == link

    @pytest.mark.parametrize(
        "text",
        [
            f"notyoutube.com/watch?v={VID}",
            f"youtu.be/{VID}x",  # 12 characters: not an id
            "youtu.be/short",
            "https://www.youtube.com/channel/UCabcdefghijk",
            f"https://vimeo.com/watch?v={VID}",
            f"example.com/?url=youtube.com/watch?v={VID}",
        ],
    )
    def test_ignores_non_video_links(self, text):
        assert find_links(text) == []

    def test_finds_several_links_in_order(self):
        text = f"a youtu.be/{VID} b https://www.youtube.com/shorts/abcdefghijk c"
        assert [m["id"] for m in find_links(text)] == [VID, "abcdefghijk"]

    def test_canonical_url(self):
        assert watch_url(VID) == f"https://www.youtube.com/watch?v={VID}"
        assert [m["id"] for m in find_links(watch_url(VID))] == [VID]


class TestTagFormat:
    def test_renders_default_format(self):
        tag = TagFormat(DEFAULT_FORMAT).render(VID, "Never Gonna Give You Up", "Rick Astley")
        assert tag == f'<youtube id="{VID}" title="Never Gonna Give You Up" channel="Rick Astley">'

    def test_quotes_and_ampersands_in_titles_are_escaped_and_parse_back(self):
        fmt = TagFormat(DEFAULT_FORMAT)
        title, channel = 'He said "hi" & <left> &amp; stayed', 'The "Channel"'
        tag = fmt.render(VID, title, channel)
        assert tag.count('"') == 6, "only the format's own quotes may remain"
        (found,) = fmt.find(f"before {tag} after")
        assert (found.id, found.title, found.channel) == (VID, title, channel)

    @given(
        title=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
        channel=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    )
    def test_any_title_round_trips(self, title, channel):
        for fmt in (TagFormat(DEFAULT_FORMAT), TagFormat("[{title}](yt:{id}| {channel})")):
            text = f"x {fmt.render(VID, title, channel)} y"
            (found,) = fmt.find(text)
            assert (found.id, found.title, found.channel) == (VID, title.strip(), channel.strip())

    def test_custom_format_spans(self):
        fmt = TagFormat("[YouTube: {title}]")
        text = f"see {fmt.render(VID, 'A [B] C', 'ignored')} ok"
        (found,) = fmt.find(text)
        assert (found.id, found.title, found.channel) == ("", "A [B] C", "")
        assert text[: found.start] == "see " and text[found.end :] == " ok"

    def test_generated_tag_missing_later_fields_is_found(self):
        (found,) = TagFormat(DEFAULT_FORMAT).find(f'a <youtube id="{VID}" title="no channel"> b')
        assert (found.id, found.title, found.channel, found.complete) == (VID, "no channel", "", True)

    @pytest.mark.parametrize("cut", range(len('<youtube id="'), len(FULL_TAG) + 1))
    def test_tag_cut_off_anywhere_at_the_end_is_found_incomplete(self, cut):
        text = "look " + FULL_TAG[:cut]
        (found,) = TagFormat(DEFAULT_FORMAT).find(text + " \n")
        assert found.start == 5 and found.end >= len(text) and found.complete == (cut == len(FULL_TAG))
        assert FULL_TAG[: len('<youtube id="') + len(found.id)].endswith(found.id)
        assert "Half a Title".startswith(found.title)

    def test_text_that_only_resembles_a_tag_is_not_found(self):
        fmt = TagFormat(DEFAULT_FORMAT)
        assert fmt.find('<youtube> and <youtube id=x> and <b id="1">') == []
        assert fmt.find('<youtube id="abc"\nmore text') == []
        assert fmt.find('<youtube id="abc" and then chat goes on') == []

    def test_escaped_braces_in_format(self):
        fmt = TagFormat('{{yt}} <v id="{id}" t="{title}">')
        tag = fmt.render(VID, "T", "C")
        assert tag == f'{{yt}} <v id="{VID}" t="T">'
        assert [(t.id, t.title) for t in fmt.find(f"x {tag}")] == [(VID, "T")]

    @pytest.mark.parametrize(
        ("fmt", "complaint"),
        [
            ("<yt {url}>", "unknown placeholder {url}"),
            ("[{title} by {channel}]", "{title} must be followed by a punctuation"),
            ("yt:{id}", "{id} must be followed"),
            ("<{channel}>", "needs {id} or {title}"),
            ('<{id}"{id}">', "appears twice"),
            ("<{id!r}>", "unknown placeholder"),
            ('{title}" by yt', "must start with fixed text"),
        ],
    )
    def test_rejects_formats_that_cannot_parse_back(self, fmt, complaint):
        with pytest.raises(ConfigError, match="youtube.tag_format") as err:
            TagFormat(fmt)
        assert complaint in str(err.value)
