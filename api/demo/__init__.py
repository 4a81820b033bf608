"""The demo models: ``loan`` (German credit), ``loan-xgb`` and ``loan-lgbm`` (the same data, XGBoost and
LightGBM), ``clinical`` (breast cancer) and ``notes`` (text), built and registered once."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from model_store.errors import NotFound
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.registry import ModelRegistry
from model_store.safe_load import dump_skops

SEED = 0
LOAN_TARGET = "creditability"
PROTECTED = {"age_in_years", "personal_status_and_sex", "foreign_worker"}
LOAN_MUTABLE = {
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_amount",
    "savings_account_and_bonds",
    "installment_rate_in_percentage_of_disposable_income",
    "other_debtors_or_guarantors",
    "purpose",
    "number_of_existing_credits_at_this_bank",
    "telephone",
}
LOAN_UNITS = {
    "duration_in_month": "months",
    "credit_amount": "DM",
    "age_in_years": "years",
    "installment_rate_in_percentage_of_disposable_income": "percent band (1-4)",
    "present_residence_since": "years band (1-4)",
}
AGE_BINS = [25.0, 35.0, 50.0]
"""Cut points of the loan demo's age groups for a fairness report: under 25, 25-34, 35-49, 50 and over."""
LOAN_STEPS = {"duration_in_month": 1.0, "credit_amount": 1.0, "age_in_years": 1.0}
LOAN_REASONS = {
    "status_of_existing_checking_account": ("C01", "Balance or status of the existing checking account"),
    "duration_in_month": ("C02", "Requested loan term is too long"),
    "credit_history": ("C03", "Delinquency or problems in past credit history"),
    "purpose": ("C04", "Purpose of the loan"),
    "credit_amount": ("C05", "Requested amount is too high"),
    "savings_account_and_bonds": ("C06", "Insufficient savings or bonds"),
    "present_employment_since": ("C07", "Length of employment"),
    "installment_rate_in_percentage_of_disposable_income": (
        "C08",
        "Installments are too high relative to disposable income",
    ),
    "other_debtors_or_guarantors": ("C09", "No co-applicant or guarantor"),
    "present_residence_since": ("C10", "Length of residence"),
    "property": ("C11", "Insufficient property or collateral"),
    "other_installment_plans": ("C12", "Other installment plans outstanding"),
    "housing": ("C13", "Housing situation"),
    "number_of_existing_credits_at_this_bank": ("C14", "Number of existing credits at this bank"),
    "job": ("C15", "Type of employment"),
    "number_of_people_being_liable_to_provide_maintenance_for": ("C16", "Number of dependants"),
    "telephone": ("C17", "No telephone registered"),
}
"""Reason codes for the adverse-action notice; protected features have none and are never offered."""


def german_credit() -> pd.DataFrame:
    """The German credit data shipped with the package (UCI Statlog, CC BY 4.0)."""
    with resources.files("api.demo.data").joinpath("german_credit.csv").open("rb") as handle:
        frame = pd.read_csv(handle)
    for column in frame.columns:
        if frame[column].dtype != "int64":
            frame[column] = frame[column].astype(object)
    return frame


def loan_model() -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    data = german_credit()
    features = data.drop(columns=[LOAN_TARGET])
    categorical = [c for c in features.columns if features[c].dtype == object]
    numeric = [c for c in features.columns if c not in categorical]
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                        ("numeric", "passthrough", numeric),
                    ]
                ),
            ),
            (
                "model",
                GradientBoostingClassifier(
                    n_estimators=200, max_depth=3, learning_rate=0.05, random_state=SEED
                ),
            ),
        ]
    )
    pipeline.fit(features, data[LOAN_TARGET])
    return loan_manifest(data), pipeline, data


