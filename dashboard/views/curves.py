"""Training curves: loss terms, validation accuracy and AUC, active filters, MACs reduction and τ, runs overlaid.

The numbers come from ``core.evaluation.curves``: a run's ``metrics.jsonl`` (updated live while it trains), a
checkpoint's header history, or what an older checkpoint's header holds.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from common import listing
from core.evaluation.curves import Curves, curves_of, epoch_loss_terms, long_epochs, long_steps

st.title("Training curves")
st.caption("Pick runs and checkpoints to overlay. A run being trained redraws every two seconds. The same numbers are in "
           "each run's TensorBoard event files: `make tensorboard`.")


def _sources() -> dict[str, str]:
    """Display name -> run directory or checkpoint: every run (a running one too), then every shipped checkpoint."""
    sources = {f"run: {row['run']}": row["path"] for row in listing("runs") if row.get("status") != "damaged"}
    sources.update({f"shipped: {row['checkpoint']}": row["path"] for row in listing("checkpoints") if "error" not in row})
    return sources


def _default(sources: dict[str, str], running: set[str]) -> list[str]:
    """The runs training now, else the newest three runs, else the shipped students (their search runs' epochs)."""
    training = [name for name, path in sources.items() if path in running]
    newest = [name for name in sources if name.startswith("run: ")][:3]
    shipped = [name for name in sources if name.startswith("shipped: student-")]
    return training or newest or shipped or list(sources)[:1]


sources = _sources()
running = {row["path"] for row in listing("runs") if row.get("status") == "running"}  # run directories training now
if not sources:
    st.info("No runs or checkpoints yet: launch a run from the sidebar.")
    st.stop()
picked = st.multiselect("Runs and checkpoints", list(sources), default=_default(sources, running), key="curves_pick")
axis = st.radio("x axis", ["epoch", "step"], horizontal=True, key="curves_axis",
                help="step: the global training step (runs only; a checkpoint's header holds epochs)")


def _lines(frame: pd.DataFrame, x: str, facet: str, title: str, key: str) -> bool:
    if frame.empty or frame[x].isna().all():
        return False
    frame = frame.dropna(subset=[x])
    rows = -(-frame[facet].nunique() // 3)
    figure = px.line(frame, x=x, y="value", color="run", facet_col=facet, facet_col_wrap=3, markers=True,
                     facet_row_spacing=0.25 / rows, height=80 + 240 * rows, labels={"global_step": "step", "run": ""})
    figure.update_yaxes(matches=None, showticklabels=True, title=None)
    figure.update_xaxes(showticklabels=True)
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))  # "term=bce" -> "bce"
    figure.update_layout(legend={"orientation": "h", "yanchor": "bottom", "y": 1.06, "x": 0}, margin={"t": 70})
    st.subheader(title)
    st.plotly_chart(figure, key=key)
    return True


def draw(paths: list[str]) -> None:
    curves: list[Curves] = [curves_of(path) for path in paths]
    x = "epoch" if axis == "epoch" else "global_step"
    steps = pd.DataFrame(long_steps(curves))
    if axis == "epoch":  # sources without step records (checkpoints) show their epochs' mean loss terms
        steps = pd.concat([steps, pd.DataFrame(epoch_loss_terms(curves))], ignore_index=True)
    drawn = _lines(steps, x, "term", "Loss terms" + (" per logged step" if axis == "step" else ""), "curves_losses")
    drawn |= _lines(pd.DataFrame(long_epochs(curves)), x, "metric", "Per epoch", "curves_epochs")
    if not drawn:
        st.info("Nothing to plot on this axis yet: checkpoints hold epochs, not steps (use the epoch axis), and a run "
                "shows its first points after its first logged step.")
    for c in curves:
        state = f" ({c.status})" if c.status else ""
        st.caption(f"**{c.name}**{state}: {len(c.epochs)} epochs, {len(c.steps)} logged steps"
                   + (f"; {c.note}" if c.note else ""))


if picked:
    paths = [sources[name] for name in picked]
    live = any(path in running for path in paths)
    st.fragment(draw, run_every=2.0 if live else None)(paths)
