"""CloneUs: LoRA-finetune an open LLM on a group chat and talk to the clones.

`import cloneus` stays light: torch and transformers load only when `Cloneus` is first touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cloneus.inference.cloneus import Cloneus

__all__ = ["Cloneus", "__version__"]


def __getattr__(name: str):
    if name == "Cloneus":
        from cloneus.inference.cloneus import Cloneus

        return Cloneus
    raise AttributeError(f"module 'cloneus' has no attribute {name!r}")
