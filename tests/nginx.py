"""A real nginx (Debian's) in front of the app, as a hospital's single sign-on proxy: it authenticates the person
(auth_basic with an htpasswd file, standing in for oauth2-proxy, Kerberos or LDAP), names them and their groups in
X-Forwarded-User / X-Forwarded-Groups, and connects to the app from 127.0.0.2 (``proxy_bind``), so that the app
can tell its requests from anyone else's on this machine. Started as a plain process with its own configuration,
logs and temp folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.services import required

PROXY_ADDRESS = "127.0.0.2"
# What every nginx here shares: one worker in the foreground, its pid, logs and temp folders in its own folder; the
# http block's own lines follow (``running_nginx``).
PRELUDE = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log {folder}/access.log;
  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
"""
CONFIG = """
  client_max_body_size 25m;
  # the identity provider's groups, as oauth2-proxy would pass them on
  map $remote_user $groups {{ {groups} default "staff"; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_basic "hospital sign-on";
      auth_basic_user_file {htpasswd};
      proxy_pass http://127.0.0.1:{upstream};
      proxy_bind {bind};
      proxy_set_header X-Forwarded-User $remote_user;
      proxy_set_header X-Forwarded-Groups $groups;
      proxy_set_header Authorization "";  # the hospital's password never reaches the app
      proxy_set_header Host $host;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_read_timeout 300s;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
    }}
  }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@contextlib.contextmanager
def running_nginx(folder: Path, port: int, http: str) -> Iterator[str]:
    """Debian's nginx as a plain process: ``PRELUDE``, then ``http`` (the rest of the http block, closing it, with
    a server listening on 127.0.0.1:``port``), its logs and temp folders in ``folder``, as root when the tests run
    as root; yields http://127.0.0.1:PORT once it listens, RuntimeError (with its error log) when it does not."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nginx.conf"
    path.write_text(("user root;\n" if os.geteuid() == 0 else "") + PRELUDE.format(folder=folder) + http)
    with open(folder / "stdout.log", "w") as log:
        proc = subprocess.Popen([nginx_binary(), "-c", str(path), "-p", str(folder)], stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(folder / 'error.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.time() > deadline:
                raise RuntimeError("nginx did not listen within 30 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def _running(folder: Path, port: int, upstream: int, htpasswd: Path, groups: dict[str, str]) -> Iterator[str]:
    mapped = " ".join(f'{user} "{value}";' for user, value in groups.items())
    config = CONFIG.format(port=port, upstream=upstream, htpasswd=htpasswd, bind=PROXY_ADDRESS, groups=mapped)
    with running_nginx(folder, port, config) as url:
        yield url + "/"


def nginx(folder: Path, port: int, upstream: int, htpasswd: Path, groups: dict[str, str]):
    """Yields the proxy's URL; skipped locally without nginx, a failure in CI (whose .ci/run installs it)."""
    return required(nginx_binary() is not None, "CI must run the single sign-on test: apt-get install nginx-light",
                    "nginx not installed (apt-get install nginx-light)",
                    _running(folder, port, upstream, htpasswd, groups))  # fmt: skip
