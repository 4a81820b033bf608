"""Pages in a real headless Chromium over the real gunicorn: the explorer's notice for a cut text, with every
request to anything but 127.0.0.1 refused and asserted absent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from gunicorn_process import ROOT, free_port, running_gunicorn, server_env

from model_store.store import Store

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser download does not work on these machines
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts"
SENTENCE = "Crushing chest pain radiating to the left arm, sweating, short of breath since this morning. "


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, key) of a gunicorn serving the demo models."""
    data = tmp_path_factory.mktemp("pages").resolve()
    env = server_env(data, free_port(), CANDOR_WORKERS="1", CANDOR_LOG_LEVEL="warning")
    candor = Path(sys.executable).with_name("candor")
    install = [str(candor)] if candor.exists() else [sys.executable, "-m", "api.cli"]
    done = subprocess.run(
        [*install, "demo", "install"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    store = Store(data, f"sqlite:///{data}/candor.db")
    token, _ = store.keys.create("pages", ["explain", "audit:read"])
    store.close()
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:
        yield gunicorn.base, token


class Browser:
    """A Chromium page that records page errors and refuses (and remembers) requests off the loopback."""

    def __init__(self, playwright: Any) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        # The pages' CSP forbids eval; Playwright's own probes (wait_for_function, evaluate) need it.
        self.page = self.browser.new_page(viewport={"width": 1200, "height": 1600}, bypass_csp=True)
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def close(self) -> None:
        self.browser.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        opened = Browser(playwright)
        try:
            yield opened
        finally:
            opened.close()


def test_explorer_says_when_a_long_text_was_cut(served: tuple[str, str], browser: Browser) -> None:
    base, token = served
    note = SENTENCE * 12
    page = browser.page
    page.goto(base + "/")
    page.fill("#key", token)
    page.click("#connect-button")
    page.wait_for_function("document.querySelector('#model').options.length >= 3")
    page.select_option("#model", "notes")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('notes v')")
    page.fill("#text-input", note)
    page.click("#explain-text")
    page.wait_for_selector("#attention-card:not([hidden]) svg rect", timeout=60_000)
    result = requests.post(
        f"{base}/v1/models/notes/versions/production/explain/attention",
        json={"instances": [{"text": note}], "truncate": True, "layers": [0], "aggregate": "mean"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ).json()["results"][0]
    assert result["truncated"] is True and result["original_tokens"] > len(result["tokens"]) == 128
    notice = page.locator("#truncation")
    assert notice.is_visible()
    text = notice.inner_text()
    assert f"explained the first 128 of {result['original_tokens']} tokens" in text, text
    assert "the rest was cut" in text
    cut_at = max(t["end"] for t in result["tokens"] if not t["special"])
    assert page.text_content("#words .cut") == note[cut_at:]
    assert page.text_content("#words") == note, "the whole note is shown, its cut part marked"
    page.screenshot(path=str(ARTIFACTS / "explorer-truncated.png"), full_page=True)

    page.fill("#text-input", SENTENCE)
    page.click("#explain-text")
    page.wait_for_function("!document.querySelector('#status').textContent.startsWith('explaining')")
    page.wait_for_selector("#words-card:not([hidden])")
    assert not notice.is_visible(), "a text within the limit has no notice"
    assert page.locator("#words .cut").count() == 0
    assert browser.errors == [] and browser.outside == []
