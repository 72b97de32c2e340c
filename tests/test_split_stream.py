"""The split residual stream (core.models.split_stream): the graph form of a per-block-masked compact student gives
the compact network's logits and stage statistics (in the original channel order), carries only the channels a
stage's blocks write through them, and exports without a scatter, gather or transpose. Also the
padding it relies on (core.pruning.surgery.pad_compact): a last conv padded to the stream's full width adds in order."""

from __future__ import annotations

import pytest
import torch

from core.evaluation.ood import FeatureTap, in_original_order, stage_statistics
from core.models.compact import CompactResNet
from core.models.masked import MaskedResNet
from core.models.split_stream import STAGES, SplitStreamResNet, graph_form
from core.pruning.surgery import compact_from_masked, pad_compact


def _compact(arch: str, seed: int, keep: float) -> CompactResNet:
    """A compact student of ``arch`` whose masks keep about ``keep`` of the filters, with random BatchNorm statistics
    (so that every channel's value matters)."""
    torch.manual_seed(seed)
    masked = MaskedResNet(arch).eval()
    kept = torch.rand(masked.sampler.logits.shape[0]) < keep
    masked.sampler.logits.data[:, 0], masked.sampler.logits.data[:, 1] = 0.0, torch.where(kept, 1.0, -1.0)
    compact = compact_from_masked(masked).eval()
    for module in compact.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1), module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.normal_(0, 0.1)
    return compact


def _statistics(network, images):
    with torch.no_grad(), FeatureTap(network, list(STAGES)) as tap:
        logits = network(images)
        return logits, tap.take()


CASES = [("resnet50", 0, 0.3, 1), ("resnet50", 1, 0.3, 16), ("resnet50", 2, 0.9, 8), ("resnet-tiny", 0, 0.6, 1),
         ("resnet-tiny", 1, 0.6, 8)]


@pytest.mark.parametrize(("arch", "seed", "keep", "round_to"), CASES)
def test_the_split_stream_gives_the_compact_logits_and_statistics(arch, seed, keep, round_to):
    compact = _compact(arch, seed, keep)
    if round_to > 1:
        compact = pad_compact(compact, round_to)
    split = graph_form(compact)
    assert isinstance(split, SplitStreamResNet)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    (expected, expected_statistics), (logits, statistics) = _statistics(compact, images), _statistics(split, images)
    assert (logits - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
    for stage in STAGES:  # in the original channel order, although the stage's output is permuted
        torch.testing.assert_close(statistics[stage], expected_statistics[stage], rtol=1e-4, atol=1e-4)


def test_only_the_channels_a_stage_s_blocks_write_go_through_its_blocks():
    compact = _compact("resnet50", 0, 0.3)
    split = graph_form(compact)
    for name in STAGES:
        blocks, stage = getattr(compact, name), getattr(split, name)
        written = sorted({int(c) for block in blocks for c in block.residual_index})
        width = blocks[0].residual_channels
        assert (stage.written, stage.passed) == (len(written), width - len(written)) and 0 < stage.written < width
        assert stage.channel_order.tolist() == written + sorted(set(range(width)) - set(written))
        for block in stage.blocks:  # each block's last conv writes the written part, no more
            assert getattr(block, f"conv{block.depth}").out_channels == stage.written
    # the head reads the last stage's permuted output through permuted weights
    order = split.layer4.channel_order
    torch.testing.assert_close(split.fc.weight, compact.fc.weight[:, order])


def test_statistics_of_a_permuted_map_come_back_in_the_original_order():
    feature = torch.rand(2, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    permuted = feature[:, order]
    torch.testing.assert_close(in_original_order(stage_statistics(permuted), torch.argsort(order)),
                               stage_statistics(feature))


def test_other_networks_are_exported_as_they_are():
    from core.models import build_model

    teacher = build_model("resnet-tiny")
    assert graph_form(teacher) is teacher
    stage_masked = CompactResNet("resnet-tiny", [4, 4, 8, 8, 16, 16, 32, 32], residual_mask="stage")
    assert graph_form(stage_masked) is stage_masked


def test_filters_that_land_on_one_channel_add_up_as_the_scatter_adds_them():
    compact = _compact("resnet50", 0, 0.3)
    block = compact.layer2[1]
    block.residual_index[1] = block.residual_index[0]  # a second filter lands on the first one's channel
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = compact(images)
        assert (graph_form(compact)(images) - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_the_exported_graph_has_no_scatter_and_one_concat_per_stage(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from core.deploy.onnx import write_onnx

    compact = _compact("resnet50", 0, 0.3)
    header = {"image_size": 32, "model": {"type": "compact-resnet", "arch": "resnet50"}}
    path = tmp_path / "student.onnx"
    write_onnx(compact, header, 32, path)
    operators = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert not [op for op in operators if op.startswith("Scatter") or op in ("Gather", "Pad", "Transpose")]
    assert operators.count("Concat") == len(STAGES)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    with torch.no_grad():
        expected = compact(images)
    assert abs(torch.from_numpy(logits) - expected).max() <= 1e-4


def test_a_last_conv_padded_to_the_full_stream_adds_in_order():
    """pad_compact: a block whose kept last-conv filters, rounded up, fill the stream writes channel c with filter c
    (CompactBlock adds such an output without a scatter): the same logits as before padding."""
    compact = _compact("resnet50", 3, 0.97)
    full = [(name, index) for name in STAGES for index, block in enumerate(getattr(compact, name))
            if block.residual_channels - len(block.residual_index) < 16]
    assert full, "at 97% kept, some last conv rounds up to its stream's full width"
    padded = pad_compact(compact, 16)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = compact(images)  # logits near 25 here: 1e-5 per unit of logit scale (float reassociation)
        assert (padded(images) - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
    for name, index in full:
        block = getattr(padded, name)[index]
        assert block.residual_index.tolist() == list(range(block.residual_channels))


def test_a_masked_student_s_stages_report_their_statistics_as_its_compact_network_s():
    """A searched (masked) student runs its stages block by block; its stage taps still fire, with the maps the compact
    network's stages give (the out-of-distribution model of a search checkpoint)."""
    torch.manual_seed(0)
    masked = MaskedResNet("resnet50").eval()
    kept = torch.rand(masked.sampler.logits.shape[0]) < 0.5
    masked.sampler.logits.data[:, 0], masked.sampler.logits.data[:, 1] = 0.0, torch.where(kept, 1.0, -1.0)
    compact = compact_from_masked(masked).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    (expected, expected_statistics), (logits, statistics) = _statistics(compact, images), _statistics(masked, images)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    for stage in STAGES:
        torch.testing.assert_close(statistics[stage], expected_statistics[stage], rtol=1e-4, atol=1e-4)
