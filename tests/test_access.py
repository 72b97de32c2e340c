"""core.access: roles from the ``[access]`` table (exact identities before domains, e-mails case-insensitive), a typed
path accepted only inside a data root (no ``..``, no symlink out, no look-alike prefix, no ``/`` root, nothing read
from a refused path), and an append-only audit log that concurrent processes share without losing a line."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import core.io
from core.access import (
    ACTIONS,
    AUDIT_LOG,
    AccessConfigError,
    AccessPolicy,
    Role,
    audit,
    default_data_roots,
    guard_path,
    identity_of,
    read_audit,
    refused,
    relative_to_root,
    role_allows,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------- roles


def test_roles_exact_identities_before_domains_and_emails_in_any_case():
    policy = AccessPolicy.from_mapping({
        "trainer": ["alice@lab.org", "@lab.org", "google-oauth2|42"],
        "viewer": ["intern@lab.org", "*@partner.org", "Bob@Gmail.com"],
    })
    assert policy.role_of("alice@lab.org") == "trainer" and policy.role_of("ALICE@Lab.Org") is Role.TRAINER
    assert policy.role_of("carol@lab.org") == "trainer", "the trainer domain"
    assert policy.role_of("Intern@LAB.org") == "viewer", "an exact viewer entry wins over the trainer domain"
    assert policy.role_of("dave@partner.org") == "viewer", "*@domain reads as @domain"
    assert policy.role_of("bob@gmail.com") == "viewer"
    assert policy.role_of("google-oauth2|42") == "trainer" and policy.role_of("GOOGLE-OAUTH2|42") is None, "subs exactly"
    for nobody in ("eve@evil.org", "eve@sub.lab.org", "eve@lab.org.evil.com", "lab.org", "@lab.org", None, ""):
        assert policy.role_of(nobody) is None, nobody
    assert AccessPolicy.from_mapping({"allow_anonymous": True}).role_of(None) == "viewer"
    both = AccessPolicy.from_mapping({"trainer": ["x@y.org"], "viewer": ["x@y.org"]})
    assert both.role_of("x@y.org") == "trainer", "a trainer is also a viewer"

    assert Role.VIEWER.can("view") and Role.VIEWER.can("infer")
    assert not any(Role.VIEWER.can(action) for action in ("launch", "cancel", "queue", "read_folder"))
    assert all(Role.TRAINER.can(action) for action in ACTIONS)
    with pytest.raises(ValueError, match="unknown action 'lanch'"):
        Role.TRAINER.can("lanch")
    assert role_allows("trainer", "launch") and not role_allows("viewer", "launch") and not role_allows(None, "view")
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        role_allows("admin", "view")
    assert policy.refusal("alice@lab.org", "launch") is None
    assert policy.refusal("bob@gmail.com", "launch") == ("a viewer may not launch (start or queue a training run): "
                                                         "ask for the trainer role")
    assert policy.refusal("eve@evil.org", "view") == "eve@evil.org has no role on this dashboard"
    assert policy.refusal(None, "view") == "not signed in"

    assert identity_of({"is_logged_in": True, "email": "Alice@Lab.org", "sub": "42"}) == "alice@lab.org"
    assert identity_of({"is_logged_in": True, "email": "alice@lab.org", "email_verified": False, "sub": "42"}) == "42"
    assert identity_of({"is_logged_in": False, "email": "alice@lab.org"}) is None


def test_the_access_table_is_validated_one_line_per_mistake(tmp_path):
    assert AccessPolicy.from_mapping(None) == AccessPolicy() and AccessPolicy().max_queued_per_user == 4
    (tmp_path / "file").write_text("")
    with pytest.raises(AccessConfigError) as failed:
        AccessPolicy.from_mapping({
            "trainers": ["alice@lab.org"], "viewer": "bob@gmail.com", "trainer": ["@", "two words", 7, "*lab.org"],
            "data_roots": ["/", str(tmp_path / "missing"), str(tmp_path / "file")],
            "max_queued_per_user": 0, "allow_anonymous": "yes",
        })
    lines = str(failed.value).splitlines()
    assert lines[0] == ("access: unknown key 'trainers' "
                        "(known: viewer, trainer, data_roots, max_queued_per_user, allow_anonymous)")
    assert [line.split(":")[0] for line in lines] == [
        "access", "access.trainer[0]", "access.trainer[1]", "access.trainer[2]", "access.trainer[3]", "access.viewer",
        "access.data_roots[0]", "access.data_roots[1]", "access.data_roots[2]", "access.max_queued_per_user",
        "access.allow_anonymous"]
    assert "'/' is /, the whole file system" in lines[6] and lines[7].endswith("missing does not exist")
    assert lines[8].endswith("file is not a folder")
    assert lines[-2].endswith("got 0") and lines[-1].endswith("got 'yes'")
    with pytest.raises(AccessConfigError, match="must be a table"):
        AccessPolicy.from_mapping(["trainer"])
    policy = AccessPolicy.from_mapping({"data_roots": [str(tmp_path), str(tmp_path) + "/"], "max_queued_per_user": 2})
    assert policy.roots == (tmp_path.resolve(),) and policy.max_queued_per_user == 2


# ------------------------------------------------------------------------------------------- the path guard


@pytest.fixture()
def tree(tmp_path):
    """data/ (the root) with faces/real/a.png, a link inside to faces and links leading out; a look-alike data2/ and a
    secret/ beside it."""
    data, secret, look_alike = tmp_path / "data", tmp_path / "secret", tmp_path / "data2"
    (data / "faces" / "real").mkdir(parents=True)
    (data / "faces" / "real" / "a.png").write_bytes(b"png")
    (secret / "keys").mkdir(parents=True)
    (secret / "keys" / "id").write_text("secret")
    (look_alike / "faces").mkdir(parents=True)
    (data / "inside").symlink_to(data / "faces")
    (data / "out").symlink_to(secret)
    (data / "faces" / "up").symlink_to("../../secret/keys")  # relative, leading out
    return tmp_path


def test_a_path_inside_a_root_is_accepted_however_it_is_written(tree, monkeypatch):
    data = tree / "data"
    faces = (data / "faces").resolve()
    assert guard_path(str(data / "faces"), [data]) == faces
    assert guard_path(data / "faces/real/a.png", [data]) == faces / "real" / "a.png"
    assert guard_path(str(data), [data]) == data.resolve(), "the root itself"
    assert guard_path(f"  {data}/inside/real ", [data]) == faces / "real", "a link that stays inside, spaces trimmed"
    assert guard_path(f"{data}/faces/real/../real", [data]) == faces / "real", "a .. that stays inside"
    assert guard_path(str(data / "faces" / "new"), [data]) == faces / "new", "not there yet: the caller checks"
    monkeypatch.setattr(core.io, "REPO", tree)  # relative paths are taken from the repository
    assert guard_path("data/faces", ["data"]) == faces
    monkeypatch.setenv("HOME", str(tree))
    assert guard_path("~/data/inside", ["~/data"]) == faces
    assert relative_to_root(data / "inside" / "real" / "a.png", [data]) == "data/faces/real/a.png"
    assert relative_to_root(data, [data]) == "data"
    assert relative_to_root(data / "faces" / "real", [data, data / "faces"]) == "faces/real", "the innermost root"
    with pytest.raises(ValueError, match="in none of the data roots"):
        relative_to_root(tree / "secret", [data])


@pytest.mark.parametrize("escape", ["dotdot", "dotdot-relative", "link-out", "link-out-below", "relative-link-out",
                                    "look-alike", "look-alike-below", "absolute-elsewhere"])
def test_every_escape_is_refused_and_nothing_is_read_from_it(tree, monkeypatch, escape):
    data = tree / "data"
    typed = {"dotdot": f"{data}/../secret", "dotdot-relative": "data/faces/../../secret/keys/id",
             "link-out": f"{data}/out", "link-out-below": f"{data}/out/keys/id",
             "relative-link-out": f"{data}/faces/up/id", "look-alike": f"{tree}/data2",
             "look-alike-below": f"{tree}/data2/faces", "absolute-elsewhere": "/etc/passwd"}[escape]
    monkeypatch.setattr(core.io, "REPO", tree)
    touched = []

    def spy(real):
        def call(path, *args, **kwargs):
            touched.append(os.fspath(path) if isinstance(path, str | os.PathLike) else path)
            return real(path, *args, **kwargs)
        return call

    # what reads or lists a file (realpath's lstat and readlink are its resolution, and allowed)
    for module, name in ((os, "stat"), (os, "open"), (os, "scandir"), (os, "listdir"), (os, "access"),
                         (builtins, "open")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    with pytest.raises(ValueError) as failed:
        guard_path(typed, [data])
    monkeypatch.undo()
    message = str(failed.value)
    assert "\n" not in message and message.endswith(f"outside the folders this dashboard may read: {data.resolve()}")
    assert all(str(tree / "secret") not in str(path) and "data2" not in str(path) and "/etc" not in str(path)
               for path in touched), touched


def test_a_root_that_is_slash_missing_or_absent_is_refused(tree):
    (tree / "to-slash").symlink_to("/")
    for roots, reason in (([Path("/")], "the whole file system"), ([tree / "to-slash"], "the whole file system"),
                          ([tree / "missing"], "does not exist"), ([], "no data roots are configured")):
        with pytest.raises(ValueError, match=reason):
            guard_path(str(tree / "data" / "faces"), roots)


def test_the_default_roots_are_the_data_folder_and_core_data_dir(tmp_path, monkeypatch):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    monkeypatch.setattr(core.io, "REPO", repo)
    monkeypatch.setenv("CORE_DATA_DIR", str(elsewhere))
    assert default_data_roots() == (), "neither exists yet"
    (repo / "data").mkdir(parents=True)
    elsewhere.mkdir()
    assert default_data_roots() == (repo / "data", elsewhere)
    assert AccessPolicy().roots == (repo / "data", elsewhere), "looked up at each call"
    assert AccessPolicy().guard("data") == repo / "data"
    monkeypatch.delenv("CORE_DATA_DIR")
    assert default_data_roots() == (repo / "data",)


# ---------------------------------------------------------------------------------------------- the audit log


def test_the_audit_log_records_each_action_newest_first(tmp_path):
    runs = tmp_path / "runs"
    assert read_audit(runs) == []
    audit(runs, "alice@lab.org", Role.TRAINER, "launch", ["python", "-m", "core", "train", "--method", "teacher"], "ok",
          launch_id="ab12cd34")
    audit(runs, "bob@gmail.com", "viewer", "launch", ["python", "-m", "core", "train"],
          refused("a viewer may not launch"))
    audit(runs, "Alice@Lab.org", "trainer", "read_folder", tmp_path / "data", "ok")
    audit(runs, None, None, "view", None, refused("not signed in"))
    with open(runs / AUDIT_LOG, "a") as handle:  # a line cut by a full disk
        handle.write('{"time": "2025-01-01T00:00:00.000+00:00", "identity": "mallory')
    records = read_audit(runs)
    assert [(r["identity"], r["action"], r["outcome"]) for r in records] == [
        (None, "view", "refused: not signed in"),
        ("Alice@Lab.org", "read_folder", "ok"),
        ("bob@gmail.com", "launch", "refused: a viewer may not launch"),
        ("alice@lab.org", "launch", "ok")]
    first = records[-1]
    assert first["role"] == "trainer" and first["launch_id"] == "ab12cd34" and first["target"][-1] == "teacher"
    assert first["time"].endswith("+00:00") and abs(first["epoch"] - _epoch(first["time"])) < 0.002
    assert records[1]["target"] == str(tmp_path / "data")
    assert [r["action"] for r in read_audit(runs, identity="ALICE@lab.org")] == ["read_folder", "launch"]
    assert len(read_audit(runs, limit=2)) == 2
    with pytest.raises(ValueError, match="outcome must be"):
        audit(runs, "alice@lab.org", "trainer", "launch", None, "refused")
    with pytest.raises(ValueError, match="may not replace epoch, time"):
        audit(runs, "alice@lab.org", "trainer", "launch", None, "ok", time="yesterday", epoch=0)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_two_processes_appending_at_once_lose_no_line(tmp_path):
    """2 x 200 records of ~6 KB each (more than one page: a torn or interleaved write would show) from two processes
    started together."""
    runs = tmp_path / "runs"
    script = ("import sys, time; from core.access import audit\n"
              "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # both start writing at the same moment\n"
              "for i in range(200): audit(sys.argv[1], sys.argv[2], 'trainer', 'launch', ['x' * 6000], 'ok', n=i)\n")
    start = str(time.time() + 1.0)
    writers = [subprocess.Popen([sys.executable, "-c", script, str(runs), who, start], cwd=REPO)
               for who in ("a@x.org", "b@x.org")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    lines = (runs / AUDIT_LOG).read_text().splitlines()
    assert len(lines) == 400
    records = [json.loads(line) for line in lines]  # every line whole
    for who in ("a@x.org", "b@x.org"):
        assert [r["n"] for r in records if r["identity"] == who] == list(range(200))
