"""The model store on a real database (SQLite, and PostgreSQL when configured): registration, versions,
aliases, manifest completion, manifest/artifact mismatches, integrity checks, API keys and migrations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from tiny_models import (
    COLOURS,
    FEATURES,
    category_never_seen,
    classes_reversed,
    feature_not_read,
    feature_undeclared,
    reference_missing_column,
    tiny_frame,
    tiny_manifest,
    tiny_pipeline,
)

from model_store.errors import (
    IntegrityError,
    InvalidInput,
    InvalidManifest,
    ModelNotFound,
    VersionNotFound,
)
from model_store.manifest import parse_manifest
from model_store.migrate import upgrade_to_head
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store

_FRAME = tiny_frame()
_PIPELINE = tiny_pipeline(_FRAME)
_ARTIFACT = dump_skops(_PIPELINE)
_REFERENCE = to_parquet(_FRAME)


def register(store: Store, name: str = "tiny", manifest: dict[str, Any] | None = None):
    data = manifest if manifest is not None else tiny_manifest(name, weight_min=0.0)
    return store.registry.register_tabular(parse_manifest(data), _ARTIFACT, _REFERENCE)


def artifact_entries(store: Store) -> set[str]:
    """Every file stored under the data dir's artifact store and this host's artifact cache."""
    data_dir = store.registry.artifacts.root.parent
    return {
        p.relative_to(data_dir).as_posix()
        for folder in ("artifacts", "artifact-cache")
        for p in (data_dir / folder).rglob("*")
        if not p.is_dir()
    }


def stored_path(store: Store, info: Any, name: str) -> Path:
    """The blob holding a version's file in the default store (``<data_dir>/artifacts/sha256/..``)."""
    return Path(store.registry.artifacts.backend.path(info.artifact_files[name]))


def version_numbers(store: Store, name: str) -> list[int]:
    return [v.version for v in store.registry.get_model(name)["versions"]]


# -- versions and aliases ----------------------------------------------------------------------------------
def test_versions_increment_and_aliases_resolve(store: Store) -> None:
    infos = [register(store) for _ in range(3)]
    assert [i.version for i in infos] == [1, 2, 3]
    assert version_numbers(store, "tiny") == [1, 2, 3]
    assert len({tuple(sorted(i.artifact_files.items())) for i in infos}) == 1, "the same files"
    assert len(artifact_entries(store)) == 2, "are stored once, by sha256"

    assert store.registry.resolve("tiny", "latest").version == 3
    assert store.registry.resolve("tiny", "2").version == 2
    assert store.registry.resolve("tiny", 1).version == 1
    with pytest.raises(VersionNotFound):
        store.registry.resolve("tiny", "production")

    promoted = store.registry.promote("tiny", "2")
    assert promoted.version == 2
    assert promoted.stages == ("production",)
    production = store.registry.resolve("tiny", "production")
    assert production.version == 2
    assert production.stages == ("production",)
    assert store.registry.resolve("tiny", "latest").stages == ()

    summary = {m["name"]: m for m in store.registry.list_models()}["tiny"]
    assert summary["latest_version"] == 3
    assert summary["production_version"] == 2

    # a fourth version moves latest, not production
    assert register(store).version == 4
    assert store.registry.resolve("tiny", "latest").version == 4
    assert store.registry.resolve("tiny", "production").version == 2


def test_versions_are_numbered_per_model(store: Store) -> None:
    assert register(store, "alpha").version == 1
    assert register(store, "beta").version == 1
    assert register(store, "alpha").version == 2
    assert [m["name"] for m in store.registry.list_models()] == ["alpha", "beta"]
    assert version_numbers(store, "beta") == [1]


def test_unknown_versions_are_not_found(store: Store) -> None:
    register(store)
    for version in ("0", "4", "-1", "abc", "1.0", "latest ", "Latest", "9999999999", "", "1 "):
        with pytest.raises(VersionNotFound):
            store.registry.resolve("tiny", version)


