"""The dashboard: AppTest for the page, then the real server and a real browser."""

from __future__ import annotations

import getpass
import os
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit_server import fill_tiny_launch, free_port, serve

from core.training.requests import command_line

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("CORE_SCREENSHOTS", "/tmp/core-dashboard-screenshots"))


def test_home_renders_without_exceptions(tiny_benchmark):
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "Lightweight deepfake face detection"
    assert [s.value for s in app.subheader] == ["Shipped checkpoints", "Runs", "Embedded synthetic benchmark"]
    assert "300 images at 32 px" in app.markdown[-1].value
    shipped = app.dataframe[0].value  # sidecars are a column of their checkpoint's row, never rows (or errors) of their own
    assert "error" not in shipped.columns and not shipped["checkpoint"].str.contains(".ood.", regex=False).any()
    assert set(shipped["ood calibration"]) == {"yes"} and "efficientnet_lite0" in set(shipped["arch"])
    assert shipped.set_index("arch").loc["efficientnet_lite0", "kind"] == "dense"


PAGES = {"views/runs.py": "Runs & checkpoints", "views/data.py": "Data", "views/pruning.py": "Pruning",
         "views/feature_maps.py": "Feature maps",
         "views/correlation.py": "Filter correlation", "views/evaluation.py": "Evaluation", "views/embeddings.py": "Embeddings"}


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_on_the_shipped_checkpoints(tiny_benchmark, page):
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
    app.switch_page(page).run()
    assert not app.exception
    assert app.title[0].value == PAGES[page] and _shows_content(app)
    assert app.sidebar.header[0].value == "Train" and app.sidebar.button(key="launch_button")
    if page == "views/runs.py":
        assert app.dataframe and app.multiselect(key="selected_widget").value
        assert "ood calibration" in app.dataframe[0].value.columns and "error" not in app.dataframe[0].value.columns
        assert all("ood calibration: yes" in label for label in app.multiselect(key="selected_widget").options)
        assert len(app.get("download_button")) == len(app.multiselect(key="selected_widget").value)
    if page == "views/data.py":  # the embedded benchmark's faceswap source: declared splits, no leak
        table = app.dataframe[0].value
        assert list(table["split"]) == ["train", "val", "test"] and list(table["usable"]) == [42, 6, 12]
        assert all("declared by the data" in text for text in table["images (and why)"])
        assert "Near-duplicates across splits: 0" in [s.value for s in app.subheader]
        assert any("declared by the data" in c.value for c in app.sidebar.caption), "the sidebar shows what a run would use"
    if page == "views/pruning.py":
        charts = app.get("plotly_chart")
        assert len(charts) >= 2, "active-filter bars and at least one mask-history heatmap"
        assert len(app.multiselect(key="pruning_pick").value) == 2
    if page == "views/evaluation.py":  # the shipped teacher and students on the tiny benchmark's faceswap source
        assert len(app.multiselect(key="evaluation_pick").value) == 3
        assert len(app.get("plotly_chart")) == 1 + 3, "ROC overlay and one confusion matrix per checkpoint"
        assert "McNemar" in [s.value for s in app.subheader][-1] and "p = " in app.markdown[-1].value
        app.toggle(key="evaluation_cross").set_value(True).run()
        assert not app.exception and len(app.get("plotly_chart")) == 1 + 3 + 1
    if page == "views/feature_maps.py":  # the paper's layer 2 of block 1, teacher next to the student
        assert app.selectbox(key="maps_layer").value == "layer1.0.conv2"
        assert len(app.get("plotly_chart")) == 2 and "Pruned in this layer" in app.main.caption[-1].value
        app.selectbox(key="maps_layer").set_value("layer3.2.conv3").run()
        assert not app.exception and len(app.get("plotly_chart")) == 2
    if page == "views/correlation.py":  # before/after heatmaps and the redundancy-vs-keep scatter, Pearson first
        assert "pearson" in app.selectbox(key="correlation_student").value
        assert len(app.get("plotly_chart")) == 3 and app.dataframe
        app.selectbox(key="correlation_layer").set_value("layer2.0.conv2").run()
        assert not app.exception and len(app.get("plotly_chart")) == 3
    if page == "views/embeddings.py":  # teacher and a student, with the k-NN separability of their features
        assert len(app.multiselect(key="embeddings_pick").value) == 2
        assert len(app.get("plotly_chart")) == 2 and len(app.metric) == 2
        app.radio(key="embeddings_colour").set_value("source").run()
        assert not app.exception and len(app.get("plotly_chart")) == 2


