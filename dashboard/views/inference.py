"""Live inference: one image (an upload or a benchmark sample), its face crop, and each picked checkpoint's verdict,
probability, latency and Grad-CAM side by side; optionally its ONNX fp32 / int8 exports next to it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image

from access_ui import allowed
from common import model, ood_model, pick_checkpoints, served_model, test_samples
from core.data.datasets import LABEL_NAMES, DatasetError
from core.data.faces import draw_boxes
from core.data.images import ImageLoadError, load_image
from core.data.synthetic import SOURCES
from core.deploy.quantize import CALIBRATION_IMAGES
from core.deploy.runtimes import default_runtime, describe
from core.deploy.variants import DEPLOYED_RUNTIMES, RUNTIMES, deployed
from core.evaluation.attribution import DEFAULT_STAGE, STAGES, grad_cam, overlay
from core.evaluation.inference import UPLOAD_RULE, decode_upload, describe_crop, predict_models
from core.evaluation.ood import UNRELIABLE

st.title("Live inference")
st.caption("Upload an image or pick one from the embedded benchmark: the largest face is cropped (YuNet face detector) "
           "and every picked checkpoint judges the same crop.")

choices, picked = pick_checkpoints("inference_pick")

upload_column, sample_column = st.columns(2)
upload = upload_column.file_uploader("Upload an image", key="inference_upload", help=UPLOAD_RULE)
source = sample_column.selectbox("...or a test image of the embedded benchmark, source", SOURCES, index=SOURCES.index("faceswap"),
                                 key="inference_source", disabled=upload is not None)
options = st.columns(3)
face_crop = options[0].toggle("Crop the face", value=True, key="inference_crop",
                              help="off: the whole image, resized to the model's input")
show_grad_cam = options[1].toggle("Grad-CAM", value=True, key="inference_gradcam")
stage = options[2].selectbox("Grad-CAM stage", STAGES, index=STAGES.index(DEFAULT_STAGE), key="inference_stage",
                             disabled=not show_grad_cam, help="at 64 px input layer4 is 2x2 and layer3 4x4")
SERVING = {"auto (fastest measured here)": "auto", "PyTorch (BatchNorm folded)": "torch", "ONNX Runtime": "onnx",
           "OpenVINO": "openvino"}
_default = default_runtime()
serving = st.radio("Verdicts run in", list(SERVING), horizontal=True, key="inference_serving",
                   index=list(SERVING.values()).index(_default) if _default in SERVING.values() else 0,
                   help="how core.load_model serves the checkpoint; auto: the exact fp32 runtime (PyTorch, ONNX Runtime or "
                        "OpenVINO, widths as trained or rounded to 8 or 16) measured fastest for that checkpoint on this "
                        "machine, measured once and cached; Grad-CAM always runs in PyTorch")
runtimes = st.multiselect("Also run", DEPLOYED_RUNTIMES, key="inference_runtimes",
                          help="the picked checkpoints exported to ONNX (onnxruntime, CPU) and quantised to int8, "
                               f"calibrated on {CALIBRATION_IMAGES} training images of each checkpoint's dataset; "
                               "exported once, then cached")


def _input_image() -> tuple[Image.Image, str] | None:
    """``(RGB image, caption)`` of the upload, else of the picked sample; None (message shown) when unusable."""
    if upload is not None:
        if not allowed("infer", upload.name):  # checked on the server before anything is decoded
            return None
        try:  # decoded in memory, its format read from its content (PIL's header), never from its name
            return decode_upload(upload.getvalue(), upload.name), f"upload · {upload.name}"
        except ImageLoadError as error:
            st.error(f"Cannot use this file: {error}")
            return None
    try:
        samples = test_samples(f"synthetic:{source}")
    except (DatasetError, OSError) as error:
        st.error(f"Cannot read the benchmark: {error}")
        return None
    sample = sample_column.selectbox("Test image", samples, key=f"inference_sample_{source}",
                                     format_func=lambda s: f"{Path(s.path).name} (truly {LABEL_NAMES[s.label]})")
    try:
        return load_image(sample.path), f"{source} test image · truly {LABEL_NAMES[sample.label]}"
    except ImageLoadError as error:
        st.error(str(error))
        return None


def _exports() -> dict[tuple[str, str], dict]:
    """(checkpoint name, runtime) -> export record of each picked checkpoint in each runtime asked for."""
    exports = {}
    for name in picked:
        for runtime in runtimes:
            with st.spinner(f"Exporting {name.split(': ', 1)[-1]} to {runtime} (once; int8 calibrates on "
                            f"{CALIBRATION_IMAGES} training images)..."):
                exports[name, runtime] = deployed(choices[name], RUNTIMES[runtime], progress=False)
    return exports


def _show_runtimes(result: dict, exports: dict[tuple[str, str], dict]) -> None:
    st.subheader("Deployed runtimes")
    st.caption("The same crop through each checkpoint in PyTorch and its ONNX exports (onnxruntime on CPU). Latency as above; "
               "int8 trades a little agreement for a file about a quarter the size.")
    rows = []
    for name in picked:
        for runtime in ["PyTorch fp32", *runtimes]:
            prediction = result["predictions"][name if runtime == "PyTorch fp32" else f"{name} · {runtime}"]
            export = exports.get((name, runtime))
            rows.append({"checkpoint": name.split(": ", 1)[-1], "runtime": runtime, "verdict": prediction["label"],
                         "P(fake)": round(prediction["probability"], 4), "latency (ms)": round(prediction["latency_ms"], 1),
                         "model (ms)": round(prediction["model_ms"], 1),
                         "file (MB)": round(export["bytes"] / 2**20, 2) if export else None})
    st.dataframe(rows, hide_index=True)


def _show_verdicts(image: Image.Image, caption: str) -> None:
    exports = _exports()
    try:
        models = {name: served_model(choices[name], SERVING[serving]) for name in picked}  # the verdicts at serving speed
    except (RuntimeError, ValueError, OSError) as error:  # a runtime missing here, or a form refused: say why
        st.error(f"Cannot serve with {serving}: {error}")
        return
    deployed_models = {f"{name} · {runtime}": model(record["path"]) for (name, runtime), record in exports.items()}
    oods = {name: ood_model(choices[name]) for name in picked}
    result = predict_models({**models, **deployed_models}, image, face_crop=face_crop, oods=oods)
    shown_input, shown_crop, _ = st.columns([2, 1, 2])
    boxes = [result["face_box"]] if result["face_box"] is not None else []
    shown_input.image(draw_boxes(image, boxes), caption=f"{caption} · {image.width}x{image.height} px", width="stretch")
    crop = result["crop"]
    shown_crop.image(crop, width="stretch", caption=f"{describe_crop(result['face_box'], face_crop)} · {crop.width}x{crop.height} px"
                     f" · {result['face_crop_ms']:.1f} ms")
    st.caption("Latency = the face crop (done once, shared) + that model's preprocessing and forward pass, wall time on this "
               "machine in this run (the first run of a freshly loaded model is slower).")
    for column, name in zip(st.columns(len(picked)), picked, strict=True):
        prediction, header = result["predictions"][name], models[name].header
        column.markdown(f"**{name.split(': ', 1)[-1]}**")
        column.metric("Verdict", prediction["label"])
        column.metric("P(fake)", f"{prediction['probability']:.3f}")
        column.metric("Latency", f"{prediction['latency_ms']:.1f} ms",
                      help=f"face crop {prediction['face_crop_ms']:.1f} ms + model {prediction['model_ms']:.1f} ms")
        _show_reliability(column, prediction, header, uploaded=caption.startswith("upload"))
        params = header.get("params") or sum(p.numel() for p in models[name].parameters())
        column.caption(f"{params / 1e6:.2f} M params · {header['model']['type']} · {header.get('student_method') or header['method']}")
        column.caption(f"Answered by {describe(models[name])}" + _measured(models[name]))
        if show_grad_cam:
            trained = model(choices[name])  # Grad-CAM takes gradients: the network as trained
            heatmap = grad_cam(trained, trained.preprocess(crop), stage)
            column.image(overlay(crop, heatmap), width="stretch", caption=f"Grad-CAM at {stage}: evidence for '{prediction['label']}'")
    if exports:
        _show_runtimes(result, exports)


def _measured(served) -> str:
    """What auto measured for the runtime that answered, and how much faster it was than PyTorch."""
    selection = getattr(served, "selection", None)
    if not selection:
        return ""
    chosen = selection["chosen"]
    versus = f", {chosen['speedup_vs_torch']:.2f}× PyTorch" if chosen.get("speedup_vs_torch") else ""
    return f": {chosen['median_ms']:.2f} ms at batch 1, {selection['threads']} threads{versus}"


def _show_reliability(column, prediction: dict, header: dict, uploaded: bool) -> None:
    """Whether the input is like the checkpoint's training data, and what a benchmark checkpoint can say of a photo."""
    score = prediction.get("ood_score")
    if score is None:
        column.caption("No out-of-distribution model for this checkpoint: `python -m core ood fit CHECKPOINT` makes one.")
    elif prediction["in_distribution"]:
        column.caption(f"In distribution: like the training data (ood score {score:.2f} ≤ 1).")
    else:
        column.warning(f"**{UNRELIABLE[0].upper() + UNRELIABLE[1:]}** (ood score {score:.2f} > 1: further from the training "
                       "data than 95% of its validation images).")
    if uploaded and str(header.get("dataset", "")).startswith("synthetic"):
        column.info("This checkpoint learned from the embedded synthetic benchmark (procedural faces), not from real "
                    "photographs or videos: on a real photo its verdict says little.")


chosen = _input_image()
if not picked:
    st.info("Pick at least one checkpoint.")
elif chosen is not None:
    _show_verdicts(*chosen)