def test_non_ascii_digit_version_is_not_found(store: Store) -> None:
    """'\u00b2' (superscript two) passes str.isdigit() but int() refuses it: must be 404, not ValueError."""
    register(store)
    with pytest.raises(VersionNotFound):
        store.registry.resolve("tiny", "\u00b2")


def test_unknown_models_are_not_found(store: Store) -> None:
    register(store)
    for name in ("nope", "../tiny", "tiny;drop", "", "x" * 65, "TINY"):
        with pytest.raises(ModelNotFound):
            store.registry.resolve(name, "latest")
        with pytest.raises(ModelNotFound):
            store.registry.promote(name, "1")


def test_promote_unknown_version_keeps_production(store: Store) -> None:
    register(store)
    store.registry.promote("tiny", 1)
    with pytest.raises(VersionNotFound):
        store.registry.promote("tiny", "2")
    assert store.registry.resolve("tiny", "production").version == 1


# -- manifest completion -----------------------------------------------------------------------------------
def test_registration_fills_omitted_bounds_and_categories(store: Store) -> None:
    info = register(store)
    manifest = info.manifest
    size, colour, weight = (manifest.feature(n) for n in FEATURES)

    assert size.min == float(_FRAME["size"].min())
    assert size.max == float(_FRAME["size"].max())
    assert weight.min == 0.0, "a declared bound is kept"
    assert weight.max == float(_FRAME["weight"].max())
    encoder = _PIPELINE.named_steps["prep"].named_transformers_["categorical"]
    assert colour.categories == [str(c) for c in encoder.categories_[0]] == COLOURS

    # the completed manifest is what is stored and read back
    stored = store.registry.resolve("tiny", "1").manifest_data
    assert stored["features"][0]["min"] == size.min
    assert stored["features"][1]["categories"] == COLOURS
    assert stored["features"][2] == {
        "name": "weight",
        "type": "numeric",
        "min": 0.0,
        "max": weight.max,
        "mutable": True,
        "monotone": "none",
        "protected": False,
    }


def test_registered_model_loads_and_predicts_like_the_original(store: Store) -> None:
    info = register(store)
    model = store.registry.load(info)
    rows = _FRAME[FEATURES].head(5).to_dict("records")
    probabilities = model.predict_encoded(model.encode(model.validate(rows)))
    expected = _PIPELINE.predict_proba(_FRAME[FEATURES].head(5))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-12)
    assert store.registry.load(info) is model, "a second load is served from the cache"


