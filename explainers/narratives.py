"""Plain-language summaries of explanations: deterministic, template-based sentences built from the numbers of
one envelope and the version's manifest (display names, units), one ``summary`` per result. Each method's
spec names its writer (``api.methods``; ``api.methods.narration`` puts the summaries in).

Every number in a summary is a number of the same envelope, rounded by one rule per quantity (``DECIMALS``):
probabilities, SHAP attributions, base and output values and efforts to 2 decimal places; token
attributions and attention weights to 3; feature values as sent. Lists are ordered the way the data ranks
them: attributions by |attribution| (largest first, ties in the envelope's order), reasons by rank,
counterfactuals and their changes by effort (least first, ties in the envelope's order).

Effort of a counterfactual change: the distance the counterfactual search already uses for ``proximity``
(``explainers.counterfactuals.rows.Distance``): |to - from| divided by the feature's median absolute
deviation over the reference data (its standard deviation when the MAD is 0, 1 when both are), and 1 for a
changed category or yes/no value. The effort of a counterfactual is the sum over its changes, so the mean
effort of a result's counterfactuals divided by the number of features is its ``metrics.proximity``.

Prose never uses an apostrophe: single quotes only enclose labels, category values, words and tokens.
Each summary states the output space its numbers are in and a caveat: attributions explain this model, not
the world; a counterfactual changes the answer of the model, not the outcome; attention is not explanation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model_store import array_codec
from model_store.errors import InvalidInput
from model_store.manifest import FeatureSpec, Manifest

DECIMALS = {"probability": 2, "attribution": 2, "effort": 2, "token_attribution": 3, "attention": 3}
TOP_FACTORS = 3
TOP_TOKENS = 3
ATTRIBUTION_CAVEAT = (
    "Attributions explain this model, not the world: they show how the model used these values, "
    "not what causes the outcome."
)
COUNTERFACTUAL_CAVEAT = (
    "Counterfactuals describe what would change the answer of this model, not what would change the outcome "
    "in the world."
)
ATTENTION_CAVEAT = "Attention is not explanation: it shows where the model looked, not why it decided."
EFFORT_RULE = (
    "Options are listed from least to most effort: the effort of a change is its size in median absolute "
    "deviations of the reference data (1 for a changed category or yes/no value), the effort of an option "
    "the sum over its changes."
)


def effort_scales(model: Any) -> dict[str, float]:
    """The per-feature scale of numeric changes (MAD, else std, else 1), as the counterfactual search's
    distance computes it; kept with the loaded model."""

    def load() -> dict[str, float]:
        from explainers.counterfactuals.rows import Distance
        from explainers.counterfactuals.space import SearchSpace

        space = SearchSpace(model, None, None)
        distance = Distance(model, space)
        return {
            name: float(scale)
            for name, scale, numeric in zip(space.order, distance.scales, distance.numeric, strict=True)
            if numeric
        }

    return model.derived.get_or_load(("narrative", "effort_scales"), load)  # type: ignore[no-any-return]


def change_effort(change: dict[str, Any], scales: dict[str, float]) -> float:
    """|to - from| / scale for a numeric feature, 1 for any other change."""
    if change["feature"] in scales:
        return abs(float(change["to"]) - float(change["from"])) / scales[change["feature"]]
    return 1.0


def counterfactual_effort(counterfactual: dict[str, Any], scales: dict[str, float]) -> float:
    return sum(change_effort(c, scales) for c in counterfactual["changes"])


# -- wording -------------------------------------------------------------------------------------------------
def fixed(value: float, quantity: str) -> str:
    return f"{value:.{DECIMALS[quantity]}f}"


def signed(value: float, quantity: str) -> str:
    return f"{value:+.{DECIMALS[quantity]}f}"


def listing(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def indices(values: Sequence[int]) -> str:
    return listing([str(v) for v in values])


class Names:
    """Display names, units and values of the manifest's features."""

    def __init__(self, manifest: Manifest) -> None:
        self.specs: dict[str, FeatureSpec] = {spec.name: spec for spec in manifest.features}
        self.target = manifest.target

    def display(self, feature: str) -> str:
        spec = self.specs.get(feature)
        return (spec.display_name if spec else None) or feature

    def value(self, feature: str, value: Any) -> str:
        """A value as sent, with the feature's unit; categories quoted."""
        if value is None:
            return "missing"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, str):
            return f"'{value}'"
        spec = self.specs.get(feature)
        text = str(value) if isinstance(value, int) else f"{float(value):g}"
        return f"{text} {spec.unit}" if spec and spec.unit else text

    def feature_value(self, feature: str, value: Any) -> str:
        return f"{self.display(feature)} = {self.value(feature, value)}"


