"""Who may use the dashboard, which folders it may read, and what was done: roles, data roots, the audit log.

Pure library, no Streamlit: the dashboard signs people in (``st.login``), reads ``st.secrets["access"]`` and asks
this module. The policy, in ``.streamlit/secrets.toml``::

    [access]
    trainer = ["alice@lab.org", "@lab.org"]   # exact identities (e-mail or OIDC sub) and e-mail domains
    viewer = ["bob@gmail.com", "@partner.org"]
    data_roots = ["/data", "~/datasets"]       # the folders a typed path may lie in; default <repo>/data, $CORE_DATA_DIR
    max_queued_per_user = 4                    # launches one user may have queued or running
    allow_anonymous = false                    # true: whoever is not signed in is a viewer

A domain is written ``@lab.org`` (``*@lab.org`` is read the same) and matches e-mails of exactly that domain, not of
its subdomains. An identity is looked up first among the exact entries, then among the domains, so an address listed
as a viewer stays a viewer in a trainer domain. E-mails compare case-insensitively, OIDC subs exactly.

Every decision the dashboard takes on someone's behalf goes to ``<runs>/.audit.jsonl`` (:func:`audit`), one JSON line
each, appended with one ``write`` under an exclusive ``flock``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from core.io import append_jsonl, read_jsonl, resolve_user_path

# what a person may ask the dashboard to do
ACTIONS = {
    "view": "see runs, checkpoints, reports and the live panel",
    "infer": "live inference on uploaded images and videos",
    "launch": "start or queue a training run",
    "cancel": "stop a running training run",
    "queue": "change the launch queue (remove a queued launch)",
    "read_folder": "read a dataset folder or CSV typed as a path",
}
AUDIT_LOG = ".audit.jsonl"  # in the runs folder, beside the runs it speaks of
POLICY_KEYS = ("viewer", "trainer", "data_roots", "max_queued_per_user", "allow_anonymous")
DEFAULT_MAX_QUEUED_PER_USER = 4
AUDIT_FIELDS = ("time", "epoch", "identity", "role", "action", "target", "outcome")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_DOMAIN = re.compile(r"[^@\s*/]+")


class Role(StrEnum):
    """What a signed-in person is to the dashboard; a trainer is also a viewer."""

    VIEWER = "viewer"
    TRAINER = "trainer"

    @property
    def actions(self) -> frozenset[str]:
        return ROLE_ACTIONS[self]

    def can(self, action: str) -> bool:
        """Whether this role may ``action`` (one of :data:`ACTIONS`; anything else is a ValueError, never a quiet no)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        return action in self.actions


ROLE_ACTIONS = {Role.VIEWER: frozenset({"view", "infer"}), Role.TRAINER: frozenset(ACTIONS)}


def role_allows(role: str | None, action: str) -> bool:
    """Whether ``role`` ("viewer", "trainer", a :class:`Role`, or None: no role) may ``action``; ValueError for an
    unknown role or action."""
    if role is None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        return False
    try:
        return Role(role).can(action)
    except ValueError as error:
        if "unknown action" in str(error):
            raise
        raise ValueError(f"unknown role {role!r}: one of {', '.join(Role)}") from None


class AccessConfigError(ValueError):
    """The ``[access]`` settings are wrong: one line per mistake."""


def normalize_identity(identity: str) -> str:
    """An identity as it is compared: an e-mail in lower case, an OIDC sub exactly as given."""
    identity = identity.strip()
    return identity.lower() if "@" in identity else identity


def identity_of(user: Mapping, trusted_headers: bool = False) -> str | None:
    """The identity of a signed-in ``st.user``: the e-mail unless the provider says it is unverified, else the OIDC
    ``sub``; None when nobody is signed in.

    ``trusted_headers``: ``st.user`` was filled from an authenticating proxy's headers
    (``server.trustedUserHeaders`` mapping a header to ``email`` or ``sub``), which Streamlit passes on without
    ``is_logged_in``: the proxy has already authenticated whoever the header names."""
    if not trusted_headers and not user.get("is_logged_in"):
        return None
    email = user.get("email")
    if email and user.get("email_verified", True) is not False:
        return normalize_identity(str(email))
    return str(user["sub"]) if user.get("sub") else None


