"""``GET /v1/explanations/{id}/bertviz``: a recorded attention explanation as bertviz's head or model view in
one HTML page whose scripts are all inline and allowed by hash, with the recorded weights as its data.
(Chromium draws it in tests/test_browser_views.py.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from text_oracles import tar_of_directory, text_app, tiny_bert_dir, tokens_for, upload

from explainers import bertviz_view

TEXT = "Crushing chest pain and sweating since this morning."
PROBLEM = "application/problem+json"


class Served:
    def __init__(self, app: Any, tokens: dict[str, str]) -> None:
        self.app, self.client, self.tokens = app, app.test_client(), tokens

    def record(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/models/triage/versions/1/explain/{route}",
            json=body,
            headers={"Authorization": f"Bearer {self.tokens['explain']}"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        return response.get_json()  # type: ignore[no-any-return]

    def view(self, record_id: str, query: str = "", scope: str = "audit:read") -> Any:
        return self.client.get(
            f"/v1/explanations/{record_id}/bertviz{query}",
            headers={"Authorization": f"Bearer {self.tokens[scope]}"},
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app = text_app(tmp_path_factory.mktemp("bertviz") / "data")
    tokens = tokens_for(app)
    uploaded = upload(app, tokens["models:write"], tar_of_directory(tiny_bert_dir(tmp_path_factory)))
    assert uploaded.status_code == 201, uploaded.get_json()
    yield Served(app, tokens)
    app.extensions["candor"].store.close()


def page_parts(response: Any) -> tuple[dict[str, Any], list[str]]:
    """The page's JSON data and its executable inline scripts, after checking it loads nothing."""
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=", page), "nothing is fetched"
    data = re.search(r'<script type="application/json" id="bertviz-params">(.*?)</script>', page, re.S)
    assert data is not None
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    return json.loads(data.group(1)), scripts


def test_per_head_record_in_the_head_view(served: Served) -> None:
    envelope = served.record("attention", {"instances": [{"text": TEXT}], "layers": [1, 0], "heads": [1]})
    response = served.view(envelope["id"])
    params, scripts = page_parts(response)
    result = envelope["results"][0]
    expected = [
        [entry["weights"] for entry in result["attention"] if entry["layer"] == layer] for layer in (1, 0)
    ]
    np.testing.assert_allclose(params["attention"][0]["attn"], expected, rtol=0, atol=0)
    assert params["attention"][0]["left_text"] == [t["token"] for t in result["tokens"]]
    assert params["include_layers"] == [1, 0] and params["include_heads"] == [1]
    assert params["root_div_id"] == "bertviz" and params["heads"] is None
    csp = response.headers["Content-Security-Policy"]
    allowed = set(re.findall(r"'sha256-[^']+'", csp))
    digests = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts
    }
    assert digests == allowed and len(scripts) == 4  # jQuery, d3, the require shim, bertviz's view
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
    assert "jQuery v3.7.1" in scripts[0] and "d3js.org v5.7.0" in scripts[1]
    assert "Apache License 2.0" in scripts[3] and "renderVis" in scripts[3]
    assert "const params = JSON.parse(" in scripts[3]  # bertviz's PYTHON_PARAMS marker, replaced


def test_bertviz_format_record_in_the_model_view(served: Served) -> None:
    envelope = served.record(
        "attention", {"instances": [{"text": TEXT}, {"text": "Mild rash."}], "format": "bertviz"}
    )
    params, scripts = page_parts(served.view(envelope["id"], "?view=model&instance=1"))
    recorded = envelope["results"][1]["bertviz"]
    assert params == {
        **recorded,
        "attention": params["attention"],
    }  # the envelope's object is the view's input
    np.testing.assert_allclose(
        params["attention"][0]["attn"], recorded["attention"][0]["attn"], rtol=0, atol=0
    )
    assert "model_view" in scripts[3] or "thumbnail" in scripts[3]


def test_what_cannot_be_shown_is_a_problem(served: Served) -> None:
    aggregated = served.record("attention", {"instances": [{"text": TEXT}], "aggregate": "mean"})
    attributions = served.record("attributions", {"instances": [{"text": TEXT}], "n_steps": 8})
    per_head = served.record("attention", {"instances": [{"text": TEXT}]})
    for record_id, query, status, field in [
        (aggregated["id"], "", 422, "record_id"),
        (attributions["id"], "", 422, "record_id"),
        (per_head["id"], "?view=neuron", 422, "view"),
        (per_head["id"], "?instance=1", 422, "instance"),
        (per_head["id"], "?instance=-1", 422, "instance"),
        ("no-such-record", "", 404, None),
    ]:
        response = served.view(record_id, query)
        assert response.status_code == status, (query, response.get_data(as_text=True))
        assert response.mimetype == PROBLEM
        if field:
            assert field in response.get_json()["errors"], response.get_json()
    assert served.view(per_head["id"], scope="explain").status_code == 403


def test_a_missing_package_is_named() -> None:
    with pytest.raises(bertviz_view.ViewerMissing, match="no_such_package") as raised:
        bertviz_view._package_dir("no_such_package")
    assert raised.value.status == 503
