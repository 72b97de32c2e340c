"""A method's hyperparameters, declared once.

Each option is a typed dataclass field declared with :func:`core.options.option` (as the training
configuration's settings are): its help text, its domain (choices, or a numeric range) and, for the
options the sidebar offers, a label. Everything else is generated from that one declaration:

- the ``train`` command's flags (:mod:`core.cli.train`), with their types and help;
- the sidebar's widgets (``dashboard/launcher_ui.py``), with their labels and ranges;
- the checks of ``method_options`` from presets, ``--config`` files, sweeps and flags
  (:meth:`Options.from_config`): an unknown key or a value outside its domain is an error
  that names the option and its domain. Rules that tie several options together live in
  the class's :meth:`Options.validate`.
"""

from __future__ import annotations

from core.config import TrainConfig
from core.options import Declaration, declarations, option

__all__ = ["Declaration", "Options", "option"]


class Options:
    """Base of every method's options dataclass (``method_options`` of a :class:`TrainConfig`)."""

    @classmethod
    def declarations(cls) -> tuple[Declaration, ...]:
        """Every option in declaration order (:func:`core.options.declarations`)."""
        return declarations(cls)

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
