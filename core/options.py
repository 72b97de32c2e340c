"""Settings declared once: a dataclass field whose :func:`option` metadata carries its help text, its domain
(choices, or a numeric range), its command-line flag and, for the settings the sidebar offers, a label.

Two kinds of settings use it: the training configuration (:class:`core.config.TrainConfig`) and each method's
hyperparameters (:class:`core.methods.options.Options`). From the one declaration come the command-line flags
(:mod:`core.cli.train`), the sidebar's widgets (``dashboard/launcher_ui.py``), the checks at the boundary (an error
that names the setting and its domain), the preset checks and the docs' tables of settings.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any

META = "option"


def option(default: Any, help: str, *, label: str | None = None, choices: tuple | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           switch: str | None = None, internal: bool = False, methods: tuple[str, ...] | None = None,
           flag: str | None = None) -> Any:
    """A declared hyperparameter: a dataclass field with its ``help``, its domain and its sidebar ``label``.

    ``low``/``high`` bound a number (inclusive unless ``low_open``/``high_open``); ``choices`` list a
    string's values; ``switch`` names a value-less flag that sets the opposite of a boolean default
    (``--local``); ``internal`` options are set by a multi-run driver (an IMP round), never by a flag;
    ``methods`` limits the sidebar to those methods when several share the options class (None: all of them);
    ``flag`` names the command-line flag when it is not the field's name with dashes (``--patience``).
    """
    meta = {"help": help, "label": label, "choices": tuple(choices) if choices else None, "low": low, "high": high,
            "low_open": low_open, "high_open": high_open, "switch": switch, "internal": internal,
            "methods": tuple(methods) if methods else None, "flag_name": flag}
    if isinstance(default, dict | list | set):  # a mutable default: each instance its own copy
        return field(default_factory=lambda: type(default)(default), metadata={META: meta})
    return field(default=default, metadata={META: meta})


@dataclass(frozen=True)
class Declaration:
    """One option as the CLI, the sidebar and the checks see it."""

    name: str
    kind: type  # float, int, str or bool
    optional: bool  # None is a value (e.g. "the weights' learning rate")
    default: Any
    help: str
    label: str | None
    choices: tuple | None
    low: float | None
    high: float | None
    low_open: bool
    high_open: bool
    switch: str | None
    internal: bool
    methods: tuple[str, ...] | None
    flag_name: str | None = None

    def used_by(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    @property
    def flag(self) -> str:
        """The command-line flag, without its dashes (``an_option`` -> ``an-option``; a switch: its own name)."""
        return self.switch or self.flag_name or self.name.replace("_", "-")

    def domain(self) -> str:
        """The values it takes, in words (for errors and help)."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "true or false"
        if self.low is None and self.high is None:
            return f"a{'n' if self.kind is int else ''} {self.kind.__name__}"
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part)

    def check(self, value: Any) -> Any:
        """``value`` in this option's type, or a ValueError naming the option and its domain."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{self.name} must be {self.domain()}, got null")
        if self.kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.strip().lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or (self.kind is int and value != int(value)):
                raise ValueError(f"{self.name} must be {self.domain()}, got {value!r}")
            value = self.kind(value)
            below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if below or above:
                raise ValueError(f"{self.name} must be {self.domain()}, got {value:g}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"{self.name} must be {self.domain()}, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}, got {value!r}")
        return value


def _kind(annotation) -> tuple[type, bool]:
    """``float | None`` -> ``(float, True)``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0], len(members) < len(typing.get_args(annotation))
    return annotation, False


@functools.cache
def declarations(cls: type) -> tuple[Declaration, ...]:
    """Every declared setting of the dataclass ``cls`` in declaration order; a subclass may change a default and keep
    the base's metadata. A field without :func:`option` is a TypeError."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        meta = item.metadata.get(META)
        for base in cls.__mro__[1:]:  # `lambda_rl: float = 0.0` in a subclass: the base's declaration
            if meta is not None:
                break
            if dataclasses.is_dataclass(base):
                meta = next((f.metadata.get(META) for f in dataclasses.fields(base) if f.name == item.name), None)
        if meta is None:
            raise TypeError(f"{cls.__name__}.{item.name} is not declared with option(...)")
        kind, optional = _kind(hints[item.name])
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        found.append(Declaration(item.name, kind, optional, default, **meta))
    return tuple(found)
