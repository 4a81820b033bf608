"""Attention maps and Captum token attributions of a text classifier, checked against independent oracles:
the model's own ``output_attentions`` (transformers loaded directly), an attention rollout written from
Abnar & Zuidema, and Captum's LayerIntegratedGradients called directly; plus the limits (size cap, token
limit and truncation, invalid inputs) and who may ask.

One app (SQLite) serves the tiny BERT for the whole module: these requests only read."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from text_oracles import (
    TEXTS,
    WHEEZING,
    abnar_zuidema_rollout,
    assert_problem,
    attentions,
    baseline,
    bearer,
    captum_integrated_gradients,
    decode_weights,
    encode,
    float16_tolerance,
    probability_at,
    reference,
    rows_sum_to_one,
    softmax,
    tar_of_directory,
    text_app,
    tiny_bert_dir,
    token_strings,
    tokens_for,
    upload,
    walk_matrices,
)
from tiny_models import tiny_frame, tiny_pipeline
from tiny_models import tiny_manifest as tabular_manifest
from tiny_text import LABELS, MAX_TOKENS

from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

LONG = " ".join(["chest pain"] * 40)  # more than MAX_TOKENS tokens
ROUTES = ["predict", "explain/attention", "explain/attributions"]


class Served:
    """The module's app, its keys, and the source directory of the model it serves."""

    def __init__(self, app: Flask, tokens: dict[str, str], source: Path) -> None:
        self.app, self.tokens, self.source = app, tokens, source
        self.client = app.test_client()

    def post(self, route: str, body: dict[str, Any], name: str = "triage", token: str | None = None) -> Any:
        headers = bearer(token or self.tokens["explain"])
        return self.client.post(f"/v1/models/{name}/versions/1/{route}", json=body, headers=headers)

    def ok(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(route, body)
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        return response.get_json()  # type: ignore[no-any-return]


def register_text_model(app: Flask, source: Path) -> dict[str, str]:
    tokens = tokens_for(app)
    response = upload(app, tokens["models:write"], tar_of_directory(source))
    assert response.status_code == 201, response.get_json()
    return tokens


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[Served]:
    """The tiny BERT (``triage``) uploaded through REST, and a tiny tabular model (``tiny``)."""
    app = text_app(tmp_path_factory.mktemp("text-explain") / "data")
    tokens = register_text_model(app, tiny_dir)
    frame = tiny_frame()
    app.extensions["candor"].store.registry.register_tabular(
        parse_manifest(tabular_manifest("tiny")), dump_skops(tiny_pipeline(frame)), to_parquet(frame)
    )
    yield Served(app, tokens, tiny_dir)
    app.extensions["candor"].store.close()


@pytest.fixture
def served_with(tmp_path: Path, tiny_dir: Path) -> Iterator[Callable[..., Served]]:
    """A private app with settings overrides, serving the tiny BERT."""
    made: list[Flask] = []

    def build(**overrides: Any) -> Served:
        app = text_app(tmp_path / f"data-{len(made)}", **overrides)
        made.append(app)
        return Served(app, register_text_model(app, tiny_dir), tiny_dir)

    yield build
    for app in made:
        app.extensions["candor"].store.close()


def instances(*texts: str) -> list[dict[str, str]]:
    return [{"text": t} for t in texts]


def assert_tokens(source: Path, text: str, result: dict[str, Any], max_length: int | None = None) -> int:
    """Tokens are the tokenizer's own, offsets slice the original text; returns the token count."""
    expected = token_strings(source, text, max_length)
    assert [t["token"] for t in result["tokens"]] == expected
    assert [t["index"] for t in result["tokens"]] == list(range(len(expected)))
    for token in result["tokens"]:
        assert token["special"] == (token["token"] in ("[CLS]", "[SEP]"))
        if not token["special"] and token["token"] != "[UNK]":
            piece = text[token["start"] : token["end"]].lower()
            assert piece == token["token"].removeprefix("##")
    return len(expected)


def assert_prediction(
    source: Path, text: str, prediction: dict[str, Any], max_length: int | None = None
) -> None:
    expected = softmax(source, text, max_length)
    got = [prediction["probabilities"][label] for label in LABELS]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert prediction["label"] == LABELS[int(expected.argmax())]


# -- attention -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "selection",
    [{}, {"layers": [1], "heads": [0]}, {"layers": [1, 0], "heads": [1]}, {"heads": [1, 0]}],
    ids=["all", "one-head", "layers-reordered", "heads-reordered"],
)
def test_attention_equals_the_models_own_output_attentions(served: Served, selection: dict[str, Any]) -> None:
    """Two texts of different lengths in one request: each gets its own T x T matrices (no padding)."""
    texts = [TEXTS[0], WHEEZING]
    body = served.ok("explain/attention", {"instances": instances(*texts), **selection})
    layers, heads = selection.get("layers", [0, 1]), selection.get("heads", [0, 1])
    assert body["kind"] == "attention"
    assert body["method"]["params"]["layers"] == layers
    assert body["method"]["params"]["heads"] == heads
    assert body["quality"]["max_row_sum_error"] <= 1e-5
    lengths = []
    for text, result in zip(texts, body["results"], strict=True):
        tokens = assert_tokens(served.source, text, result)
        lengths.append(tokens)
        assert_prediction(served.source, text, result["prediction"])
        assert (result["truncated"], result["original_tokens"]) == (False, tokens)
        expected = attentions(served.source, text)
        assert [(e["layer"], e["head"]) for e in result["attention"]] == list(
            itertools.product(layers, heads)
        )
        for entry in result["attention"]:
            weights = np.asarray(entry["weights"])
            assert weights.shape == (tokens, tokens)
            np.testing.assert_allclose(weights, expected[entry["layer"], entry["head"]], rtol=0, atol=1e-6)
            assert rows_sum_to_one(weights)
    assert lengths[0] != lengths[1]


