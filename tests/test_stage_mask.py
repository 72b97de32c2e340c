"""The stage-shared residual mask (``residual_mask: stage``, issue 31): one keep/drop mask per stage over its
residual stream, and the narrower compact network it gives.

- the wiring: which mask narrows which conv, ResNet-50 (downsample-opened stages) and the tiny ResNet (the stem
  writes layer1's stream);
- surgery is exact: the compact network against the masked student and against an independent reference (a plain
  torchvision network whose dropped channels' BatchNorm affine is zero), for random masks and the extremes;
- the MACs and params the KDFS penalty sees equal thop's count of the compact network;
- ``block`` (the papers' method, the default) is unchanged: the pre-option forward, cost and keys, bit for bit;
- the option reaches ``train --help``, and a tiny KDFS/Pearson run with ``--residual-mask stage`` writes a student
  whose compact checkpoint has fewer MACs than block mode's, round-trips, serves, and exports to ONNX.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import cli_json
from torch.nn import functional as F

import core
from core.cli import main
from core.models.compact import CompactResNet
from core.models.masked import MaskedResNet, block_convs, mask_wiring, masked_batch_norm
from core.models.registry import build_model
from core.pruning.flops import MaskedCost, profile_model
from core.pruning.surgery import compact_from_masked, pad_compact, round_masks

PATTERNS = ["all", "one", "none", "stream-one"] + [f"random-{i}" for i in range(6)]


def _randomised(model: MaskedResNet) -> MaskedResNet:
    """Non-trivial BatchNorm statistics and affine, so a wrong slice cannot hide."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(1 + 0.2 * torch.randn(module.num_features, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=generator))
    return model.eval()


@pytest.fixture(scope="module", params=["resnet50", "resnet-tiny"])
def stage_student(request) -> MaskedResNet:
    torch.manual_seed(0)
    return _randomised(MaskedResNet(request.param, residual_mask="stage"))


def _set_pattern(model: MaskedResNet, pattern: str, rng: np.random.Generator) -> None:
    """Keep/drop logits whose eval mask is ``pattern``: everything, one filter per layer, nothing (each layer rescues
    one), one channel per stream with the inner convs random, or a random share."""
    channels, streams = model.sampler.channels, [layer.residual for layer in model.layers]
    if pattern == "all":
        keep = np.ones(sum(channels), bool)
    elif pattern in ("one", "none"):
        keep = np.concatenate([np.eye(1, c, rng.integers(c))[0].astype(bool) if pattern == "one" else np.zeros(c, bool)
                               for c in channels])
    else:
        rate = rng.uniform(0.05, 0.95)
        keep = np.concatenate([np.eye(1, c, rng.integers(c))[0].astype(bool) if pattern == "stream-one" and stream
                               else rng.random(c) < rate for c, stream in zip(channels, streams, strict=True)])
    margin = torch.tensor(rng.uniform(0.1, 2.0, len(keep)), dtype=torch.float32)
    with torch.no_grad():
        model.sampler.logits[:, 1] = torch.where(torch.tensor(keep), margin, -margin)
        model.sampler.logits[:, 0] = 0.0


def zeroed_reference(masked: MaskedResNet) -> torch.nn.Module:
    """An independent reference: the plain torchvision network with the student's weights, where every channel the eval
    masks drop has BatchNorm scale and shift 0 (the conv's output there is then exactly 0, as the mask makes it)."""
    reference = build_model(masked.arch)
    reference.load_state_dict({k: v for k, v in masked.state_dict().items() if not k.startswith("sampler.")})
    keep = masked.sampler.split(masked.sampler.eval_mask())
    with torch.no_grad():
        for conv in masked.wiring.convs:
            bn = reference.get_submodule(conv.bn)
            bn.weight.mul_(keep[conv.output])
            bn.bias.mul_(keep[conv.output])
    return reference.eval()


