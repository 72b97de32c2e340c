"""The dashboard's gate (dashboard/access_ui.py), page by page in AppTest: loopback without a login stays one local
user; exposed without a login shows only how to configure one; with [auth], nothing but a login until logged in; a
trainer launches, a viewer sees the launcher read-only and the server refuses a forged launch; somebody on neither
list sees one page; every launch and refusal is in the audit log with the identity. (The real login through an OIDC
provider, in a browser: tests/test_dashboard_login.py.)"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from core import access, launcher
from core.training.requests import command_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))

REPO = Path(__file__).resolve().parents[1]
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32, "client_id": "dashboard",
        "client_secret": "secret", "server_metadata_url": "http://localhost:9400/.well-known/openid-configuration"}
ACCESS = {"trainer": ["trainer@lab.org"], "viewer": ["@lab.org"]}


@pytest.fixture()
def launches(tiny_benchmark, tmp_path, monkeypatch) -> list:
    """Launches recorded instead of started; the runs folder (and its audit log) in tmp_path."""
    recorded = []
    monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(launcher, "launch", lambda request, runs_dir, gpus="one", user=None, max_per_user=None:
                        recorded.append((command_line("train", request)[1:], user)) or launcher.Launched("x", 4242))
    return recorded


@pytest.fixture()
def exposed():
    """Streamlit listening on every interface, as `--server.address 0.0.0.0` makes it."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    yield
    streamlit_config.set_option("server.address", before)


def _forge(monkeypatch) -> None:
    """A client that sends the launch button's click although the page shows it disabled (a forged websocket
    message): the page draws the launcher as if allowed; the server's own check must still refuse."""
    sys.path.insert(0, str(REPO / "dashboard"))
    import launcher_ui

    monkeypatch.setattr(launcher_ui, "can", lambda action: True)


def _app(secrets: dict | None = None, user: dict | None = None) -> AppTest:
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120)
    for name, section in (secrets or {}).items():
        app.secrets[name] = section
    if user is not None:
        app.user = user
    return app.run()


def _launch(app: AppTest) -> AppTest:
    app.sidebar.selectbox(key="launch_method").set_value("teacher").run()
    return app.sidebar.button(key="launch_button").click().run()


def test_loopback_without_a_login_is_one_local_user_who_may_launch(launches):
    app = _app()
    assert not app.exception and app.title[0].value == "Lightweight deepfake face detection"
    assert any("Local user" in caption.value for caption in app.sidebar.caption)
    _launch(app)
    assert [user for _, user in launches] == [getpass.getuser()]


def test_exposed_without_a_login_shows_only_how_to_configure_one(launches, exposed):
    app = _app()
    assert not app.exception
    assert [t.value for t in app.title] == ["Login required"] and "has no login" in app.error[0].value
    assert "[auth]" in app.markdown[0].value and "allow_anonymous = true" in app.markdown[0].value
    assert not app.sidebar.button and not app.text_input and not app.sidebar.selectbox, "no launcher, no folder input"
    assert not app.dataframe and not launches


def test_exposed_with_allow_anonymous_opens_it_read_only(launches, exposed, tmp_path, monkeypatch):
    app = _app({"access": {"allow_anonymous": True}})
    assert not app.exception and app.title[0].value == "Lightweight deepfake face detection"
    assert app.sidebar.button(key="launch_button").disabled and "Read-only" in app.sidebar.info[0].value
    _forge(monkeypatch)
    _launch(app)  # a forged click of the button the page shows disabled: refused on the server
    assert not launches
    (record,) = access.read_audit(tmp_path / "runs")
    assert (record["identity"], record["role"], record["action"]) == ("anonymous", "viewer", "launch")
    assert record["outcome"].startswith("refused: ")