def _set_tiny_launch(app: AppTest) -> AppTest:
    app.sidebar.selectbox(key="launch_method").set_value("teacher")
    app.sidebar.radio(key="launch_data_kind").set_value("Embedded benchmark")
    app.sidebar.selectbox(key="launch_source").set_value("all sources")
    app.sidebar.number_input(key="launch_epochs").set_value(2)
    app.sidebar.number_input(key="launch_batch-size").set_value(16)
    app.sidebar.number_input(key="launch_max-train-samples").set_value(32)
    return app.run()


def _shows_content(app: AppTest) -> bool:
    """A chart, a table or an image in the page's main area (not only text)."""
    return any(app.main.get(kind) for kind in ("plotly_chart", "dataframe", "image", "table"))


OTHER_PAGES = sorted(f"views/{p.name}" for p in (REPO / "dashboard" / "views").glob("*.py") if f"views/{p.name}" not in PAGES)


@pytest.mark.parametrize("page", OTHER_PAGES)
def test_every_other_page_shows_content_on_first_launch(tiny_benchmark, page):
    """With no run yet (a fresh clone), each page draws from what ships: lottery tickets and training curves too."""
    from core.runs import default_runs_dir, list_runs

    assert not list_runs(default_runs_dir()), "first launch: no run directory"
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=180).run()
    app.switch_page(page).run()
    assert not app.exception
    assert _shows_content(app), f"{page} shows no chart, table or image"
    if page == "views/curves.py":  # the shipped students' search runs, overlaid; epochs and steps on the x axis
        assert [c for c in app.multiselect(key="curves_pick").value if "student-" in c]
        assert len(app.get("plotly_chart")) == 1 and "15 epochs" in app.caption[1].value
    if page == "views/tickets.py":  # the shipped MesoNet chain: IMP rounds and the one-shot ticket
        assert app.multiselect(key="tickets_pick").value and len(app.main.get("image")) == 2


def test_sidebar_launches_a_tiny_run_and_watches_it_finish(tiny_benchmark, tmp_path, monkeypatch):
    """A second launch while the first trains is queued and listed (and cancellable), not refused; the live panel
    shows the running run's loss and validation-accuracy sparklines and a link to the Training curves page."""
    from core import launcher
    from core.runs import list_runs

    runs, paused = tmp_path / "runs", tmp_path / "paused"
    monkeypatch.setenv("CORE_RUNS_DIR", str(runs))
    # the run holds the CPU, deterministically, at its second validation (epoch 1 recorded) until the test lets it go
    monkeypatch.setenv("CORE_TEST_PAUSE_AT", "validation@2")
    monkeypatch.setenv("CORE_TEST_PAUSE_FILE", str(paused))
    app = _set_tiny_launch(AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run())
    app.sidebar.button(key="launch_button").click().run()
    assert not app.exception
    assert "Started (pid" in app.sidebar.success[0].value
    deadline = time.monotonic() + 240
    while not paused.exists():
        assert time.monotonic() < deadline, "the launched run did not reach its second validation"
        time.sleep(0.5)
    try:
        second = _set_tiny_launch(AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run())
        assert not second.sidebar.button(key="launch_button").disabled, "busy is no reason to refuse a launch"
        second.sidebar.button(key="launch_button").click().run()
        assert not second.exception
        assert "Queued (position 1): `python -m core train --method teacher" in second.sidebar.info[0].value
        (entry,) = launcher.queued(runs)
        assert "Training now" in [s.value for s in second.sidebar.subheader]
        assert f"1. teacher on synthetic · by {getpass.getuser()}" in [m.value for m in second.sidebar.markdown], \
            "the queue says who launched each entry (the local user on loopback)"
        (activity,) = launcher.activities(runs)
        charts = [chart.proto.id for chart in second.sidebar.get("plotly_chart")]
        assert len(charts) == 2 and all(f"spark_{kind}_{activity.pid}" in chart_id for kind, chart_id
                                        in zip(("loss", "val"), charts, strict=True)), charts
        (link,) = second.sidebar.get("page_link")
        assert link.proto.label == "Training curves" and link.proto.page.endswith("curves")
        while not launcher.dispatcher_pid(runs):  # the queue's own process, which outlives the page
            assert time.monotonic() < deadline, "no dispatcher serves the queue"
            time.sleep(0.2)
        second.sidebar.button(key=f"cancel_queued_{entry.id}").click().run()
        assert not second.exception and not launcher.queued(runs)
        assert not any(m.value.startswith("1. ") for m in second.sidebar.markdown)
    finally:
        paused.unlink(missing_ok=True)
    while launcher.activities(runs) or launcher.dispatcher_pid(runs) is not None:
        assert time.monotonic() < deadline, "the launched run did not finish, or the dispatcher did not exit"
        time.sleep(1)
    (run,) = list_runs(runs)  # the queued launch was cancelled before it started: no second run
    assert run.status()["status"] == "finished"
    assert run.config()["max_train_samples"] == 32 and run.config()["epochs"] == 2
    progress = launcher.progress(run)
    assert progress["fraction"] == 1.0 and progress["epochs_done"] == 2 and len(progress["val_accuracies"]) == 2