def test_resnet50_stage_wiring():
    model = MaskedResNet("resnet50", residual_mask="stage")
    wiring = model.wiring
    streams = [layer for layer in model.layers if layer.residual]
    assert [(layer.name, layer.channels) for layer in streams] == [
        ("layer1.residual", 256), ("layer2.residual", 512), ("layer3.residual", 1024), ("layer4.residual", 2048)]
    assert len(model.layers) == 4 + 16 * 2, "one mask per stream and per inner conv (conv1, conv2) of each block"
    assert model.sampler.logits.shape == (sum(layer.channels for layer in model.layers), 2)
    index = {layer.name: i for i, layer in enumerate(model.layers)}
    by_conv = {conv.conv: conv for conv in wiring.convs}
    assert len(wiring.block_convs) == 48 and len(wiring.convs) == 52 and "conv1" not in by_conv  # the stem stays full
    for stage, blocks in zip(range(1, 5), (3, 4, 6, 3), strict=True):
        stream, previous = index[f"layer{stage}.residual"], index.get(f"layer{stage - 1}.residual")
        assert (by_conv[f"layer{stage}.0.downsample.0"].output, by_conv[f"layer{stage}.0.downsample.0"].input) == (stream, previous)
        assert by_conv[f"layer{stage}.0.conv1"].input == previous
        for block in range(blocks):
            assert by_conv[f"layer{stage}.{block}.conv3"].output == stream
            assert by_conv[f"layer{stage}.{block}.conv2"].output == index[f"layer{stage}.{block}.conv2"]
            if block:
                assert by_conv[f"layer{stage}.{block}.conv1"].input == stream
    assert wiring.head == index["layer4.residual"]
    tiny = mask_wiring(build_model("resnet-tiny"), "stage")  # BasicBlocks: layer1 adds onto the stem's output
    stem = next(conv for conv in tiny.convs if conv.conv == "conv1")
    assert tiny.layers[stem.output].name == "layer1.residual" and tiny.convs[1].input == stem.output


@pytest.mark.parametrize("pattern", PATTERNS)
def test_stage_compact_is_exact(stage_student, pattern):
    model = stage_student
    rng = np.random.default_rng(PATTERNS.index(pattern))
    _set_pattern(model, pattern, rng)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "none": every layer rescues its best filter, and says so
        compact = compact_from_masked(model)
    with torch.no_grad():
        expected = model(images)
        # 1e-5 per unit of logit scale: float32 reassociation alone reaches 1.05e-5 on a logit of 1.9 (measured)
        bound = 1e-5 * max(1.0, float(expected.abs().max()))
        torch.testing.assert_close(compact(images), expected, atol=bound, rtol=0)
        torch.testing.assert_close(zeroed_reference(model)(images), expected, atol=bound, rtol=0)
    # the stream is physically narrow: writers, readers and the head at the stage's kept width
    kept = [int(k.sum()) for k in model.sampler.split(model.sampler.eval_mask())]
    streams = {layer.name.split(".")[0]: count for layer, count in zip(model.layers, kept, strict=True) if layer.residual}
    width = compact.conv1.out_channels
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(compact, stage):
            last = getattr(block, f"conv{block.depth}")
            assert last.out_channels == streams[stage] and block.conv1.in_channels == width
            assert not hasattr(block, "residual_index"), "no scatter into a full-width stream"
            if block.downsample is not None:
                assert (block.downsample[0].in_channels, block.downsample[0].out_channels) == (width, streams[stage])
            width = streams[stage]
    assert compact.fc.in_features == streams["layer4"]
    if pattern == "all":
        assert compact.active_filters == model.conv_channels
    if pattern in ("one", "none"):
        assert compact.active_filters == [1] * len(model.conv_channels)


def thop_count(model: torch.nn.Module, size: int) -> tuple[float, float]:
    """thop's MACs and params of ``model`` on one ``size`` px image (the papers' counter; BatchNorms counted)."""
    from thop import profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, params = profile(copy.deepcopy(model).eval(), inputs=(torch.zeros(1, 3, size, size),), verbose=False)
    return float(macs), float(params)


@pytest.mark.parametrize("pattern", ["all", "stream-one", "random-0", "random-1"])
def test_stage_cost_counts_the_narrow_stream(stage_student, pattern):
    """The differentiable cost KDFS's penalty reads equals thop's count of the compact network, exactly."""
    model, size = stage_student, 64
    _set_pattern(model, pattern, np.random.default_rng(PATTERNS.index(pattern)))
    cost = MaskedCost(model, size)
    compact = compact_from_masked(model)
    mask = model.sampler.eval_mask().double()
    macs, params = thop_count(compact, size)
    assert float(cost.macs(mask)) == pytest.approx(macs, rel=1e-9)
    assert float(cost.params(mask)) == pytest.approx(params, rel=1e-9)
    assert profile_model(compact, size)["macs"] == pytest.approx(macs, rel=1e-9)
    if pattern == "all":
        assert cost.full_macs == pytest.approx(thop_count(build_model(model.arch), size)[0], rel=1e-9)


def test_stage_cost_reaches_the_stream_masks_through_the_straight_through_mask():
    torch.manual_seed(0)
    model = MaskedResNet("resnet-tiny", residual_mask="stage").train()
    model.sampler.seed(0)
    cost = MaskedCost(model, 32)
    mask, _ = model.sampler()
    cost.macs(mask).backward()
    gradient = model.sampler.split(model.sampler.logits.grad[:, 1])
    for layer, values in zip(model.layers, gradient, strict=True):
        assert torch.count_nonzero(values) > 0, f"{layer.name} gets no gradient from the cost"


