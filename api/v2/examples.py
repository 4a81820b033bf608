"""An OpenAPI example of a V2 request for the demo model ``loan`` (the path examples name it), so that
clients and fuzzers reach real inference and explanations: one input per feature, in the manifest's order."""

from __future__ import annotations

from typing import Any

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


def _input(name: str, value: Any) -> dict[str, Any]:
    datatype = "BYTES" if isinstance(value, str) else "FP64"
    return {"name": name, "shape": [1], "datatype": datatype, "data": [value]}


LOAN_REQUEST = {"id": "example-1", "inputs": [_input(name, value) for name, value in LOAN_ROW.items()]}
LOAN_EXPLAIN_REQUEST = {**LOAN_REQUEST, "parameters": {"seed": 0}}
