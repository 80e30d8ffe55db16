"""Coming from the old CloneUs: the config shown in its README, and a users.json from its scripts/build.py, train.

The YAML below is the old README's "most important options", copied as printed there (flat keys, one snippet per
heading, the replace_role prompt example). Only `model_id` (the tiny test model instead of an 8B hub model) and
`chatlog_csv` (the test chat) are changed; `--set` puts the user index, cache and runs under the test's directory.
"""

from __future__ import annotations

import json
import logging

import yaml

from cloneus.config import load_config
from cloneus.training.trainer import train

OLD_README_CONFIG = """\
model_id: {model_id} # huggingface repo
flashattn_lib: unsloth # huggingface, unsloth
# - Most, but not all models are supported by unsloth. Switch to "huggingface" if unsupported.

chunk_size: 8192 # Upper token limit on conversation length. If a conversation exceeds this limit, it will be split into new groups.
batch_size: 2
gradient_accumulation_steps: 4

chatlog_csv: '{chatlog}' # change this to avoid having to call -d data/chat/my_data.csv every time.
hours_between_sessions: 4 # [1, 3, 5]
# hours of silence before we start a new chat chunk. Can be a list to use multiple cutoffs.
min_session_length: 3
# Minimum number of messages in a chat chunk. Any chunks smaller will be forcibly regrouped.

tag_placement: replace_role # tag_only, content_prefix, replace_role
author_tag: "{{author}}" # -- used for all tag_placement values
tag_sep: # "\\n" # Ignored when tag_placement="replace_role", otherwise "\\n" or " : " work well
postfix: # "</s>" # ONLY used when tag_placement="tag_only"
custom_chat_template: "{{{{bos_token}}}}{{% for message in messages %}}{{{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}}}{{% endfor %}}{{% if add_generation_prompt %}}{{{{ '<|im_start|>' }}}}{{% endif %}}"

# replace_role example
template: |-
  Uncensored Discord server chat.
  Topic: offbeat.
  Participants: {{name_mapping}}
append_msg: # blank for replace_role
name_mapping: null # Will be filled during scripts/train.py
"""  # noqa: E501


def test_the_old_readme_config_trains_with_an_old_users_json(tiny_model_dir, chat_csv, tmp_path, caplog):
    old = tmp_path / "train_config.yaml"
    old.write_text(OLD_README_CONFIG.format(model_id=tiny_model_dir, chatlog=chat_csv))
    # The old scripts/build.py index: the users it trained (carol was left out) plus the Cloneus bot.
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            [
                {
                    "id": 0,
                    "firstName": "Cloney",
                    "authorInitial": "b0",
                    "username": "cloneus",
                    "displayName": "Cloneus",
                    "isBot": True,
                },
                {
                    "id": 11,
                    "firstName": "Alice",
                    "authorInitial": "a1",
                    "username": "alice",
                    "displayName": "alice",
                    "isBot": False,
                },
                {
                    "id": 12,
                    "firstName": "Bob",
                    "authorInitial": "b1",
                    "username": "bob",
                    "displayName": "bob",
                    "isBot": False,
                },
            ]
        )  # fmt: skip
    )
    overrides = [f"dataset.users_json={users}", f"dataset.cache_dir={tmp_path / 'cache'}"]
    overrides.append(f"training.output_root={tmp_path / 'runs'}")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(old, overrides)
    migrate_warnings = [r for r in caplog.records if "cloneus config migrate" in r.getMessage()]
    assert len(migrate_warnings) == 1
    assert (cfg.training.batch_size, cfg.training.gradient_accumulation_steps) == (2, 4)
    assert cfg.format.custom_chat_template.startswith("{{bos_token}}{% for message in messages %}")

    result = train(cfg, run_name="old")
    assert result.checkpoint is not None and (result.checkpoint / "adapter_model.safetensors").is_file()
    resolved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert resolved["model"]["model_id"] == str(tiny_model_dir)
    assert resolved["dataset"]["chatlog"] == str(chat_csv)
    assert resolved["prompt"]["name_mapping"] == "alice, bob"  # carol is not cloned: the old index left her out
    index = json.loads((result.run_dir / "users.json").read_text())
    carol = next(u for u in index["users"] if u["username"] == "carol")
    assert carol["excluded"] and carol["message_count"] > 0
