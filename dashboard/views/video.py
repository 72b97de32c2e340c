"""Video: a clip (an upload or a synthetic sample) through one checkpoint: annotated video, per-frame timeline, verdict."""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from access_ui import allowed
from common import all_checkpoints, checkpoint_label, ood_model, served_model
from core.data.datasets import FAKE, REAL
from core.data.faces import FACE_MARGIN
from core.data.synthetic_video import ClipConfig, clip_preview, sample_clip
from core.data.video import VIDEO_EXTENSIONS, FaceOptions, SamplingOptions, VideoError, iterate_frames, video_container
from core.evaluation.ood import UNRELIABLE
from core.evaluation.video import AGGREGATES, VideoOptions, analyse_video
from core.io import cache_dir

MAX_UPLOAD_MB = 200
STAGES = ("decode", "detect", "classify", "encode")

st.title("Video")
st.caption("Sampled frames → the largest face of each (YuNet face detector) → the model's P(fake) per face → the video's verdict "
           "(mean over faces by default), and the clip again with a red (fake) or green (real) box on every face.")

choices = all_checkpoints()
if not choices:
    st.info("No checkpoint yet: train one from the sidebar.")
    st.stop()
names = list(choices)
default = next((i for i, n in enumerate(names) if "student-pearson" in n), 0)
picked = st.selectbox("Checkpoint", names, index=default, key="video_checkpoint", format_func=checkpoint_label)
left, middle, right = st.columns(3)
upload = left.file_uploader(f"Upload a clip (≤ {MAX_UPLOAD_MB} MB)", type=[e.lstrip(".") for e in sorted(VIDEO_EXTENSIONS)],
                            key="video_upload")
sample = middle.radio("...or a synthetic clip of the embedded benchmark", ["fake (faceswap)", "real"], key="video_sample",
                      disabled=upload is not None, help="a benchmark test face moving over a background, 10 s at 25 fps")
frames = right.slider("Frames to sample", 8, 64, 32, step=8, key="video_frames")
aggregate = right.selectbox("Video score from the faces'", list(AGGREGATES), key="video_aggregate")
crop_scale = right.number_input("Crop side / face side", 1.0, 3.0, 1 + 2 * FACE_MARGIN, step=0.1, key="video_crop",
                                help="1.8 frames a face as the embedded benchmark's images do; 1.3 matches `data frames` crops")


@contextmanager
def _input_path():
    """The clip on disk while it is analysed: a synthetic one from the cache, or the upload in a private temporary
    folder, removed afterwards (never kept, never under a data root), once its first bytes say it is a video."""
    if upload is None:
        clip = None
        try:
            with st.spinner("making the synthetic clip (once)..."):
                clip = sample_clip(FAKE if sample.startswith("fake") else REAL, cache_dir() / "videos", config=ClipConfig())
        except (VideoError, OSError) as error:
            st.error(f"Cannot make the synthetic clip: {error}")
        yield clip
        return
    if not allowed("infer", upload.name):
        yield None
        return
    data = upload.getvalue()
    if len(data) > MAX_UPLOAD_MB * 2**20:
        st.error(f"Cannot use this file: {upload.name} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
        yield None
        return
    suffix = video_container(data[:16])
    if suffix is None:  # its content, not its name: no container signature, no decoding
        st.error(f"Cannot use this file: {upload.name} does not start like a video (MP4/MOV, WebM/MKV, AVI, MPEG).")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="core-upload-") as folder:  # mode 0700: this user only
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        yield path


def _input_key() -> str:
    """What the analysis is of: the upload's content (its hash), or the synthetic clip asked for."""
    return hashlib.sha256(upload.getvalue()).hexdigest() if upload is not None else f"synthetic {sample}"