@pytest.mark.parametrize(
    "selection", [{}, {"layers": [0, 1], "heads": [1]}, {"layers": [1]}], ids=["all", "one-head", "one-layer"]
)
@pytest.mark.parametrize("aggregate", ["none", "mean", "max"])
def test_aggregates_and_rollout_match_the_definitions(
    served: Served, selection: dict[str, Any], aggregate: str
) -> None:
    body = served.ok(
        "explain/attention",
        {"instances": instances(WHEEZING), "aggregate": aggregate, "rollout": True, **selection},
    )
    layers, heads = selection.get("layers", [0, 1]), selection.get("heads", [0, 1])
    result = body["results"][0]
    selected = attentions(served.source, WHEEZING)[layers][:, heads]
    if aggregate != "none":
        combined = selected.mean(axis=1) if aggregate == "mean" else selected.max(axis=1)
        combined = combined / combined.sum(axis=-1, keepdims=True)  # max over heads is renormalised
        assert [(e["layer"], e["head"]) for e in result["attention"]] == [
            (layer, aggregate) for layer in layers
        ]
        for entry, expected in zip(result["attention"], combined, strict=True):
            np.testing.assert_allclose(entry["weights"], expected, rtol=0, atol=1e-6)
    rolled = result["rollout"]
    assert (rolled["layers"], rolled["heads"]) == (layers, heads)
    np.testing.assert_allclose(rolled["weights"], abnar_zuidema_rollout(selected), rtol=0, atol=1e-6)
    matrices = list(walk_matrices(result))
    assert len(matrices) == len(layers) * (len(heads) if aggregate == "none" else 1) + 1
    assert all(rows_sum_to_one(m) for m in matrices)
    assert body["quality"]["max_row_sum_error"] <= 1e-5


def test_rollout_follows_the_networks_layer_order(served: Served) -> None:
    """Rollout multiplies from the input layer up, whatever order the request lists the layers in."""
    body = served.ok(
        "explain/attention", {"instances": instances(WHEEZING), "layers": [1, 0], "rollout": True}
    )
    expected = abnar_zuidema_rollout(attentions(served.source, WHEEZING)[[0, 1]])
    np.testing.assert_allclose(body["results"][0]["rollout"]["weights"], expected, rtol=0, atol=1e-6)


