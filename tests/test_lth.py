"""Lottery tickets: exact global magnitude masks, rewinding, IMP rounds, one-shot, ticket transfer, architectures."""

from __future__ import annotations

import pytest
import torch

import core
from core.config import build_config
from core.methods.lth import imp_schedule
from core.models.registry import build_model
from core.models.ticket import Ticket, prunable_names
from core.pruning.magnitude import magnitude_masks
from core.training.drivers import iterative_magnitude_pruning
from core.training.engine import train

TINY = dict(data="synthetic", image_size=32, epochs=1, batch_size=16, num_workers=0, max_train_samples=48, max_eval_samples=24)


def test_architectures_match_their_published_shapes():
    meso = build_model("mesonet")
    assert sum(p.numel() for p in meso.parameters()) == 27_977  # Meso-4 at its 256 px input
    for size in (64, 256):
        assert meso(torch.randn(2, 3, size, size)).shape == (2, 1)
    cnn = build_model("cnn5")
    assert len(prunable_names(cnn)) == 5 and cnn(torch.randn(2, 3, 64, 64)).shape == (2, 1)


def test_magnitude_masks_are_global_exact_and_never_revive_a_pruned_weight():
    generator = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(10, 10, generator=generator), "b": torch.randn(50, generator=generator) * 3}
    masks = {"a": torch.ones(10, 10), "b": torch.ones(50)}
    half = magnitude_masks(weights, masks, 0.5)
    assert sum(int(m.sum()) for m in half.values()) == 75
    flat = torch.cat([weights["a"].flatten(), weights["b"]]).abs()
    threshold = flat.sort(descending=True).values[74]
    kept = torch.cat([half["a"].flatten(), half["b"]]).bool()
    assert (flat[kept] >= threshold).all() and (flat[~kept] <= threshold).all(), "the largest |w| across layers survive"
    assert int(half["b"].sum()) > int(half["a"].sum()), "global: the larger-scale layer keeps more"
    # a pruned weight that became large stays pruned
    grown = {"a": weights["a"].clone(), "b": weights["b"].clone()}
    grown["a"][~half["a"].bool()] = 100.0
    deeper = magnitude_masks(grown, half, 0.8)
    assert sum(int(m.sum()) for m in deeper.values()) == 30
    assert not (deeper["a"].bool() & ~half["a"].bool()).any()
    with pytest.raises(ValueError, match="cannot lower the sparsity"):
        magnitude_masks(weights, deeper, 0.5)


def test_imp_schedule_compounds_the_rate_up_to_the_target():
    assert imp_schedule(0.2, 0.8)[:3] == pytest.approx([0.2, 0.36, 0.488])
    assert imp_schedule(0.2, 0.8)[-1] == 0.8 and len(imp_schedule(0.2, 0.8)) == 8
    assert imp_schedule(0.5, 0.75) == pytest.approx([0.5, 0.75])


def test_ticket_forward_ignores_pruned_weights_and_rewinds():
    torch.manual_seed(0)
    ticket = Ticket("cnn5").eval()
    initial = {k: v.clone() for k, v in ticket.net.state_dict().items()}
    masks = {name: (torch.rand_like(mask) > 0.5).float() for name, mask in ticket.masks().items()}
    ticket.set_masks(masks)
    images = torch.randn(2, 3, 32, 32)
    before = ticket(images)
    with torch.no_grad():  # changing only pruned weights changes nothing
        for name, parameter in ticket.net.named_parameters():
            if name in masks:
                parameter.add_(100 * (1 - masks[name]))
    torch.testing.assert_close(ticket(images), before)
    torch.testing.assert_close(ticket.sparse_network()(images), before, atol=1e-5, rtol=0)
    with torch.no_grad():
        for parameter in ticket.net.parameters():
            parameter.mul_(3)
    ticket.rewind()
    for key, value in ticket.net.state_dict().items():
        torch.testing.assert_close(value, initial[key])
    counts = ticket.counts()
    assert counts["surviving_prunable"] == sum(int(m.sum()) for m in masks.values())
    assert counts["surviving_params"] == counts["dense_params"] - counts["prunable"] + counts["surviving_prunable"]


def test_imp_rounds_one_shot_and_transfer(tiny_benchmark, tmp_path):
    config = build_config(method="lth", arch="cnn5", runs_dir=str(tmp_path / "runs"),
                          method_options={"prune_rate": 0.5, "target_sparsity": 0.75}, **TINY)
    results = iterative_magnitude_pruning(config, one_shot=True, progress=False)
    tickets = [core.load_model(r.run_dir / "last.safetensors") for r in results]
    headers = [t.header["lth"] for t in tickets]
    assert [h["round"] for h in headers] == [0, 1, 2, 1]
    assert [round(h["sparsity"], 3) for h in headers] == [0.0, 0.5, 0.75, 0.75]
    assert headers[3]["chain"] == headers[0]["chain"] + "-one-shot"
    dense, first, second = tickets[:3]
    # round 2's mask lies inside round 1's, and both start from the dense run's initialisation
    for name in dense.names:
        assert not (second.masks()[name].bool() & ~first.masks()[name].bool()).any()
    rewinds = [key for key in dense.state_dict() if key.startswith("rewind__")]
    assert rewinds
    for key in rewinds:
        torch.testing.assert_close(second.state_dict()[key], dense.state_dict()[key])
    # the trained ticket's pruned weights never mattered, and its sparse export gives the same outputs
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(second.sparse_network()(images), second(images), atol=1e-5, rtol=0)
    # a ticket transfers to another dataset: same mask, weights rewound, trained there
    moved = train(build_config(method="lth", arch="cnn5", runs_dir=str(tmp_path / "moved"), init_checkpoint=str(results[2].run_dir),
                               method_options={"sparsity": 0.75}, **{**TINY, "data": "synthetic:gan"}), progress=False)
    transferred = core.load_model(moved.run_dir)
    assert transferred.header["dataset"].endswith("gan")
    for name in dense.names:
        torch.testing.assert_close(transferred.masks()[name], second.masks()[name])
    with pytest.raises(ValueError, match="prunes a previous run"):
        train(build_config(method="lth", arch="cnn5", runs_dir=str(tmp_path / "bad"), method_options={"sparsity": 0.5}, **TINY),
              progress=False)


def test_lottery_tickets_page_plots_the_chain_and_compares_grad_cam(tiny_benchmark, tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
    config = build_config(method="lth", arch="mesonet", runs_dir=str(tmp_path / "runs"),
                          method_options={"prune_rate": 0.5, "target_sparsity": 0.5}, **TINY)
    iterative_magnitude_pruning(config, one_shot=True, progress=False)
    home = Path(__file__).resolve().parents[1] / "dashboard" / "Home.py"
    app = AppTest.from_file(str(home), default_timeout=120).run()
    app.switch_page("views/tickets.py").run()
    assert not app.exception
    assert app.title[0].value == "Lottery tickets"
    assert len(app.get("plotly_chart")) == 1 and len(app.dataframe) == 1
    captions = [caption for element in app.get("image") for caption in element.captions]
    assert len(captions) == 2 and captions[0].startswith("round 0: 0% sparse") and captions[1].startswith("round 1: 50% sparse")
    app.select_slider(key="tickets_round").set_value(0).run()
    assert not app.exception
    app.switch_page("views/pruning.py").run()  # the ticket's surviving weights per layer
    assert not app.exception
    assert "Lottery tickets and channel-pruned networks" in [s.value for s in app.subheader]
    assert len(app.multiselect(key="pruning_other").value) == 1