# -- manifest / artifact mismatches ------------------------------------------------------------------------
def _classes_renamed(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["classes"] = ["0", "1"]
    m["favourable_class"] = "1"
    return m, f


def _reference_outside_categories(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["features"][1]["categories"] = ["blue", "green"]
    return m, f


def _reference_non_numeric(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    f = f.copy()
    f["size"] = f["size"].astype(str)
    f.loc[0, "size"] = "big"
    return m, f


def _reference_empty(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    return m, f.head(0)


def _regression_task(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["task"] = "regression"
    del m["classes"], m["favourable_class"]
    return m, f


MISMATCHES = [
    pytest.param(classes_reversed, "classes", id="classes-order"),
    pytest.param(_classes_renamed, "classes", id="classes-labels"),
    pytest.param(feature_undeclared, "features", id="undeclared-feature"),
    pytest.param(feature_not_read, "features", id="feature-not-read"),
    pytest.param(category_never_seen, "features.1.categories", id="category-never-seen"),
    pytest.param(reference_missing_column, "reference", id="reference-missing-column"),
    pytest.param(_reference_outside_categories, "reference", id="reference-outside-categories"),
    pytest.param(_reference_non_numeric, "reference", id="reference-non-numeric"),
    pytest.param(_reference_empty, "reference", id="reference-empty"),
    pytest.param(_regression_task, "task", id="classifier-as-regressor"),
]


@pytest.mark.parametrize(("mutate", "field"), MISMATCHES)
def test_mismatch_is_refused_and_leaves_nothing(store: Store, mutate, field: str) -> None:
    register(store)  # version 1 is good
    before_dirs = artifact_entries(store)
    manifest, frame = mutate(copy.deepcopy(tiny_manifest(weight_min=0.0)), _FRAME.copy())

    with pytest.raises(InvalidManifest) as caught:
        store.registry.register_tabular(parse_manifest(manifest), _ARTIFACT, to_parquet(frame))
    assert field in caught.value.errors, caught.value.errors
    assert caught.value.status == 422
    assert all(isinstance(m, str) and m for m in caught.value.errors[field])

    assert version_numbers(store, "tiny") == [1]
    assert artifact_entries(store) == before_dirs
    assert register(store).version == 2, "the failed attempt did not use up a version number"


def test_mismatch_on_a_new_model_creates_no_model_row(store: Store) -> None:
    manifest, frame = classes_reversed(tiny_manifest("newcomer", weight_min=0.0), _FRAME)
    with pytest.raises(InvalidManifest):
        store.registry.register_tabular(parse_manifest(manifest), _ARTIFACT, to_parquet(frame))
    with pytest.raises(ModelNotFound):
        store.registry.get_model("newcomer")
    assert store.registry.list_models() == []
    assert artifact_entries(store) == set()


def test_unreadable_reference_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.registry.register_tabular(
            parse_manifest(tiny_manifest(weight_min=0.0)), _ARTIFACT, b"PAR1 not parquet"
        )
    assert "reference" in caught.value.errors
    assert store.registry.list_models() == []


def test_database_failure_after_files_are_written_removes_them(store: Store) -> None:
    """A failure while inserting the version row (here: the table is briefly missing) removes the files."""
    register(store)
    before_dirs = artifact_entries(store)
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE model_versions RENAME TO model_versions_hidden"))
    try:
        for name in ("tiny", "fresh"):
            with pytest.raises(sa.exc.DBAPIError):
                register(store, name)
            assert artifact_entries(store) == before_dirs
    finally:
        with store.engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE model_versions_hidden RENAME TO model_versions"))
    assert version_numbers(store, "tiny") == [1]
    with pytest.raises(ModelNotFound):
        store.registry.get_model("fresh")
    assert register(store).version == 2


# -- integrity ---------------------------------------------------------------------------------------------
def _fresh_store(tmp_path: Path, database_url: str) -> Store:
    """A second Store over the same data: its model cache is cold, so loads read the files."""
    return Store(tmp_path / "data", database_url)


@pytest.mark.parametrize("filename", ["model.skops", "reference.parquet"])
def test_corrupted_file_fails_the_integrity_check(
    store: Store, tmp_path: Path, database_url: str, filename: str
) -> None:
    info = register(store)
    path = stored_path(store, info, filename)
    assert path.is_file()

    cold = _fresh_store(tmp_path, database_url)
    try:
        cold.registry.load(cold.registry.resolve("tiny", "1"))  # intact: loads
    finally:
        cold.close()

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    cold = _fresh_store(tmp_path, database_url)
    try:
        with pytest.raises(IntegrityError) as caught:
            cold.registry.load(cold.registry.resolve("tiny", "1"))
        assert caught.value.status == 500
        assert str(path) not in caught.value.detail, "no paths in messages"
    finally:
        cold.close()


def test_missing_file_fails_the_integrity_check(store: Store, tmp_path: Path, database_url: str) -> None:
    info = register(store)
    stored_path(store, info, "model.skops").unlink()
    cold = _fresh_store(tmp_path, database_url)
    try:
        with pytest.raises(IntegrityError):
            cold.registry.load(cold.registry.resolve("tiny", "latest"))
    finally:
        cold.close()


def test_sha256_is_recorded_for_the_uploaded_bytes(store: Store) -> None:
    import hashlib

    info = register(store)
    assert info.artifact_sha256 == hashlib.sha256(_ARTIFACT).hexdigest()
    stored = stored_path(store, info, "reference.parquet").read_bytes()
    assert info.reference_sha256 == hashlib.sha256(stored).hexdigest()


# -- API keys ----------------------------------------------------------------------------------------------
def test_api_keys_create_authenticate_revoke(store: Store) -> None:
    token, principal = store.keys.create("ci", ["explain", "models:write"])
    assert token.startswith(f"cnd_{principal.key_id}_")
    assert principal.scopes == {"explain", "models:write"}

    found = store.keys.authenticate(token)
    assert found is not None
    assert found.key_id == principal.key_id
    assert found.name == "ci"
    assert found.scopes == {"explain", "models:write"}
    assert found.has("explain")
    assert found.has("models:write")
    assert not found.has("admin")
    assert not found.has("audit:read")

    # the secret itself is not stored
    with store.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT secret_sha256 FROM api_keys")).scalar_one()
    assert token.split("_", 2)[2] not in stored

    prefix, key_id, secret = token.split("_", 2)
    for bad in (
        "",
        "garbage",
        f"{prefix}_{key_id}",
        f"{prefix}_{key_id}_{secret}x",
        f"{prefix}_{key_id}_{secret[:-1]}",
        f"xyz_{key_id}_{secret}",
        f"{prefix}_{'0' * 12}_{secret}",
        f"{prefix}_{key_id}!_{secret}",
    ):
        assert store.keys.authenticate(bad) is None, bad

    assert store.keys.revoke(principal.key_id) is True
    assert store.keys.authenticate(token) is None
    assert store.keys.revoke("doesnotexist") is False
    listed = store.keys.list()
    assert [(k["key_id"], k["revoked"]) for k in listed] == [(principal.key_id, True)]


def test_admin_scope_implies_every_scope(store: Store) -> None:
    token, _ = store.keys.create("root", ["admin"])
    principal = store.keys.authenticate(token)
    assert principal is not None
    assert all(principal.has(s) for s in ("explain", "models:write", "audit:read", "admin"))


def test_revoking_one_key_keeps_the_others(store: Store) -> None:
    first, p1 = store.keys.create("one", ["explain"])
    second, _ = store.keys.create("two", ["explain"])
    store.keys.revoke(p1.key_id)
    assert store.keys.authenticate(first) is None
    assert store.keys.authenticate(second) is not None


@pytest.mark.parametrize("scopes", [[], ["root"], ["explain", "everything"]])
def test_api_keys_refuse_unknown_scopes(store: Store, scopes: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.keys.create("bad", scopes)
    assert "scopes" in caught.value.errors
    assert store.keys.list() == []


# -- migrations --------------------------------------------------------------------------------------------
def head_revision() -> str:
    """The newest migration, read from the migration scripts themselves."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "model_store:migrations")
    return str(ScriptDirectory.from_config(config).get_current_head())


def test_migrations_are_idempotent(store: Store, tmp_path: Path, database_url: str) -> None:
    register(store)
    token, _ = store.keys.create("kept", ["explain"])

    again = Store(tmp_path / "data", database_url)
    try:
        upgrade_to_head(again.engine)
        with again.engine.connect() as connection:
            revisions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert revisions == [(head_revision(),)]
        tables = set(sa.inspect(again.engine).get_table_names())
        assert {"models", "model_versions", "version_cache", "api_keys", "explanation_records"} <= tables
        assert [v.version for v in again.registry.get_model("tiny")["versions"]] == [1]
        assert again.keys.authenticate(token) is not None
        assert (
            again.registry.register_tabular(
                parse_manifest(tiny_manifest(weight_min=0.0)), _ARTIFACT, _REFERENCE
            ).version
            == 2
        )
    finally:
        again.close()
    assert store.ping()