def test_bertviz_format(served: Served) -> None:
    body = served.ok(
        "explain/attention", {"instances": instances(WHEEZING), "format": "bertviz", "layers": [1, 0]}
    )
    result = body["results"][0]
    tokens = token_strings(served.source, WHEEZING)
    view = result["bertviz"]
    assert len(view["attention"]) == 1
    attn = np.asarray(view["attention"][0]["attn"])
    assert attn.shape == (2, 2, len(tokens), len(tokens))  # layers x heads x T x T
    np.testing.assert_allclose(attn, attentions(served.source, WHEEZING)[[1, 0]], rtol=0, atol=1e-6)
    assert view["attention"][0]["left_text"] == tokens
    assert view["attention"][0]["right_text"] == tokens
    assert view["include_layers"] == [1, 0]
    assert all(rows_sum_to_one(m) for m in walk_matrices(result))
    refused = served.post(
        "explain/attention", {"instances": instances(WHEEZING), "format": "bertviz", "aggregate": "mean"}
    )
    assert_problem(refused, 422, "format")


BINARY = [{"encoding": "base64"}, {"encoding": "base64", "dtype": "float16"}]


def assert_close_as_sent(got: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    """float32: the model's own values (1e-6); float16: within float16's rounding of them (<= 2^-11 x)."""
    if dtype == "float32":
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    else:
        assert np.all(np.abs(got - expected) <= float16_tolerance(expected)), np.abs(got - expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "selection",
    [{}, {"layers": [1], "heads": [0]}, {"layers": [1, 0], "heads": [1, 0]}],
    ids=["all", "one-head", "reordered"],
)
@pytest.mark.parametrize("encoding", BINARY, ids=["float32", "float16"])
def test_binary_weights_decode_to_the_models_own_output_attentions(
    served: Served, selection: dict[str, Any], encoding: dict[str, str]
) -> None:
    """base64 per head: each decodes (base64, frombuffer) to a T x T matrix of that text, no padding."""
    texts = [TEXTS[0], WHEEZING]
    body = served.ok("explain/attention", {"instances": instances(*texts), **selection, **encoding})
    dtype = encoding.get("dtype", "float32")
    layers, heads = selection.get("layers", [0, 1]), selection.get("heads", [0, 1])
    assert (body["method"]["params"]["encoding"], body["method"]["params"]["dtype"]) == ("base64", dtype)
    tolerance = 1e-5 if dtype == "float32" else 1e-3
    lengths = []
    for text, result in zip(texts, body["results"], strict=True):
        tokens = assert_tokens(served.source, text, result)
        lengths.append(tokens)
        expected = attentions(served.source, text)
        assert [(e["layer"], e["head"]) for e in result["attention"]] == list(
            itertools.product(layers, heads)
        )
        for entry in result["attention"]:
            encoded = entry["weights"]
            assert (encoded["dtype"], encoded["shape"], encoded["byte_order"]) == (
                dtype,
                [tokens, tokens],
                "little",
            )
            weights = decode_weights(encoded)
            assert_close_as_sent(weights, expected[entry["layer"], entry["head"]], dtype)
            assert rows_sum_to_one(weights, tolerance)
    assert lengths[0] != lengths[1]
    assert 0 < body["quality"]["max_row_sum_error"] <= tolerance


@pytest.mark.parametrize("aggregate", ["none", "mean", "max"])
@pytest.mark.parametrize("encoding", BINARY, ids=["float32", "float16"])
def test_every_weights_array_is_encoded_aggregates_and_rollout_too(
    served: Served, aggregate: str, encoding: dict[str, str]
) -> None:
    body = served.ok(
        "explain/attention",
        {"instances": instances(WHEEZING), "aggregate": aggregate, "rollout": True, **encoding},
    )
    dtype = encoding.get("dtype", "float32")
    result = body["results"][0]
    selected = attentions(served.source, WHEEZING)
    tokens = selected.shape[-1]
    if aggregate == "none":
        expected = [selected[e["layer"], e["head"]] for e in result["attention"]]
    else:
        combined = selected.mean(axis=1) if aggregate == "mean" else selected.max(axis=1)
        expected = list(combined / combined.sum(axis=-1, keepdims=True))
    expected.append(abnar_zuidema_rollout(selected))
    encoded = [e["weights"] for e in result["attention"]] + [result["rollout"]["weights"]]
    assert len(encoded) == len(expected)
    for value, reference_matrix in zip(encoded, expected, strict=True):
        assert isinstance(value, dict) and value["dtype"] == dtype and value["shape"] == [tokens, tokens]
        assert_close_as_sent(decode_weights(value), reference_matrix, dtype)
    # the quality figure is measured on the values as sent, not on the float32 they came from
    errors = [float(np.abs(m.sum(axis=-1) - 1).max()) for m in walk_matrices(result)]
    assert body["quality"]["max_row_sum_error"] == pytest.approx(max(errors), rel=1e-6, abs=1e-12)
    assert max(errors) <= (1e-5 if dtype == "float32" else 1e-3)


def test_base64_float32_carries_exactly_the_json_numbers(served: Served) -> None:
    """JSON numbers are float32's shortest form, so both encodings carry the same float32 values."""
    request = {"instances": instances(WHEEZING), "aggregate": "mean", "rollout": True}
    as_json = served.ok("explain/attention", request)["results"][0]
    as_base64 = served.ok("explain/attention", {**request, "encoding": "base64"})["results"][0]
    assert as_json["tokens"] == as_base64["tokens"]
    pairs = list(zip(walk_matrices(as_json), walk_matrices(as_base64), strict=True))
    assert len(pairs) == 3
    for from_json, from_base64 in pairs:
        np.testing.assert_array_equal(from_json.astype(np.float32), from_base64)


def test_attention_size_cap_is_checked_before_computing(
    served_with: Callable[..., Served], tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = len(token_strings(tiny_dir, WHEEZING))
    cap = 4 * tokens**2 - 1  # one weight fewer than 2 layers x 2 heads x T^2
    server = served_with(max_attention_values=cap)
    registry = server.app.extensions["candor"].store.registry
    model = registry.load(registry.resolve("triage", "1"))

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model ran before the size check")

    monkeypatch.setattr(model, "attentions", must_not_run)
    refused = server.post("explain/attention", {"instances": instances(WHEEZING)})
    assert_problem(refused, 422, "instances.0.text")
    refused = server.post("explain/attention", {"instances": instances("chest pain", WHEEZING)})
    assert_problem(refused, 422, "instances.1.text")
    for binary in BINARY:  # a compact encoding does not lift the cap: it counts weights, not bytes
        refused = server.post("explain/attention", {"instances": instances(WHEEZING), **binary})
        assert_problem(refused, 422, "instances.0.text")
    monkeypatch.undo()
    # fewer heads, or aggregated heads plus the rollout, fit under the same cap
    for fits in ({"heads": [0]}, {"aggregate": "mean", "rollout": True}, {"layers": [1], "rollout": True}):
        body = server.ok("explain/attention", {"instances": instances(WHEEZING), **fits})
        assert all(rows_sum_to_one(m) for m in walk_matrices(body["results"][0]))
    exact = served_with(max_attention_values=cap + 1)
    assert exact.post("explain/attention", {"instances": instances(WHEEZING)}).status_code == 200


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"layers": [2]}, "layers"),
        ({"layers": [-1]}, "layers"),
        ({"layers": [0, 0]}, "layers"),
        ({"layers": []}, "layers"),
        ({"layers": ["0"]}, "layers"),
        ({"heads": [2]}, "heads"),
        ({"heads": [-1]}, "heads"),
        ({"heads": [1, 1]}, "heads"),
        ({"heads": 0}, "heads"),
        ({"aggregate": "sum"}, "aggregate"),
        ({"format": "html"}, "format"),
        ({"rollout": "maybe"}, "rollout"),
        ({"encoding": "hex"}, "encoding"),
        ({"encoding": 64}, "encoding"),
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": "bfloat16", "encoding": "base64"}, "dtype"),
        ({"dtype": "float16"}, "dtype"),  # JSON numbers are float32: float16 needs base64
        ({"dtype": "float16", "encoding": "json"}, "dtype"),
        ({"format": "bertviz", "encoding": "base64"}, "encoding"),
        ({"format": "bertviz", "encoding": "base64", "dtype": "float16"}, "encoding"),
        ({"format": "bertviz", "encoding": "safetensors"}, "encoding"),
        ({"encoding": "safetensors", "dtype": "bfloat16"}, "dtype"),
    ],
)
def test_bad_attention_options_are_422(served: Served, options: dict[str, Any], field: str) -> None:
    response = served.post("explain/attention", {"instances": instances(WHEEZING), **options})
    assert_problem(response, 422, field, nested=True)