def _analyse(path) -> dict | None:
    options = VideoOptions(sampling=SamplingOptions(num_frames=frames), faces=FaceOptions(crop_scale=crop_scale), aggregate=aggregate)
    key = (_input_key(), choices[picked], frames, aggregate, crop_scale)
    if st.session_state.get("video_result_key") == key:
        return st.session_state["video_result"]
    bar = st.progress(0.0, text="starting...")

    def on_progress(stage: str, done: int, total: int) -> None:
        position = STAGES.index(stage)
        bar.progress(min(1.0, (position + done / max(total, 1)) / len(STAGES)), text=f"{stage}: {done}/{total}")

    out = cache_dir() / "videos" / "annotated" / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:20]}.webm"
    try:
        result = analyse_video(path, served_model(choices[picked]), options, out=out, progress=False, on_progress=on_progress,
                               ood=ood_model(choices[picked]))
    except VideoError as error:
        bar.empty()
        st.error(f"Cannot use this video: {error}")
        return None
    bar.empty()
    st.session_state["video_result_key"], st.session_state["video_result"] = key, result
    return result


def _show(result: dict) -> None:
    verdict, score, faces = st.columns(3)
    verdict.metric("Verdict", (result["label"] or "no face").upper())
    score.metric("P(fake) of the video", "–" if result["video_score"] is None else f"{result['video_score']:.3f}")
    faces.metric("Faces in sampled frames", f"{result['faces_total']} in {result['sampled']}",
                 help=f"{len(result['frames_without_face'])} sampled frames had no face")
    st.caption(result["verdict"])
    if result.get("in_distribution") is False:
        st.warning(f"**{UNRELIABLE[0].upper() + UNRELIABLE[1:]}**: the faces' median out-of-distribution score is "
                   f"{result['ood_score']:.2f} (> 1 means further from the training data than 95% of its validation "
                   f"images; {result.get('faces_in_distribution', 0)} of {result['faces_total']} faces are within).")
    elif result.get("ood_score") is not None:
        st.caption(f"In distribution: the faces' median out-of-distribution score is {result['ood_score']:.2f} (≤ 1).")
    video, timeline = st.columns([3, 2])
    video.video(result["output"]["path"])
    video.caption(f"{result['output']['frames']} frames at {result['output']['fps']:g} fps, {result['output']['codec']} "
                  f"({'plays in browsers' if result['output']['browser_playable'] else 'not browser-playable'})")
    records = result["frames"]
    figure = go.Figure()
    found = [r for r in records if r["faces"]]
    figure.add_trace(go.Scatter(x=[r["time_s"] for r in found], y=[r["score"] for r in found], mode="lines+markers",
                                name="P(fake) of the frame"))
    missing = [r for r in records if not r["faces"]]
    if missing:
        figure.add_trace(go.Scatter(x=[r["time_s"] for r in missing], y=[0.0] * len(missing), mode="markers",
                                    marker={"symbol": "x", "color": "grey"}, name="no face found"))
    figure.add_hline(y=result["threshold"], line_dash="dot", annotation_text="threshold")
    figure.update_layout(xaxis_title="time (s)", yaxis_title="P(fake)", yaxis_range=[-0.05, 1.05], height=360, margin={"t": 30})
    timeline.plotly_chart(figure, width="stretch", key="video_timeline")
    timeline.dataframe(pd.DataFrame([{"stage": k.removesuffix("_s"), "seconds": v} for k, v in result["timing"].items()]),
                       hide_index=True, width="stretch")


@st.cache_data(show_spinner=False)
def _synthetic_preview(label: int):
    return clip_preview(label, config=ClipConfig())


def _preview() -> None:
    """The input's first frame, before anything heavy runs (an upload is stored; a synthetic clip only its first frame)."""
    try:
        if upload is None:
            frame, caption = _synthetic_preview(FAKE if sample.startswith("fake") else REAL), f"synthetic clip ({sample})"
        else:
            with _input_path() as path:
                if path is None:
                    return
                frame, caption = next(iterate_frames(path, [0]))[1], upload.name
    except (VideoError, OSError, StopIteration) as error:
        st.error(f"Cannot read this video: {error or 'it has no frame'}")
        return
    st.image(frame, width=480, caption=f"First frame of the {caption}: press Analyse to judge the clip")


# nothing heavy runs until asked: the first Analyse makes the input (a synthetic clip is rendered once) and analyses it
clicked = st.button("Analyse", type="primary", key="video_run")
if clicked or st.session_state.get("video_result_key"):
    with _input_path() as path:
        result = _analyse(path) if path is not None else None
    if result is not None:
        _show(result)
else:
    _preview()
