"""Paper-style reports over run directories and checkpoints: CSV + Markdown tables and plotly figures.

Tables (each written as ``<name>.csv`` and ``<name>.md``, all gathered in ``report.md``):

- ``main``: method, trained on, compression (MACs reduction), test accuracy (mean ± std
  over seeds), p-values against KDFS on the same data over seeds, Welch's t-test and Student's (the paper's
  t-tests are over 10 seeds and it does not say which it used),
  Δaccuracy vs the teacher, params, MACs and reductions (the paper's Table 5);
- ``cross_dataset``: accuracy (AUC) of every checkpoint on every dataset, zero-shot (unchanged checkpoints);
- ``cross_dataset_video`` (when a dataset is one of DeepfakeBench's benchmarks, FF++ / Celeb-DF / DFDC): per
  checkpoint, frame-level AUC and video-level AUC, EER and AP on each, with DeepfakeBench's published rows
  (frame-level AUC; ``deepfakebench`` in ``configs/protocols.yaml``) beside them;
- ``transfer`` (when the report holds transfer runs, ``python -m core transfer``): cross-dataset transfer after
  fine-tuning, source x target, the lr of each grid kept by validation accuracy (the Pearson paper's Table 8),
  with its published columns left empty (not typed in; none is invented);
- ``mcnemar``: every pair of checkpoints trained on the same data, on its test split;
- ``mcnemar_pair`` (``report --mcnemar A B --on D``): two checkpoints trained anywhere, on one test set (the
  paper's Table 9), each with its own preprocess;
- ``training_time``: wall time, epochs, seconds per epoch and throughput per run (Table 6);
- ``ablation``: runs of one method and dataset that differ in hyperparameters (Table 7);
- ``deployment``: size on disk, params, MACs and CPU latency at batch 1 and 32, measured
  side by side in one process (the NTU report's columns); ONNX exports (``.onnx``, fp32 or
  int8) take part like any checkpoint, marked by their runtime.

Datasets are specs (:mod:`core.evaluation.cross_dataset`): ``NAME=ROOT`` gives a registered dataset its own root,
so each benchmark of one report has its folder; each checkpoint's own dataset is added.

Figures: ``roc.html``/``.png`` (ROC curves, AUC in the legend) and
``active_filters.html``/``.png`` (per-layer active-filter percentages of the students);
the PNGs need kaleido and a Chromium, and are skipped with a warning without them. Predictions come from the
cache (:mod:`core.evaluation.evaluate`), so a second report recomputes nothing.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save

from core.checkpoint import compact_cost, is_onnx, read_header, resolve_checkpoint
from core.evaluation.cross_dataset import (
    DatasetSpec,
    benchmark_of,
    evaluate_matrix,
    matrix_records,
    parse_dataset_specs,
    published_benchmarks,
)
from core.evaluation.evaluate import Evaluation, evaluate, roc_figure
from core.evaluation.latency import measure_latency
from core.io import atomic_write, atomic_write_text
from core.methods import METHODS
from core.methods.transfer import kept_run
from core.models import build_model
from core.models.loading import load_model
from core.pruning.flops import profile_model
from core.pruning.surgery import compact_of
from core.runs import Run
from core.stats import mcnemar_paired, mean_std, ttest


@dataclass
class Entry:
    """One checkpoint in a report, with its run directory when it has one."""

    name: str
    checkpoint: Path
    header: dict
    run: Run | None = None
    evaluations: dict[str, Evaluation] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.header.get("student_method") or self.header.get("method", "?")

    @property
    def trained_on(self) -> str:
        return self.header.get("config", {}).get("data") or self.header.get("dataset", "?")

    @property
    def runtime(self) -> str:
        """``""`` for a PyTorch checkpoint, ``"ONNX fp32"`` / ``"ONNX int8"`` for an export."""
        deploy = self.header.get("deploy")
        return f"ONNX {deploy['precision']}" if deploy else ""

    @property
    def group(self) -> tuple:
        """Runs that differ only in the seed form one group (mean ± std over seeds); an export is its own group."""
        config = dict(self.header.get("config", {}))
        for key in ("seed", "runs_dir", "device", "num_workers", "log_every"):
            config.pop(key, None)
        return self.method, self.trained_on, repr(sorted((k, repr(v)) for k, v in config.items())), self.runtime


def collect_entries(paths: list[str | os.PathLike]) -> list[Entry]:
    entries = []
    names: set[str] = set()
    for raw in paths:
        path = Path(raw)
        checkpoint = resolve_checkpoint(path)
        run = Run(path) if path.is_dir() and (path / "config.json").is_file() else None
        name = path.name if run else path.name.removesuffix(".safetensors").removesuffix(".pt")
        while name in names:
            name += "'"
        names.add(name)
        entries.append(Entry(name, checkpoint, read_header(checkpoint), run))
    return entries


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def baseline_method() -> str:
    """The method the others are tested against (``Method.baseline``: the papers' KDFS)."""

    return next(name for name, method in METHODS.items() if method.baseline)


def main_table(entries: list[Entry], split: str) -> pd.DataFrame:

    groups: dict[tuple, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    accuracy = {key: [e.evaluations[e.trained_on].metrics()["accuracy"] for e in members] for key, members in groups.items()}
    teachers = {e.trained_on: accuracy[e.group] for e in entries if e.method == "teacher"}
    baseline = baseline_method()
    baselines = {key[1]: values for key, values in accuracy.items() if key[0] == baseline}
    rows = []
    for key, members in groups.items():
        method, data = key[0], key[1]
        first = members[0]
        cost = compact_cost(first.header)  # a pruned network: against the dense one it came from (teacher, or Taylor's)
        size = first.header.get("image_size")
        if cost["pruned"]:
            params, macs = cost["params"], cost["macs"]
            full = {"params": cost["full_params"], "macs": cost["full_macs"]}
        else:
            params, macs = first.header.get("params"), first.header.get("macs")
            full = profile_model(build_model(first.header["model"]["arch"]), size) if first.header.get("model", {}).get(
                "type") == "resnet" else {"params": params, "macs": macs}
        mean, std = mean_std(accuracy[key])
        p_value = p_student = None  # Welch's t (unequal variances) and Student's (pooled): the paper names neither
        if method != baseline and data in baselines and len(baselines[data]) >= 2 and len(accuracy[key]) >= 2:
            p_value = ttest(accuracy[key], baselines[data])[1]
            p_student = ttest(accuracy[key], baselines[data], equal_var=True)[1]
        teacher = teachers.get(data)
        rows.append({
            "method": f"{method} ({first.runtime})" if first.runtime else method, "trained on": data, "seeds": len(members),
            "compression (MACs)": _fmt(1 - macs / full["macs"], 3) if full["macs"] else "–",
            f"{split} accuracy": f"{100 * mean:.2f} ± {100 * std:.2f}" if len(members) > 1 else f"{100 * mean:.2f}",
            f"p vs {baseline.upper()}": _fmt(p_value, 4),
            f"p vs {baseline.upper()} (Student's t)": _fmt(p_student, 4),
            "Δacc vs teacher": _fmt(100 * (mean - sum(teacher) / len(teacher)), 2) if teacher and method != "teacher" else "–",
            "params (M)": f"{params / 1e6:.2f}", "MACs (M)": f"{macs / 1e6:.1f}",
            "params ↓": f"{100 * (1 - params / full['params']):.1f}%", "MACs ↓": f"{100 * (1 - macs / full['macs']):.1f}%",
            "image size": size,
        })
    return _table(rows)


def published_table(rows: list[dict]) -> pd.DataFrame:
    """Measured beside published (``reproduce``): accuracy (mean ± std over seeds), params, reductions, deltas.

    ``rows`` as :func:`core.training.protocols.measured_rows` gives them: ``accuracy`` in [0, 1], ``params``
    counts, reductions as fractions; ``published`` in the paper's units (%, millions).
    """

    def percent(mean: float, std: float | None) -> str:
        return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")

    teacher = next((r for r in rows if r["method"] == "teacher"), None)
    baseline = next((r for r in rows if r["method"] == baseline_method()), None)
    table = []
    for row in rows:
        published = row.get("published") or {}
        name = row["method"] + (f" ({row['label']})" if row.get("label") and row["method"] != "teacher" else "")
        p_value = p_student = None
        if baseline is not None and row is not baseline and row["method"] != "teacher" \
                and len(row["accuracies"]) >= 2 and len(baseline["accuracies"]) >= 2:
            p_value = ttest(row["accuracies"], baseline["accuracies"])[1]
            p_student = ttest(row["accuracies"], baseline["accuracies"], equal_var=True)[1]
        published_teacher = (teacher or {}).get("published", {}).get("accuracy")
        entry = {
            "method": name, "seeds": row["seeds"],
            "accuracy % (measured)": percent(row["accuracy"], row.get("accuracy_std")),
            "accuracy % (published)": _fmt(published.get("accuracy"), 2) + (
                f" ± {published['accuracy_std']:.2f}" if "accuracy_std" in published else ""),
            "Δ accuracy (points)": _fmt(100 * row["accuracy"] - published["accuracy"], 2) if "accuracy" in published else "–",
            f"p vs {baseline_method().upper()}": _fmt(p_value, 4),
            f"p vs {baseline_method().upper()} (Student's t)": _fmt(p_student, 4),
            "Δ vs teacher (measured)": _fmt(100 * (row["accuracy"] - teacher["accuracy"]), 2)
            if teacher is not None and row is not teacher else "–",
            "Δ vs teacher (published)": _fmt(published["accuracy"] - published_teacher, 2)
            if published_teacher is not None and "accuracy" in published and row is not teacher else "–",
            "params M (measured)": _fmt(row["params"] / 1e6, 2) if row.get("params") else "–",
            "params M (published)": _fmt(published.get("params"), 2),
            "params ↓ % (measured)": _fmt(100 * row["params_reduction"], 2),
            "params ↓ % (published)": _fmt(published.get("params_reduction"), 2),
            "MACs ↓ % (measured)": _fmt(100 * row["macs_reduction"], 2),
            "FLOPs ↓ % (published)": _fmt(published.get("flops_reduction"), 2),
            "Δ MACs ↓ (points)": _fmt(100 * row["macs_reduction"] - published["flops_reduction"], 2)
            if "flops_reduction" in published else "–",
            "MACs M (measured)": _fmt(row["macs"] / 1e6, 1) if row.get("macs") else "–",
            "image size": row.get("image_size"),
        }
        table.append(entry)
    return _table(table)


def _matrix(entries: list[Entry], datasets: list[str]) -> pd.DataFrame:
    """The cross-dataset matrix (:func:`core.evaluation.cross_dataset.matrix_records`) of the report's evaluations."""
    records = matrix_records({(entry.name, data): entry.evaluations[data] for entry in entries for data in datasets})
    return records.set_index(["checkpoint", "dataset"])


def cross_dataset_table(entries: list[Entry], datasets: list[str]) -> pd.DataFrame:
    matrix = _matrix(entries, datasets)
    rows = []
    for entry in entries:
        row = {"checkpoint": entry.name, "trained on": entry.trained_on}
        for data in datasets:
            cell = matrix.loc[(entry.name, data)]
            row[data] = f"{cell['frame_accuracy']:.3f} ({_fmt(cell['frame_auc'], 3)})"
        rows.append(row)
    return _table(rows)


PUBLISHED_LABEL = "published (DeepfakeBench)"


def cross_dataset_video_table(entries: list[Entry], specs: Sequence[DatasetSpec]) -> pd.DataFrame | None:
    """DeepfakeBench's layout on the datasets that are its benchmarks: per checkpoint, frame-level AUC and video-level
    AUC, EER and AP on each; then the published rows, frame-level AUC only (their video-level cells stay empty: those
    numbers are not typed in ``configs/protocols.yaml``). ``None`` when no dataset is one of its benchmarks."""
    published = published_benchmarks()
    order = list(published["benchmarks"])
    resolved = {spec.label: entries[0].evaluations[spec.label].dataset for spec in specs}  # the loader's name for it
    benchmarks = sorted(((spec, b) for spec in specs if (b := benchmark_of(resolved[spec.label])) is not None),
                        key=lambda pair: order.index(pair[1]))  # the published table's column order
    if not benchmarks:
        return None
    matrix = _matrix(entries, [spec.label for spec, _ in benchmarks])
    named = [benchmark for _, benchmark in benchmarks]
    heading = {spec.label: benchmark if named.count(benchmark) == 1 else f"{spec.label} ({benchmark})"
               for spec, benchmark in benchmarks}  # the benchmark's name, or with its dataset when two are one
    rows = []
    for entry in entries:
        row = {"detector": entry.name, "trained on": entry.trained_on, "numbers": "measured"}
        for spec, _ in benchmarks:
            cell, name = matrix.loc[(entry.name, spec.label)], heading[spec.label]
            row[f"{name} frame AUC"] = _fmt(cell["frame_auc"], 3)
            for metric in ("auc", "eer", "ap"):
                row[f"{name} video {metric.upper()}"] = _fmt(cell[f"video_{metric}"], 3)
        rows.append(row)
    for detector, values in published["published"].items():
        row = {"detector": detector, "trained on": published["benchmarks"][published["trained_on"]]["title"],
               "numbers": PUBLISHED_LABEL}
        for spec, benchmark in benchmarks:
            name = heading[spec.label]
            row[f"{name} frame AUC"] = _fmt(values[benchmark], 3) if benchmark in values else ""
            for metric in ("auc", "eer", "ap"):
                row[f"{name} video {metric.upper()}"] = ""
        rows.append(row)
    return _table(rows)


def mcnemar_table(entries: list[Entry]) -> pd.DataFrame:
    rows = []
    for a, b in itertools.combinations(entries, 2):
        if a.trained_on != b.trained_on:
            continue
        data = a.trained_on
        result = mcnemar_paired(a.evaluations[data].correct(), b.evaluations[data].correct())
        table = result["table"]
        rows.append({
            "A": a.name, "B": b.name, "tested on": data, "n": result["n"],
            "both correct": table[0][0], "only A correct": table[0][1], "only B correct": table[1][0], "both wrong": table[1][1],
            "acc A": f"{result['accuracy_a']:.4f}", "acc B": f"{result['accuracy_b']:.4f}",
            "statistic": f"{result['statistic']:.3f}", "p-value": f"{result['p_value']:.4g}", "test": result["method"],
            "significant (0.05)": "yes" if result["significant_at_0.05"] else "no",
        })
    return _table(rows)


TRANSFER_CAPTION = ("Cross-dataset transfer after fine-tuning (the Pearson paper's Table 8; `python -m core transfer`): "
                    "a row is the checkpoint transferred (the dataset it was trained on, and its method), a column the "
                    "target; a cell is the test accuracy (%) on the target of the run kept from its lr grid (the best "
                    "validation accuracy), mean ± std where several source checkpoints or seeds were transferred, and "
                    "the lr kept. The published columns are empty: the paper's Table 8 numbers are not typed in "
                    "configs/protocols.yaml, and none is invented.")
# config keys that do not make two transfer runs different experiments (the lr is the grid's own axis)
_NOT_THE_GRID = ("lr", "runs_dir", "device", "num_workers", "log_every")


def transfer_grids(entries: list[Entry]) -> list[list[Entry]]:
    """The transfer runs of a report, one list per lr grid: the runs whose configs differ in the lr alone (the same
    source checkpoint, target, seed and settings)."""
    grids: dict[str, list[Entry]] = {}
    for entry in entries:
        if not entry.header.get("transfer"):
            continue
        config = {k: v for k, v in entry.header.get("config", {}).items() if k not in _NOT_THE_GRID}
        grids.setdefault(repr(sorted((k, repr(v)) for k, v in config.items())), []).append(entry)
    return list(grids.values())


def transfer_table(entries: list[Entry]) -> pd.DataFrame | None:
    """The ``transfer`` table (:data:`TRANSFER_CAPTION`); None without transfer runs.

    A row is a source dataset and method; the kept runs of its grids average into a cell when they differ in the
    seed or the source checkpoint alone (the seeds of a protocol). Grids that differ in a setting too (the epochs, the
    normalisation of the BatchNorms, ...) get rows of their own, the differing settings in a ``settings`` column."""

    kept = []
    for grid in transfer_grids(entries):
        entry = grid[kept_run([member.header for member in grid])]
        config = entry.header.get("config", {})
        setting = {k: v for k, v in {**config, **config.get("method_options", {})}.items()
                   if k not in (*_NOT_THE_GRID, "seed", "init_checkpoint", "data", "data_root", "teacher", "method_options")}
        kept.append((entry, setting))
    if not kept:
        return None
    varying = sorted(k for k in {k for _, setting in kept for k in setting}
                     if len({repr(setting.get(k)) for _, setting in kept}) > 1)
    targets = list(dict.fromkeys(entry.trained_on for entry, _ in kept))
    cells: dict[tuple, dict[str, list[Entry]]] = {}
    for entry, setting in kept:
        record = entry.header["transfer"]
        label = ", ".join(f"{k}={setting.get(k)}" for k in varying)
        cells.setdefault((record["source_dataset"], record.get("source_method") or "?", label), {}).setdefault(
            entry.trained_on, []).append(entry)
    rows = []
    for (source, method, label), by_target in cells.items():
        row = {"source (trained on)": source, "model": method, **({"settings": label} if varying else {})}
        for target in targets:
            runs = by_target.get(target, [])
            text = ""
            if runs:
                mean, std = mean_std([run.evaluations[target].metrics()["accuracy"] for run in runs])
                lrs = ", ".join(f"{lr:g}" for lr in dict.fromkeys(run.header["config"]["lr"] for run in runs))
                text = (f"{100 * mean:.2f}" + (f" ± {100 * std:.2f} ({len(runs)} runs)" if len(runs) > 1 else "")
                        + f" (lr {lrs})")
            row[f"{target} (measured)"] = text
            row[f"{target} (published)"] = ""
        rows.append(row)
    return _table(rows)


MCNEMAR_PAIR_CAPTION = ("McNemar's test between two checkpoints on one test set (the Pearson paper's Table 9: models "
                        "trained on different datasets, tested on one), each scored with its own preprocess; table "
                        "[[both correct, only A correct], [only B correct, both wrong]]. The published p-value column is "
                        "empty: the paper's Table 9 numbers are not typed in configs/protocols.yaml, and none is "
                        "invented.")


def mcnemar_pair(checkpoint_a: str | os.PathLike, checkpoint_b: str | os.PathLike, data: str, split: str = "test",
                 data_root: str | None = None, progress: bool = True) -> dict:
    """McNemar between any two checkpoints on one dataset split (``data``: a dataset spec, ``NAME=ROOT``, ``NAME``
    under ``data_root``, or a path), from the prediction cache where it can: the contingency table, statistic,
    p-value and test of :func:`core.stats.mcnemar_report`, with what each checkpoint was trained on.

    Both must have scored the same images; otherwise (a cache entry or a decoder that left some out for one of
    them) a ValueError says how many differ."""

    paths = [resolve_checkpoint(checkpoint_a), resolve_checkpoint(checkpoint_b)]  # a missing one fails before any work
    specs = parse_dataset_specs([data], data_root)
    if len(specs) != 1:
        raise ValueError(f"--on takes one dataset, got {data!r}")
    spec = specs[0]
    evaluations = [evaluate(path, spec.name, split, spec.root, progress=progress) for path in paths]
    correct_a, correct_b = (evaluation.correct() for evaluation in evaluations)
    if correct_a.keys() != correct_b.keys():
        raise ValueError(f"the two checkpoints were scored on different images of {spec.text}/{split}: "
                         f"{len(correct_a.keys() - correct_b.keys())} only by A, {len(correct_b.keys() - correct_a.keys())} "
                         "only by B; McNemar pairs the same samples (evaluate both with --no-cache to rescore them)")
    result = mcnemar_paired(correct_a, correct_b)
    headers = [read_header(path) for path in paths]
    return {"a": str(checkpoint_a), "b": str(checkpoint_b), "checkpoint_a": str(paths[0]), "checkpoint_b": str(paths[1]),
            "a_trained_on": Entry("a", paths[0], headers[0]).trained_on,
            "b_trained_on": Entry("b", paths[1], headers[1]).trained_on,
            "tested_on": evaluations[0].dataset, "split": split, **result, "test": result["method"]}


def mcnemar_pair_table(pair: dict) -> pd.DataFrame:
    """One row of :func:`mcnemar_pair`, in the ``mcnemar`` table's columns, with a published p-value left empty."""
    table = pair["table"]
    return _table([{
        "A": pair["a"], "B": pair["b"], "A trained on": pair["a_trained_on"], "B trained on": pair["b_trained_on"],
        "tested on": f"{pair['tested_on']}/{pair['split']}", "n": pair["n"],
        "both correct": table[0][0], "only A correct": table[0][1], "only B correct": table[1][0], "both wrong": table[1][1],
        "acc A": f"{pair['accuracy_a']:.4f}", "acc B": f"{pair['accuracy_b']:.4f}",
        "statistic": f"{pair['statistic']:.3f}", "p-value": f"{pair['p_value']:.4g}", "test": pair["test"],
        "significant (0.05)": "yes" if pair["significant_at_0.05"] else "no", "p-value (published)": "",
    }])


def write_mcnemar_pair(pair: dict, out: str | os.PathLike) -> str:
    """``mcnemar_pair.csv``/``.md`` in ``out``, and its section in ``report.md`` (added to a report already there)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    section = f"## mcnemar pair\n\n{write_table(mcnemar_pair_table(pair), out, 'mcnemar_pair')}\n\n{MCNEMAR_PAIR_CAPTION}\n"
    report = out / "report.md"
    atomic_write_text(report, (report.read_text() + "\n" if report.is_file() else "# Report\n\n") + section)
    return str(out / "mcnemar_pair.md")


def training_time_table(entries: list[Entry]) -> pd.DataFrame:
    rows = []
    for entry in entries:
        if entry.run is None:
            continue
        epochs = entry.run.metrics("epoch")
        seconds = sum(r["train_seconds"] for r in epochs)
        images = sum(r["images_per_s"] * r["train_seconds"] for r in epochs)
        environment = entry.run.dir / "env.json"
        device = ""
        if environment.is_file():

            device = json.loads(environment.read_text()).get("device", "")
        rows.append({"run": entry.name, "method": entry.method, "data": entry.trained_on, "epochs": len(epochs),
                     "train time (min)": f"{seconds / 60:.1f}", "s / epoch": f"{seconds / max(len(epochs), 1):.1f}",
                     "images / s": f"{images / max(seconds, 1e-9):.1f}", "device": device})
    return _table(rows)


def ablation_table(entries: list[Entry]) -> pd.DataFrame:
    """Runs of one method and dataset whose hyperparameters differ: the varying ones become columns."""
    by_method: dict[tuple, list[Entry]] = {}
    for entry in entries:
        if entry.run is not None:
            by_method.setdefault((entry.method, entry.trained_on), []).append(entry)
    rows = []
    for (method, data), members in by_method.items():
        flat = [{**{k: v for k, v in e.header.get("config", {}).items() if k != "method_options"},
                 **e.header.get("config", {}).get("method_options", {})} for e in members]
        keys = sorted({k for f in flat for k in f} - {"seed", "runs_dir", "device", "num_workers", "log_every",
                                                        "init_checkpoint", "teacher"})
        varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
        if len(members) < 2 or not varying:
            continue
        for entry, values in zip(members, flat, strict=True):
            metrics = entry.evaluations[data].metrics()
            cost = compact_cost(entry.header)
            rows.append({"method": method, "data": data, **{k: values.get(k) for k in varying},
                         "accuracy": f"{metrics['accuracy']:.4f}", "AUC": _fmt(metrics["auc"], 4),
                         "params (M)": f"{(cost['params'] or 0) / 1e6:.2f}", "MACs (M)": f"{(cost['macs'] or 0) / 1e6:.1f}",
                         "params ↓": _fmt(cost["params_reduction"] if cost["pruned"] else None, 3),
                         "MACs ↓": _fmt(cost["macs_reduction"] if cost["pruned"] else None, 3)})
    return _table(rows)


def deployment_table(entries: list[Entry], repeats: int = 20) -> pd.DataFrame:
    """Size on disk (fp32 safetensors of the deployable network; an ONNX export: its file), params, MACs,
    CPU latency at batch 1 and 32."""


    models, rows = {}, {}
    for entry in entries:
        model, header = compact_of(load_model(entry.checkpoint))
        size = header["image_size"]
        if is_onnx(entry.checkpoint):  # an ONNX graph: the counts its export recorded, the size of its file
            cost, kind, megabytes = header, f"{header['model']['type']} ({entry.runtime})", entry.checkpoint.stat().st_size / 2**20
        else:
            state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
                     for k, v in model.state_dict().items()}
            cost, kind, megabytes = profile_model(model, size), header["model"]["type"], len(save(state)) / 2**20
        models[entry.name] = model
        rows[entry.name] = {"checkpoint": entry.name, "kind": kind, "image size": size, "size (MB)": f"{megabytes:.1f}",
                            "params (M)": f"{cost['params'] / 1e6:.2f}", "MACs (M)": f"{cost['macs'] / 1e6:.1f}"}
    sizes = {entry.header["image_size"] for entry in entries}
    for batch in (1, 32):
        for size in sorted(sizes):
            group = {e.name: models[e.name] for e in entries if e.header["image_size"] == size}
            timings = measure_latency(group, size, batch=batch, repeats=repeats if batch == 1 else max(5, repeats // 4))
            base = max(t["median_s"] for t in timings.values())
            for name, timing in timings.items():
                rows[name][f"latency b{batch} (ms)"] = f"{1000 * timing['median_s']:.2f}"
                rows[name][f"speed-up b{batch}"] = f"{base / timing['median_s']:.2f}×"
    return _table(list(rows.values()))


def save_figure(figure, out: Path, name: str, png: bool = True) -> list[str]:
    """``<name>.html`` always; ``<name>.png`` too when kaleido finds a Chromium to render with."""
    atomic_write_text(out / f"{name}.html", figure.to_html(include_plotlyjs="cdn", full_html=True))
    written = [f"{name}.html"]
    if not png:
        return written
    try:

        atomic_write(out / f"{name}.png", lambda tmp: Path(tmp).write_bytes(figure.to_image(format="png", scale=2)))
        written.append(f"{name}.png")
    except Exception as error:  # noqa: BLE001 - no kaleido or no browser: the HTML still stands

        logging.getLogger(__name__).warning("PNG skipped for %s (%s: %s)", name, type(error).__name__, error)
    return written


def active_filters_figure(entries: list[Entry]):
    import plotly.graph_objects as go  # imported when a figure is drawn (slow to import)

    figure = go.Figure()
    for entry in entries:
        pruning = entry.header.get("pruning")
        if not pruning:
            continue
        percent = [100 * a / c for a, c in zip(pruning["active_filters"], pruning["channels"], strict=True)]
        figure.add_trace(go.Bar(x=pruning["layers"], y=percent, name=entry.name))
    if not figure.data:
        return None
    figure.update_layout(title="Active filters per layer (%)", barmode="group", yaxis_title="% of filters kept",
                         width=1200, height=500)
    return figure


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' own needs the optional ``tabulate``)."""
    if not len(table):
        return "(nothing to compare)"
    cell = lambda value: _fmt(value).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write_table(table: pd.DataFrame, out: Path, name: str) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    atomic_write_text(out / f"{name}.csv", buffer.getvalue())
    markdown = to_markdown(table)
    atomic_write_text(out / f"{name}.md", markdown + "\n")
    return markdown


def report_specs(entries: list[Entry], datasets: str | Sequence[str | DatasetSpec] | None,
                 data_root: str | None = None) -> list[DatasetSpec]:
    """The report's datasets: those given (specs; ``data_root`` is the root of a name given without one), then each
    checkpoint's own, under ``data_root`` or the root it was trained with (a given name that is a checkpoint's own
    dataset and has no root takes that one too)."""
    given = parse_dataset_specs(datasets, data_root) if isinstance(datasets, str) else list(datasets or [])
    specs = [d if isinstance(d, DatasetSpec) else parse_dataset_specs([d], data_root)[0] for d in given]
    own: dict[str, str | None] = {}
    for entry in entries:
        own.setdefault(entry.trained_on, data_root or entry.header.get("data_root"))
    specs = [replace(spec, root=own[spec.label]) if spec.root is None and spec.is_named and spec.label in own else spec
             for spec in specs]
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a dataset is given twice in {', '.join(labels)}: give each dataset once")
    return specs + [DatasetSpec(data, root) for data, root in sorted(own.items()) if data not in labels]


def build_report(paths: list[str | os.PathLike], out: str | os.PathLike,
                 datasets: str | Sequence[str | DatasetSpec] | None = None, split: str = "test",
                 data_root: str | None = None, latency: bool = True, progress: bool = True,
                 figures_wanted: bool = True, png: bool = True) -> dict:
    """Evaluate (from the cache where possible) and write every table and figure; returns what was written.

    ``datasets``: specs (:func:`core.evaluation.cross_dataset.parse_dataset_specs`: ``NAME=ROOT``, ``NAME`` or a
    path; one string of them, comma-separated, or a list); ``data_root``: the root of a name given without one.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = collect_entries(paths)
    if not entries:
        raise ValueError("report needs at least one run directory or checkpoint")
    specs = report_specs(entries, datasets, data_root)
    labels = [spec.label for spec in specs]
    evaluations = evaluate_matrix({entry.name: entry.checkpoint for entry in entries}, specs, split, progress)
    for (name, data), evaluation in evaluations.items():
        next(entry for entry in entries if entry.name == name).evaluations[data] = evaluation
    computed = sum(not evaluation.cached for evaluation in evaluations.values())
    tables = {
        "main": main_table(entries, split),
        "cross_dataset": cross_dataset_table(entries, labels),
    }
    video = cross_dataset_video_table(entries, specs)
    if video is not None:
        tables["cross_dataset_video"] = video
    tables |= {
        "mcnemar": mcnemar_table(entries),
        "training_time": training_time_table(entries),
        "ablation": ablation_table(entries),
    }
    transfer = transfer_table(entries)
    if transfer is not None:
        tables["transfer"] = transfer
    if latency:
        tables["deployment"] = deployment_table(entries)
    published = published_benchmarks()
    captions = {"cross_dataset_video": f"Frame- and video-level (a video's score: the mean of its frames' P(fake)). "
                                       f"Rows marked {PUBLISHED_LABEL}: {published['source']}; frame-level AUC only, "
                                       "their video-level cells are left empty.",
                "transfer": TRANSFER_CAPTION}
    sections = [f"# Report\n\n{len(entries)} checkpoints, {split} split; datasets: "
                f"{', '.join(spec.text for spec in specs)}.\n"]
    for name, table in tables.items():
        caption = f"\n{captions[name]}\n" if name in captions else ""
        sections.append(f"## {name.replace('_', ' ')}\n\n{write_table(table, out, name)}\n{caption}")
    figures = save_figure(roc_figure({f"{e.name} on {e.trained_on}": e.evaluations[e.trained_on].roc() for e in entries})
                          .update_layout(width=800, height=600), out, "roc", png) if figures_wanted else []
    bars = active_filters_figure(entries) if figures_wanted else None
    if bars is not None:
        figures += save_figure(bars, out, "active_filters", png)
    atomic_write_text(out / "report.md", "\n".join(sections))
    return {"out": str(out), "tables": {name: str(out / f"{name}.md") for name in tables}, "figures": figures,
            "evaluations": len(evaluations), "computed": computed,
            "seconds": round(time.perf_counter() - started, 2), "torch_threads": torch.get_num_threads()}