# -- attributions --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [{}, {"n_steps": 20, "internal_batch_size": 7}, {"n_steps": 1}],
    ids=["default-50-steps", "20-steps-batched", "1-step"],
)
def test_integrated_gradients_equal_captum_called_directly(served: Served, options: dict[str, Any]) -> None:
    texts = [TEXTS[0], TEXTS[1], WHEEZING]
    body = served.ok("explain/attributions", {"instances": instances(*texts), **options})
    n_steps = options.get("n_steps", 50)
    assert body["kind"] == "token_attribution"
    assert body["method"]["params"]["method"] == "integrated_gradients"
    assert body["method"]["params"]["n_steps"] == n_steps
    assert body["output"]["target_rule"] == "predicted_label"
    tokenizer, _ = reference(str(served.source))
    deltas = []
    for text, result, quality in zip(texts, body["results"], body["quality"]["per_instance"], strict=True):
        assert_tokens(served.source, text, result)
        assert_prediction(served.source, text, result["prediction"])
        values, delta, target = captum_integrated_gradients(
            served.source, text, n_steps=n_steps, internal_batch_size=options.get("internal_batch_size")
        )
        assert result["target"] == LABELS[target] == result["prediction"]["label"]
        assert result["target_probability"] == pytest.approx(softmax(served.source, text)[target], abs=1e-6)
        got = np.array([t["attribution"] for t in result["tokens"]])
        np.testing.assert_allclose(got, values, rtol=0, atol=1e-5)
        assert quality["n_steps"] == n_steps
        assert quality["convergence_delta"] == pytest.approx(delta, rel=1e-3, abs=1e-6)
        # completeness, from the model itself: sum of attributions = F(x) - F(baseline) up to the delta
        ids = encode(tokenizer, text)
        change = probability_at(served.source, ids, target) - probability_at(
            served.source, baseline(tokenizer, ids, "pad"), target
        )
        assert abs(abs(result["total_attribution"] - change) - quality["convergence_delta"]) <= 1e-5
        deltas.append(quality["convergence_delta"])
    assert body["quality"]["convergence_delta"] == pytest.approx(max(deltas))


