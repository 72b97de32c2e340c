"""``report --mcnemar CKPT_A CKPT_B --on D`` (the Pearson paper's Table 9): two checkpoints trained on different data,
each scored with its own preprocess on one test set; the table, statistic, p-value and test against an independent
count; bad input is one line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from cli_support import cli_json

from core.checkpoint import save_checkpoint

ON = "synthetic"  # every source's test images: 60


@pytest.fixture(scope="module")
def pair(tiny_benchmark, tmp_path_factory) -> tuple[Path, Path]:
    """Two untrained resnet-tiny networks, "trained on" two sources with their own normalisations, each with its head's
    bias set so that it calls about half of the test images fake: their mistakes differ image by image."""
    from core.data.datasets import resolve_dataset
    from core.data.images import Normalization, eval_transform, load_image
    from core.models import build_model
    from core.pruning.flops import profile_model

    folder = tmp_path_factory.mktemp("pair")
    samples = resolve_dataset(ON, None).split("test")
    paths = []
    for seed, data, mean, std in ((0, "synthetic:gan", [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
                                  (1, "synthetic:warp", [0.3, 0.4, 0.5], [0.2, 0.3, 0.4])):
        torch.manual_seed(seed)
        network = build_model("resnet-tiny").eval()
        preprocess = eval_transform(32, Normalization(tuple(mean), tuple(std)))
        with torch.no_grad():
            logits = network(torch.stack([preprocess(load_image(s.path)) for s in samples])).reshape(-1)
            network.fc.bias -= logits.median()
        header = {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
                  "normalization": {"mean": mean, "std": std}, "dataset": data, "config": {"data": data},
                  **profile_model(network, 32)}
        paths.append(folder / f"{data.split(':')[1]}.safetensors")
        save_checkpoint(paths[-1], network, header)
    return paths[0], paths[1]


def test_the_table_and_p_value_are_those_of_an_independent_count(pair, tmp_path):
    from core.evaluation.evaluate import evaluate
    from core.stats import mcnemar

    a, b = pair
    result = cli_json("report", "--mcnemar", str(a), str(b), "--on", ON, "--out", str(tmp_path))
    pair_result = result["mcnemar"]
    correct_a = evaluate(a, ON, "test", use_cache=False, progress=False).correct()
    correct_b = evaluate(b, ON, "test", use_cache=False, progress=False).correct()
    assert correct_a.keys() == correct_b.keys() and len(correct_a) == 60
    count = [[0, 0], [0, 0]]
    for image, hit_a in correct_a.items():
        count[0 if hit_a else 1][0 if correct_b[image] else 1] += 1  # rows: A correct/wrong; columns: B correct/wrong
    assert count[0][1] != count[1][0]  # the pair disagrees unevenly: a transposed table would not pass
    assert pair_result["table"] == count
    statistic, p_value = mcnemar(count)
    assert (pair_result["statistic"], pair_result["p_value"]) == (statistic, p_value)
    assert pair_result["test"] == ("exact binomial" if count[0][1] + count[1][0] < 25 else "chi-square (continuity corrected)")
    assert (pair_result["a_trained_on"], pair_result["b_trained_on"], pair_result["tested_on"]) == \
        ("synthetic:gan", "synthetic:warp", ON)
    assert pair_result["n"] == 60 and result["tables"] == {"mcnemar_pair": str(tmp_path / "mcnemar_pair.md")}
    row = (tmp_path / "mcnemar_pair.md").read_text().splitlines()[2].split(" | ")
    assert row[6:10] == [str(count[0][0]), str(count[0][1]), str(count[1][0]), str(count[1][1])]
    assert row[-1].strip(" |") == ""  # the published p-value: not typed in, left empty
    assert "none is invented" in (tmp_path / "report.md").read_text()


def test_with_run_directories_the_pair_joins_the_report(pair, tmp_path):
    a, b = pair
    result = cli_json("report", str(a), "--mcnemar", str(a), str(b), "--on", "synthetic:warp", "--out", str(tmp_path),
                      "--no-latency", "--no-png")
    assert {"main", "mcnemar", "mcnemar_pair"} <= set(result["tables"])
    assert result["mcnemar"]["n"] == 12 and result["mcnemar"]["tested_on"] == "synthetic:warp"
    report = (tmp_path / "report.md").read_text()
    assert report.index("## main") < report.index("## mcnemar pair")


def _refusal(argv: list[str]) -> tuple[int, list[str]]:
    from core.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*argv, "--quiet"])
    return code, err.getvalue().strip().splitlines()


@pytest.mark.parametrize("case, message", [
    ("missing checkpoint", "no such checkpoint file or run directory"),
    ("unknown dataset", "unknown dataset 'nosuch'"),
    ("no --on", "needs --on D"),
    ("nothing", "report needs run directories or checkpoints, or --mcnemar"),
])
def test_bad_input_is_one_line(pair, case, message, tmp_path):
    a, b = map(str, pair)
    argv = {"missing checkpoint": ["report", "--mcnemar", a, str(tmp_path / "gone.safetensors"), "--on", ON],
            "unknown dataset": ["report", "--mcnemar", a, b, "--on", "nosuch"],
            "no --on": ["report", "--mcnemar", a, b],
            "nothing": ["report"]}[case]
    code, err = _refusal([*argv, "--out", str(tmp_path / "out")])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_two_checkpoints_scored_on_different_images_are_refused(pair, tmp_path):
    """B's cached predictions leave an image out (as a file that failed to decode for one of them would): McNemar
    pairs samples, so the command says how many differ instead of testing fewer."""
    from core.data.datasets import resolve_dataset
    from core.evaluation.evaluate import evaluate, store_predictions
    from core.evaluation.metrics import Predictions

    a, b = pair
    scored = evaluate(b, ON, "test", use_cache=False, progress=False).predictions
    fewer = Predictions(scored.probabilities[1:], scored.labels[1:], scored.indices[1:], scored.skipped + 1, scored.loss,
                        {"unreadable": 1})
    store_predictions(b, resolve_dataset(ON, None).split("test"), "test", fewer, ON)
    try:
        code, err = _refusal(["report", "--mcnemar", str(a), str(b), "--on", ON, "--out", str(tmp_path)])
    finally:
        store_predictions(b, resolve_dataset(ON, None).split("test"), "test", scored, ON)  # the module's others see B whole
    assert code == 2 and len(err) == 1
    assert "scored on different images" in err[0] and "1 only by A, 0 only by B" in err[0]