def test_sidebar_offers_the_gpu_choice_only_with_two_gpus(tiny_benchmark, tmp_path, monkeypatch):
    from core import launcher

    launched = []
    monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(launcher, "launch", lambda request, runs_dir, gpus="one", user=None, max_per_user=None: launched.append(gpus)
                        or launcher.Launched("x", position=3))
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
    assert "launch_gpus" not in [radio.key for radio in app.sidebar.radio], "no GPU choice on this machine"
    monkeypatch.setattr(launcher, "gpu_count", lambda: 2)
    app.run()
    assert app.sidebar.radio(key="launch_gpus").options == ["one free GPU", "all GPUs (torchrun DDP)"]
    app.sidebar.radio(key="launch_gpus").set_value("all")
    app.sidebar.radio(key="launch_data_kind").set_value("Embedded benchmark")
    app.run()
    app.sidebar.button(key="launch_button").click().run()
    assert not app.exception and launched == ["all"]
    assert app.sidebar.info[0].value.startswith("Queued (position 3): ")


@pytest.mark.parametrize("method", ["taylor", "lth"])
def test_sidebar_composes_each_methods_own_options(tiny_benchmark, tmp_path, monkeypatch, method):
    """The method's own fields reach the command line, and the command is one the CLI accepts as it stands."""
    from core import launcher
    from core.cli import build_parser

    launched = []
    monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(launcher, "launch",
                        lambda request, runs_dir, gpus="one", user=None, max_per_user=None:
                        launched.append(command_line("train", request)[1:]) or launcher.Launched("x", 4242))
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
    app.sidebar.selectbox(key="launch_method").set_value(method).run()
    app.sidebar.radio(key="launch_data_kind").set_value("Embedded benchmark")
    app.sidebar.selectbox(key="launch_source").set_value("faceswap")
    if method == "taylor":
        app.sidebar.number_input(key="launch_alpha").set_value(0.25)
        app.sidebar.number_input(key="launch_prune-ratio").set_value(0.6)
        app.sidebar.number_input(key="launch_steps").set_value(3)
        app.sidebar.checkbox(key="launch_local").check()
        expected = ["--alpha", "0.25", "--prune-ratio", "0.6", "--steps", "3", "--local", "--one-shot"]
    else:
        app.sidebar.selectbox(key="launch_arch").set_value("cnn5")
        app.sidebar.number_input(key="launch_prune-rate").set_value(0.5)
        app.sidebar.number_input(key="launch_target-sparsity").set_value(0.75)
        expected = ["--arch", "cnn5", "--prune-rate", "0.5", "--target-sparsity", "0.75", "--one-shot"]
    app.sidebar.checkbox(key="launch_one_shot").check()
    app.run()
    app.sidebar.button(key="launch_button").click().run()
    assert not app.exception and launched
    (arguments,) = launched
    assert arguments[:4] == ["--method", method, "--data", "synthetic:faceswap"] and arguments[4:4 + len(expected)] == expected
    assert "--init-checkpoint" not in arguments and "--teacher" not in arguments, "defaults: the shipped networks"
    args = build_parser().parse_args(["train", *arguments])
    assert args.one_shot and (args.global_pruning is False if method == "taylor" else args.arch == "cnn5")