def prediction_sentence(prediction: dict[str, Any], noun: str = "case") -> str:
    if "label" in prediction:
        label = prediction["label"]
        probability = prediction["probabilities"][label]
        return f"The model rates this {noun} '{label}' with probability {fixed(probability, 'probability')}."
    return f"The model predicts {fixed(prediction['value'], 'attribution')} for this {noun}."


def space_phrase(space: str, target: str | None) -> str:
    of = f" of '{target}'" if target else ""
    if space == "log_odds":
        return "log-odds" + of
    if space == "probability":
        return "probability" + of
    return f"the raw model output for '{target}'" if target else "the output units of the model"


# -- attributions (SHAP) -------------------------------------------------------------------------------------
def attribution_items(result: dict[str, Any], envelope: dict[str, Any]) -> list[tuple[str, Any, float]]:
    """(feature, value or None, attribution), largest |attribution| first (ties in the envelope's order)."""
    if "attributions" in result:
        items = [(a["feature"], a["value"], float(a["attribution"])) for a in result["attributions"]]
    else:
        order = envelope["output"].get("feature_order") or []
        items = [(f, None, float(v)) for f, v in zip(order, result["attribution_values"], strict=True)]
    return sorted(items, key=lambda item: -abs(item[2]))


def attribution_summary(result: dict[str, Any], envelope: dict[str, Any], names: Names) -> str:
    target = result.get("target")
    space = space_phrase(envelope["output"]["space"], target)
    items = attribution_items(result, envelope)
    top, rest = items[:TOP_FACTORS], items[TOP_FACTORS:]
    with_values = "attributions" in result  # the columnar layout carries no values
    factors = [
        f"{names.feature_value(f, v) if with_values else names.display(f)} ({signed(a, 'attribution')})"
        for f, v, a in top
    ]
    hidden = max(len(names.specs) - len(items), 0)  # beyond top_k, summed in other_attribution
    others = len(rest) + hidden
    sentences = [
        prediction_sentence(result["prediction"]),
        f"Attributions are in {space}: starting from the base value "
        f"{fixed(result['base_value'], 'attribution')} (the average output of the model over its background "
        f"data) they add up to the output {fixed(result['output_value'], 'attribution')} for this case.",
    ]
    largest = f"The largest factors were: {listing(factors)}"
    if others:
        rest_sum = sum(a for _, _, a in rest) + float(result.get("other_attribution") or 0.0)
        largest += f"; the other {others} features together {signed(rest_sum, 'attribution')}"
    sentences.append(largest + ".")
    if target is not None:
        sentences.append(f"Positive values push toward '{target}', negative values away from it.")
    else:
        sentences.append("Positive values raise the prediction, negative values lower it.")
    sentences.append(ATTRIBUTION_CAVEAT)
    return " ".join(sentences)


# -- counterfactuals -----------------------------------------------------------------------------------------
def ranked_options(
    result: dict[str, Any], scales: dict[str, float]
) -> list[tuple[float, dict[str, Any], list[tuple[float, dict[str, Any]]]]]:
    """(effort, counterfactual, [(effort, change)]) least effort first; changes least effort first."""
    options = []
    for counterfactual in result["counterfactuals"]:
        changes = sorted(
            ((change_effort(c, scales), c) for c in counterfactual["changes"]), key=lambda item: item[0]
        )
        options.append((sum(e for e, _ in changes), counterfactual, changes))
    return sorted(options, key=lambda item: item[0])


def _goal(desired: dict[str, Any]) -> str:
    if "class" in desired:
        return f"'{desired['class']}'"
    low, high = desired["range"]
    return f"a predicted value between {fixed(low, 'attribution')} and {fixed(high, 'attribution')}"


