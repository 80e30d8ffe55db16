"""ChatFormatter: each tag placement, label spans, prompts for generation and next-speaker scoring."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from cloneus.config import FormatConfig, PromptConfig
from cloneus.data.formatting import ChatFormatter
from cloneus.data.users import User, UserIndex
from cloneus.errors import ConfigError

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Like Mistral's: strict user/assistant alternation, no system role.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + '</s>' }}{% endif %}{% endfor %}"
)
CONVERSATION = [("Alice", "hi all"), ("Bob", "yo"), ("Carl", "hey there"), ("Alice", "two\nlines")]


def make_users() -> UserIndex:
    """Alice and Bob are trained; Carl is below min_share, so his messages are context only."""
    return UserIndex(
        users=[
            User(id="1", username="alice", display_name="Alice", first_name="Al", message_count=50, share=0.5),
            User(id="2", username="bob", display_name="Bob", message_count=49, share=0.49),
            User(id="3", username="carl", display_name="Carl", message_count=1, share=0.001),
        ]
    )


@pytest.fixture
def tokenizer(tiny_model_dir):
    # A fresh tokenizer per test: custom templates and added tokens are installed on it.
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def make_formatter(tokenizer, masked=(), template="Chat of {name_mapping}", append_msg=None, **fmt) -> ChatFormatter:
    prompt = PromptConfig(template=template, append_msg=append_msg)
    return ChatFormatter(tokenizer, FormatConfig(**fmt), prompt, make_users(), masked_authors=masked)


def labelled(rendered) -> list[str]:
    return [rendered.text[a:b] for a, b in rendered.label_spans]


class TestReplaceRole:
    def test_matches_the_chat_template_rendering(self, tokenizer):
        fmt = make_formatter(tokenizer, author_tag="{author} ({fname})")
        rendered = fmt.render(CONVERSATION)
        expected = tokenizer.apply_chat_template(
            [{"role": "system", "content": fmt.system_prompt()}]
            + [{"role": fmt.author_tag(a), "content": t} for a, t in CONVERSATION],
            tokenize=False,
        )
        assert rendered.text == expected
        assert "Alice (Al)" in rendered.text and "Bob (Bob)" in rendered.text

    def test_labels_cover_tag_text_and_end_of_turn_of_trainable_authors_only(self, tokenizer):
        rendered = make_formatter(tokenizer).render(CONVERSATION)
        spans = labelled(rendered)
        assert spans[0] == "<|im_start|>Alice\nhi all<|im_end|>\n<|im_start|>Bob\nyo<|im_end|>\n"
        assert spans[1] == "<|im_start|>Alice\ntwo\nlines<|im_end|>\n"
        assert rendered.label_spans[0][0] == rendered.prefix_len > 0
        assert "Chat of" in rendered.text[: rendered.prefix_len]

    def test_masked_authors_get_no_labels(self, tokenizer):
        rendered = make_formatter(tokenizer, masked=["bob"]).render(CONVERSATION)
        assert all("yo" not in s for s in labelled(rendered))
        assert len(rendered.message_spans) == len(CONVERSATION)

    def test_injected_default_system_prompt_is_left_out(self, tokenizer):
        fmt = make_formatter(tokenizer, template=None, custom_chat_template=SMOLLM2_TEMPLATE)
        rendered = fmt.render(CONVERSATION)
        assert "SmolLM" not in rendered.text
        assert rendered.text.startswith("<|im_start|>Alice\nhi all<|im_end|>\n")
        assert fmt.system_prompt() is None

    def test_system_prompt_replaces_the_injected_one(self, tokenizer):
        fmt = make_formatter(tokenizer, custom_chat_template=SMOLLM2_TEMPLATE)
        text = fmt.render(CONVERSATION).text
        assert "SmolLM" not in text and text.startswith("<|im_start|>system\nChat of Alice, Bob<|im_end|>\n")

    def test_role_rewriting_template_is_probed_per_author(self, tokenizer):
        template = SMOLLM2_TEMPLATE.replace("message['role'] + '\n'", "message['role'] | upper + '\n'")
        fmt = make_formatter(tokenizer, custom_chat_template=template)
        rendered = fmt.render(CONVERSATION)
        assert "<|im_start|>ALICE\nhi all" in rendered.text
        assert rendered.text == tokenizer.apply_chat_template(
            [{"role": "system", "content": fmt.system_prompt()}]
            + [{"role": a, "content": t} for a, t in CONVERSATION],
            tokenize=False,
        )

    def test_template_without_system_role_is_a_config_error(self, tokenizer):
        with pytest.raises(ConfigError, match="system role"):
            make_formatter(tokenizer, custom_chat_template=NO_SYSTEM_TEMPLATE)


class TestContentPrefix:
    def test_alternates_user_and_assistant_with_tag_in_content(self, tokenizer):
        fmt = make_formatter(tokenizer, tag_placement="content_prefix", tag_sep=": ")
        text = fmt.render(CONVERSATION).text
        assert "<|im_start|>user\nAlice: hi all<|im_end|>\n<|im_start|>assistant\nBob: yo<|im_end|>" in text
        assert "<|im_start|>user\nCarl: hey there" in text

    def test_system_prompt_becomes_user_turn_and_append_msg_reply(self, tokenizer):
        fmt = make_formatter(
            tokenizer,
            tag_placement="content_prefix",
            tag_sep=": ",
            template="Play {name_mapping}. Say {append_msg}.",
            append_msg="OK",
            custom_chat_template=NO_SYSTEM_TEMPLATE,
        )
        rendered = fmt.render(CONVERSATION)
        assert rendered.text.startswith("[INST] Play Alice, Bob. Say OK. [/INST]OK</s>[INST] Alice: hi all [/INST]")
        assert rendered.text[: rendered.prefix_len] == "[INST] Play Alice, Bob. Say OK. [/INST]OK</s>"
        assert labelled(rendered)[0].startswith("[INST] Alice: hi all [/INST]Bob: yo</s>")

    def test_without_append_msg_first_message_is_the_assistant_turn(self, tokenizer):
        fmt = make_formatter(
            tokenizer, tag_placement="content_prefix", tag_sep=": ", custom_chat_template=NO_SYSTEM_TEMPLATE
        )
        text = fmt.render(CONVERSATION).text
        assert text.startswith("[INST] Chat of Alice, Bob [/INST]Alice: hi all</s>[INST] Bob: yo [/INST]")
        # The template itself accepts this order, i.e. alternation holds.
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "s"}, {"role": "assistant", "content": "a"}], tokenize=False
        )


class TestTagOnly:
    def test_tag_sep_text_postfix_without_template(self, tokenizer):
        fmt = make_formatter(tokenizer, tag_placement="tag_only", tag_sep=": ", postfix="\n", author_tag="{lauthor}")
        rendered = fmt.render(CONVERSATION)
        assert rendered.text == "Chat of alice, bob\nalice: hi all\nbob: yo\ncarl: hey there\nalice: two\nlines\n"
        assert labelled(rendered) == ["alice: hi all\nbob: yo\n", "alice: two\nlines\n"]

    def test_stop_strings_include_postfix_and_next_tag(self, tokenizer):
        fmt = make_formatter(tokenizer, tag_placement="tag_only", tag_sep=": ", postfix="</s>")
        stops = fmt.stop_strings()
        assert "</s>" in stops and "</s>Alice: " in stops and "</s>Bob: " in stops


class TestPrompts:
    @pytest.mark.parametrize("placement", ["replace_role", "content_prefix", "tag_only"])
    def test_generation_prompt_ends_where_reply_text_starts(self, tokenizer, placement):
        fmt = make_formatter(tokenizer, tag_placement=placement, tag_sep=" : ", postfix="\n")
        history = CONVERSATION[:3]
        prompt = fmt.generation_prompt(history, "Bob")
        full = fmt.render([*history, ("Bob", "the reply")]).text
        assert full.startswith(prompt + "the reply")
        assert fmt.generation_prompt(history, "Bob", seed_text="the") == prompt + "the"

    @pytest.mark.parametrize("placement", ["replace_role", "content_prefix", "tag_only"])
    def test_speaker_prompt_splits_before_each_author_tag(self, tokenizer, placement):
        fmt = make_formatter(tokenizer, tag_placement=placement, tag_sep=" : ", postfix="\n", author_tag="{fname}")
        prefix, continuations = fmt.speaker_prompt(CONVERSATION[:2])
        assert set(continuations) == {"Alice", "Bob"}
        for author, cont in continuations.items():
            assert prefix + cont == fmt.generation_prompt(CONVERSATION[:2], author)
            assert cont.startswith(fmt.author_tag(author))

    def test_chatml_stop_string_is_end_of_turn(self, tokenizer):
        assert "<|im_end|>" in make_formatter(tokenizer).stop_strings()


class TestTagsAndTemplates:
    def test_author_tag_fields(self, tokenizer):
        fmt = make_formatter(tokenizer, author_tag="{author}|{fname}|{lauthor}")
        assert fmt.author_tag("Alice") == "Alice|Al|alice"
        assert fmt.author_tag("Bob") == "Bob|Bob|bob"
        assert fmt.author_tag("Stranger") == "Stranger|Stranger|stranger"

    def test_name_mapping_from_user_index_uses_the_tag(self, tokenizer):
        fmt = make_formatter(tokenizer, author_tag="{fname}", template="P: {name_mapping}")
        assert fmt.system_prompt() == "P: Al, Bob"

    def test_unknown_prompt_placeholder_is_a_config_error(self, tokenizer):
        with pytest.raises(ConfigError, match="prompt.template"):
            make_formatter(tokenizer, template="Hi {who}")

    def test_chatml_shorthand_adds_missing_tokens(self, tiny_model_dir, tmp_path):
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
        bare = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
        bare.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        tok = PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="?")
        fmt = make_formatter(tok, custom_chat_template="chatml")
        assert fmt.tokens_added == ["<|im_start|>", "<|im_end|>"]
        ids = tok(fmt.render(CONVERSATION).text, add_special_tokens=False).input_ids
        assert tok.convert_tokens_to_ids("<|im_start|>") in ids
        already = AutoTokenizer.from_pretrained(tiny_model_dir)
        assert make_formatter(already, custom_chat_template="chatml").tokens_added == []

    def test_template_from_file(self, tokenizer, tmp_path):
        path = tmp_path / "t.jinja"
        path.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}")
        fmt = make_formatter(tokenizer, custom_chat_template=str(path))
        assert fmt.render(CONVERSATION[:1]).text == f"<system>{fmt.system_prompt()}</><Alice>hi all</>"

    def test_missing_template_file_is_a_config_error(self, tokenizer, tmp_path):
        with pytest.raises(ConfigError, match="custom_chat_template"):
            make_formatter(tokenizer, custom_chat_template=str(tmp_path / "nope.jinja"))

    def test_position_dependent_template_is_rejected(self, tokenizer):
        template = "{% for m in messages %}{{ loop.index }}:{{ m['role'] }}:{{ m['content'] }};{% endfor %}"
        with pytest.raises(ConfigError, match="chat template"):
            make_formatter(tokenizer, custom_chat_template=template)
