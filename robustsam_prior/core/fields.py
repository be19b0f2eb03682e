"""Fields of the frozen option dataclasses that YAML files are validated into.

Every option carries its documentation and its validation rules in the field's metadata: ``help`` (the
text of ``--help`` and of the JSON Schema) and whatever other keywords the validator reads (``min``,
``max``, ``exists``, ``min_len``, ``inside``; ``pipelines.config`` lists them). The option classes write

    steps: int = option_field(1000, "optimisation steps", min=1)
    augment: AugmentOptions = option_field(AugmentOptions, "joint augmentation")
    size: int = required_option_field("input side in pixels", min=1)
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["option_field", "required_option_field"]


def option_field(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A dataclass field with ``default`` and metadata ``{"help": help, **meta}``.

    A class as ``default`` (``dict``, ``list``, a nested options dataclass) is a factory: each instance
    gets a fresh one, so no two configs share a mutable default. No option has a class as its value.
    """
    if isinstance(default, type):
        return field(default_factory=default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def required_option_field(help: str, **meta: Any) -> Any:
    """A dataclass field without a default (the YAML must give it) and metadata ``{"help": help, **meta}``."""
    return field(metadata={"help": help, **meta})