@pytest.mark.parametrize(
    "text",
    [
        WHEEZING,
        "Wheezing, chest-pain & dyspnoea: URGENT!!",
        "  Leading spaces and  double  spaces.  ",
        "Dyspnée sévère 😷 depuis hier, wheezing",
    ],
    ids=["wheezing", "punctuation", "spaces", "accents-and-emoji"],
)
def test_word_merging_preserves_the_total_and_offsets_slice_the_text(served: Served, text: str) -> None:
    result = served.ok("explain/attributions", {"instances": instances(text)})["results"][0]
    tokens = result["tokens"]
    token_total = sum(t["attribution"] for t in tokens)
    words = result["words"]
    assert sum(w["attribution"] for w in words) + result["special_tokens_attribution"] == pytest.approx(
        token_total, abs=1e-9
    )
    assert result["total_attribution"] == pytest.approx(token_total, abs=1e-9)
    assert result["special_tokens_attribution"] == pytest.approx(
        sum(t["attribution"] for t in tokens if t["special"]), abs=1e-12
    )
    normalise = reference(str(served.source))[0].backend_tokenizer.normalizer.normalize_str
    covered = [i for w in words for i in w["tokens"]]
    assert covered == [t["index"] for t in tokens if not t["special"]]  # each piece in one word, in order
    for word in words:
        assert text[word["start"] : word["end"]] == word["word"]
        assert word["word"] and not word["word"].isspace()
        pieces = [tokens[i] for i in word["tokens"]]
        assert word["attribution"] == pytest.approx(sum(p["attribution"] for p in pieces), abs=1e-12)
        assert (pieces[0]["start"], pieces[-1]["end"]) == (word["start"], word["end"])
        if pieces[0]["token"] != "[UNK]":
            assert "".join(p["token"].removeprefix("##") for p in pieces) == normalise(word["word"])
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))


