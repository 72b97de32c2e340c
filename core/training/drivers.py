"""Multi-run drivers: grids of runs, and methods whose result is a chain of runs, each one a call of the engine.

- :func:`grid`: one config per (sweep value, seed), ``train --seeds/--sweep``;

- :func:`iterative_magnitude_pruning`: the lottery-ticket rounds (dense, then IMP up to the target
  sparsity, and a one-shot run), each round a ``lth`` run starting from the previous one;
- :func:`prune_iteratively`: Taylor pruning's ``steps``, each a ``taylor`` run starting from the
  previous step's best checkpoint.

:data:`DRIVERS` maps a method's ``driver`` to its function. Each takes a
``train_fn(config)`` (default: a new run of :func:`core.training.engine.train`);
``reproduce`` and the job engines (:mod:`core.training.executors`) pass one that finds and resumes earlier runs
of the same config; :func:`named_chain` gives an lth chain the name a rerun finds again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable

import yaml

from core.config import TrainConfig
from core.methods.lth import LTHOptions, imp_schedule
from core.methods.taylor import TaylorMethod, TaylorOptions
from core.runs import comparable_config
from core.training.engine import train


def iterative_magnitude_pruning(config: TrainConfig, one_shot: bool = False, progress: bool = True, train_fn=None) -> list:
    """Dense round, then IMP rounds up to the target sparsity (and a one-shot run); one run per round.

    ``train_fn(config)`` trains one round (default: a new run; ``reproduce`` passes one that finds
    and resumes earlier runs of the same config, with a fixed ``chain`` name).
    """

    train_fn = train_fn or (lambda round_config: train(round_config, progress=progress))
    options = LTHOptions.from_config(config)
    chain = options.chain or f"{config.arch}-{uuid.uuid4().hex[:6]}"

    def run(init: str | None, sparsity: float, chain_name: str, round_index: int):
        method_options = {**config.method_options, "sparsity": sparsity, "chain": chain_name, "round": round_index}
        return train_fn(dataclasses.replace(config, init_checkpoint=init, method_options=method_options))

    dense = run(None, 0.0, chain, 0)
    results, source = [dense], dense.run_dir / "last.safetensors"
    for index, sparsity in enumerate(imp_schedule(options.prune_rate, options.target_sparsity), start=1):
        results.append(run(str(source), sparsity, chain, index))
        source = results[-1].run_dir / "last.safetensors"
    if one_shot:
        results.append(run(str(dense.run_dir / "last.safetensors"), options.target_sparsity, f"{chain}-one-shot", 1))
    return results


def named_chain(config: TrainConfig) -> TrainConfig:
    """An lth chain's config with a ``chain`` name of its own (the architecture and a hash of the config) when it has
    none: the default is random, and a grid run again through a job engine must find its rounds' runs again."""
    if config.method_options.get("chain"):
        return config
    digest = hashlib.sha1(json.dumps(comparable_config(config.to_dict()), sort_keys=True).encode()).hexdigest()[:6]
    return dataclasses.replace(config, method_options={**config.method_options, "chain": f"{config.arch}-{digest}"})


def prune_iteratively(config: TrainConfig, steps: int | None = None, one_shot: bool = False, progress: bool = True,
                      train_fn=None) -> list:
    """The schedule as a chain of taylor runs: step ``k`` starts from step ``k-1``'s best checkpoint.

    ``steps`` overrides the options' ``steps``; ``one_shot`` is one step that removes the
    whole ``prune_ratio``. Returns the runs' :class:`core.training.engine.TrainResult`.
    A killed step resumes with ``train --resume``; the later steps are then started
    from its checkpoint by hand (``--init-checkpoint``, ``step``/``steps`` options), or
    ``reproduce`` does it all: its ``train_fn`` finds and resumes each step's run.
    """

    train_fn = train_fn or (lambda step_config: train(step_config, progress=progress))
    TaylorMethod(config).check(config)  # fills the default start and teacher once, for every step
    steps = 1 if one_shot else steps or TaylorOptions.from_config(config).steps
    results, start = [], config.init_checkpoint
    for step in range(1, steps + 1):
        step_config = dataclasses.replace(config, method="taylor", init_checkpoint=start,
                                          method_options={**config.method_options, "steps": steps, "step": step})
        results.append(train_fn(step_config))
        start = str(results[-1].checkpoint)
    return results


def parse_sweep(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` -> (key, typed values); KEY is a TrainConfig field or a method option."""

    key, _, values = text.partition("=")
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not key or not parsed:
        raise ValueError(f"--sweep takes KEY=V1,V2,... (e.g. epochs=5,10; a method option by its name in --help), got {text!r}")
    return key.strip().replace("-", "_"), parsed


def set_sweep_value(config: TrainConfig, key: str, value) -> None:
    """A TrainConfig field, or else a method option (checked when the run's method object is made)."""
    if key in {f.name for f in dataclasses.fields(config)} and key != "method_options":
        setattr(config, key, value)
    else:
        config.method_options = {**config.method_options, key: value}


def grid(config_of: Callable[[int], TrainConfig], seeds: list[int], sweep: str | None = None) -> list[TrainConfig]:
    """One config per (sweep value, seed), sweep-major: ``config_of(seed)`` with the swept key set; one run
    directory each, which ``report`` tabulates."""
    key, values = parse_sweep(sweep) if sweep else (None, [None])
    configs = []
    for value in values:
        for seed in seeds:
            config = config_of(seed)
            if key is not None:
                set_sweep_value(config, key, value)
            configs.append(config)
    return configs


# Method.driver -> the driver that chains its runs (``train`` runs these instead of one run)
DRIVERS = {"imp": iterative_magnitude_pruning, "taylor-steps": prune_iteratively}