def test_block_mode_is_unchanged():
    """``block`` (the default) computes what it computed before the option existed: the state-dict keys, the forward
    (a copy of the pre-option loop, bit for bit, with sampled masks), the cost's formula, and pinned values."""
    torch.manual_seed(0)
    model = MaskedResNet("resnet-tiny")
    assert model.residual_mask == "block"
    assert list(model.state_dict()) == [*build_model("resnet-tiny").state_dict(), "sampler.logits"]
    assert [layer.name for layer in model.layers] == [f"layer{s}.0.conv{c}" for s in range(1, 5) for c in (1, 2)]
    model.train()
    model.sampler.seed(7)
    model.sampler.temperature = 0.7
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits, _, mask, _ = model.forward_features(images)
    # the pre-option forward, written out: each block's convs read their masks in order; nothing else is masked
    # (on a copy: a training-mode pass moves the BatchNorm running statistics the eval check below reads)
    replay = copy.deepcopy(model)
    masks = iter(replay.sampler.split(mask))
    x = replay.maxpool(replay.relu(replay.bn1(replay.conv1(images))))
    for stage in (replay.layer1, replay.layer2, replay.layer3, replay.layer4):
        for block in stage:
            identity = x if block.downsample is None else block.downsample(x)
            out, pairs = x, block_convs(block)
            for position, (conv, bn) in enumerate(pairs):
                out = masked_batch_norm(bn, conv(out), next(masks))
                out = F.relu(out) if position < len(pairs) - 1 else out
            x = F.relu(out + identity)
    assert torch.equal(logits, replay.fc(torch.flatten(replay.avgpool(x), 1)).reshape(-1))
    # pinned before the option existed (this machine's CPU build; exact there)
    assert logits.tolist() == pytest.approx([0.8526652455329895, -0.015667026862502098], rel=1e-5)
    cost = MaskedCost(model, 32)
    assert (cost.const_macs, cost.const_params, cost.full_macs, cost.full_params) == (2883072.0, 183873.0, 18279936.0,
                                                                                       4906305.0)
    assert float(cost.macs(mask.detach())) == pytest.approx(7901656.0, rel=1e-6)
    model.eval()
    with torch.no_grad():
        assert model(images).flatten().tolist() == pytest.approx([0.041596345603466034, 0.033491361886262894], rel=1e-5)
    from core.models import build_from_spec

    assert build_from_spec({"type": "masked-resnet", "arch": "resnet-tiny"}).residual_mask == "block", \
        "a header without residual_mask (every checkpoint before the option) builds block masks"


def test_pearson_loss_scores_every_writer_of_the_stream():
    """Stage mode: each writer of a stream (the downsample, every block's last conv) is scored on its own filters and
    reads the stream's keep probability; L counts the scored convs (52 in a ResNet-50)."""
    from core.methods.pearson import correlation_loss
    from core.pruning.correlation import redundancy_scores

    torch.manual_seed(0)
    model = MaskedResNet("resnet50", residual_mask="stage")
    keep = torch.rand(model.sampler.logits.shape[0], generator=torch.Generator().manual_seed(2))
    phi = model.sampler.split(keep)
    terms = [float((redundancy_scores(model.get_submodule(conv.conv).weight.detach()) * phi[conv.output]).mean())
             for conv in model.wiring.convs]
    assert len(terms) == 52
    assert float(correlation_loss(model, keep).detach()) == pytest.approx(np.mean(terms), rel=1e-5)


@pytest.mark.parametrize("arch", ["resnet50", "resnet-tiny"])
def test_stage_rounding_and_padding_keep_the_outputs(arch):
    """``export --round-to``: the masked student rounded (its compact twin agrees), and a compact one padded with zero
    channels, streams included, gives the same logits."""
    torch.manual_seed(1)
    model = _randomised(MaskedResNet(arch, residual_mask="stage"))
    _set_pattern(model, "random-2", np.random.default_rng(5))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    compact = compact_from_masked(model)
    padded = pad_compact(compact, 8)
    assert all(count % 8 == 0 or count == width for count, width in
               zip(padded.layer_counts, [layer.channels for layer in padded.wiring.layers], strict=True))
    with torch.no_grad():
        torch.testing.assert_close(padded(images), compact(images), atol=1e-5, rtol=0)
    round_masks(model, 8)
    rounded = compact_from_masked(model)
    assert all(count % 8 == 0 for count in rounded.layer_counts)
    with torch.no_grad():
        torch.testing.assert_close(rounded(images), model(images), atol=1e-5, rtol=0)


