"""The browser test's world: Debian's Chromium, axe-core and a live server of the example project.

Runs only with ``-m browser`` (``make test-browser``, which ``.ci/run`` calls). The browser is
Debian's ``chromium`` package driven by Playwright for Python through ``executable_path``: nothing
downloads a browser. axe-core comes from the npm registry (``.ci/package.json``, installed by
``npm ci --prefix .ci``). Without either, the tests skip and say what to install; with
``KLAVIYO_CONSENT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) a missing tool fails them instead, so
CI never passes by skipping.

The server is the example project itself (``manage.py runserver`` in a subprocess, as ``make
demo`` serves it) on a fresh SQLite database and a fresh file-backed fake Klaviyo, so the test
reads Klaviyo's side back from the same account the site pushed to.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Debian's package ``chromium`` installs it here (``apt-get install chromium``).
CHROMIUM = Path(os.environ.get("KLAVIYO_CONSENT_CHROMIUM", "/usr/bin/chromium"))
#: What this closed network needs (docs/testing.md): headless, no sandbox (CI runs as root), and
#: none of Chromium's own calls home, which the network refuses many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
AXE = REPO / ".ci" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / ".ci" / "artifacts"
REQUIRED = os.environ.get("KLAVIYO_CONSENT_REQUIRE_BROWSER") == "1"
#: How long the example server may take to migrate and answer before the fixture gives up.
SERVER_START_TIMEOUT = 120.0


def unavailable(message: str) -> None:
    """Skip with ``message``; in CI (KLAVIYO_CONSENT_REQUIRE_BROWSER=1) fail with it instead."""
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch options for Debian's Chromium with this network's flags."""
    if not CHROMIUM.exists():
        unavailable(
            f"Debian's Chromium is not installed at {CHROMIUM}: `sudo apt-get install -y "
            "chromium` (the browser test never downloads a browser; KLAVIYO_CONSENT_CHROMIUM "
            "names another binary)"
        )
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe-core's browser bundle, installed from the npm registry by ``npm ci --prefix .ci``."""
    if not AXE.exists():
        unavailable(f"axe-core is not installed at {AXE}: run `npm ci --prefix .ci`")
    return AXE


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots are kept (``.ci/artifacts/``, gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass(frozen=True)
class ExampleServer:
    """A running example site: its address, the admin's login and the fake Klaviyo's file."""

    url: str
    username: str
    password: str
    fake_state_file: Path
    log: Path

    def klaviyo_profile(self, email: str) -> dict[str, Any] | None:
        """Klaviyo's side of ``email`` as the site's fake account holds it now (or None).

        Read from the fake's state file, as another process of the demo would; the shape is
        ``FakeKlaviyo.get_profile``'s (``["subscriptions"]["email"]["marketing"]["consent"]``).
        """
        from klaviyo_consent.testing.fake.persistence import FileBackedFakeKlaviyo

        if not self.fake_state_file.exists():
            return None
        return FileBackedFakeKlaviyo(str(self.fake_state_file)).get_profile(email=email)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    """The example project served by ``runserver`` on a free port, SQLite, the embedded fake."""
    home = tmp_path_factory.mktemp("example-site")
    username, password = "browser-admin", secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DEBUG": "True",  # runserver serves the admin's static files only with DEBUG
        "DATABASE_URL": f"sqlite:///{home / 'site.sqlite3'}",
        "KLAVIYO_PRIVATE_API_KEY": "",  # the embedded fake Klaviyo, never the network
        "KLAVIYO_FAKE_STATE_FILE": str(home / "fake-klaviyo.pickle"),
        "LEDGER_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DJANGO_SUPERUSER_PASSWORD": password,
    }
    manage = [sys.executable, str(REPO / "manage.py")]
    for command in (
        ["migrate", "--noinput"],
        ["createsuperuser", "--noinput", "--username", username, "--email", "staff@example.com"],
    ):
        done = subprocess.run(
            [*manage, *command], env=env, cwd=REPO, capture_output=True, text=True
        )
        if done.returncode:
            pytest.fail(f"manage.py {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    url = f"http://127.0.0.1:{_free_port()}"
    log = home / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [*manage, "runserver", url.removeprefix("http://"), "--noreload"],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _answers(f"{url}/admin/login/"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the example server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield ExampleServer(url, username, password, home / "fake-klaviyo.pickle", log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def base_url(example_server: ExampleServer) -> str:
    """Every page of the browser tests opens relative to the example server."""
    return example_server.url