def _then(prediction: dict[str, Any]) -> str:
    if "label" in prediction:
        label = prediction["label"]
        probability = fixed(prediction["probabilities"][label], "probability")
        return f"the model then rates it '{label}' with probability {probability}"
    return f"the model then predicts {fixed(prediction['value'], 'attribution')}"


def counterfactual_summary(
    result: dict[str, Any], envelope: dict[str, Any], names: Names, scales: dict[str, float]
) -> str:
    goal = _goal(envelope["output"]["desired"])
    head = prediction_sentence(result["prediction"])
    if result["status"] == "already_desired":
        return f"{head} That already is the desired outcome {goal}: nothing needs to change."
    if result["status"] != "ok":
        reason = result.get("reason") or "none found"
        return f"{head} No counterfactual reaching {goal} was found ({reason}). {COUNTERFACTUAL_CAVEAT}"
    options = ranked_options(result, scales)
    count = "1 option reaches" if len(options) == 1 else f"{len(options)} options reach"
    sentences = [head, f"{count} {goal}. {EFFORT_RULE}"]
    for number, (effort, counterfactual, changes) in enumerate(options, start=1):
        described = [f"{change_text(c, names)} (effort {fixed(e, 'effort')})" for e, c in changes]
        sentences.append(
            f"Option {number}, effort {fixed(effort, 'effort')}: change {listing(described)}; "
            f"{_then(counterfactual['prediction'])}."
        )
    sentences.append(COUNTERFACTUAL_CAVEAT)
    return " ".join(sentences)


# -- adverse-action reasons ----------------------------------------------------------------------------------
def change_text(change: dict[str, Any], names: Names) -> str:
    feature = change["feature"]
    before, after = names.value(feature, change["from"]), names.value(feature, change["to"])
    return f"{names.display(feature)} from {before} to {after}"


def _reason_text(reason: dict[str, Any], names: Names) -> str:
    described = names.feature_value(reason["feature"], reason["value"])
    entry = (
        f"{reason['rank']}. {reason['text']} ({described}, {signed(reason['attribution'], 'attribution')})"
    )
    if reason.get("address"):
        changes = [change_text(c, names) for c in reason["address"]["changes"]]
        entry += f", addressed by changing {listing(changes)}"
    return entry


def reasons_summary(result: dict[str, Any], envelope: dict[str, Any], names: Names) -> str:
    favourable = envelope["output"]["target"]
    head = prediction_sentence(result["prediction"])
    if result["status"] != "declined":
        return f"{head} That is the favourable outcome '{favourable}': there are no adverse-action reasons."
    space = space_phrase(envelope["output"]["space"], favourable)
    if result["reasons"]:
        listed = "; ".join(_reason_text(r, names) for r in result["reasons"])
        text = (
            f"{head} The main reasons, most important first: {listed}. The numbers are SHAP attributions "
            f"in {space}; each pushed this case away from '{favourable}'."
        )
    else:
        text = f"{head} No feature that may be given as a reason pushed this case away from '{favourable}'."
    excluded = [
        f"{names.display(p['feature'])} (rank {p['would_rank']})" for p in result["protected_excluded"]
    ]
    if excluded:
        text += (
            f" Protected features are never given as reasons; these would have ranked: {listing(excluded)}."
        )
    return f"{text} {ATTRIBUTION_CAVEAT}"


