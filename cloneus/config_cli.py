"""`python -m cloneus config migrate OLD.yaml [-o NEW.yaml]`: convert an old CloneUs config to the sectioned layout.

The map itself lives in `cloneus.config_migrate`; this command writes its result. The new file holds only the keys
the old one set (in schema order), is validated before anything is written, and is written atomically. The report
(what was renamed, what has no equivalent and what to do instead) goes to stderr, so with no `-o` the YAML on
stdout can be redirected on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _str_presenter(dumper, data: str):
    """Multi-line strings (prompt templates, jinja) as `|` blocks, the way a person writes them."""
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def render_yaml(tree: dict, header: list[str]) -> str:
    """The config as YAML: sections in the schema's order, comment lines first."""
    import yaml

    from cloneus.config import CloneusConfig

    order = list(CloneusConfig.model_fields)
    ordered = {k: tree[k] for k in sorted(tree, key=lambda k: order.index(k) if k in order else len(order))}

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, _str_presenter)
    body = yaml.dump(ordered, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=119)
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + body


def migrate_command(args: argparse.Namespace) -> int:
    from cloneus.config import config_from_dict
    from cloneus.config_migrate import describe, migrate_tree
    from cloneus.errors import ConfigError
    from cloneus.io import atomic_write_text, read_yaml_mapping

    source = Path(args.old)
    migration = migrate_tree(read_yaml_mapping(source, "config file", "options at the top level"))
    try:
        config_from_dict(migration.tree, f"{source} (migrated)")
    except ConfigError as e:
        raise ConfigError(f"{e}\nfix the old file ({source}) and run the migration again") from None
    header = [f"Migrated from {source} by `python -m cloneus config migrate`."]
    header += ["Every option, with its default and what it does: config/train_config.yaml."]
    if migration.dropped:
        header += ["", "Old keys with no equivalent, left out:"]
        header += [f"  {old}: {value!r} ({advice})" for old, value, advice in migration.dropped]
    text = render_yaml(migration.tree, header)
    for line in describe(migration, str(source)):
        sys.stderr.write(line + "\n")
    if args.output:
        atomic_write_text(args.output, text)
        sys.stderr.write(f"wrote {args.output}; train with: python -m cloneus train -c {args.output}\n")
    else:
        sys.stdout.write(text)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `config migrate`."""
    config = sub.add_parser("config", help="work with config files (migrate an old CloneUs config)")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "migrate",
        help="convert an old flat CloneUs train_config.yaml to the sectioned layout",
        description="Maps every old key to its section (model_id -> model.model_id, lora_r -> lora.r, ...) and "
        "reports the keys with no equivalent, with what to do instead.",
    )
    p.add_argument("old", help="the old config file (e.g. config/train/train_config.yaml)")
    p.add_argument("-o", "--output", help="where to write the new config (default: print it)")
    p.set_defaults(func=migrate_command)