def test_a_compact_spec_refuses_streams_of_unequal_width():
    counts = [1] * 8
    counts[1], counts[3] = 5, 6  # resnet-tiny: conv2 of each block writes its stage's stream (and layer1's, the stem)
    assert CompactResNet("resnet-tiny", counts, "stage").layer_counts[:4] == [5, 1, 6, 1]
    counts = [2] * 48
    counts[2] = 3  # layer1.0.conv3, where layer1.1.conv3 keeps 2
    with pytest.raises(ValueError, match="layer1.residual: the last convs of a stage share"):
        CompactResNet("resnet50", counts, "stage")


# ----------------------------------------------------------------------------------------------------------------------
# The option through the command line and a tiny training run

TINY = dict(data="synthetic", arch="resnet-tiny", image_size=32, batch_size=16, num_workers=0, log_every=1)


@pytest.fixture(scope="module")
def tiny_teacher(tiny_benchmark, tmp_path_factory):
    from core.config import build_config
    from core.training.engine import train

    runs = tmp_path_factory.mktemp("teacher")
    return train(build_config(method="teacher", epochs=1, runs_dir=str(runs), **TINY), progress=False).run_dir


def _student(teacher, runs, method: str, residual_mask: str) -> dict:
    return cli_json("train", "--method", method, "--teacher", str(teacher), "--data", "synthetic", "--arch", "resnet-tiny",
                    "--image-size", "32", "--batch-size", "8", "--num-workers", "0", "--max-train-samples", "32",
                    "--max-eval-samples", "24", "--epochs", "1", "--runs-dir", str(runs), "--residual-mask", residual_mask)


def test_the_option_reaches_train_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--residual-mask {block,stage}" in shown and "one mask per stage over its residual stream" in shown


@pytest.fixture(scope="module")
def stage_runs(tiny_teacher, tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("students")
    return {(method, mode): _student(tiny_teacher, runs, method, mode)
            for method, mode in (("kdfs", "block"), ("kdfs", "stage"), ("pearson", "stage"))}


@pytest.mark.parametrize("method", ["kdfs", "pearson"])
def test_a_stage_run_writes_a_narrower_student(stage_runs, method, tmp_path):
    block, stage = stage_runs[("kdfs", "block")], stage_runs[(method, "stage")]
    assert stage["status"] == "finished"
    masked = core.load_model(stage["run_dir"], serve=False)
    assert masked.header["model"] == {"type": "masked-resnet", "arch": "resnet-tiny", "residual_mask": "stage"}
    assert masked.header["config"]["method_options"]["residual_mask"] == "stage"
    assert isinstance(masked, MaskedResNet) and masked.residual_mask == "stage"
    pruning = masked.header["pruning"]
    assert pruning["layers"] == [f"layer{s}.0.conv{c}" for s in range(1, 5) for c in (1, 2)]  # per block conv, as before
    assert pruning["active_filters"][1::2] == [len(k) for k in pruning["kept"][1::2]]
    # the compact checkpoint: a narrower stream, fewer MACs than block mode's, the same logits, round trip and serving
    out = Path(tmp_path) / "stage.safetensors"
    exported = cli_json("export", stage["run_dir"], "--format", "safetensors", "--out", str(out))
    assert exported["kind"] == "compact-resnet" and exported["max_abs_diff"] <= 1e-5
    profiled, block_profile = cli_json("profile", str(out)), cli_json("profile", block["run_dir"])
    assert profiled["macs"] == exported["macs"] == pytest.approx(pruning["compact_macs"], rel=1e-9)
    assert profiled["macs"] < block_profile["macs"] and profiled["params"] < block_profile["params"]
    assert profiled["macs_reduction"] > block_profile["macs_reduction"]
    compact = core.load_model(out, serve=False)
    assert compact.header["model"]["residual_mask"] == "stage" and compact.fc.in_features < 512
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = masked(images)
        torch.testing.assert_close(compact(images), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(core.load_model(out)(images), expected, atol=1e-4, rtol=0)  # served: BN folded


def test_a_stage_student_exports_to_onnx(stage_runs, tmp_path):
    """``export --format onnx`` matches, and so does the ONNX Runtime serving of the run (its cached export)."""
    run_dir = stage_runs[("kdfs", "stage")]["run_dir"]
    out = tmp_path / "stage.onnx"
    exported = cli_json("export", run_dir, "--format", "onnx", "--out", str(out))
    assert exported["kind"] == "compact-resnet" and exported["max_abs_diff"] <= 1e-4
    masked = core.load_model(run_dir, serve=False)
    onnx_model = core.load_model(out)
    assert onnx_model.header["model"]["residual_mask"] == "stage"
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = masked(images).reshape(-1)
        torch.testing.assert_close(onnx_model(images).reshape(-1), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(core.load_model(run_dir, runtime="onnx")(images).reshape(-1), expected, atol=1e-4, rtol=0)
