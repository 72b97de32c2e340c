"""The method registry: ``--method NAME``, the dashboard's picker and the tests all
resolve the same :class:`Method` object from :data:`METHODS`.

A method says *what* is trained and *how it is scored*; the shared engine
(:mod:`core.training.engine`) does the looping, logging and checkpointing.
"""

from __future__ import annotations

from core.methods.base import Method
from core.methods.finetune import FinetuneMethod
from core.methods.kdfs import KDFSMethod
from core.methods.lth import LTHMethod
from core.methods.pdd import PDDMethod
from core.methods.pearson import PearsonMethod
from core.methods.taylor import TaylorMethod
from core.methods.teacher import TeacherMethod
from core.methods.two_in_one import TwoInOneMethod

METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register_method(TeacherMethod())
register_method(KDFSMethod())
register_method(PearsonMethod())
register_method(PDDMethod())
register_method(LTHMethod())
register_method(TaylorMethod())
register_method(FinetuneMethod())
register_method(TwoInOneMethod())


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; available: {sorted(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "get_method", "register_method"]
