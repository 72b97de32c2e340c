"""Who is at the dashboard, and what they may do: the gate every page passes first.

Four modes, decided on the server from its own configuration:

- **local** (``make run``): Streamlit listens on a loopback address and no login is configured. One local user,
  who may do everything, as before.
- **oidc**: ``[auth]`` in ``.streamlit/secrets.toml`` (Streamlit's ``st.login``, OpenID Connect). Nobody sees
  anything but the login page until the provider has logged them in; their identity (e-mail, else ``sub``) gets
  its role from ``[access]`` (``viewer`` / ``trainer``), and somebody on neither list sees one page saying so.
- **proxy**: ``server.trustedUserHeaders`` maps an authenticating proxy's header (oauth2-proxy's
  ``X-Forwarded-Email``...) into ``st.user``. Streamlit must then listen on loopback only: the proxy is the one
  door, and a client reaching Streamlit directly could send any header it likes.
- **closed**: listening on anything but loopback with neither a login nor a proxy: every page shows how to configure
  a login, or how to opt out with ``[access] allow_anonymous = true`` (**anonymous**: everyone is a viewer, who
  explores but cannot launch).

Every action is checked here on the server before it runs (:func:`allowed`), not only by hiding its button, and
refusals go to the audit log (``core.access``).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core import access
from core.runs import default_runs_dir

LOOPBACK = ("localhost", "::1", "[::1]")
VISITOR = "visitor"  # the session-state key of the current Visitor


@dataclass(frozen=True)
class Visitor:
    identity: str
    role: str | None  # trainer | viewer | None (logged in, on neither list)
    mode: str  # local | oidc | proxy | anonymous


def listening_address() -> str:
    return str(st.get_option("server.address") or "")


def is_loopback(address: str) -> bool:
    """Only this machine can connect (an empty address means every interface)."""
    return address in LOOPBACK or address.startswith("127.")


def secrets_section(name: str) -> dict:
    """A section of ``.streamlit/secrets.toml`` as a dict ({} without the file or the section)."""
    try:
        section = st.secrets.get(name)
    except Exception:  # noqa: BLE001 - no secrets file at all: Streamlit raises its own error type
        return {}
    return dict(section) if section else {}


def policy() -> access.AccessPolicy:
    """The ``[access]`` section as a checked policy (a mistake in it stops the app with its one-line reason)."""
    try:
        return access.AccessPolicy.from_mapping(secrets_section("access"))
    except ValueError as error:
        st.error(f"`.streamlit/secrets.toml` [access]: {error}")
        st.stop()


def _proxy_configured() -> bool:
    try:
        headers = st.get_option("server.trustedUserHeaders")
    except Exception:  # noqa: BLE001 - an older Streamlit without the option
        return False
    return bool(headers)


def _identity_from_user(trusted_headers: bool = False) -> str | None:
    """The logged-in user's e-mail (unless the provider says it is unverified), else their ``sub``; behind a proxy,
    the e-mail or ``sub`` its headers carry."""
    return access.identity_of(st.user, trusted_headers=trusted_headers)


def gate() -> Visitor:
    """The visitor of this session, or a page that says why not and stops the script (nothing else renders)."""
    rules = policy()
    if secrets_section("auth"):
        if not st.user.get("is_logged_in"):
            _login_page()
        identity = _identity_from_user() or "unknown"
        return _admitted(Visitor(identity, _role_name(rules.role_of(identity)), "oidc"))
    if _proxy_configured():
        if not is_loopback(listening_address()):
            _closed_page("trusted proxy headers are configured, but Streamlit listens on "
                         f"`{listening_address() or 'every interface'}`: anyone reaching it directly could send any "
                         "header. Listen on 127.0.0.1 behind the proxy.")
        identity = _identity_from_user(trusted_headers=True)
        if identity is None:
            _closed_page("the proxy sent no identity header (server.trustedUserHeaders).")
        return _admitted(Visitor(identity, _role_name(rules.role_of(identity)), "proxy"))
    if not is_loopback(listening_address()):
        if not rules.allow_anonymous:
            _closed_page(f"this dashboard listens on `{listening_address() or 'every interface'}` and has no login.")
        return _admitted(Visitor("anonymous", _role_name(rules.role_of(None)), "anonymous"))  # a viewer: no launches
    return _admitted(Visitor(getpass.getuser(), "trainer", "local"))


def _role_name(role) -> str | None:
    return None if role is None else str(role.value if hasattr(role, "value") else role)


def _admitted(visitor: Visitor) -> Visitor:
    st.session_state[VISITOR] = visitor
    if visitor.role is None:
        access.audit(default_runs_dir(), visitor.identity, None, "open", "dashboard", access.refused("on neither list"))
        st.title("Not authorised")
        st.error(f"You are logged in as **{visitor.identity}**, who is neither a viewer nor a trainer of this "
                 "dashboard. Ask its administrator to add you to `[access]` in `.streamlit/secrets.toml`.")
        if visitor.mode == "oidc":
            st.button("Log out", on_click=st.logout, key="logout_refused")
        st.stop()
    return visitor


def login_providers(auth: dict) -> list[str | None]:
    """The providers ``[auth]`` configures: None for the one set in ``[auth]`` itself (its ``client_id``), and the
    name of each ``[auth.<name>]`` table (Streamlit's several-providers form)."""
    named = [name for name, value in auth.items() if hasattr(value, "keys")]
    return ([None] if "client_id" in auth or not named else []) + sorted(named)


def _login_page() -> None:
    st.title("Lightweight deepfake face detection")
    st.write("This dashboard needs a login.")
    for provider in login_providers(secrets_section("auth")):
        st.button("Log in" if provider is None else f"Log in with {provider}", type="primary", on_click=st.login,
                  args=() if provider is None else (provider,), key=f"login_button{'' if provider is None else '_' + provider}")
    st.stop()


def _closed_page(reason: str) -> None:
    st.title("Login required")
    st.error(f"The dashboard is closed: {reason}")
    st.markdown(
        "To open it to others, configure a login in `.streamlit/secrets.toml`:\n\n"
        "```toml\n[auth]\nredirect_uri = \"https://<this host>/oauth2callback\"\ncookie_secret = \"<a long random "
        "string>\"\nclient_id = \"<from your identity provider>\"\nclient_secret = \"<from your identity provider>\"\n"
        "server_metadata_url = \"https://<your provider>/.well-known/openid-configuration\"\n\n[access]\n"
        "trainer = [\"you@lab.org\"]\nviewer = [\"@lab.org\"]\n```\n\n"
        "or, to open it to anyone who can reach it without a login, opt out "
        "explicitly (anyone who can reach it may then explore, as a viewer; nobody may launch):\n\n```toml\n[access]\n"
        "allow_anonymous = true\n```\n\nOr serve it on this machine only: "
        "`make run` (127.0.0.1). See the documentation's *Dashboard access* page.")
    st.stop()


def visitor() -> Visitor:
    """The current session's visitor (the gate ran first in this script run)."""
    return st.session_state.get(VISITOR) or Visitor(getpass.getuser(), "trainer", "local")


def can(action: str) -> bool:
    """Whether the visitor's role allows ``action`` (no audit: for showing widgets as read-only)."""
    return access.role_allows(visitor().role, action)


def allowed(action: str, target: str = "", quiet: bool = False) -> bool:
    """Check ``action`` on the server before doing it: True, or the refusal shown, audited, and False."""
    who = visitor()
    if access.role_allows(who.role, action):
        return True
    access.audit(default_runs_dir(), who.identity, who.role, action, target, access.refused(f"a {who.role} may not {action}"))
    if not quiet:
        st.error(f"Refused: as a {who.role} you may not {action.replace('_', ' ')}. Ask for the trainer role.")
    return False


def record(action: str, target, outcome: str = "ok", **extra) -> None:
    """An action done (``ok``) or refused (``refused: <reason>``), in the audit log with who did it."""
    who = visitor()
    access.audit(default_runs_dir(), who.identity, who.role, action, target, outcome, **extra)


def guarded_path(text: str) -> Path | None:
    """A path typed or picked in the dashboard, resolved and inside a data root; None with the refusal shown (and
    audited) otherwise. Reading folders is a trainer's action."""
    if not text:
        return None
    if not allowed("read_folder", text):
        return None
    try:
        path = access.guard_path(text, policy().roots)
    except ValueError as error:
        record("read_folder", text, access.refused(str(error)))
        st.error(f"Cannot use this path: {error}")
        return None
    return path


def guarded_spec(spec):
    """A dataset spec of the cross-dataset matrix (``core.evaluation.cross_dataset.DatasetSpec``) whose folder (its
    root, or the path it is) lies inside a data root; a ValueError (audited) otherwise. Named specs without a folder
    (``synthetic:<source>``) need no folder read."""
    from dataclasses import replace

    folder = spec.root if spec.root else (None if spec.is_named else spec.name)
    if folder is None:
        return spec
    if not access.role_allows(visitor().role, "read_folder"):
        allowed("read_folder", folder, quiet=True)
        raise ValueError(f"{spec.text}: as a {visitor().role} you may not read dataset folders")
    try:
        resolved = str(access.guard_path(folder, policy().roots))
    except ValueError as error:
        record("read_folder", folder, access.refused(str(error)))
        raise
    if spec.root:
        return replace(spec, root=resolved)
    label = spec.label if spec.label != spec.name else access.relative_to_root(resolved, policy().roots)
    return replace(spec, name=resolved, label=label)  # a path is shown relative to its root


def sidebar_identity() -> None:
    """Who is logged in, with their role and a logout."""
    who = visitor()
    with st.sidebar:
        if who.mode == "local":
            st.caption(f"Local user **{who.identity}** (loopback, no login)")
            return
        st.caption(f"**{who.identity}** · {who.role}" + (" (no login: allow_anonymous)" if who.mode == "anonymous" else ""))
        if who.mode == "oidc":
            st.button("Log out", on_click=st.logout, key="logout_button")