def test_with_a_login_configured_an_anonymous_visitor_sees_only_the_login(launches):
    app = _app({"auth": AUTH, "access": ACCESS}, {"is_logged_in": False})
    assert not app.exception
    assert [b.key for b in app.button] == ["login_button"] and not app.sidebar.button and not app.dataframe
    assert "needs a login" in app.markdown[0].value


def test_a_logged_in_trainer_launches_and_the_launch_is_audited(launches, tmp_path):
    app = _app({"auth": AUTH, "access": ACCESS}, {"is_logged_in": True, "email": "Trainer@lab.org", "sub": "t-1"})
    assert not app.exception and app.button(key="logout_button")
    assert any("trainer@lab.org" in caption.value and "trainer" in caption.value for caption in app.sidebar.caption)
    _launch(app)
    (arguments, user), = launches
    assert user == "trainer@lab.org" and arguments[:2] == ["--method", "teacher"]
    (record,) = access.read_audit(tmp_path / "runs", identity="trainer@lab.org")
    assert (record["role"], record["action"], record["outcome"]) == ("trainer", "launch", "ok")
    assert record["target"][:4] == ["python", "-m", "core", "train"] and record["launch_id"] == "x"


def test_a_viewer_sees_the_launcher_read_only_and_a_forged_launch_is_refused(launches, tmp_path, monkeypatch):
    app = _app({"auth": AUTH, "access": ACCESS}, {"is_logged_in": True, "email": "student@lab.org"})
    assert not app.exception
    assert app.sidebar.button(key="launch_button").disabled and "as a viewer" in app.sidebar.info[0].value
    app.sidebar.radio(key="launch_data_kind").set_value("Folder or CSV").run()
    assert app.sidebar.text_input(key="launch_path").disabled, "reading folders is a trainer's"
    app.sidebar.radio(key="launch_data_kind").set_value("Embedded benchmark").run()
    _forge(monkeypatch)
    _launch(app)
    assert not launches and "Refused" in app.sidebar.error[0].value
    (record,) = access.read_audit(tmp_path / "runs")
    assert (record["identity"], record["role"], record["action"]) == ("student@lab.org", "viewer", "launch")
    assert record["outcome"] == "refused: a viewer may not launch"


def test_somebody_on_neither_list_gets_one_page(launches, tmp_path):
    app = _app({"auth": AUTH, "access": ACCESS}, {"is_logged_in": True, "email": "visitor@elsewhere.org"})
    assert not app.exception
    assert [t.value for t in app.title] == ["Not authorised"] and "neither a viewer nor a trainer" in app.error[0].value
    assert [b.key for b in app.button] == ["logout_refused"] and not app.sidebar.selectbox
    (record,) = access.read_audit(tmp_path / "runs")
    assert (record["identity"], record["action"], record["outcome"]) == ("visitor@elsewhere.org", "open",
                                                                         "refused: on neither list")


def test_a_typed_path_outside_the_data_roots_is_refused_and_audited(launches, tmp_path):
    inside, outside = tmp_path / "data", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (inside / "escape").symlink_to(outside)
    app = _app({"access": {"data_roots": [str(inside)]}})
    app.sidebar.radio(key="launch_data_kind").set_value("Folder or CSV").run()
    for text in (str(outside), f"{inside}/../elsewhere", str(inside / "escape"), f"{inside}2"):
        app.sidebar.text_input(key="launch_path").set_value(text).run()
        assert "Cannot use this path" in app.sidebar.error[0].value and app.sidebar.button(key="launch_button").disabled
    refused = [r for r in access.read_audit(tmp_path / "runs") if r["action"] == "read_folder"]
    assert len(refused) == 4 and all(r["outcome"].startswith("refused: ") for r in refused)


