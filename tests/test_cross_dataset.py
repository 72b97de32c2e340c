"""The cross-dataset protocol: dataset specs, the checkpoints x datasets matrix at frame and video level, `report`'s
DeepfakeBench table beside ours, and the Evaluation page's matrix with a frames folder added."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_support import cli_json
from PIL import Image

from core.checkpoint import SHIPPED_DIR, save_checkpoint
from core.data.datasets import DatasetError, resolve_dataset
from core.evaluation.cross_dataset import (
    DatasetSpec,
    benchmark_of,
    check_dataset_specs,
    cross_dataset_matrix,
    parse_dataset_specs,
)
from core.models import build_model

REPO = Path(__file__).resolve().parents[1]
TINY_HEADER = {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
               "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "dataset": "synthetic:gan", "params": 1, "macs": 1}


def write_frames_folder(folder: Path, layout: str, videos: int = 6, frames: int = 3, seed: int = 0) -> Path:
    """A folder shaped as `data frames` writes it: PNG crops, manifest.csv (path,label,split,source,video_id) and
    frames.json naming the benchmark's layout; half the videos real, half fake, every frame in the test split."""
    rng = np.random.default_rng(seed)
    rows = []
    for video in range(videos):
        label = video % 2
        for frame in range(frames):
            path = Path("videos") / f"v{video}" / f"{frame}.png"
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / path)
            rows.append({"path": str(path), "label": label, "split": "test",
                         "source": "fake" if label else "original", "video_id": f"v{video}"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "frames.json").write_text(json.dumps({"layout": layout, "videos": videos}))
    return folder


@pytest.fixture()
def frames_folders(tmp_path) -> dict[str, Path]:
    return {layout: write_frames_folder(tmp_path / f"{layout}-frames", layout, seed=index)
            for index, layout in enumerate(("ffpp", "celebdf", "dfdc"))}


@pytest.fixture()
def tiny_checkpoint(tmp_path, frames_folders) -> Path:
    """An untrained resnet-tiny whose header says it was trained on the FF++ frames folder (its own dataset)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, build_model("resnet-tiny"), {**TINY_HEADER, "dataset": str(frames_folders["ffpp"])})
    return path


def test_specs_parse_name_root_pairs_paths_and_refuse_what_they_cannot_name(tmp_path, frames_folders):
    celebdf = frames_folders["celebdf"]
    specs = parse_dataset_specs(f"celebdf=/data/celeb\n dfdc = /data/dfdc ,{celebdf},synthetic:gan", default_root="/r")
    assert specs == [DatasetSpec("celebdf", "/data/celeb"), DatasetSpec("dfdc", "/data/dfdc"), DatasetSpec(str(celebdf)),
                     DatasetSpec("synthetic:gan", "/r")]
    resolved = resolve_dataset(str(celebdf)).name  # a `data frames` folder: named after its frames.json's layout
    assert [benchmark_of(name) for name in (resolved, "dfdc", "deepfakebench:Celeb-DF-v2", "csv:/x", "synthetic:gan")] \
        == ["celebdf", "dfdc", "celebdf", None, None]
    with pytest.raises(ValueError, match="NAME=ROOT"):
        parse_dataset_specs("celebdf=")
    with pytest.raises(ValueError, match="given twice"):
        parse_dataset_specs("ffpp=/a,ffpp=/b")
    with pytest.raises(DatasetError, match=f"dataset '{tmp_path / 'nowhere'}'"):
        check_dataset_specs(parse_dataset_specs(str(tmp_path / "nowhere")))


def test_report_puts_deepfakebench_published_rows_beside_our_frame_and_video_numbers(tiny_checkpoint, frames_folders,
                                                                                     tmp_path):
    celebdf, dfdc = frames_folders["celebdf"], frames_folders["dfdc"]
    measured = {name: cli_json("evaluate", str(tiny_checkpoint), "--data", str(folder))
                for name, folder in frames_folders.items()}
    assert all(set(m["video"]) >= {"videos", "auc", "eer", "ap", "accuracy"} and m["video"]["videos"] == 6
               for m in measured.values())
    # a registered benchmark with its own root, and a frames folder by its path
    result = cli_json("report", str(tiny_checkpoint), "--data", f"celebdf={celebdf},{dfdc}", "--out",
                      str(tmp_path / "report"), "--no-latency", "--no-png")
    assert "cross_dataset_video" in result["tables"]
    table = pd.read_csv(tmp_path / "report" / "cross_dataset_video.csv", dtype=str, keep_default_na=False)
    assert list(table["numbers"]) == ["measured", "published (DeepfakeBench)", "published (DeepfakeBench)"]
    assert list(table["detector"]) == ["tiny", "Xception", "EfficientNet-B4"]
    ours = table.iloc[0]
    for name in ("ffpp", "celebdf", "dfdc"):  # ffpp: the checkpoint's own dataset; each column named after its benchmark
        assert ours[f"{name} frame AUC"] == f"{measured[name]['auc']:.3f}"
        for metric in ("auc", "eer", "ap"):
            assert ours[f"{name} video {metric.upper()}"] == f"{measured[name]['video'][metric]:.3f}"
    published = table.set_index("detector")
    assert list(table.columns[3:]) == [f"{name} {level}" for name in ("ffpp", "celebdf", "dfdc")
                                       for level in ("frame AUC", "video AUC", "video EER", "video AP")]
    assert (published.loc["Xception", "celebdf frame AUC"], published.loc["EfficientNet-B4", "dfdc frame AUC"],
            published.loc["Xception", "ffpp frame AUC"]) == ("0.737", "0.696", "0.964")
    assert (published.loc[["Xception", "EfficientNet-B4"], [c for c in table.columns if " video " in c]] == "").all().all(), \
        "their video-level numbers are not typed: empty, never invented"
    assert "published (DeepfakeBench)" in (tmp_path / "report" / "report.md").read_text()


def test_a_report_without_a_benchmark_has_no_deepfakebench_table(tmp_path):
    plain = write_frames_folder(tmp_path / "plain", layout="mine")
    checkpoint = tmp_path / "plain.safetensors"
    save_checkpoint(checkpoint, build_model("resnet-tiny"), {**TINY_HEADER, "dataset": str(plain)})
    result = cli_json("report", str(checkpoint), "--out", str(tmp_path / "report"), "--no-latency", "--no-png")
    assert "cross_dataset_video" not in result["tables"] and "cross_dataset" in result["tables"]


def test_matrix_has_both_levels_where_frames_name_their_video(tiny_checkpoint, frames_folders, tiny_benchmark):
    specs = [DatasetSpec("synthetic:gan"), DatasetSpec(str(frames_folders["celebdf"]), label="celebdf")]
    matrix = cross_dataset_matrix({"tiny": tiny_checkpoint}, specs).set_index("dataset")
    assert matrix.loc["celebdf", "videos"] == 6 and matrix.loc["celebdf", "frames"] == 18
    assert not np.isnan(matrix.loc["celebdf", "video_auc"]) and not np.isnan(matrix.loc["celebdf", "frame_auc"])
    assert matrix.loc["synthetic:gan", "videos"] == 0 and np.isnan(matrix.loc["synthetic:gan", "video_auc"])


def test_evaluation_page_matrix_shows_an_added_frames_folder_at_frame_and_video_level(tiny_benchmark, tmp_path):
    from streamlit.testing.v1 import AppTest

    folder = write_frames_folder(tmp_path / "celebdf-frames", "celebdf")
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=180)
    app.secrets["access"] = {"data_roots": [str(tmp_path)]}  # the dashboard reads typed folders only inside its roots
    app.run()
    app.switch_page("views/evaluation.py").run()
    first = app.multiselect(key="evaluation_pick").value[0]
    app.multiselect(key="evaluation_pick").set_value([first]).run()
    app.toggle(key="evaluation_cross").set_value(True).run()
    assert not app.exception and len(app.get("plotly_chart")) == 1 + 1 + 1, "ROC, a confusion matrix, frame-level AUC"
    app.text_area(key="evaluation_datasets").set_value(f"{folder}\n").run()
    assert not app.exception and not app.error
    frame, video = (json.loads(chart.proto.spec) for chart in app.get("plotly_chart")[-2:])
    assert frame["layout"]["title"]["text"] == "Frame-level AUC" and video["layout"]["title"]["text"].startswith("Video-level AUC")
    shown = f"{tmp_path.name}/celebdf-frames"  # relative to its data root
    assert list(frame["data"][0]["x"]) == ["upconv", "faceswap", "gan", "warp", "jpeg2", shown]
    assert list(video["data"][0]["x"]) == [shown], "only the dataset whose frames name their video"
    assert first.startswith("shipped: ")
    expected = cross_dataset_matrix({first: SHIPPED_DIR / first.removeprefix("shipped: ")}, [DatasetSpec(str(folder))]).iloc[0]
    assert _values(frame["data"][0]["z"])[0, -1] == pytest.approx(expected["frame_auc"])
    assert _values(video["data"][0]["z"])[0, 0] == pytest.approx(expected["video_auc"])
    app.slider(key="evaluation_threshold").set_value(0.6).run()  # a rerun on the same matrix: every cell from the cache
    assert not app.exception and len(app.get("plotly_chart")) == 1 + 1 + 2
    app.text_area(key="evaluation_datasets").set_value("celebdf=").run()
    assert not app.exception and "NAME=ROOT" in app.error[0].value
    app.text_area(key="evaluation_datasets").set_value(str(tmp_path / "nowhere")).run()
    assert not app.exception and "nowhere" in app.error[0].value


def _values(array) -> np.ndarray:
    """A plotly figure's array as its JSON holds it: a nested list, or numpy's bytes in base64 (``bdata``)."""
    if isinstance(array, dict):
        import base64

        shape = tuple(int(n) for n in str(array.get("shape", "-1")).split(","))
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).reshape(shape)
    return np.asarray(array, dtype=float)


def test_reproduce_cross_targets_reach_its_report_with_the_deepfakebench_table(frames_folders, tmp_path):
    """`reproduce two-in-one --dataset ffpp --data-root DIR --cross celebdf=DIR,DIR`: the report over the protocol's
    runs (here one given teacher) tests them on the cross targets too, beside DeepfakeBench's published rows."""
    from core.training import protocols

    ffpp, celebdf, dfdc = frames_folders["ffpp"], frames_folders["celebdf"], frames_folders["dfdc"]
    teacher = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher, build_model("resnet-tiny"), {**TINY_HEADER, "dataset": "ffpp"})
    plan = protocols.plan("two-in-one", "ffpp", data_root=str(ffpp), seeds=[0], teacher=str(teacher),
                          cross=f"celebdf={celebdf},{dfdc}")
    outcomes = {"teacher": protocols.Outcome(plan.stages[0], [], teacher)}
    report = protocols._report(plan, outcomes, [], tmp_path / "report", latency=False, progress=False)
    table = pd.read_csv(report["tables"]["cross_dataset_video"].replace(".md", ".csv"), dtype=str, keep_default_na=False)
    assert list(table["numbers"]) == ["measured", "published (DeepfakeBench)", "published (DeepfakeBench)"]
    assert [c for c in table.columns if c.endswith("frame AUC")] == ["ffpp frame AUC", "celebdf frame AUC", "dfdc frame AUC"]
    measured = cli_json("evaluate", str(teacher), "--data", "celebdf", "--data-root", str(celebdf))
    assert table.loc[0, "celebdf frame AUC"] == f"{measured['auc']:.3f}"
    assert table.loc[0, "celebdf video AUC"] == f"{measured['video']['auc']:.3f}"
