"""Data: the `data check` report for the embedded benchmark, a registered dataset or any folder/CSV,
with the leaked pairs (near-duplicates across splits) side by side."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.check import DUPLICATE_THRESHOLD, check
from core.data.datasets import DatasetError, resolve_dataset
from core.data.images import ImageLoadError, load_image
from core.io import cache_dir
from launcher_ui import dataset_choice

PAIRS_SHOWN = 12

st.title("Data")
st.caption("What a run would train and be scored on: the splits as declared, skipped files, unbalanced splits, image "
           f"sizes, and near-duplicates across splits (perceptual hash, ≤ {DUPLICATE_THRESHOLD} of 256 bits).")

choice = dataset_choice("data")
if choice is None:
    st.info("Type a folder, a CSV or a registered dataset's root.")
    st.stop()
spec, root = choice
try:
    dataset = resolve_dataset(spec, root)
except (DatasetError, OSError) as error:
    st.error(str(error))
    st.stop()

bar = st.progress(0.0, text="Hashing images (cached per file: a second look is fast)...")
report = check(dataset, cache_dir() / "image-hashes", workers=1, progress=False,
               on_progress=lambda done, total: bar.progress(done / max(total, 1), text=f"hashed {done:,}/{total:,} images"))
bar.empty()
st.subheader(f"{report['name']}: {report['images']:,} images")
st.caption(f"{report['hashed']:,} hashed now, {report['from_cache']:,} from the cache, {report['seconds']} s")

rows = [{"split": split, "images (and why)": record["images"], "usable": record["n"], "real": record["labels"]["real"],
         "fake": record["labels"]["fake"], "skipped": record["skipped"]} for split, record in report["splits"].items()]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
sources = [{"split": split, "source": source, **counts} for split, record in report["splits"].items()
           for source, counts in record["sources"].items()]
if sources:
    st.dataframe(pd.DataFrame(sources), hide_index=True, width="stretch")
for warning in report["warnings"]:
    st.warning(warning)

skipped = report["skipped"]
st.subheader(f"Skipped files: {skipped['total']}")
if skipped["total"]:
    st.dataframe(pd.DataFrame([{"reason": reason, "files": count, "e.g.": ", ".join(skipped["examples"].get(reason, []))}
                               for reason, count in skipped["reasons"].items()]), hide_index=True, width="stretch")

sizes = report["sizes"]
if sizes["common"]:
    st.subheader("Image sizes")
    figure = go.Figure(go.Bar(x=[size for size, _ in sizes["common"]], y=[n for _, n in sizes["common"]]))
    figure.update_layout(xaxis_title="width x height (px)", yaxis_title="images", height=300)
    st.plotly_chart(figure, key="data_sizes")

shared = report["shared_across_splits"]
if shared["videos"] or shared["groups"]:  # a video benchmark: the same video or person in two splits
    st.subheader(f"In two splits: {shared['videos']} videos, {shared['groups']} identity groups")
    st.dataframe(pd.DataFrame(shared["listed"]).assign(splits=lambda f: f["splits"].map(" / ".join)), hide_index=True)

duplicates = report["duplicates"]
st.subheader(f"Near-duplicates across splits: {duplicates['pairs']}")
if duplicates["pairs"]:
    st.caption(", ".join(f"{pair}: {count}" for pair, count in duplicates["per_split_pair"].items())
               + f"; the {min(PAIRS_SHOWN, duplicates['pairs'])} closest:")
    for pair in report["duplicates_across_splits"][:PAIRS_SHOWN]:
        left, right, info = st.columns([1, 1, 2])
        for column, path, split in ((left, pair["a"], pair["splits"][0]), (right, pair["b"], pair["splits"][1])):
            try:
                column.image(load_image(path), caption=split, width=128)
            except ImageLoadError as error:
                column.write(str(error))
        info.write(f"distance {pair['distance']} bits  \n`{pair['a']}`  \n`{pair['b']}`")
else:
    st.success("No image of one split has a near-copy in another.")
