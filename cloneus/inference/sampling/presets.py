"""Named sampling presets read from YAML.

The canonical file ships inside the package (`cloneus/inference/sampling/presets.yaml`), so an installed
CloneUs always has presets. `config/sampling_presets.yaml` is the user-editable copy: when it exists in the
working directory it is read *instead of* the packaged file (edit it to add, change or remove presets).
A preset lists only what differs from the `SamplingOptions` defaults, plus a one-line `description`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloneus.errors import ConfigError
from cloneus.inference.sampling.options import SamplingOptions
from cloneus.io import read_yaml_mapping

USER_PRESETS_PATH = Path("config/sampling_presets.yaml")
PACKAGED_PRESETS_PATH = Path(__file__).with_name("presets.yaml")


@dataclass(frozen=True)
class Preset:
    """One preset: its name, what it is for, and the full options it stands for."""

    name: str
    description: str
    options: SamplingOptions


def default_presets_path() -> Path:
    """`config/sampling_presets.yaml` under the working directory if present, else the packaged file."""
    return USER_PRESETS_PATH if USER_PRESETS_PATH.is_file() else PACKAGED_PRESETS_PATH


def _parse_preset(name: Any, entry: Any, path: Path) -> Preset:
    where = f"{path}: preset {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping of sampling options, got {type(entry).__name__}")
    fields = dict(entry)
    description = fields.pop("description", None)
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{where}: missing 'description' (one line saying what the preset is for)")
    return Preset(str(name), description.strip(), SamplingOptions.parse(fields, source=where))


def load_preset_file(path: str | Path | None = None) -> dict[str, Preset]:
    """Every preset of a YAML file, with its description.

    Args:
        path (`str | Path`, *optional*, defaults to `default_presets_path()`): the YAML file.

    Raises:
        ConfigError: the file is missing or not YAML, or a preset has an unknown key or a value out of range
            (the message names the file, the preset and the key).
    """
    path = Path(path) if path is not None else default_presets_path()
    tree = read_yaml_mapping(path, "sampling presets file", "preset name to options")
    return {str(name): _parse_preset(name, entry, path) for name, entry in tree.items()}


def load_presets(path: str | Path | None = None) -> dict[str, SamplingOptions]:
    """Preset name to `SamplingOptions` (see `load_preset_file` for the path and errors)."""
    return {name: preset.options for name, preset in load_preset_file(path).items()}
