"""Overview: what is shipped, what has run, and the embedded benchmark (generated on first launch)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from common import listing, listing_frame
from core.data.synthetic import SOURCES, default_root, ensure_benchmark, read_manifest, split_totals

st.title("Lightweight deepfake face detection")
st.caption("Teachers, distilled and pruned students, and what the pruning did.")


def _table(title: str, kind: str, empty: str) -> None:
    st.subheader(title)
    rows = listing(kind)
    if rows:
        st.dataframe(listing_frame(rows), hide_index=True, width="stretch")
    else:
        st.info(empty)


_table("Shipped checkpoints", "checkpoints",
       "No checkpoints in checkpoints/ yet. Train one: `python -m core train --method teacher --data synthetic --preset quick`.")
_table("Runs", "runs", "No training runs in runs/ yet. Launch one from the sidebar.")

st.subheader("Embedded synthetic benchmark")
if read_manifest(default_root()) is None:
    # first launch: generate it here, with a progress bar
    bar = st.progress(0.0, text="Generating the embedded benchmark (first launch)...")
    ensure_benchmark(progress=False, on_progress=lambda done, total: bar.progress(done / total, text=f"{done:,}/{total:,} images"))
    bar.empty()
manifest = read_manifest(default_root())
counts = split_totals(manifest)
st.write(f"{manifest['images']:,} images at {manifest['config']['image_size']} px in `{default_root()}` "
         f"({len(SOURCES)} sources: {', '.join(SOURCES)})")
st.dataframe(pd.DataFrame(counts).T, width="stretch")
