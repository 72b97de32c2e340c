"""Bad input, from a corpus of odd files that these tests generate (``corpus`` fixture; set
``$CORE_TEST_CORPUS`` to keep it in a folder of your choice).

Each case gets a clear message and no traceback, and the app or run goes on:

- images: decoded to RGB or refused with ImageLoadError by the loader; inside a dataset, skipped and
  counted by ``train`` and ``evaluate``; as an upload, refused on the Live inference page, which stays up;
- datasets: DatasetError, and ``train`` stops with one ``error:`` line before any run directory exists;
- checkpoints: CheckpointError, and one ``error:`` line from every command that reads them;
- videos: VideoError, and one ``error:`` line from ``video`` (a video without faces is analysed, no verdict).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from reliability_support import REPO, TINY_TEACHER, assert_one_line_error, cli, last_json
from safetensors.torch import save_file

import core
from core.checkpoint import CheckpointError, save_checkpoint
from core.data.datasets import IMAGE_EXTENSIONS, DatasetError, resolve_dataset
from core.data.images import ImageLoadError, load_image
from core.models import build_model

RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))  # 40 wide, 30 high


def _encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header (CRC fixed up) claims ``width`` x ``height``: a decompression bomb in 80 bytes."""
    data = bytearray(_encode(Image.new("1", (8, 8))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _corrupt_png() -> bytes:
    data = bytearray(_encode(RGB))
    data[data.index(b"IDAT") + 20] ^= 0xFF  # one flipped byte in the compressed pixels
    return bytes(data)


def _exif_rotated() -> bytes:
    exif = RGB.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    return _encode(RGB, "JPEG", exif=exif)


def _animated_gif() -> bytes:
    buffer = io.BytesIO()
    RGB.convert("P").save(buffer, format="GIF", save_all=True, append_images=[RGB.rotate(180).convert("P")])
    return buffer.getvalue()


def _palette_with_transparency() -> bytes:
    palette = RGB.convert("P")
    return _encode(palette, transparency=0)


# name -> (bytes, expected): (width, height) of the RGB image it decodes to, or a phrase of the refusal
IMAGES: dict[str, tuple[bytes, tuple[int, int] | str]] = {
    "corrupt.png": (_corrupt_png(), "not a readable image"),
    "truncated.jpg": (_encode(RGB, "JPEG")[:300], "not a readable image"),
    "truncated.png": (_encode(RGB)[:200], "not a readable image"),
    "empty.png": (b"", "empty file (0 bytes)"),
    "text_named.png": (b"this is not an image\n" * 10, "not an image"),
    "html_named.jpg": (b"<!doctype html><html><body>hello</body></html>", "not an image"),
    "bomb.png": (_png_claiming(20_000, 20_000), "larger than 89,478,485 pixels"),
    "just_over_the_limit.png": (_png_claiming(10_000, 9_000), "larger than 89,478,485 pixels"),
    "tiny.png": (_encode(RGB.resize((5, 5))), "too small (5x5 px"),
    "one_pixel_high.png": (_encode(RGB.resize((64, 1))), "too small (64x1 px"),
    "cmyk.jpg": (_encode(RGB.convert("CMYK"), "JPEG"), (40, 30)),
    "cmyk.tif": (_encode(RGB.convert("CMYK"), "TIFF"), (40, 30)),
    "sixteen_bit.png": (_encode(Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))), (40, 30)),
    "thirty_two_bit.tif": (_encode(Image.fromarray((np.arange(1200).reshape(30, 40) * 999).astype(np.int32)), "TIFF"), (40, 30)),
    "float.tif": (_encode(Image.fromarray(np.linspace(0, 1, 1200, dtype=np.float32).reshape(30, 40)), "TIFF"), (40, 30)),
    "palette.png": (_encode(RGB.convert("P")), (40, 30)),
    "palette_transparent.png": (_palette_with_transparency(), (40, 30)),
    "animated.gif": (_animated_gif(), (40, 30)),
    "grey.png": (_encode(RGB.convert("L")), (40, 30)),
    "grey_alpha.png": (_encode(RGB.convert("LA")), (40, 30)),
    "rgba.png": (_encode(RGB.convert("RGBA")), (40, 30)),
    "one_bit.png": (_encode(RGB.convert("1")), (40, 30)),
    "exif_rotated.jpg": (_exif_rotated(), (30, 40)),
    "jpeg_named.png": (_encode(RGB, "JPEG"), (40, 30)),
    "webp.webp": (_encode(RGB, "WEBP"), (40, 30)),
    "bmp.bmp": (_encode(RGB, "BMP"), (40, 30)),
}
BAD_IMAGES = [name for name, (_, expected) in IMAGES.items() if isinstance(expected, str)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The corpus folder: images/ (written here); the dataset, checkpoint and video cases add their own."""
    root = Path(os.environ["CORE_TEST_CORPUS"]) if os.environ.get("CORE_TEST_CORPUS") else tmp_path_factory.mktemp("corpus")
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, (data, _) in IMAGES.items():
        (root / "images" / name).write_bytes(data)
    return root


# ------------------------------------------------------------------------------------ images


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", list(IMAGES))
def test_image_is_decoded_to_rgb_or_refused_with_one_line(corpus, name):
    path = corpus / "images" / name
    expected = IMAGES[name][1]
    if isinstance(expected, tuple):
        image = load_image(path)
        assert image.mode == "RGB" and image.size == expected
        return
    with pytest.raises(ImageLoadError) as refused:
        load_image(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    with pytest.raises(ImageLoadError):  # the same from memory, as an upload arrives
        load_image(io.BytesIO(IMAGES[name][0]), name=name)


@pytest.fixture(scope="module")
def tiny_checkpoint(corpus, tiny_benchmark) -> Path:
    torch.manual_seed(0)
    path = corpus / "tiny.safetensors"
    save_checkpoint(path, build_model("resnet-tiny").eval(), {
        "method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "dataset": "synthetic", "config": {"data": "synthetic"},
        "metrics": {}})
    return path


@pytest.fixture(scope="module")
def dataset_with_odd_files(corpus, tiny_benchmark) -> Path:
    """An ImageFolder tree of benchmark faces with every corpus image added to train/fake and test/fake."""
    root = corpus / "datasets" / "with_odd_files"
    for split in ("train", "val", "test"):
        for label, name in ((0, "real"), (1, "fake")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            samples = [s for s in resolve_dataset("synthetic:gan").split(split) if s.label == label][:6]
            for sample in samples:
                shutil.copy(sample.path, folder)
    for split in ("train", "test"):
        for name in IMAGES:
            shutil.copy(corpus / "images" / name, root / split / "fake" / f"odd-{name}")
    return root


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_odd_images_in_a_dataset_are_skipped_and_counted_by_evaluate_and_train(dataset_with_odd_files, tiny_checkpoint,
                                                                             tmp_path, capsys):
    code, out, err = cli(["evaluate", str(tiny_checkpoint), "--data", str(dataset_with_odd_files), "--json", "--no-cache"], capsys)
    assert code == 0, err
    result = last_json(out)
    listed = [name for name in IMAGES if Path(name).suffix in IMAGE_EXTENSIONS]  # not .gif: a dataset lists only these
    unlisted = [name for name in IMAGES if name not in listed]  # ...and counts the others, with their reason
    assert result["skipped"] == len(BAD_IMAGES) + len(unlisted) and result["n"] == 12 + len(listed) - len(BAD_IMAGES)
    assert all(result["skipped_reasons"][f"unsupported type {Path(name).suffix}"] for name in unlisted) and unlisted
    code, out, err = cli(["train", "--data", str(dataset_with_odd_files), "--arch", "resnet-tiny", "--image-size", "32",
                          "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--runs-dir", str(tmp_path / "runs"),
                          "--json"], capsys)
    assert code == 0, err
    from core.runs import Run

    run = Run(Path(last_json(out)["run_dir"]))
    assert run.metrics("epoch")[0]["skipped"] == len(BAD_IMAGES) and run.metrics("test")[0]["skipped"] == len(BAD_IMAGES)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_live_inference_page_refuses_every_bad_image_and_stays_up(corpus, tiny_benchmark):
    """The upload page (tests/test_inference.py checks the page in depth); here: the whole corpus."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=180).run()
    app.switch_page("views/inference.py").run()
    app.toggle(key="inference_gradcam").set_value(False).run()
    for name in BAD_IMAGES:
        app.file_uploader(key="inference_upload").set_value((name, IMAGES[name][0], "application/octet-stream")).run()
        assert not app.exception, name
        assert app.error[0].value.startswith(f"Cannot use this file: {name}: "), name
    app.file_uploader(key="inference_upload").set_value(("palette_transparent.png", IMAGES["palette_transparent.png"][0],
                                                         "image/png")).run()
    assert not app.exception and not app.error
    assert [m.value for m in app.metric if m.label == "Verdict"], "a good upload after the bad ones is judged"


# ------------------------------------------------------------------------------------ datasets


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode(RGB))


