"""The login, for real: the dashboard served with `[auth]` pointing at an OpenID Connect provider on the loopback
address (`oidc-provider-mock`, predefined users), driven in Debian's chromium through Playwright. Anonymous sees only
the login; a trainer logs in and launches (the audit log and the run say who); a viewer logs in and cannot launch; a
stranger is refused; logout works."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit_server import fill_tiny_launch, free_port, serve

from core import access, launcher

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make install adds it)")
USERS = {"trainer-1": "trainer@lab.org", "viewer-1": "viewer@lab.org", "stranger-1": "stranger@elsewhere.org"}


@pytest.fixture(scope="module")
def dashboard(tiny_benchmark, tmp_path_factory):
    """``(url, runs folder)``: the provider on localhost, the dashboard on localhost with a secrets file naming it."""
    from oidc_provider_mock import run_server_in_thread
    from oidc_provider_mock._storage import User

    folder = tmp_path_factory.mktemp("login")
    runs = folder / "runs"
    users = [User(sub=sub, claims={"email": email, "email_verified": True}) for sub, email in USERS.items()]
    with run_server_in_thread(port=0, user_claims=users) as provider:
        port = free_port()
        secrets = folder / "secrets.toml"
        secrets.write_text(
            f'[auth]\nredirect_uri = "http://localhost:{port}/oauth2callback"\n'
            'cookie_secret = "a-long-random-string-for-the-tests-only-0123456789"\n'
            'client_id = "dashboard"\nclient_secret = "dashboard-secret"\n'
            f'server_metadata_url = "http://localhost:{provider.server_port}/.well-known/openid-configuration"\n\n'
            '[access]\ntrainer = ["trainer@lab.org"]\nviewer = ["viewer@lab.org"]\n')
        server = serve(port, "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
                       "--secrets.files", str(secrets), timeout=60, env={"CORE_RUNS_DIR": str(runs)})
        try:
            yield f"http://localhost:{port}", runs
        finally:
            server.terminate()
            server.wait(timeout=30)
            launcher.stop_dispatcher(runs)
            for activity in launcher.activities(runs):
                launcher.cancel(activity)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                 "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


def _log_in(browser, url: str, sub: str):
    """A fresh browser (no cookie) logged in as ``sub`` through the provider's form; the page back at the dashboard."""
    page = browser.new_context(viewport={"width": 1400, "height": 2000}).new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/oauth2/authorize**", timeout=30_000)
    page.get_by_role("button", name=sub, exact=True).click()
    page.wait_for_url(f"{url}/**", timeout=30_000)
    return page


def test_anonymous_sees_only_the_login(dashboard, browser):
    url, _ = dashboard
    page = browser.new_context().new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("This dashboard needs a login").wait_for(timeout=60_000)
    page.get_by_role("button", name="Log in").wait_for(timeout=60_000)  # drawn just after the text
    page.wait_for_timeout(1000)  # and nothing else comes after it
    assert page.get_by_role("button", name="Log in").count() == 1
    assert page.get_by_text("Train", exact=True).count() == 0 and page.get_by_text("Runs & checkpoints").count() == 0
    page.context.close()


def test_a_trainer_logs_in_launches_and_the_run_and_the_audit_say_who(dashboard, browser):
    url, runs = dashboard
    page = _log_in(browser, url, "trainer-1")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("trainer@lab.org").first.wait_for(timeout=60_000)
    sidebar.get_by_text("Launch", exact=True).wait_for(timeout=60_000)
    fill_tiny_launch(page, sidebar, epochs=1, images=16)
    sidebar.get_by_role("button", name="Launch").click()
    sidebar.get_by_text("Started (pid").wait_for(timeout=30_000)
    (record,) = [r for r in access.read_audit(runs, identity="trainer@lab.org") if r["action"] == "launch"]
    assert (record["role"], record["outcome"]) == ("trainer", "ok") and "--method" in record["target"]
    deadline = time.monotonic() + 240
    while not list(runs.glob("*/env.json")):
        assert time.monotonic() < deadline, "the launched run wrote no env.json"
        time.sleep(0.5)
    (environment,) = runs.glob("*/env.json")
    assert json.loads(environment.read_text())["launched_by"] == "trainer@lab.org"
    page.context.close()


def test_a_viewer_logs_in_and_cannot_launch(dashboard, browser):
    url, _ = dashboard
    page = _log_in(browser, url, "viewer-1")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("viewer@lab.org").first.wait_for(timeout=60_000)
    sidebar.get_by_text("Read-only: as a viewer").wait_for(timeout=60_000)
    assert sidebar.get_by_role("button", name="Launch").is_disabled()
    page.get_by_text("Runs & checkpoints").first.click()  # a viewer explores
    page.get_by_text("Shipped checkpoints").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.context.close()


def test_a_stranger_is_refused_and_logout_ends_the_session(dashboard, browser):
    url, runs = dashboard
    page = _log_in(browser, url, "stranger-1")
    page.get_by_text("Not authorised").wait_for(timeout=60_000)
    assert page.get_by_text("stranger@elsewhere.org").count() >= 1 and page.get_by_text("Train", exact=True).count() == 0
    assert any(r["outcome"] == "refused: on neither list" for r in access.read_audit(runs, identity="stranger@elsewhere.org"))
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="End session").click(timeout=60_000)  # the provider's end of session (OIDC logout)
    page.wait_for_url(f"{url}**", timeout=60_000)  # the provider sends the browser back to the dashboard
    page.goto(url, wait_until="domcontentloaded")  # and the identity cookie is gone
    page.get_by_text("This dashboard needs a login").wait_for(timeout=60_000)
    page.context.close()