def test_a_word_split_into_pieces_is_one_word(served: Served) -> None:
    result = served.ok("explain/attributions", {"instances": instances(WHEEZING)})["results"][0]
    (wheezing,) = [w for w in result["words"] if w["word"] == "wheezing"]
    assert len(wheezing["tokens"]) > 1
    pieces = [result["tokens"][i]["token"] for i in wheezing["tokens"]]
    assert pieces == token_strings(served.source, "wheezing")[1:-1]  # the word's own WordPiece split
    assert (wheezing["start"], wheezing["end"]) == (WHEEZING.index("wheezing"), WHEEZING.index(" with"))


def test_auto_steps_reach_the_tolerance_and_equal_captum_at_the_steps_reported(served: Served) -> None:
    body = served.ok("explain/attributions", {"instances": instances(TEXTS[0], WHEEZING), "n_steps": "auto"})
    assert body["method"]["params"]["n_steps"] == "auto"
    assert body["method"]["params"]["tolerance"] == 0.05
    for text, result, quality in zip([TEXTS[0], WHEEZING], body["results"], body["quality"]["per_instance"]):
        assert quality["auto"] == {"tolerance": 0.05, "stopped": "tolerance"}
        assert quality["convergence_delta"] <= 0.05
        assert quality["n_steps"] in [8 * 2**k for k in range(8)]
        values, delta, _ = captum_integrated_gradients(served.source, text, n_steps=quality["n_steps"])
        np.testing.assert_allclose([t["attribution"] for t in result["tokens"]], values, rtol=0, atol=1e-5)
        assert quality["convergence_delta"] == pytest.approx(delta, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("budget_ms", [20_000, 10])  # 20 s: the service's budget cap
def test_auto_steps_say_which_limit_stopped_them(served: Served, budget_ms: int) -> None:
    tolerance = 1e-12
    body = served.ok(
        "explain/attributions",
        {"instances": instances(WHEEZING), "n_steps": "auto", "tolerance": tolerance, "budget_ms": budget_ms},
    )
    quality = body["quality"]["per_instance"][0]
    stopped = quality["auto"]["stopped"]
    assert quality["auto"]["tolerance"] == tolerance
    assert stopped in ("tolerance", "max_steps", "budget")
    if stopped == "tolerance":
        assert quality["convergence_delta"] <= tolerance
    else:
        assert quality["convergence_delta"] > tolerance
    if stopped == "max_steps":
        assert quality["n_steps"] == 1024
    if budget_ms == 20_000:
        assert stopped in ("tolerance", "max_steps")
    values, _, _ = captum_integrated_gradients(served.source, WHEEZING, n_steps=quality["n_steps"])
    np.testing.assert_allclose(
        [t["attribution"] for t in body["results"][0]["tokens"]], values, rtol=0, atol=1e-5
    )


def test_target_label_selection(served: Served) -> None:
    predicted = LABELS[int(softmax(served.source, WHEEZING).argmax())]
    other = next(label for label in LABELS if label != predicted)
    body = served.ok("explain/attributions", {"instances": instances(WHEEZING), "target": other})
    result = body["results"][0]
    assert body["output"]["target_rule"] == "requested"
    assert result["target"] == other
    assert result["prediction"]["label"] == predicted
    assert result["target_probability"] == pytest.approx(
        softmax(served.source, WHEEZING)[LABELS.index(other)], abs=1e-6
    )
    values, _, _ = captum_integrated_gradients(served.source, WHEEZING, target=LABELS.index(other))
    np.testing.assert_allclose([t["attribution"] for t in result["tokens"]], values, rtol=0, atol=1e-5)
    # for two classes, the other label's attributions are the predicted one's, negated
    default = served.ok("explain/attributions", {"instances": instances(WHEEZING)})["results"][0]
    np.testing.assert_allclose(
        [t["attribution"] for t in result["tokens"]],
        [-t["attribution"] for t in default["tokens"]],
        rtol=0,
        atol=1e-5,
    )
    named = served.ok("explain/attributions", {"instances": instances(WHEEZING), "target": predicted})
    assert named["results"][0]["tokens"] == default["tokens"]


def test_mask_baseline_equals_captum_with_the_mask_baseline(served: Served) -> None:
    body = served.ok("explain/attributions", {"instances": instances(WHEEZING), "baseline": "mask"})
    assert body["method"]["params"]["baseline"] == "mask"
    got = [t["attribution"] for t in body["results"][0]["tokens"]]
    values, delta, _ = captum_integrated_gradients(served.source, WHEEZING, kind="mask")
    np.testing.assert_allclose(got, values, rtol=0, atol=1e-5)
    assert body["quality"]["convergence_delta"] == pytest.approx(delta, rel=1e-3, abs=1e-6)
    pad, _, _ = captum_integrated_gradients(served.source, WHEEZING, kind="pad")
    assert np.abs(pad - values).max() > 1e-4  # a different baseline, a different answer


def test_gradient_shap_is_not_offered(served: Served) -> None:
    """Captum's LayerGradientShap adds float noise to token ids and draws from NumPy's global generator, so
    it is not offered until it runs on embeddings under a seed; asking for it is a clear 422."""
    response = served.post(
        "explain/attributions", {"instances": instances(WHEEZING), "method": "gradient_shap"}
    )
    assert response.status_code == 422
    assert "method" in response.get_json()["errors"]


# -- limits --------------------------------------------------------------------------------------------------
def _find(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == key] + [x for v in value.values() for x in _find(v, key)]
    if isinstance(value, list):
        return [x for v in value for x in _find(v, key)]
    return []


@pytest.mark.parametrize("route", ROUTES)
def test_texts_over_max_tokens_are_refused_unless_truncate(served: Served, route: str) -> None:
    tokenizer, _ = reference(str(served.source))
    original = len(tokenizer(LONG)["input_ids"])
    assert original > MAX_TOKENS
    refused = served.post(route, {"instances": instances(WHEEZING, LONG)})
    assert_problem(refused, 422, "instances.1.text")
    assert_problem(
        served.post(route, {"instances": instances(LONG), "truncate": False}), 422, "instances.0.text"
    )
    body = served.ok(route, {"instances": instances(LONG), "truncate": True})
    if route == "predict":
        assert_prediction(served.source, LONG, body["predictions"][0], MAX_TOKENS)
    else:
        result = body["results"][0]
        assert body["method"]["params"]["truncate"] is True
        assert assert_tokens(served.source, LONG, result, MAX_TOKENS) == MAX_TOKENS
        assert result["tokens"][-1]["token"] == "[SEP]"
        assert_prediction(served.source, LONG, result["prediction"], MAX_TOKENS)
    # the response says so
    assert _find(body, "truncated") == [True], body
    assert _find(body, "original_tokens") == [original], body


@pytest.mark.parametrize("route", ROUTES)
def test_the_token_limit_counts_special_tokens(served: Served, route: str) -> None:
    tokenizer, _ = reference(str(served.source))
    fits = " ".join(["pain"] * (MAX_TOKENS - 2))
    assert len(tokenizer(fits)["input_ids"]) == MAX_TOKENS
    served.ok(route, {"instances": instances(fits)})
    assert_problem(served.post(route, {"instances": instances(fits + " pain")}), 422, "instances.0.text")


BAD_INSTANCES = [
    pytest.param([{"text": ""}], "instances.0.text", id="empty"),
    pytest.param([{"text": "   \n\t"}], "instances.0.text", id="blank"),
    pytest.param([{"text": 123}], "instances.0.text", id="number"),
    pytest.param([{"text": None}], "instances.0.text", id="null"),
    pytest.param([{"text": ["chest pain"]}], "instances.0.text", id="list"),
    pytest.param([{"text": "chest pain", "age": 70}], "instances.0", id="extra-key"),
    pytest.param([{}], "instances.0", id="no-text"),
    pytest.param([{"text": "chest pain"}, {"txt": "x"}], "instances.1", id="second-bad"),
    pytest.param(["chest pain"], "instances.0", id="bare-string"),
    pytest.param([], "instances", id="none"),
]


@pytest.mark.parametrize(("rows", "field"), BAD_INSTANCES)
def test_invalid_texts_are_422_on_every_route(served: Served, rows: list[Any], field: str) -> None:
    for route in ROUTES:
        assert_problem(served.post(route, {"instances": rows}), 422, field)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"target": "nope"}, "target"),
        ({"target": "URGENT"}, "target"),
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": 5000}, "n_steps"),
        ({"n_steps": "fast"}, "n_steps"),
        ({"n_steps": True}, "n_steps"),
        ({"n_steps": 2.5}, "n_steps"),
        ({"n_steps": -1}, "n_steps"),
        ({"baseline": "zero"}, "baseline"),
        ({"method": "lime"}, "method"),
        ({"tolerance": 0}, "tolerance"),
        ({"internal_batch_size": 0}, "internal_batch_size"),
        ({"truncate": "maybe"}, "truncate"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_attribution_options_are_422(served: Served, options: dict[str, Any], field: str) -> None:
    response = served.post("explain/attributions", {"instances": instances(WHEEZING), **options})
    assert_problem(response, 422, field)


# -- who may ask, and what applies to what -------------------------------------------------------------------
@pytest.mark.parametrize("route", ["explain/attention", "explain/attributions"])
def test_text_routes_need_an_explain_key(served: Served, route: str) -> None:
    body = {"instances": instances(WHEEZING)}
    url = f"/v1/models/triage/versions/1/{route}"
    anonymous = served.client.post(url, json=body)
    assert_problem(anonymous, 401)
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(served.client.post(url, json=body, headers={"Authorization": "Bearer garbage"}), 401)
    for scope in ("models:write", "audit:read"):
        assert_problem(served.post(route, body, token=served.tokens[scope]), 403)
    assert served.post(route, body).status_code == 200
    assert_problem(served.post(route, body, name="nope"), 404)


def test_methods_apply_only_to_their_flavour(served: Served) -> None:
    row = {"size": 5.0, "colour": "red", "weight": 50.0}
    for route in ("explain/attention", "explain/attributions"):
        assert_problem(served.post(route, {"instances": [row]}, name="tiny"), 422, "method")
    for route in ("explain/shap", "explain/counterfactuals", "explain/reasons"):
        assert_problem(served.post(route, {"instances": instances(WHEEZING)}), 422, "method")
    described = served.client.get("/v1/models/tiny/versions/1", headers=bearer(served.tokens["explain"]))
    assert "attention" not in described.get_json()["methods"]


def test_importance_of_a_text_model_is_a_problem_not_a_crash(served: Served) -> None:
    response = served.client.get(
        "/v1/models/triage/versions/1/importance", headers=bearer(served.tokens["explain"])
    )
    assert_problem(response, 422)


def test_tabular_requests_still_work_next_to_a_text_model(served: Served) -> None:
    row = {"size": 5.0, "colour": "red", "weight": 50.0}
    response = served.post("predict", {"instances": [row]}, name="tiny")
    assert response.status_code == 200
    assert response.get_json()["predictions"][0]["label"] in ("no", "yes")
