"""One registry style for the whole toolkit (timm's): a name -> object mapping that things register into.

Every registry is a :class:`Registry`: ``ARCHITECTURES.register("resnet50")`` as a decorator, or
``RUNNERS.register(".onnx", runner)`` for a value; ``ARCHITECTURES.lookup(name)`` with an error that lists what is
registered; otherwise a plain dict (``name in``, iteration in registration order). The registries: architectures
and their ImageNet weights (:mod:`core.models.registry`), model types (:mod:`core.models`), dual-branch
architectures (:mod:`core.models.dual`), datasets (:mod:`core.data.datasets`), methods (:mod:`core.methods`),
graph-format runners (:mod:`core.checkpoint`) and benchmarks (``bench``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

V = TypeVar("V")
_DECORATOR = object()


class Registry(dict[str, V]):
    """Named entries of one kind (``kind``: how errors name them, e.g. "architecture")."""

    def __init__(self, kind: str, entries: Iterable[tuple[str, V]] | dict[str, V] = ()) -> None:
        super().__init__(entries)
        self.kind = kind

    def register(self, name: str, value: Any = _DECORATOR) -> Any:
        """Add ``value`` under ``name`` (a later registration of the name replaces it) and return it; without a value,
        a decorator that registers what it decorates."""
        if value is _DECORATOR:
            def decorate(item: Callable) -> Callable:
                self[name] = item
                return item

            return decorate
        self[name] = value
        return value

    def lookup(self, name: str) -> V:
        """The entry ``name``; a ValueError listing every registered name when there is none."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self))}")
        return self[name]
