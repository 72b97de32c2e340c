"""What the dashboard lists: shipped checkpoints and run directories, as plain rows."""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import SHIPPED_DIR, CheckpointError, compact_cost, has_ood_calibration, is_sidecar, read_header, resolve_checkpoint
from core.models import model_kind
from core.runs import default_runs_dir, list_runs


def checkpoint_rows(directory: Path = SHIPPED_DIR) -> list[dict]:
    """One row per checkpoint file: method, kind, architecture, dataset, size, params, MACs, metrics, and whether it
    has an out-of-distribution calibration (its own, or its ``x.ood.safetensors`` sidecar, which is a property of its
    checkpoint's row, never a row of its own).

    A student's params and MACs are those of its compact (physically pruned) network.

    A damaged file gives a row with its error instead of breaking the listing.
    """
    rows = []
    for path in sorted(Path(directory).glob("*.safetensors")):
        if is_sidecar(path):
            continue
        row = {"checkpoint": path.name, "path": str(path), "megabytes": round(path.stat().st_size / 2**20, 1)}
        try:
            header = read_header(path)
        except CheckpointError as error:
            rows.append({**row, "error": str(error)})
            continue
        rows.append({**row, **header_row(path, header)})
    return rows


def header_row(path: Path, header: dict) -> dict:
    """The listing columns a checkpoint's header (and its sidecar) give."""
    cost = compact_cost(header)
    params, macs = cost["params"] or 0, cost["macs"] or 0
    spec = header.get("model", {})
    return {
        "method": header.get("student_method") or header.get("method"),
        "stage": "fine-tuned" if header.get("finetuned_from") else "trained",
        "arch": spec.get("arch"), "kind": model_kind(spec),
        "dataset": header.get("dataset"), "image_size": header.get("image_size"),
        "params_m": round(params / 1e6, 2), "macs_m": round(macs / 1e6, 1),
        **({"params_reduction": round(cost["params_reduction"], 4), "macs_reduction": round(cost["macs_reduction"], 4)}
           if cost["pruned"] else {}),
        "ood_calibration": has_ood_calibration(path, header),
        **header.get("metrics", {}),
    }


def run_rows(runs_dir: Path | None = None) -> list[dict]:
    """One summary row per run directory, newest first; damaged runs say so."""
    rows = []
    for run in list_runs(runs_dir or default_runs_dir()):
        try:
            row = run.summary()
        except (OSError, ValueError) as error:
            rows.append({"run": run.dir.name, "path": str(run.dir), "status": "damaged", "error": str(error)})
            continue
        if run.best_checkpoint.is_file():
            try:
                row.update({key: value for key, value in header_row(run.best_checkpoint, read_header(run.best_checkpoint)).items()
                            if key != "method"})  # the run's method (a student's own), as its config names it
            except (ValueError, KeyError, TypeError) as error:  # CheckpointError is a ValueError
                row["error"] = str(error)
        rows.append(row)
    return rows


SHIPPED_TICKETS = SHIPPED_DIR / "tickets"  # a shipped lottery-ticket chain: one checkpoint per round


def ticket_rows(runs_dir: Path | None = None, shipped: Path = SHIPPED_TICKETS) -> list[dict]:
    """One row per finished lottery-ticket run, and per shipped ticket checkpoint: chain, round, sparsity, surviving
    parameters, test metrics."""

    sources = [(run.dir.name, run.dir, False) for run in list_runs(runs_dir or default_runs_dir())]
    sources += [(path.stem, path, True) for path in sorted(Path(shipped).glob("*.safetensors")) if not is_sidecar(path)]
    rows = []
    for name, source, is_shipped in sources:
        try:
            header = read_header(resolve_checkpoint(source))
        except (CheckpointError, OSError):
            continue
        if "lth" not in header:
            continue
        ticket, metrics = header["lth"], header.get("metrics", {})
        rows.append({"run": name, "path": str(source), "shipped": is_shipped, "arch": header["model"]["arch"],
                     "dataset": header.get("dataset"),
                     "chain": ticket.get("chain", ""), "round": ticket.get("round", 0), "sparsity": ticket["sparsity"],
                     "surviving_params": ticket["surviving_params"], "dense_params": ticket["dense_params"],
                     "test_accuracy": metrics.get("test_accuracy"), "test_auc": metrics.get("test_auc")})
    return sorted(rows, key=lambda row: (row["shipped"], row["chain"], row["round"]))  # the user's own chains first
