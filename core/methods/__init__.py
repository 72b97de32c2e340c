"""The method registry: ``--method NAME``, the sidebar's picker, ``reproduce`` and the tests all
resolve the same :class:`Method` class from :data:`METHODS`.

A method says *what* is trained and *how it is scored*; the shared engine
(:mod:`core.training.engine`) does the looping, logging and checkpointing. A method is one
module: a class decorated with :func:`register_method`, its options declared once
(:mod:`core.methods.options`). Every module of this package is imported here, and so is
every ``*.py`` file in the folders of ``$CORE_METHOD_PATH`` (methods kept outside the tree);
``docs/adding-a-method.md`` walks through one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path

from core.config import TrainConfig, check_settings, load_presets, preset_layers
from core.methods.base import Method
from core.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")  # in rank order (Method.rank), then by name
METHOD_PATH_ENV = "CORE_METHOD_PATH"


def register_method(method: type[Method]) -> type[Method]:
    """Class decorator: ``@register_method class MyMethod(Method): name = "mine" ...``."""
    if not method.name:
        raise ValueError(f"{method.__name__} has no name")
    METHODS.register(method.name, method)
    ordered = sorted(METHODS.values(), key=lambda m: (m.rank, m.name))
    METHODS.clear()
    METHODS.update((m.name, m) for m in ordered)
    return method


def get_method(name: str) -> type[Method]:
    return METHODS.lookup(name)


def create_method(config: TrainConfig) -> Method:
    """The method of ``config.method`` for one run, its options bound and checked."""
    return get_method(config.method)(config)


def trainable_methods() -> list[str]:
    """What ``train --method`` and the sidebar offer, in registry order."""
    return [name for name, method in METHODS.items() if method.trainable]


def compared_in(protocol: str) -> list[str]:
    """The methods a protocol compares (each says so: ``compared_in``), in registry order."""
    return [name for name, method in METHODS.items() if protocol in method.compared_in]


def check_presets(presets: dict | None = None) -> None:
    """Every preset against the declarations: ``train`` keys are TrainConfig settings in their domains, each
    ``methods.<name>`` block names a registered method and holds TrainConfig settings, its ``method_options`` that
    method's declared options (their domains checked) and its ``finetune`` block a fine-tune's. An unknown key or a
    value outside its domain is a ValueError naming it."""

    def check_block(where: str, method: str, block: dict) -> None:
        check_settings({k: v for k, v in block.items() if k not in ("method_options", "finetune")}, f"preset {where}: ")
        options_class = get_method(method).options_class
        if block.get("method_options"):
            if options_class is None:
                raise ValueError(f"preset {where}: {method} takes no method_options")
            options_class.from_values(block["method_options"], f"{where} {method}")
        if "finetune" in block:
            check_block(f"{where}.finetune", "finetune", block["finetune"])

    for name, preset in (load_presets() if presets is None else presets).items():
        for layer in preset_layers(preset):
            check_settings(layer.get("train", {}), f"preset {name}.train: ")
            for method, block in (layer.get("methods") or {}).items():
                try:
                    get_method(method)
                except ValueError as error:
                    raise ValueError(f"preset {name}: {error}") from None
                check_block(f"{name}.methods.{method}", method, block or {})


def discover() -> None:
    """Import this package's modules and the ``$CORE_METHOD_PATH`` files not yet imported (each registers itself)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for folder in filter(None, os.environ.get(METHOD_PATH_ENV, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            name = f"core_methods_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)


discover()

__all__ = ["METHODS", "Method", "check_presets", "compared_in", "create_method", "discover",
           "get_method", "register_method", "trainable_methods"]
