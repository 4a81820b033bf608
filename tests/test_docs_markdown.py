"""The served contract reads well in Swagger UI (``/docs``): descriptions are Markdown (no reST double
backticks, which CommonMark shows literally) and the API description names every capability and every tag."""

from __future__ import annotations

from flask.testing import FlaskClient

CAPABILITIES = (
    "SHAP",
    "counterfactuals",
    "reasons",
    "attention",
    "attributions",
    "importance",
    "profile",
    "segments",
    "jobs",
    "audit trail",
    "keys",
    "KServe",
)


def test_no_rest_double_backticks_in_the_served_contract(client: FlaskClient) -> None:
    for route in ("/v1/openapi.json", "/v1/openapi.yaml"):
        text = client.get(route).get_data(as_text=True)
        assert "``" not in text, route
        assert "`" in text  # the inline code is kept, written the Markdown way


def test_the_description_names_every_capability_and_tag(client: FlaskClient) -> None:
    document = client.get("/v1/openapi.json").get_json()
    description = document["info"]["description"]
    missing = [word for word in CAPABILITIES if word.lower() not in description.lower()]
    assert missing == []
    tags = [tag["name"] for tag in document["tags"]]
    assert len(tags) >= 9
    assert [tag for tag in tags if f"**{tag}**" not in description] == []