def test_runs_page_says_who_launched_each_run_and_filters_the_audit_log_by_user(launches, tmp_path, monkeypatch):
    from core.runs import Run

    runs = tmp_path / "runs"
    monkeypatch.setenv("CORE_LAUNCHED_BY", "trainer@lab.org")
    run = Run.create(runs, "teacher", "synthetic")
    run.write_config({"method": "teacher", "data": "synthetic"})
    run.write_environment("cpu")
    monkeypatch.delenv("CORE_LAUNCHED_BY")
    for identity, role, action, outcome in [("trainer@lab.org", "trainer", "launch", "ok"),
                                            ("student@lab.org", "viewer", "launch", access.refused("a viewer may not launch")),
                                            ("trainer@lab.org", "trainer", "cancel", "ok")]:
        access.audit(runs, identity, role, action, ["python", "-m", "core", "train"], outcome)

    app = _app({"auth": AUTH, "access": ACCESS}, {"is_logged_in": True, "email": "trainer@lab.org"})
    app.switch_page("views/runs.py").run()
    assert not app.exception
    listed = app.dataframe[1].value
    assert list(listed.columns[:3]) == ["run", "status", "launched_by"]
    assert listed.set_index("run").loc[run.dir.name, "launched_by"] == "trainer@lab.org"
    audit = app.dataframe[2].value
    assert list(audit["action"]) == ["cancel", "launch", "launch"], "newest first"
    assert audit["target"].iloc[0] == "python -m core train"
    app.selectbox(key="runs_audit_user").set_value("student@lab.org").run()
    audit = app.dataframe[2].value
    assert list(audit["identity"]) == ["student@lab.org"] and audit["outcome"].iloc[0] == "refused: a viewer may not launch"

    viewer = _app({"auth": AUTH, "access": ACCESS}, {"is_logged_in": True, "email": "Student@lab.org"})
    viewer.switch_page("views/runs.py").run()
    assert not viewer.exception and "runs_audit_user" not in [box.key for box in viewer.selectbox]
    audit = viewer.dataframe[2].value
    assert list(audit["identity"]) == ["student@lab.org"], "a viewer sees only what they did"


@pytest.fixture()
def proxied():
    """An authenticating proxy's header mapped into st.user (``server.trustedUserHeaders``), as oauth2-proxy sends."""
    before = streamlit_config.get_option("server.trustedUserHeaders")
    streamlit_config.set_option("server.trustedUserHeaders", {"X-Forwarded-Email": "email"})
    yield
    streamlit_config.set_option("server.trustedUserHeaders", before)


def test_behind_a_proxy_on_loopback_the_headers_identity_gets_its_role(launches, proxied, tmp_path):
    app = _app({"access": ACCESS}, {"email": "trainer@lab.org"})
    assert not app.exception and app.title[0].value == "Lightweight deepfake face detection"
    assert any("trainer@lab.org" in caption.value and "trainer" in caption.value for caption in app.sidebar.caption)
    _launch(app)
    assert [user for _, user in launches] == ["trainer@lab.org"]
    viewer = _app({"access": ACCESS}, {"email": "student@lab.org"})
    assert viewer.sidebar.button(key="launch_button").disabled
    nobody = _app({"access": ACCESS}, {})
    assert [t.value for t in nobody.title] == ["Login required"] and "no identity header" in nobody.error[0].value


def test_proxy_headers_while_listening_on_every_interface_show_only_the_refusal(launches, proxied, exposed):
    app = _app({"access": ACCESS}, {"email": "trainer@lab.org"})
    assert not app.exception and [t.value for t in app.title] == ["Login required"]
    assert "anyone reaching it directly could send any header" in app.error[0].value
    assert not app.sidebar.button and not app.text_input and not launches


def test_several_providers_each_get_a_login_button():
    from access_ui import login_providers

    assert login_providers(AUTH) == [None]
    assert login_providers({"cookie_secret": "x", "google": {"client_id": "g"}, "entra": {"client_id": "m"}}) == \
        ["entra", "google"]
    app = _app({"auth": {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"],
                         "google": {key: AUTH[key] for key in ("client_id", "client_secret", "server_metadata_url")}}})
    assert not app.exception and [button.label for button in app.button] == ["Log in with google"]
