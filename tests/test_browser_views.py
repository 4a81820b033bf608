"""Pages in a real headless Chromium over the real gunicorn: the explorer's notice for a cut text, and the
self-contained bertviz view, with every request to anything but 127.0.0.1 refused and asserted absent."""

from __future__ import annotations

import json
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
    install = [str(candor)] if candor.exists() else [sys.executable, "-m", "api.ops.cli"]
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


def _recipe() -> str:
    """The README's Python recipe for bertviz (the python block that imports it)."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    found = [b for b in blocks if "from bertviz import" in b]
    assert len(found) == 1, "the README documents one bertviz recipe"
    return found[0]


def test_readme_bertviz_recipe_runs_as_written(served: tuple[str, str]) -> None:
    """The recipe pasted as it is (only the host and the key filled in) feeds bertviz's own head and model
    views, which accept the shapes and tokens and carry Candor's weights."""
    import numpy as np

    base, token = served
    note = "Crushing chest pain and sweating since this morning."
    recipe = _recipe().replace("http://localhost:8000", base)
    namespace: dict[str, Any] = {"key": token, "note": note}
    exec(compile(recipe, "README.md", "exec"), namespace)  # the documented code itself
    from bertviz import head_view, model_view

    view = namespace["view"]
    assert view["root_div_id"] and view["default_filter"] == "0"
    attention, tokens = namespace["attention"], namespace["tokens"]
    expected = np.asarray(view["attention"][0]["attn"], dtype=np.float32)
    assert len(attention) == expected.shape[0] and tuple(attention[0].shape) == (1, *expected.shape[1:])
    for draw in (head_view, model_view):
        html = draw(attention, tokens, html_action="return").data
        params = json.loads(html.split("const params = ", 1)[1].split("; // HACK", 1)[0])
        shown = np.asarray(params["attention"][0]["attn"], dtype=np.float32)
        np.testing.assert_allclose(shown, expected, rtol=0, atol=1e-7)
        assert params["attention"][0]["left_text"] == tokens


@pytest.mark.parametrize("view", ["head", "model"])
def test_bertviz_view_renders_with_no_request_off_the_machine(
    served: tuple[str, str], browser: Browser, view: str
) -> None:
    """A recorded attention explanation in bertviz's own view, served by Candor as one page: bertviz's
    scripts, d3 and jQuery inlined (no CDN), drawn in Chromium under the page's strict CSP (not bypassed)."""
    base, token = served
    headers = {"Authorization": f"Bearer {token}"}
    body: dict[str, Any] = {"instances": [{"text": "Sudden chest pain and sweating."}], "layers": [4, 5]}
    body.update(heads=[0, 3, 7], **({"format": "bertviz"} if view == "model" else {}))  # both record forms
    explained = requests.post(
        f"{base}/v1/models/notes/versions/production/explain/attention",
        json=body,
        headers=headers,
        timeout=60,
    )
    assert explained.status_code == 200, explained.text
    record = explained.json()
    tokens = [t["token"] for t in record["results"][0]["tokens"]]
    context = browser.browser.new_context(
        extra_http_headers=headers, viewport={"width": 1200, "height": 1400}
    )
    page = context.new_page()
    page.on("pageerror", lambda error: browser.errors.append(str(error)))
    page.on("console", lambda m: browser.errors.append(m.text) if m.type == "error" else None)
    page.route("**/*", browser._route)
    response = page.goto(f"{base}/v1/explanations/{record['id']}/bertviz?view={view}")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-eval" not in csp and "http" not in csp
    page.wait_for_selector("#vis svg", timeout=30_000)
    if view == "head":
        assert page.locator("#layer option").all_inner_texts() == ["4", "5"]
        assert page.locator("#vis svg rect").count() >= 3 * len(tokens)  # each head's box per token
        assert page.locator("#vis svg text").all_text_contents()[: len(tokens)] == tokens
    else:
        assert page.locator("#vis svg").count() >= 1
        assert page.locator("#vis svg path, #vis svg line, #vis svg rect").count() > 6  # 2 x 3 thumbnails
    page.screenshot(path=str(ARTIFACTS / f"bertviz-{view}.png"), full_page=True)
    context.close()
    assert browser.errors == [], browser.errors
    assert browser.outside == []

    refused = requests.get(f"{base}/v1/explanations/{record['id']}/bertviz?view=neuron", headers=headers)
    assert refused.status_code == 422 and "view" in refused.json()["errors"]