@pytest.fixture(scope="module")
def served_dashboard(tiny_benchmark):
    """``streamlit run dashboard/Home.py`` on 127.0.0.1, as ``make run`` starts it."""
    port = free_port()
    process = serve(port, "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", timeout=60)
    url = f"http://127.0.0.1:{port}"
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_server_answers_on_loopback(served_dashboard):
    with urllib.request.urlopen(served_dashboard, timeout=10) as response:
        assert response.status == 200
        assert b"<div id=\"root\">" in response.read()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make install adds it)")
def test_real_browser_shows_every_page(served_dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            exceptions = 0
            for path, ready in (("", "Embedded synthetic benchmark"), ("runs", "Explore"), ("data", "Near-duplicates across splits"),
                                ("pruning", "Mask history"),
                                ("tickets", "Iterative magnitude pruning with rewinding"), ("feature_maps", "Pruned in this layer"),
                                ("correlation", "Redundancy vs keep probability"),
                                ("evaluation", "McNemar"), ("embeddings", "5-NN real/fake accuracy"),
                                ("inference", "P(fake)")):
                page.goto(f"{served_dashboard}/{path}", wait_until="domcontentloaded")
                page.get_by_text(ready).first.wait_for(timeout=60_000)
                page.wait_for_timeout(500)  # let the charts draw
                page.screenshot(path=str(SCREENSHOTS / f"{path or 'overview'}.png"), full_page=True)
                exceptions += page.locator("[data-testid='stException']").count()
        finally:
            browser.close()
    assert exceptions == 0


def test_first_launch_generates_the_benchmark_with_progress(tmp_path, monkeypatch):
    from core.data import synthetic

    monkeypatch.setenv("CORE_DATA_DIR", str(tmp_path / "fresh"))
    small = synthetic.SynthConfig(image_size=16, per_source=20)
    original = synthetic.ensure_benchmark
    monkeypatch.setattr(synthetic, "ensure_benchmark", lambda *a, **kw: original(*a, config=small, **kw))  # a small one, fast
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
    assert not app.exception
    assert synthetic.read_manifest(tmp_path / "fresh" / "synthetic")["images"] == 100


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make install adds it)")
def test_real_browser_launches_a_run_and_watches_its_curve_grow(tiny_benchmark, tmp_path, monkeypatch):
    """In a real browser: launch a tiny MesoNet run from the sidebar, open Training curves, see epoch 1 while the run
    is held at its second validation, let it go, and see the page redraw itself with epoch 2 (no reload)."""
    from playwright.sync_api import sync_playwright

    paused = tmp_path / "paused"
    monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CORE_TEST_PAUSE_AT", "validation@2")  # the launched run inherits these (CORE_*)
    monkeypatch.setenv("CORE_TEST_PAUSE_FILE", str(paused))
    port = free_port()
    server = serve(port, "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", timeout=60)
    url = f"http://127.0.0.1:{port}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2000})
                page.goto(f"{url}/curves", wait_until="domcontentloaded")
                sidebar = page.get_by_test_id("stSidebar")
                sidebar.get_by_text("Launch", exact=True).wait_for(timeout=60_000)
                fill_tiny_launch(page, sidebar, epochs=2, images=32)
                sidebar.get_by_role("button", name="Launch").click()
                sidebar.get_by_text("Started (pid").wait_for(timeout=30_000)
                deadline = time.monotonic() + 240
                while not paused.exists():
                    assert time.monotonic() < deadline, "the launched run did not reach its second validation"
                    time.sleep(0.5)
                page.goto(f"{url}/curves", wait_until="domcontentloaded")  # a new session: the running run is picked
                page.get_by_text("(running): 1 epochs").wait_for(timeout=60_000)
                page.locator(".js-plotly-plot").nth(1).wait_for(timeout=30_000)  # loss terms and per-epoch charts drawn
                page.screenshot(path=str(SCREENSHOTS / "curves-epoch1.png"), full_page=True)
                paused.unlink()  # the run goes on: epoch 2, its test, finished
                page.get_by_text("(finished): 2 epochs").wait_for(timeout=120_000)  # redrawn live, no reload
                page.screenshot(path=str(SCREENSHOTS / "curves-epoch2.png"), full_page=True)
                assert page.locator("[data-testid='stException']").count() == 0
            finally:
                browser.close()
    finally:
        paused.unlink(missing_ok=True)
        server.terminate()
        server.wait(timeout=30)
        from core import launcher

        launcher.stop_dispatcher(tmp_path / "runs")
        for activity in launcher.activities(tmp_path / "runs"):
            launcher.cancel(activity)
