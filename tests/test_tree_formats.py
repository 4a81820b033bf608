"""XGBoost and LightGBM artifacts: what registration accepts and what it refuses (422 naming why), and
the skops allowlist extended by exactly the wrappers' types."""

from __future__ import annotations

import functools
import io
import pickle
from typing import Any

import joblib
import numpy as np
import pytest
import tree_models as tm
import xgboost

from model_store.safe_load import TRUSTED_TYPES, dump_skops

PROBLEM = "application/problem+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(client: Any, keys: dict[str, str], spec: dict[str, Any], artifact: bytes, data: Any = None) -> Any:
    data = tm.frame() if data is None else data
    return client.post(
        f"/v1/models/{spec['name']}/versions",
        headers=bearer(keys["models:write"]),
        content_type="multipart/form-data",
        data=tm.form(spec, artifact, data, "model"),
    )


def refused(response: Any, field: str, *words: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    errors = response.get_json()["errors"]
    assert field in errors, errors
    text = " ".join(errors[field]).lower()
    for word in words:
        assert word.lower() in text, text


def wrapper() -> Any:
    data = tm.frame()
    return xgboost.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(
        tm.codes(data), tm.labels(data, "binary")
    )


def test_each_flavour_registers_and_describes_its_format(client, keys):
    for library in tm.LIBRARIES:
        spec, artifact, data, _ = tm.standalone(library, "binary")
        response = post(client, keys, spec, artifact, data)
        assert response.status_code == 201, response.get_json()
        described = client.get(f"/v1/models/{spec['name']}/versions/1", headers=bearer(keys["explain"]))
        assert described.get_json()["format"] == library
        manifest = described.get_json()["manifest"]
        assert manifest["features"][0]["missing"] is True
        assert "missing" not in manifest["features"][2]


@pytest.mark.parametrize(
    ("fmt", "artifact", "words"),
    [
        ("xgboost", pickle.dumps({"booster": b"x"}), ("pickle is never loaded",)),
        ("xgboost", b"binf" + b"\x00" * 200, ("old binary",)),
        ("xgboost", b"tree\nversion=v4\n", ("UBJSON/JSON",)),
        ("xgboost", b'{"learner": 1}', ("cannot read",)),
        ("lightgbm", pickle.dumps(["tree"]), ("pickle is never loaded",)),
        ("lightgbm", b"this is not a model\n", ("not a LightGBM text model",)),
        ("lightgbm", b"tree\nversion=v4\nnum_class=oops\n", ("cannot read",)),
        ("lightgbm", b"tree\nversion=v4\n\xff\xfe", ("UTF-8",)),
    ],
)
def test_unsafe_or_foreign_files_are_refused(client, keys, fmt, artifact, words):
    spec = tm.manifest("odd", "binary", fmt)
    refused(post(client, keys, spec, artifact), "artifact", *words)


@pytest.mark.parametrize("fmt", tm.LIBRARIES)
def test_pickled_and_joblib_wrappers_are_refused(client, keys, tmp_path, fmt):
    spec = tm.manifest("pickled", "binary", fmt)
    model = wrapper()
    refused(post(client, keys, spec, pickle.dumps(model)), "artifact", "pickle is never loaded")
    for compress in (0, 3):
        path = tmp_path / f"model-{compress}.joblib"
        joblib.dump(model, path, compress=compress)
        refused(post(client, keys, spec, path.read_bytes()), "artifact", "pickle is never loaded")
    refused(post(client, keys, spec, dump_skops(model)), "artifact", "zip archive")


def test_oversize_model_file_is_refused(make_app, tmp_path):
    app = make_app(max_archive_bytes=4096)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("writer", ["models:write"])[0]
    spec, artifact, data, _ = tm.standalone("xgboost", "binary")
    assert len(artifact) > 4096
    refused(post(client, {"models:write": token}, spec, artifact, data), "artifact", "larger than 4096 bytes")


@pytest.mark.parametrize("library", tm.LIBRARIES)
def test_booster_and_manifest_must_agree(client, keys, library):
    spec, artifact, data, _ = tm.standalone(library, "binary")
    fewer = {**spec, "features": spec["features"][:2]}
    refused(post(client, keys, fewer, artifact, data), "features", "reads 3 features; 2 declared")
    numeric_colour = {**spec, "features": [dict(f) for f in spec["features"]]}
    numeric_colour["features"][1] = {"name": "colour", "type": "numeric"}
    coded = data.assign(colour=tm.codes(data)[:, 1])
    refused(post(client, keys, numeric_colour, artifact, coded), "features.1.type", "as a category")
    renamed = {**spec, "features": [dict(f) for f in spec["features"]]}
    renamed["features"][2]["name"] = "mass"
    refused(
        post(client, keys, renamed, artifact, data.rename(columns={"weight": "mass"})), "features", "weight"
    )
    regression = tm.manifest(spec["name"], "regression", library)
    refused(post(client, keys, regression, artifact, data), "task", "binary")


def test_missing_is_for_numeric_features_only(client, keys):
    spec, artifact, data, _ = tm.standalone("xgboost", "binary")
    spec["features"][1]["missing"] = True
    response = post(client, keys, spec, artifact, data)
    assert response.status_code == 422
    assert "manifest.features.1.missing" in response.get_json()["errors"]


def test_reference_nan_needs_missing_true(client, keys):
    spec, artifact, data, _ = tm.standalone("xgboost", "binary")
    del spec["features"][0]["missing"]
    refused(post(client, keys, spec, artifact, data), "reference", "size")


def test_skops_allowlist_takes_the_wrappers_and_nothing_more():
    assert {
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.core.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.basic.Booster",
        "collections.OrderedDict",
    } <= TRUSTED_TYPES
    assert len(TRUSTED_TYPES) == 9


def test_a_wrapper_carrying_another_type_is_still_refused(client, keys):
    """A pickle-bearing object hidden in an allowed wrapper is named and refused before anything is built."""
    spec, _, data, fitted = tm.pipeline("xgboost", "binary")
    fitted[-1].callback_hook = functools.partial(print, "hello")
    response = post(client, keys, spec, dump_skops(fitted), data)
    refused(response, "artifact", "functools.partial")


@pytest.mark.parametrize("library", tm.LIBRARIES)
def test_standalone_codes_use_the_fast_encoder(app, client, keys, library):
    """The manifest's codes (OrdinalEncoder) compile to the fast encoder, missing numbers included."""
    spec, artifact, data, _ = tm.standalone(library, "binary")
    assert post(client, keys, spec, artifact, data).status_code == 201
    registry = app.extensions["candor"].store.registry
    model = registry.load(registry.resolve(spec["name"], "1"))
    assert model.has_fast_encoder
    records = model.reference.to_dict("records")
    fast, reference = model.encode(records), model._transform(model.frame(records))
    assert np.isnan(fast).any()
    np.testing.assert_array_equal(fast, reference)
    np.testing.assert_array_equal(fast, tm.codes(data))


def test_missing_true_needs_a_model_that_scores_nan(client, keys):
    """A Pipeline whose estimator refuses NaN cannot declare a feature ``missing: true``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    data = tm.frame().dropna()
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(), ["colour"]), ("numeric", "passthrough", ["size", "weight"])]
    )
    fitted = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(
        data[tm.FEATURES], data["binary"]
    )
    spec = tm.manifest("logistic", "binary", "skops")
    del spec["format"]
    refused(post(client, keys, spec, dump_skops(fitted), data), "features.0.missing", "cannot score")
    del spec["features"][0]["missing"]
    assert post(client, keys, spec, dump_skops(fitted), data).status_code == 201


KEEP: dict[str, Any] = {}


def _tampered(model: Any, key: str, node: dict[str, Any] | None) -> bytes:
    """``model`` in skops with its Booster's ``key`` attribute replaced by ``node`` (None: removed; ``KEEP``:
    left as it is, the archive only re-written)."""
    import json
    import zipfile

    from model_store.safe_load import dump_skops

    source = zipfile.ZipFile(io.BytesIO(dump_skops(model)))
    schema = json.loads(source.read("schema.json"))

    def edit(n: Any) -> None:
        if isinstance(n, dict):
            if n.get("__class__") == "Booster":
                attributes = n["content"]["content"]
                if node is None:
                    del attributes[key]
                elif node is not KEEP:
                    attributes[key] = node
            for v in list(n.values()):
                edit(v)
        elif isinstance(n, list):
            for v in n:
                edit(v)

    edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for member in source.namelist():
            body = json.dumps(schema) if member == "schema.json" else source.read(member)
            target.writestr(member, body)
    return out.getvalue()


NULL_JSON = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": "null"}
NONE_NODE = {"__class__": "NoneType", "__module__": "builtins", "__loader__": "JsonNode", "content": "null"}


@pytest.mark.parametrize(
    ("library", "key", "node"),
    [
        ("lightgbm", "_handle", NULL_JSON),
        ("lightgbm", "_handle", NONE_NODE),
        ("lightgbm", "_handle", None),
        ("xgboost", "handle", NONE_NODE),
        ("xgboost", "handle", None),
    ],
)
def test_a_booster_without_its_serialised_model_is_refused(library: str, key: str, node: Any) -> None:
    """A Booster whose state would leave it a null native handle (its first prediction would crash the
    process) is refused before skops builds it."""
    import lightgbm

    from model_store.errors import UnsafeArtifact
    from model_store.safe_load import load_skops

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), (rng.normal(size=60) > 0).astype(int)
    if library == "lightgbm":
        model: Any = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
    else:
        model = xgboost.XGBClassifier(n_estimators=3, n_jobs=1).fit(x, y)
    with pytest.raises(UnsafeArtifact) as refused:
        load_skops(_tampered(model, key, node))
    assert "serialised model" in str(refused.value.errors)
    loaded = load_skops(_tampered(model, key, KEEP))  # the control: the same archive, re-written
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x))


def test_booster_threads_setting_reaches_the_boosters(make_app):
    """``CANDOR_BOOSTER_THREADS``: the server sets it before it loads a version; a booster explaining a batch
    large enough to share runs that many threads, a one-row call one (XGBoost's own config of the booster copy
    each call used says so); the loaded booster itself is never reconfigured."""
    import json

    from model_store.tabular.formats.boosters import MIN_ROWS_PER_THREAD, booster_threads, set_booster_threads

    app = make_app(booster_threads=2)
    client = app.test_client()
    keys = {
        scope: app.extensions["candor"].store.keys.create(scope, [scope])[0]
        for scope in ("models:write", "explain")
    }
    spec, artifact, data, _ = tm.standalone("xgboost", "binary")
    rows = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in data[tm.FEATURES].to_dict("records")
    ]
    try:
        assert post(client, keys, spec, artifact, data).status_code == 201
        registry = app.extensions["candor"].store.registry
        runtime = registry.load(registry.resolve(spec["name"], "1")).parts.estimator.runtime
        for count, threads in ((1, 1), (2 * MIN_ROWS_PER_THREAD, 2)):
            batch = (rows * (count // len(rows) + 1))[:count]
            response = client.post(
                f"/v1/models/{spec['name']}/versions/1/explain/shap",
                json={"instances": batch, "layout": "columnar"},
                headers=bearer(keys["explain"]),
            )
            assert response.status_code == 200, response.get_json()
            assert booster_threads() == 2
            assert threads in runtime._by_threads, "the call made the booster copy for its thread count"
            config = json.loads(runtime._by_threads[threads].save_config())
            assert config["learner"]["generic_param"]["nthread"] == str(threads)
        assert all(copy is not runtime.booster for copy in runtime._by_threads.values())
    finally:
        set_booster_threads(1)


@pytest.mark.parametrize("library", tm.LIBRARIES)
def test_booster_threads_follow_the_setting_at_each_call(client, keys, app, library):
    """Loaded first, set after (a warm-up, a cached version): the next call on a batch large enough to share
    runs on the setting, for a standalone booster and for a library's scikit-learn wrapper in a Pipeline (an
    XGBoost wrapper's own predictions through its booster's copies)."""
    import json

    from model_store.tabular.formats.boosters import MIN_ROWS_PER_THREAD, native_runtime, set_booster_threads

    registry = app.extensions["candor"].store.registry
    try:
        for build in (tm.standalone, tm.pipeline):
            spec, artifact, data, _ = build(library, "binary", f"{library[:3]}-{build.__name__}")
            assert post(client, keys, spec, artifact, data).status_code == 201
            model = registry.load(registry.resolve(spec["name"], "1"))
            encoded = model.encode(model.reference.head(5).to_dict("records"))
            encoded = np.tile(encoded, (2 * MIN_ROWS_PER_THREAD // len(encoded) + 1, 1))
            for threads in (2, 1):
                set_booster_threads(threads)
                model.predict_encoded(encoded)
                runtime = native_runtime(model.parts.estimator)
                runtime.contributions(encoded)
                if build is tm.pipeline and library == "lightgbm":
                    assert model.parts.estimator.n_jobs == threads
                if build is tm.pipeline and library == "xgboost":  # the wrapper's own values, bit for bit
                    assert model._booster_predictions is not None
                    own = model.parts.estimator.predict_proba(encoded)
                    assert np.array_equal(model.predict_encoded(encoded), np.asarray(own, dtype=float))
                if library == "xgboost":
                    config = json.loads(runtime.booster_for(len(encoded)).save_config())
                    assert config["learner"]["generic_param"]["nthread"] == str(threads)
    finally:
        set_booster_threads(1)
