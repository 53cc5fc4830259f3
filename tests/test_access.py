"""Who may do what, piece by piece (``mura_mt.access``): the users file holds hashes only and takes `htpasswd -B`
lines as they are; scripts/users.py never sees a password on its command line; the throttle locks and lets go; idle
sessions end; only the trusted proxy's header is believed. The whole door, behind a real nginx, is in
test_access_app.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mura_mt.access.gate import Access, ForgedIdentity
from mura_mt.access.proxy import TrustedProxy
from mura_mt.access.roles import ANALYSE, METRICS, ROLES, WORKLIST, may
from mura_mt.access.sessions import Sessions
from mura_mt.access.throttle import LoginThrottle
from mura_mt.access.users import Users, UsersFileError
from mura_mt.audit import AuditLog, read_audit
from tests.conftest import REPO


def users_py(file, *args, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/users.py", str(file), *args], cwd=REPO, input=password, check=False,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def htpasswd_line(user: str, password: str) -> str:
    if shutil.which("htpasswd") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test htpasswd's lines: apt-get install apache2-utils")
        pytest.skip("htpasswd not installed (apt-get install apache2-utils)")
    done = subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_users_file_holds_hashes_only_and_htpasswd_lines_work_as_they_are(tmp_path):
    users = tmp_path / "users.txt"
    added = users_py(users, "add", "ana", "--role", "reader", password="ana-password-1\n")
    assert added.returncode == 0, added.stderr
    assert users_py(users, "add", "mon", "--role", "monitor", password="mon-password-1\n").returncode == 0
    with open(users, "a") as out:
        out.write(htpasswd_line("carl", "carl-password-1") + "\n")  # the hospital's own tool, no roles: an uploader
    text = users.read_text()
    assert "ana-password-1" not in text and "mon-password-1" not in text and "carl-password-1" not in text
    assert "ana:$argon2id$" in text and "carl:$2y$" in text
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    loaded = Users.load(users)
    assert loaded.verify("ana", "ana-password-1").roles == {"reader"}
    assert loaded.verify("carl", "carl-password-1").roles == {"uploader"}
    assert loaded.verify("ana", "wrong") is None and loaded.verify("nobody", "ana-password-1") is None
    listed = users_py(users, "list").stdout
    assert "ana\treader\targon2id\tenabled" in listed and "carl\tuploader\tbcrypt\tenabled" in listed
    # changes take effect without a restart: the file is read again when it changes
    assert users_py(users, "disable", "ana").returncode == 0
    assert loaded.verify("ana", "ana-password-1") is None
    assert (
        users_py(users, "enable", "ana").returncode == 0
        and users_py(users, "passwd", "ana", password="new-password-2\n").returncode == 0
    )
    assert loaded.verify("ana", "ana-password-1") is None and loaded.verify("ana", "new-password-2") is not None
    assert users_py(users, "role", "carl", "--role", "reader").returncode == 0
    assert loaded.verify("carl", "carl-password-1").roles == {"reader"}


def test_a_plain_password_in_the_file_is_refused_without_echoing_it(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# who may sign in\nalice:TOPSECRET-plain\n")
    with pytest.raises(UsersFileError) as err:
        Users.load(users)
    assert "line 2" in str(err.value) and "not an Argon2id or bcrypt hash" in str(err.value)
    assert "TOPSECRET" not in str(err.value)
    with pytest.raises(UsersFileError, match="unknown role"):
        Users.load(_write(tmp_path / "roles.txt", "bob:$argon2id$v=19$m=65536,t=3,p=4$x$y:admin\n"))
    refused = users_py(users, "add", "x:y", password="long-enough-pw\n")
    assert refused.returncode == 2 and "may not hold ':'" in refused.stderr
    short = users_py(tmp_path / "new.txt", "add", "dave", password="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr and "short" not in short.stdout
    assert Users.from_plain("carol:one, dave:two:three").verify("dave", "two:three").roles == {"reader"}


def _write(path, text):
    path.write_text(text)
    return path


def test_the_roles_table():
    assert may({"reader"}, WORKLIST) and may({"reader"}, ANALYSE) and not may({"reader"}, METRICS)
    assert not may({"uploader"}, WORKLIST) and may({"uploader"}, ANALYSE)
    assert may({"monitor"}, METRICS) and not may({"monitor"}, ANALYSE)
    assert set(ROLES) == {"reader", "uploader", "monitor"}


def test_the_throttle_locks_growing_and_lets_the_owner_back_in():
    throttle = LoginThrottle(max_failures=3, lockout_s=10, address_failures=5)
    for i in range(2):
        assert throttle.failed("ana", f"10.0.0.{i}", now=100) == 0
    assert throttle.failed("ana", "10.0.0.9", now=100) == 10  # the third failure locks the user, from anywhere
    assert throttle.wait("ana", "10.0.0.7", now=105) == 5 and throttle.wait("bob", "10.0.0.7", now=105) == 0
    assert throttle.wait("ana", "10.0.0.7", now=111) == 0  # the lock ends; attempts meanwhile did not lengthen it
    assert throttle.failed("ana", "10.0.0.7", now=111) == 20  # the next failure locks for twice as long
    throttle.succeeded("ana", "10.0.0.7")
    assert throttle.failed("ana", "10.0.0.7", now=200) == 0  # a success cleared the count
    for user in ("u1", "u2", "u3", "u4"):
        throttle.failed(user, "10.9.9.9", now=300)
    assert throttle.failed("u5", "10.9.9.9", now=300) == 10  # one address spraying many users is locked too
    assert throttle.wait("someone-else", "10.9.9.9", now=301) == 9


def test_idle_sessions_end_and_a_logout_ends_one():
    sessions = Sessions(idle_s=60)
    token = sessions.start("ana", frozenset({"reader"}), now=0)
    assert sessions.get(token, touch=True, now=50).user == "ana"
    assert sessions.get(token, now=100) is not None  # used at 50: not idle yet
    assert sessions.get(token, now=111) is None  # 61 s unused (a look without touch is not a use)
    other = sessions.start("bob", frozenset({"uploader"}), now=200)
    sessions.end(other)
    assert sessions.get(other, now=201) is None and sessions.get("made-up", now=201) is None


def test_only_the_trusted_proxys_header_is_believed_and_a_forgery_is_audited(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    proxy = TrustedProxy("127.0.0.2", "radiology=reader,it=monitor,it=uploader")
    access = Access(None, proxy, audit=audit)
    headers = {"X-Forwarded-User": "ana", "X-Forwarded-Groups": "staff, radiology"}
    identity = access.identify(headers, "127.0.0.2", None)
    assert (identity.user, identity.roles, identity.via) == ("ana", {"reader"}, "proxy")
    assert access.identify({"X-Forwarded-User": "it-bot", "X-Forwarded-Groups": "it"}, "127.0.0.2", None).roles == {
        "monitor", "uploader"}  # fmt: skip
    assert access.identify({"X-Forwarded-User": "guest"}, "127.0.0.2", None).roles == {"uploader"}  # the least role
    with pytest.raises(ForgedIdentity):
        access.identify(headers, "127.0.0.3", None)
    assert access.identify({}, "127.0.0.3", None) is None  # no header, no session: must log in
    (event,) = read_audit(tmp_path / "audit.jsonl")
    assert (event["action"], event["user"], event["remote"]) == ("identity header refused", "ana", "127.0.0.3")
    with pytest.raises(ValueError, match="GROUP=ROLE"):
        TrustedProxy("127.0.0.2", "radiology=admin")
    with pytest.raises(ValueError, match="not an IP address"):
        TrustedProxy("proxy.hospital")