def _tree(root: Path, layout: dict[str, int]) -> Path:
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _png(root / folder / f"{i}.png")
    return root


def _csv(root: Path, text: str, images: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in images:
        _png(root / name)
    (root / "list.csv").write_text(text)
    return root / "list.csv"


SPLITS = {f"{split}/{label}": 3 for split in ("train", "val", "test") for label in ("real", "fake")}
# name -> (builder(folder) -> --data spec, extra CLI flags, phrase of the message)
DATASETS = {
    "missing_folder": (lambda d: str(d / "nowhere"), [], "unknown dataset"),
    "file_not_folder": (lambda d: str(_tree(d, {"x": 1}) / "x" / "0.png"), [], "unknown dataset"),
    "no_class_folders": (lambda d: str(_tree(d, {"photos": 4})), [], "real"),
    "one_class_only": (lambda d: str(_tree(d, {f"{s}/real": 3 for s in ("train", "val", "test")})), [], "only 'real' images"),
    # too few images to re-split 80/10/10 (an empty or missing split folder is pooled and re-split): val stays empty
    "empty_split": (lambda d: str(_tree(d, {"real": 2, "fake": 2})), [], "split 'val'"),
    "class_folders_without_images": (lambda d: str(_tree(d, {"real": 0, "fake": 0})), [], "hold no images"),
    "unknown_csv_columns": (lambda d: str(_csv(d, "file_name,is_fake\na.png,1\nb.png,0\n")), [], "expected a path column"),
    "labels_outside_0_1": (lambda d: str(_csv(d, "path,label\na.png,2\nb.png,-1\n")), [], "labels outside {0, 1}"),
    "unknown_split_in_csv": (lambda d: str(_csv(d, "path,label,split\na.png,1,holdout\nb.png,0,train\n")), [], "unknown split"),
    "path_escaping_the_root": (lambda d: str(_csv(d / "inner", "path,label\n../outside.png,1\nb.png,0\n")), [],
                               "resolves outside the image root"),
    "absolute_path_outside": (lambda d: str(_csv(d, "path,label\n/etc/passwd.png,1\nb.png,0\n")), [], "outside the image root"),
    "listed_files_missing": (lambda d: str(_csv(d, "path,label\nx.png,1\ny.png,0\nz.png,1\n", ())), [], "do not exist"),
    "listed_files_not_images": (lambda d: str(_csv(d, "path,label\na.txt,1\nb.exe,0\n", ())), [], "no usable rows"),
    "empty_csv": (lambda d: str(_csv(d, "")), [], "cannot read CSV manifest"),
    "binary_garbage_csv": (lambda d: (d.mkdir(parents=True, exist_ok=True), (d / "x.csv").write_bytes(np.random.default_rng(1).bytes(2048)),
                                      str(d / "x.csv"))[-1], [], "CSV manifest"),
    "registered_without_root": (lambda d: "rvf10k", [], "needs --data-root"),
    "registered_root_missing": (lambda d: "140k", ["--data-root", "/nonexistent/140k"], "does not exist"),
    "unknown_synthetic_source": (lambda d: "synthetic:nope", [], "unknown synthetic source"),
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_bad_dataset_is_one_line_and_no_run_directory(corpus, tiny_benchmark, name, capsys):
    build, extra, says = DATASETS[name]
    spec = build(corpus / "datasets" / name)
    root = extra[extra.index("--data-root") + 1] if "--data-root" in extra else None
    with pytest.raises(DatasetError, match=None):
        dataset = resolve_dataset(spec, root)
        for split in ("train", "val", "test"):
            dataset.split(split)
    runs = corpus / "runs" / name
    code, _, err = cli(["train", "--data", spec, *extra, "--arch", "resnet-tiny", "--epochs", "1", "--runs-dir", str(runs)],
                       capsys)
    assert_one_line_error(code, err, says)
    assert not runs.exists() or not any(runs.iterdir()), "bad data must fail before a run directory exists"


# each flag at a value outside its domain, and the phrase of the refusal
OUT_OF_DOMAIN = {
    "epochs_zero": (["--epochs", "0"], "epochs must be a number >= 1, got 0"),
    "batch_size_zero": (["--batch-size", "0"], "batch-size must be a number >= 1"),
    "lr_zero": (["--lr", "0"], "lr must be a number > 0"),
    "lr_negative": (["--lr", "-0.1"], "lr must be a number > 0"),
    "image_size_tiny": (["--image-size", "4"], "image-size must be a number >= 16"),
    "max_train_samples_zero": (["--max-train-samples", "0"], "max-train-samples must be a number >= 1"),
    "log_every_zero": (["--log-every", "0"], "log-every must be a number >= 1"),
    "patience_zero": (["--patience", "0"], "patience"),
}


@pytest.mark.parametrize("name", list(OUT_OF_DOMAIN))
def test_a_setting_out_of_its_domain_is_refused_before_anything_is_written(tiny_benchmark, tmp_path, name, capsys):
    flags, says = OUT_OF_DOMAIN[name]
    runs = tmp_path / "runs"
    base = ["train", "--method", "teacher", *TINY_TEACHER, "--epochs", "1", "--runs-dir", str(runs)]
    code, _, err = cli([*base, *flags], capsys)  # argparse keeps the last --epochs: the one under test
    assert_one_line_error(code, err, says)
    assert not runs.exists(), "refused before a run directory (or the runs folder) exists"


# ------------------------------------------------------------------------------------ checkpoints


def _header(**changes) -> dict:
    return {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, **changes}


def _checkpoint_cases(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model("resnet-tiny")
    data = good.read_bytes()
    cases = {}

    def case(name: str, says: str, write) -> None:
        path = folder / name
        write(path)
        cases[name] = (path, says)

    case("wrong_architecture.safetensors", "does not match the architecture",
         lambda p: save_checkpoint(p, model, _header(model={"type": "resnet", "arch": "resnet18"})))
    case("truncated.safetensors", "truncated", lambda p: p.write_bytes(data[: len(data) // 2]))
    case("header_only.safetensors", "truncated", lambda p: p.write_bytes(data[:2000]))
    case("not_a_checkpoint.safetensors", "not a safetensors checkpoint", lambda p: p.write_text("hello, world\n" * 50))
    case("empty.safetensors", "not a safetensors checkpoint", lambda p: p.write_bytes(b""))
    case("version_mismatch.safetensors", "checkpoint format 99",
         lambda p: save_file({"w": torch.zeros(2)}, str(p), metadata={"core": '{"format_version": 99}'}))
    case("foreign.safetensors", "without this project's header", lambda p: save_file({"w": torch.zeros(2)}, str(p)))
    case("damaged_header.safetensors", "damaged checkpoint header",
         lambda p: save_file({"w": torch.zeros(2)}, str(p), metadata={"core": '{"format_version": 1, "mod'}))
    case("unknown_model_type.safetensors", "this version can build",
         lambda p: save_checkpoint(p, model, _header(model={"type": "transformer", "arch": "vit"})))
    case("header_without_normalization.safetensors", "this version can build",
         lambda p: save_checkpoint(p, model, {"model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32}))
    case("plain_state_dict.pt", "not one written by", lambda p: torch.save(model.state_dict(), p))
    case("garbage.onnx", "not a readable ONNX", lambda p: p.write_bytes(np.random.default_rng(2).bytes(512)))
    case("empty_run_directory", "holds no best.safetensors", lambda p: p.mkdir())
    case("missing.safetensors", "no such checkpoint", lambda p: None)
    return cases


CHECKPOINT_CASES = ["wrong_architecture.safetensors", "truncated.safetensors", "header_only.safetensors",
                    "not_a_checkpoint.safetensors", "empty.safetensors", "version_mismatch.safetensors", "foreign.safetensors",
                    "damaged_header.safetensors", "unknown_model_type.safetensors", "header_without_normalization.safetensors",
                    "plain_state_dict.pt", "garbage.onnx", "empty_run_directory", "missing.safetensors"]


@pytest.fixture(scope="module")
def checkpoints(corpus, tiny_checkpoint) -> dict[str, tuple[Path, str]]:
    cases = _checkpoint_cases(corpus / "checkpoints", tiny_checkpoint)
    assert sorted(cases) == sorted(CHECKPOINT_CASES)
    return cases


@pytest.mark.parametrize("name", CHECKPOINT_CASES)
def test_bad_checkpoint_is_one_line_everywhere(checkpoints, name, tmp_path, capsys):
    path, says = checkpoints[name]
    with pytest.raises(CheckpointError):
        core.load_model(path)
    phrases = says.split("|")
    for argv in (["profile", str(path)], ["evaluate", str(path), "--data", "synthetic:gan"],
                 ["export", str(path), "--format", "pt", "--out", str(tmp_path / "out.pt")]):
        code, _, err = cli(argv, capsys)
        assert_one_line_error(code, err, *phrases)


def test_bad_teacher_checkpoint_stops_a_student_before_its_run_directory(checkpoints, tmp_path, capsys):
    path, says = checkpoints["wrong_architecture.safetensors"]
    code, _, err = cli(["train", "--method", "kdfs", "--data", "synthetic", "--arch", "resnet-tiny", "--teacher", str(path),
                        "--runs-dir", str(tmp_path / "runs")], capsys)
    assert_one_line_error(code, err, says)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ videos


def _write_avi(path: Path, size: tuple[int, int], frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for _ in range(frames):
        writer.write(np.zeros((size[1], size[0], 3), np.uint8))
    writer.release()
    return path


def _video_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero_length.mp4").write_bytes(b"")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(3).bytes(4096))
    (folder / "text_named.mp4").write_text("not a video\n" * 100)
    return {
        "zero_length.mp4": (folder / "zero_length.mp4", "empty file"),
        "corrupt.mp4": (folder / "corrupt.mp4", "not a readable video"),
        "text_named.mp4": (folder / "text_named.mp4", "not a readable video"),
        "no_frames.avi": (_write_avi(folder / "no_frames.avi", (64, 64), 0), "no frames|not a readable video"),
        "huge_resolution.avi": (_write_avi(folder / "huge_resolution.avi", (4096, 2304), 1), "larger than 4K"),
        "missing.mp4": (folder / "missing.mp4", "no such video"),
    }


VIDEO_CASES = ["zero_length.mp4", "corrupt.mp4", "text_named.mp4", "no_frames.avi", "huge_resolution.avi", "missing.mp4"]


@pytest.fixture(scope="module")
def videos(corpus) -> dict[str, tuple[Path, str]]:
    return _video_cases(corpus / "videos")


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_bad_video_is_one_line(videos, tiny_checkpoint, name, capsys):
    from core.data.video import VideoError, probe_video

    path, says = videos[name]
    with pytest.raises(VideoError):
        probe_video(path)
    code, _, err = cli(["video", str(path), "--checkpoint", str(tiny_checkpoint)], capsys)
    assert_one_line_error(code, err, *says.split("|"))


def test_video_without_faces_is_analysed_without_a_verdict(corpus, tiny_checkpoint, capsys):
    from core.data.synthetic_video import ClipConfig, render_clip, write_video

    config = ClipConfig(seconds=1.0, fps=8.0, width=160, height=96)
    clip = write_video(corpus / "videos" / "no_faces.mp4", render_clip(None, config), config.fps)
    code, out, err = cli(["video", str(clip), "--checkpoint", str(tiny_checkpoint), "--num-frames", "4", "--json"], capsys)
    assert code == 0, err
    result = last_json(out)
    assert result["faces_total"] == 0 and result["label"] is None and "no face found" in result["verdict"]