@dataclass(frozen=True)
class AccessPolicy:
    """Who has which role, and the folders a typed path may lie in. Build it with :meth:`from_mapping`."""

    trainers: frozenset[str] = frozenset()  # exact identities, normalized
    viewers: frozenset[str] = frozenset()
    trainer_domains: frozenset[str] = frozenset()  # "lab.org", lower case
    viewer_domains: frozenset[str] = frozenset()
    data_roots: tuple[Path, ...] | None = None  # None: default_data_roots(), looked up at each call
    max_queued_per_user: int = DEFAULT_MAX_QUEUED_PER_USER
    allow_anonymous: bool = False

    @classmethod
    def from_mapping(cls, settings: Mapping | None) -> AccessPolicy:
        """The policy of an ``[access]`` table (``st.secrets["access"]``, a dict); None or empty: nobody has a role.

        Raises :class:`AccessConfigError` listing every mistake, one line each: unknown keys, wrong types, an entry
        that is neither an identity nor a domain, a data root that is ``/``, missing or not a folder."""
        settings = {} if settings is None else settings
        if not isinstance(settings, Mapping):
            raise AccessConfigError(f"access: must be a table ([access] in secrets.toml), got {type(settings).__name__}")
        errors = [f"access: unknown key {key!r} (known: {', '.join(POLICY_KEYS)})" for key in settings
                  if key not in POLICY_KEYS]
        members = {role: _members(settings.get(role, []), f"access.{role}", errors) for role in ("trainer", "viewer")}
        roots = None
        if "data_roots" in settings:
            roots = _data_roots(settings["data_roots"], errors)
        limit = settings.get("max_queued_per_user", DEFAULT_MAX_QUEUED_PER_USER)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            errors.append(f"access.max_queued_per_user: must be a whole number >= 1, got {limit!r}")
        anonymous = settings.get("allow_anonymous", False)
        if not isinstance(anonymous, bool):
            errors.append(f"access.allow_anonymous: must be true or false, got {anonymous!r}")
        if errors:
            raise AccessConfigError("\n".join(errors))
        return cls(trainers=members["trainer"][0], trainer_domains=members["trainer"][1],
                   viewers=members["viewer"][0], viewer_domains=members["viewer"][1],
                   data_roots=roots, max_queued_per_user=limit, allow_anonymous=anonymous)

    def role_of(self, identity: str | None) -> Role | None:
        """``Role.TRAINER``, ``Role.VIEWER`` (equal to the strings "trainer", "viewer") or None: no access.

        Exact identities first (trainer before viewer), then domains; nobody signed in (None, "") is a viewer only
        with ``allow_anonymous``."""
        if not identity or not identity.strip():
            return Role.VIEWER if self.allow_anonymous else None
        identity = normalize_identity(identity)
        if identity in self.trainers:
            return Role.TRAINER
        if identity in self.viewers:
            return Role.VIEWER
        domain = identity.rpartition("@")[2] if _EMAIL.fullmatch(identity) else None
        if domain in self.trainer_domains:
            return Role.TRAINER
        if domain in self.viewer_domains:
            return Role.VIEWER
        return None

    def refusal(self, identity: str | None, action: str) -> str | None:
        """Why ``identity`` may not ``action`` (one line, for the page and the audit log), or None: allowed."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        role = self.role_of(identity)
        if role is None:
            return f"{identity} has no role on this dashboard" if identity else "not signed in"
        if role.can(action):
            return None
        return f"a {role} may not {action} ({ACTIONS[action]}): ask for the trainer role"

    @property
    def roots(self) -> tuple[Path, ...]:
        """The data roots in effect: the configured ones, else :func:`default_data_roots` as they are now."""
        return self.data_roots if self.data_roots is not None else default_data_roots()

    def guard(self, text: str | os.PathLike) -> Path:
        """:func:`guard_path` under this policy's roots."""
        return guard_path(text, self.roots)


