"""What the dashboard lists: shipped checkpoints and run directories, as plain rows."""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import SHIPPED_DIR, CheckpointError, compact_cost, read_header
from core.runs import default_runs_dir, list_runs


def checkpoint_rows(directory: Path = SHIPPED_DIR) -> list[dict]:
    """One row per ``*.safetensors`` file: method, dataset, size, params, MACs, metrics.

    A student's params and MACs are those of its compact (physically pruned) network.

    A damaged file gives a row with its error instead of breaking the listing.
    """
    rows = []
    for path in sorted(Path(directory).glob("*.safetensors")):
        row = {"checkpoint": path.name, "path": str(path), "megabytes": round(path.stat().st_size / 2**20, 1)}
        try:
            header = read_header(path)
        except CheckpointError as error:
            rows.append({**row, "error": str(error)})
            continue
        cost = compact_cost(header)
        params, macs = cost["params"] or 0, cost["macs"] or 0
        row.update({
            "method": header.get("student_method") or header.get("method"),
            "stage": "fine-tuned" if header.get("finetuned_from") else "trained",
            "arch": header.get("model", {}).get("arch"),
            "kind": header.get("model", {}).get("type"),
            "dataset": header.get("dataset"), "image_size": header.get("image_size"),
            "params_m": round(params / 1e6, 2), "macs_m": round(macs / 1e6, 1),
            **({"params_reduction": round(cost["params_reduction"], 4), "macs_reduction": round(cost["macs_reduction"], 4)}
               if cost["pruned"] else {}),
            **header.get("metrics", {}),
        })
        rows.append(row)
    return rows


def run_rows(runs_dir: Path | None = None) -> list[dict]:
    """One summary row per run directory, newest first; damaged runs say so."""
    rows = []
    for run in list_runs(runs_dir or default_runs_dir()):
        try:
            rows.append(run.summary())
        except (OSError, ValueError) as error:
            rows.append({"run": run.dir.name, "path": str(run.dir), "status": "damaged", "error": str(error)})
    return rows


SHIPPED_TICKETS = SHIPPED_DIR / "tickets"  # a shipped lottery-ticket chain: one checkpoint per round


def ticket_rows(runs_dir: Path | None = None, shipped: Path = SHIPPED_TICKETS) -> list[dict]:
    """One row per finished lottery-ticket run, and per shipped ticket checkpoint: chain, round, sparsity, surviving
    parameters, test metrics."""
    from core.checkpoint import resolve_checkpoint

    sources = [(run.dir.name, run.dir, False) for run in list_runs(runs_dir or default_runs_dir())]
    sources += [(path.stem, path, True) for path in sorted(Path(shipped).glob("*.safetensors")) if ".ood." not in path.name]
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