# -- text models ---------------------------------------------------------------------------------------------
def ranked_words(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Words by |attribution|, largest first (ties in text order)."""
    return sorted(result["words"], key=lambda w: -abs(float(w["attribution"])))


def token_attribution_summary(result: dict[str, Any], envelope: dict[str, Any]) -> str:
    target = result["target"]
    baseline = envelope["method"]["params"].get("baseline", "pad")
    top = ranked_words(result)[:TOP_TOKENS]
    words = [f"'{w['word']}' ({signed(w['attribution'], 'token_attribution')})" for w in top]
    sentences = [
        prediction_sentence(result["prediction"], "text"),
        f"Attributions are in probability of '{target}' and add up to "
        f"{signed(result['total_attribution'], 'token_attribution')} over the text (the change from the "
        f"{baseline} baseline).",
    ]
    if words:
        sentences.append(f"The words with the largest attributions were {listing(words)}.")
    sentences += [
        f"Positive values raise the probability of '{target}', negative values lower it.",
        ATTRIBUTION_CAVEAT,
    ]
    return " ".join(sentences)


def decode_weights(value: Any) -> np.ndarray:
    """A weights array as held in an envelope (numbers, an array or a base64 object), in float64."""
    return array_codec.decode(value, np.float64)


def _head_matrices(result: dict[str, Any], params: dict[str, Any], layer: int) -> dict[int, np.ndarray]:
    """Per-head matrices of ``layer`` the result holds (candor entries or the bertviz array)."""
    if "bertviz" in result:
        attn = decode_weights(result["bertviz"]["attention"][0]["attn"])
        if layer not in params["layers"]:
            return {}
        row = attn[params["layers"].index(layer)]
        return {head: row[k] for k, head in enumerate(params["heads"])}
    return {
        e["head"]: decode_weights(e["weights"])
        for e in result.get("attention", [])
        if e["layer"] == layer and isinstance(e["head"], int)
    }


def attention_matrix(
    result: dict[str, Any],
    params: dict[str, Any],
    view: str = "auto",
    layer: int | None = None,
    head: int | None = None,
) -> tuple[np.ndarray, str]:
    """The token x token matrix of one view the result holds, and its description. ``auto``: the rollout,
    else the last selected layer's aggregate (mean or max) or mean over its heads."""
    layers: list[int] = params["layers"]
    layer = max(layers) if layer is None else layer
    if layer not in layers:
        raise InvalidInput.field("layer", f"The record holds layers {indices(layers)}.")
    if view == "auto":
        view = "rollout" if "rollout" in result else "layer_" + (params.get("aggregate") or "none")
        view = "layer_mean" if view == "layer_none" else view
    if view == "rollout":
        if "rollout" not in result:
            raise InvalidInput.field("view", "The record holds no rollout (it was not requested).")
        plural = "s" if len(layers) > 1 else ""
        return decode_weights(result["rollout"]["weights"]), (
            f"the attention rollout over layer{plural} {indices(sorted(layers))}"
        )
    aggregate = view.removeprefix("layer_")
    for entry in result.get("attention", []):
        if entry["layer"] == layer and entry["head"] == aggregate:
            return decode_weights(entry["weights"]), _layer_text(layer, aggregate, params["heads"])
    heads = _head_matrices(result, params, layer)
    if view == "layer_mean" and heads:
        return np.mean(list(heads.values()), axis=0), _layer_text(layer, "mean", sorted(heads))
    if view == "head":
        head = params["heads"][0] if head is None else head
        if head not in heads:
            raise InvalidInput.field("head", f"The record holds no weights of head {head} in layer {layer}.")
        return heads[head], f"layer {layer}, head {head}"
    raise InvalidInput.field("view", f"The record holds no {view} weights of layer {layer}.")


def _layer_text(layer: int, aggregate: str, heads: Sequence[int]) -> str:
    extra = ", rows renormalised" if aggregate == "max" else ""
    return f"layer {layer} ({aggregate} over heads {indices(list(heads))}{extra})"


def attention_received(matrix: np.ndarray, tokens: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(token index, attention it receives averaged over the query tokens) for non-special tokens, most
    first (ties in text order)."""
    received = matrix.mean(axis=0)
    ranked = [(t["index"], float(received[t["index"]])) for t in tokens if not t["special"]]
    return sorted(ranked, key=lambda item: -item[1])


def attention_summary(result: dict[str, Any], envelope: dict[str, Any]) -> str:
    matrix, described = attention_matrix(result, envelope["method"]["params"])
    tokens = result["tokens"]
    top = attention_received(matrix, tokens)[:TOP_TOKENS]
    listed = [f"'{tokens[i]['token']}' ({fixed(v, 'attention')})" for i, v in top]
    return " ".join(
        [
            prediction_sentence(result["prediction"], "text"),
            f"In {described}, the tokens receiving the most attention (averaged over the {len(tokens)} "
            f"query tokens, special tokens left out) were {listing(listed)}.",
            ATTENTION_CAVEAT,
        ]
    )
