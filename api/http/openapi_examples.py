"""Request examples of the contract, valid for the demo models (``candor demo``: loan, clinical, notes), so a
reader of ``/docs`` and a fuzzer's examples phase both send requests that reach the real work."""

from __future__ import annotations

from typing import Any

from api.methods.registry import specs

LOAN_ROW: dict[str, Any] = {
    "status_of_existing_checking_account": "0 <= ... < 200 DM",
    "duration_in_month": 48,
    "credit_history": "existing credits paid back duly till now",
    "purpose": "radio/television",
    "credit_amount": 5951,
    "savings_account_and_bonds": "... < 100 DM",
    "present_employment_since": "1 <= ... < 4 years",
    "installment_rate_in_percentage_of_disposable_income": 2,
    "personal_status_and_sex": "male : divorced/separated",
    "other_debtors_or_guarantors": "none",
    "present_residence_since": 2,
    "property": "real estate",
    "age_in_years": 22,
    "other_installment_plans": "none",
    "housing": "own",
    "number_of_existing_credits_at_this_bank": 1,
    "job": "skilled employee / official",
    "number_of_people_being_liable_to_provide_maintenance_for": 1,
    "telephone": "none",
    "foreign_worker": "yes",
}
"""A row of the loan demo (German credit), declined by its model."""
NOTE = {"text": "Patient reports chest pain and shortness of breath since this morning."}
TEXT_MODEL = "notes"
"""The demo text model: the example of ``{name}`` on the text-only routes."""

VERSION_PATH = "/v1/models/{name}/versions/{version}"
JSON = "application/json"
TEXT_ROUTES = tuple(spec.path for spec in specs() if spec.flavour == "text")
REQUEST_EXAMPLES: dict[tuple[str, str], Any] = {
    (f"{VERSION_PATH}/predict", JSON): {"instances": [LOAN_ROW]},
    **{
        (f"{VERSION_PATH}{spec.path}", JSON): {
            "instances": [NOTE if spec.flavour == "text" else LOAN_ROW],
            **spec.example,
        }
        for spec in specs()
    },
    ("/v1/models/{name}:predict", JSON): {"instances": [LOAN_ROW]},
    ("/v1/models/{name}:explain", JSON): {"instances": [LOAN_ROW]},
    ("/v1/jobs", JSON): {
        "model": "loan",
        "version": "production",
        "kind": "shap",
        "dataset": "reference",
        "options": {"top_k": 3},
    },
    ("/v1/keys", JSON): {"name": "frontend", "scopes": ["explain"], "models": ["loan"]},
}
"""``(path, media type)`` -> the request body's example."""


def path_example(path: str, parameter: str, default: str) -> str:
    """The example of path parameter ``parameter`` on ``path``: the text model on text-only routes."""
    if parameter == "name" and path.endswith(TEXT_ROUTES):
        return TEXT_MODEL
    return default


def add_request_examples(path: str, operation: dict[str, Any]) -> None:
    for media, content in operation.get("requestBody", {}).get("content", {}).items():
        example = REQUEST_EXAMPLES.get((path, media))
        if example is not None:
            content["example"] = example