def loan_manifest(data: pd.DataFrame) -> dict[str, Any]:
    """The ``loan`` manifest: every German-credit column but the target, reasons and groups."""
    features = data.drop(columns=[LOAN_TARGET])
    categorical = [c for c in features.columns if features[c].dtype == object]
    specs = [_loan_feature(column, column in categorical) for column in features.columns]
    manifest = {
        "name": "loan",
        "task": "binary_classification",
        "target": LOAN_TARGET,
        "classes": ["bad", "good"],
        "favourable_class": "good",
        "description": "Credit risk on the UCI Statlog German credit data (CC BY 4.0); gradient boosting.",
        "features": specs,
        "reasons": {feature: {"code": code, "text": text} for feature, (code, text) in LOAN_REASONS.items()},
        "groups": {
            "applicant": ["age_in_years", "personal_status_and_sex", "foreign_worker", "job"],
            "loan": [
                "duration_in_month",
                "credit_amount",
                "purpose",
                "installment_rate_in_percentage_of_disposable_income",
            ],
        },
    }
    return manifest


def _loan_feature(column: str, categorical: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": column,
        "type": "categorical" if categorical else "numeric",
        "mutable": column in LOAN_MUTABLE and column not in PROTECTED,
        "protected": column in PROTECTED,
        "display_name": column.replace("_", " "),
    }
    if column in LOAN_UNITS:
        spec["unit"] = LOAN_UNITS[column]
    if column in LOAN_STEPS:
        spec["step"] = LOAN_STEPS[column]
    if column in ("age_in_years", "present_residence_since"):
        spec["monotone"] = "increasing"
    if column == "age_in_years":
        spec["bins"] = AGE_BINS
    return spec


def clinical_model() -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    bunch = load_breast_cancer(as_frame=True)
    features = bunch.data
    labels = bunch.target.map(dict(enumerate(bunch.target_names)))
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("model", GradientBoostingClassifier(n_estimators=150, max_depth=2, random_state=SEED)),
        ]
    ).fit(features, labels)
    specs = [{"name": c, "type": "numeric", "mutable": False} for c in features.columns]
    manifest = {
        "name": "clinical",
        "task": "binary_classification",
        "target": "diagnosis",
        "classes": [str(c) for c in pipeline.classes_],
        "favourable_class": "benign",
        "description": "Breast cancer diagnosis (Wisconsin diagnostic data bundled with scikit-learn).",
        "features": specs,
    }
    reference = features.assign(diagnosis=labels.to_numpy())
    return manifest, pipeline, reference


DEMOS = {"loan": loan_model, "clinical": clinical_model}
TREE_DEMOS = ("loan-xgb", "loan-lgbm")
TEXT_DEMOS = ("notes",)


def install_demos(
    registry: ModelRegistry, names: tuple[str, ...] = ("loan", "loan-xgb", "loan-lgbm", "clinical", "notes")
) -> list[str]:
    """Build and register each named demo model that is not registered yet; returns what was installed."""
    installed = []
    for name in names:
        try:
            registry.get_model(name)
            continue
        except NotFound:
            pass
        if name in TEXT_DEMOS:
            info = _register_text_demo(registry)
        elif name in TREE_DEMOS:
            info = _register_tree_demo(registry, name)
        else:
            info = _register_tabular_demo(registry, name)
        registry.promote(name, info.version)
        installed.append(f"{name} v{info.version}")
    return installed


def _register_tabular_demo(registry: ModelRegistry, name: str) -> Any:
    manifest, pipeline, reference = DEMOS[name]()
    return registry.register_tabular(parse_manifest(manifest), dump_skops(pipeline), to_parquet(reference))


def _register_tree_demo(registry: ModelRegistry, name: str) -> Any:
    from api.demo import trees

    data = german_credit()
    base = loan_manifest(data)
    if name == "loan-xgb":
        manifest, artifact = trees.loan_xgb_model(base, data, LOAN_TARGET)
    else:
        manifest, pipeline = trees.loan_lgbm_model(base, data, LOAN_TARGET)
        artifact = dump_skops(pipeline)
    return registry.register_tabular(parse_manifest(manifest), artifact, to_parquet(data))


def _register_text_demo(registry: ModelRegistry) -> Any:
    import tempfile
    from pathlib import Path

    from api.demo import notes
    from model_store.text.files import read_directory

    with tempfile.TemporaryDirectory() as tmp:
        directory = notes.build_notes_model(Path(tmp) / "notes")
        files = read_directory(directory, max_members=50, max_bytes=512 * 1024 * 1024)
    return registry.register_text(parse_manifest(notes.manifest()), files)
