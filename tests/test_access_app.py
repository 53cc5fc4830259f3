"""The app's door, for real: one `python app.py` with a users file (Argon2id lines from scripts/users.py, a bare
`htpasswd -B` line), the hospital's proxy trusted at 127.0.0.2 and a worklist; a REAL nginx in front as the single
sign-on; gradio_client, httpx from other loopback addresses and a REAL Chromium as the people. Readers read, uploaders
are refused (audited), the proxy's users are who it says, a forged header is not believed, guessing is locked out,
idle sessions end."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from mura_mt.audit import read_audit
from mura_mt.bench.worklist_fill import fill
from mura_mt.dicom_node.store import WorklistStore
from tests.browser import chromium
from tests.conftest import REPO, free_port, running_app
from tests.nginx import PROXY_ADDRESS, nginx
from tests.test_access import htpasswd_line, users_py

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "artifacts"
IDLE_S = 9.0  # --session-idle-minutes 0.15
LOCKOUT_S = 10.0
READER, UPLOADER = ("ana", "ana-reader-pw"), ("carl", "carl-uploader-pw")


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    """The app (reader ana, uploader carl) behind nginx (its users rad1 in group radiology, clerk in staff)."""
    folder = tmp_path_factory.mktemp("door")
    db = folder / "worklist.sqlite"
    fill(WorklistStore(db, node="ELSEWHERE"), 30, 1_700_000_000.0)
    users = folder / "users.txt"
    assert users_py(users, "add", READER[0], "--role", "reader", password=READER[1] + "\n").returncode == 0
    with open(users, "a") as out:
        out.write(htpasswd_line(*UPLOADER) + "\n")
    sso = folder / "hospital.htpasswd"
    sso.write_text(htpasswd_line("rad1", "rad1-sso-pw") + "\n" + htpasswd_line("clerk", "clerk-sso-pw") + "\n")
    audit = folder / "audit.jsonl"
    args = ("--worklist-db", str(db), "--auth-file", str(users), "--audit-log", str(audit),
            "--trusted-proxy", PROXY_ADDRESS, "--group-roles", "radiology=reader",
            "--session-idle-minutes", str(IDLE_S / 60), "--login-lockout-seconds", str(LOCKOUT_S))  # fmt: skip
    with open(folder / "app.log", "w") as log, running_app(log, None, *args) as (app, _):
        port = int(app.rstrip("/").rsplit(":", 1)[1])
        with nginx(folder / "nginx", free_port(), port, sso, {"rad1": "radiology,staff"}) as proxy:
            yield {"app": app, "proxy": proxy, "audit": audit, "db": db}


def _client(url: str, **kwargs):
    from gradio_client import Client

    return Client(url, verbose=False, **kwargs)


def _events(door, **match) -> list[dict]:
    return [e for e in read_audit(door["audit"]) if all(e.get(k) == v for k, v in match.items())]


def test_a_reader_reads_and_an_uploader_is_refused_in_the_api_and_in_the_page(door, sample_images):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    reader = _client(door["app"], auth=READER)
    rows = reader.predict("", "", 5, 0, api_name="/worklist")
    assert len(rows) == 5
    read = reader.predict(rows[0]["study_uid"], "normal", "", "", api_name="/record_read")
    assert read["author"] == "ana"
    uploader = _client(door["app"], auth=UPLOADER)  # a bare `htpasswd -B` line: the least role
    result, _ = uploader.predict(handle_file(sample_images["single"]), "auto", False, api_name="/predict")
    assert 0 <= result["abnormal_prob"] <= 1
    for call in (lambda: uploader.predict("", "", 5, 0, api_name="/worklist"),
                 lambda: uploader.predict(rows[0]["study_uid"], "abnormal", "", "", api_name="/record_read"),
                 lambda: uploader.predict("", "", "any", api_name="/performance")):  # fmt: skip
        with pytest.raises(AppError, match="needs the role reader"):
            call()
    refused = {e["detail"].split(" needs")[0] for e in _events(door, action="access refused", user="carl")}
    assert {"/worklist", "/record_read", "/performance"} <= refused
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(door["app"], wait_until="load")  # no session: the login page
        page.fill("#username", UPLOADER[0])
        page.fill("#password", UPLOADER[1])
        page.click("#sign-in")
        page.wait_for_selector("#worklist-summary")
        page.wait_for_function("document.querySelector('#worklist-summary').innerText.includes('may not use')")
        assert "Signed in as carl (uploader)" in page.inner_text("#signed-in")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "access-refused.png"))
        page.close()
    assert _events(door, action="access refused", user="carl", detail="the worklist needs reader; has uploader")


def test_behind_the_hospitals_proxy_its_user_reads_and_a_forged_header_gets_nothing(door):
    from gradio_client.exceptions import AppError

    def basic(user: str, password: str) -> dict:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert httpx.get(door["proxy"], timeout=10).status_code == 401  # nginx asks the hospital's sign-on first
    rad1 = _client(door["proxy"], headers=basic("rad1", "rad1-sso-pw"))
    assert len(rad1.predict("", "", 3, 0, api_name="/worklist")) == 3
    listed = _events(door, action="worklist listed", user="rad1")
    assert listed and listed[-1]["remote"] == PROXY_ADDRESS
    clerk = _client(door["proxy"], headers=basic("clerk", "clerk-sso-pw"))  # in no group with a role: uploader
    with pytest.raises(AppError, match="needs the role reader"):
        clerk.predict("", "", 3, 0, api_name="/worklist")
    forged = {"X-Forwarded-User": "rad1", "X-Forwarded-Groups": "radiology"}
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=10) as stranger:
        for path in ("config", "gradio_api/info", ""):
            assert stranger.get(door["app"] + path, headers=forged).status_code == 403
        assert stranger.get(door["app"] + "config").status_code == 401  # and without the header: not logged in
    refused = _events(door, action="identity header refused", user="rad1")
    assert len(refused) == 3 and {e["remote"] for e in refused} == {"127.0.0.3"}


def test_guessing_is_locked_out_and_audited_and_the_owner_gets_in_after_the_wait(door):
    """300 wrong passwords in a row against ana, from 127.0.0.4: after the first five, none is checked at full
    speed; the right one is refused during the lock; every attempt is audited; after the wait it works."""
    statuses, started = [], time.time()
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"), timeout=10) as guesser:
        for n in range(300):
            statuses.append(guesser.post(door["app"] + "login", data={"username": "ana", "password": f"guess{n}"}))
        during = guesser.post(door["app"] + "login", data={"username": "ana", "password": READER[1]})
        assert during.status_code == 429 and "try again at" in during.json()["detail"]
        time.sleep(float(during.headers["Retry-After"]) + 0.5)
        after = guesser.post(door["app"] + "login", data={"username": "ana", "password": READER[1]})
    codes = [r.status_code for r in statuses]
    assert codes[:5] == [400] * 5 and codes[5] == 429
    # checked at all: the first five, and one after each lock ran out (a lock twice as long each time)
    elapsed = time.time() - started
    assert codes.count(400) <= 5 + 3 and codes.count(429) >= 300 - 8, (codes.count(400), elapsed)
    assert after.status_code == 200 and "mura-mt-session" in after.cookies
    mine = [e for e in read_audit(door["audit"]) if e["remote"] == "127.0.0.4"]
    assert [e["action"] for e in mine].count("login failed") == codes.count(400)
    assert [e["action"] for e in mine].count("login throttled") == codes.count(429) + 1  # the right one, refused
    assert mine[-1]["action"] == "login"


def test_an_idle_session_must_log_in_again_and_a_logout_ends_one_at_once(door):
    from gradio_client.exceptions import AppError

    reader = _client(door["app"], auth=READER)
    assert len(reader.predict("", "", 2, 0, api_name="/worklist")) == 2
    time.sleep(IDLE_S / 2)
    assert len(reader.predict("", "", 2, 0, api_name="/worklist")) == 2  # a use keeps it alive
    time.sleep(IDLE_S + 1)
    with pytest.raises((AppError, ValueError, httpx.HTTPError)):
        reader.predict("", "", 2, 0, api_name="/worklist")
    login = httpx.post(door["app"] + "login", data={"username": READER[0], "password": READER[1]}, timeout=10)
    cookies = dict(login.cookies)
    assert httpx.get(door["app"] + "config", cookies=cookies, timeout=10).status_code == 200
    assert httpx.get(door["app"] + "logout", cookies=cookies, timeout=10).status_code == 303
    assert httpx.get(door["app"] + "config", cookies=cookies, timeout=10).status_code == 401
    page = httpx.get(door["app"], cookies=cookies, headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 303 and page.headers["location"] == "login?ended=1"