def _members(entries, where: str, errors: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(exact identities, domains) of a ``viewer`` or ``trainer`` list; mistakes go to ``errors``."""
    if isinstance(entries, str) or not isinstance(entries, list | tuple):
        errors.append(f"{where}: must be a list of identities (e-mails, OIDC subs) and domains (@lab.org), "
                      f"got {type(entries).__name__}")
        return frozenset(), frozenset()
    exact, domains = set(), set()
    for index, entry in enumerate(entries):
        text = entry.strip() if isinstance(entry, str) else None
        if text and text.startswith(("@", "*@")):
            domain = text.split("@", 1)[1].lower()
            if _DOMAIN.fullmatch(domain):
                domains.add(domain)
                continue
        elif text and (_EMAIL.fullmatch(text) or ("@" not in text and not any(c.isspace() or c == "*" for c in text))):
            exact.add(normalize_identity(text))
            continue
        errors.append(f"{where}[{index}]: {entry!r} is neither an identity (an e-mail, an OIDC sub) nor a domain "
                      "(@lab.org)")
    return frozenset(exact), frozenset(domains)


def _data_roots(entries, errors: list[str]) -> tuple[Path, ...]:
    if isinstance(entries, str) or not isinstance(entries, list | tuple):
        errors.append(f"access.data_roots: must be a list of folders, got {type(entries).__name__}")
        return ()
    roots = []
    for index, entry in enumerate(entries):
        try:
            roots.append(_checked_root(entry))
        except ValueError as error:
            errors.append(f"access.data_roots[{index}]: {error}")
    return tuple(dict.fromkeys(roots))


def _checked_root(entry) -> Path:
    """A data root resolved like a typed path (``~``, relative to the repository, symlinks followed); ValueError when
    it is not a string, is ``/`` (or a link to it), does not exist or is not a folder."""
    if not isinstance(entry, str | os.PathLike):
        raise ValueError(f"a folder must be a string, got {type(entry).__name__}")
    root = resolve_user_path(os.fspath(entry))
    if root == Path(root.anchor):
        raise ValueError(f"{os.fspath(entry)!r} is {root}, the whole file system: name the folders that hold data")
    if not root.is_dir():
        raise ValueError(f"{root} " + ("is not a folder" if root.exists() else "does not exist"))
    return root


def default_data_roots() -> tuple[Path, ...]:
    """The roots when ``[access]`` names none: the project's ``data/`` folder and ``$CORE_DATA_DIR``, those that exist
    (resolved; a missing one is no root until it is made)."""
    candidates = ["data", *([os.environ["CORE_DATA_DIR"]] if os.environ.get("CORE_DATA_DIR") else [])]
    roots = []
    for candidate in candidates:
        try:
            roots.append(_checked_root(candidate))
        except ValueError:
            continue
    return tuple(dict.fromkeys(roots))


def guard_path(text: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path:
    """A typed path, resolved (``~``, relative to the repository, every symlink followed), if it lies inside one of
    ``roots``; ValueError naming the allowed roots otherwise.

    Inside means below a resolved root by whole path components (``os.path.commonpath``), so ``..``, a symlink
    leading out and a look-alike prefix (``/data2`` for ``/data``) are all outside. Nothing is read from the path but
    the links on its way (``os.path.realpath``'s ``lstat``/``readlink``): whether it exists, and what it holds, is
    asked only once it is known to be inside. The roots are checked each call: ``/`` and a missing root are refused.
    """
    allowed = _resolved_roots(roots)
    path = resolve_user_path(os.fspath(text))
    if _root_of(path, allowed) is None:
        raise ValueError(f"{os.fspath(text)!r} is outside the folders this dashboard may read: "
                         f"{', '.join(str(root) for root in allowed)}")
    return path


def relative_to_root(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> str:
    """``<root folder name>/<path below it>`` for display (the innermost root holding ``path``); ValueError when no
    root holds it."""
    allowed = _resolved_roots(roots)
    resolved = resolve_user_path(os.fspath(path))
    root = _root_of(resolved, allowed)
    if root is None:
        raise ValueError(f"{os.fspath(path)!r} is in none of the data roots {', '.join(map(str, allowed))}")
    below = resolved.relative_to(root).as_posix()
    return root.name if below == "." else f"{root.name}/{below}"


def _resolved_roots(roots: Iterable[str | os.PathLike]) -> tuple[Path, ...]:
    roots = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    if not roots:
        raise ValueError("no data roots are configured: typed folders cannot be read (access.data_roots)")
    return tuple(_checked_root(root) for root in roots)


def _root_of(path: Path, roots: tuple[Path, ...]) -> Path | None:
    """The innermost of ``roots`` that ``path`` lies in (both resolved), by whole components."""
    holding = [root for root in roots if os.path.commonpath([root, path]) == str(root)]
    return max(holding, key=lambda root: len(root.parts), default=None)


# --- the audit log ----------------------------------------------------------------------------------------------


def refused(reason: str) -> str:
    """The outcome of a refused action, as :func:`audit` records it."""
    return f"refused: {reason}"


def audit(runs_dir: str | os.PathLike, identity: str | None, role: str | None, action: str,
          target: str | os.PathLike | list[str] | None, outcome: str, **extra) -> dict:
    """Append one record to ``<runs_dir>/.audit.jsonl`` and return it.

    ``target``: the command (a list of arguments) or the path the action is about; ``outcome``: ``ok`` or
    ``refused: <reason>`` (:func:`refused`); ``extra``: more JSON-able fields (a launch id, a run). The line goes out
    in one ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``, so concurrent dashboard sessions and
    processes never interleave or lose lines."""
    if outcome != "ok" and not outcome.startswith("refused: "):
        raise ValueError(f"outcome must be 'ok' or 'refused: <reason>', got {outcome!r}")
    if clash := sorted(set(extra) & set(AUDIT_FIELDS)):
        raise ValueError(f"extra fields may not replace {', '.join(clash)}")
    epoch = time.time()
    record = {"time": datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds"),
              "epoch": round(epoch, 3), "identity": identity or None, "role": str(role) if role else None,
              "action": action,
              "target": [str(part) for part in target] if isinstance(target, list | tuple) else
              (os.fspath(target) if target is not None else None),
              "outcome": outcome, **extra}
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    append_jsonl(Path(runs_dir) / AUDIT_LOG, record, lock=True)
    return record


def read_audit(runs_dir: str | os.PathLike, identity: str | None = None, limit: int | None = None) -> list[dict]:
    """The audit records, newest first (the last ``limit`` of them), those of ``identity`` only if given (e-mails
    compared case-insensitively); a torn line (a write cut by a full disk) is skipped."""
    records = [record for record in reversed(read_jsonl(Path(runs_dir) / AUDIT_LOG)) if isinstance(record, dict)]
    if identity is not None:
        wanted = normalize_identity(identity)
        records = [record for record in records
                   if isinstance(record.get("identity"), str) and normalize_identity(record["identity"]) == wanted]
    return records if limit is None else records[:limit]
