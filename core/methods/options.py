"""A method's hyperparameters, declared once.

Each option is a typed dataclass field whose :func:`option` metadata carries its help text,
its domain (choices, or a numeric range) and, for the options the sidebar offers, a label.
Everything else is generated from that one declaration:

- the ``train`` command's flags (:mod:`core.cli.train`), with their types and help;
- the sidebar's widgets (``dashboard/launcher_ui.py``), with their labels and ranges;
- the checks of ``method_options`` from presets, ``--config`` files, sweeps and flags
  (:meth:`Options.from_config`): an unknown key or a value outside its domain is an error
  that names the option and its domain. Rules that tie several options together live in
  the class's :meth:`Options.validate`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from core.config import TrainConfig

META = "option"


def option(default: Any, help: str, *, label: str | None = None, choices: tuple | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           switch: str | None = None, internal: bool = False, methods: tuple[str, ...] | None = None) -> Any:
    """A declared hyperparameter: a dataclass field with its ``help``, its domain and its sidebar ``label``.

    ``low``/``high`` bound a number (inclusive unless ``low_open``/``high_open``); ``choices`` list a
    string's values; ``switch`` names a value-less flag that sets the opposite of a boolean default
    (``--local``); ``internal`` options are set by a multi-run driver (an IMP round), never by a flag;
    ``methods`` limits the sidebar to those methods when several share the options class (None: all of them).
    """
    meta = {"help": help, "label": label, "choices": tuple(choices) if choices else None, "low": low, "high": high,
            "low_open": low_open, "high_open": high_open, "switch": switch, "internal": internal,
            "methods": tuple(methods) if methods else None}
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

    def used_by(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    @property
    def flag(self) -> str:
        """The command-line flag, without its dashes (``an_option`` -> ``an-option``; a switch: its own name)."""
        return self.switch or self.name.replace("_", "-")

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


class Options:
    """Base of every method's options dataclass (``method_options`` of a :class:`TrainConfig`)."""

    @classmethod
    @functools.cache
    def declarations(cls) -> tuple[Declaration, ...]:
        """Every option in declaration order; a subclass may change a default and keep the base's metadata."""
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
            found.append(Declaration(item.name, kind, optional, item.default, **meta))
        return tuple(found)

    @classmethod
    def declaration(cls, name: str) -> Declaration:
        return next(d for d in cls.declarations() if d.name == name)

    @classmethod
    def from_values(cls, values: dict, owner: str = "method"):
        """The options of ``values`` (the rest: defaults), each checked against its declaration."""
        declared = {d.name: d for d in cls.declarations()}
        unknown = set(values) - set(declared)
        if unknown:
            raise ValueError(f"unknown {owner} options {sorted(unknown)}; known: {sorted(declared)}")
        return cls(**{name: declared[name].check(value) for name, value in values.items()})

    @classmethod
    def from_config(cls, config: TrainConfig):
        """``config.method_options`` checked option by option, then as a whole (:meth:`validate`)."""
        options = cls.from_values(config.method_options, config.method)
        options.validate(config)
        return options

    def validate(self, config: TrainConfig) -> None:
        """Rules between options, or between an option and the rest of the config (none by default)."""

    def in_effect(self, method: str) -> dict:
        """The options that change what ``method`` does with these values (those declared for it; a subclass drops
        those another option turns off): a plan prints only these."""
        return {d.name: getattr(self, d.name) for d in self.declarations() if d.used_by(method)}
