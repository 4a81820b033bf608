"""The plain-language summary of a fairness report (and of one job row's part): which groups the model
favours and by how much, with the 95% intervals, how often a decision flips with the protected attribute
alone, the strongest proxies, and the caveat. Probabilities and rates to 2 decimal places."""

from __future__ import annotations

from typing import Any

from explainers.narratives import Names, fixed, listing

CAVEAT = "These figures describe this model on these rows; they do not establish legal compliance."


def _rate(value: float | None) -> str:
    return "n/a" if value is None else fixed(value, "probability")


def _span(interval: list[float | None]) -> str:
    low, high = interval
    return "" if low is None or high is None else f" (95% interval {_rate(low)} to {_rate(high)})"


def attribute_sentences(section: dict[str, Any], names: Names) -> str:
    name = names.display(section["attribute"])
    groups = [g for g in section["groups"] if g.get("selection_rate") is not None]
    between = section["between"]
    text = f"By {name}: "
    if len(groups) >= 2:
        low = min(groups, key=lambda g: g["selection_rate"])
        high = max(groups, key=lambda g: g["selection_rate"])
        text += (
            f"selection rates range from {_rate(low['selection_rate'])} ('{low['group']}') to "
            f"{_rate(high['selection_rate'])} ('{high['group']}'); the demographic-parity difference is "
            f"{_rate(between.get('demographic_parity_difference'))}"
            f"{_span(between.get('demographic_parity_difference_interval', [None, None]))} and the ratio "
            f"{_rate(between.get('demographic_parity_ratio'))}"
            f"{_span(between.get('demographic_parity_ratio_interval', [None, None]))}"
        )
        text += ", below four fifths." if between.get("four_fifths_flag") else "."
    else:
        text += "fewer than two groups among the rows."
    small = [g["group"] for g in section["groups"] if g["too_small"]]
    if small:
        text += f" Too few rows to compare: {listing([repr(s) for s in small])}."
    flips = section.get("flip_test")
    if flips:
        text += (
            f" Changing {name} alone flips the decision in a share of {_rate(flips['flip_rate'])} of the "
            f"{flips['moves']} moves."
        )
    strongest = (section.get("proxies") or {}).get("strongest") or []
    if strongest:
        shown = [
            f"{names.display(p['feature'])} ({fixed(p['association'], 'probability')}"
            + (", among the most important" if p["important"] else "")
            + ")"
            for p in strongest
        ]
        text += f" Strongest proxies: {listing(shown)}."
    return text


def row_sentence(row: dict[str, Any], names: Names) -> str:
    flipped = [m for m in row["moves"] if m["flipped"]]
    groups = listing([f"{names.display(k)} '{v}'" for k, v in row["groups"].items()])
    verdict = "favourable" if row["decision"] else "unfavourable"
    if not flipped:
        moved = "No change of a protected attribute alone flips it."
    else:
        moved = (
            "It flips when "
            + listing([f"{names.display(m['attribute'])} is '{m['to']}'" for m in flipped])
            + "."
        )
    return f"This row ({groups}) gets the {verdict} decision ({_rate(row['probability'])}). {moved}"


def summary(result: dict[str, Any], names: Names) -> str:
    if "row" in result:
        return f"{row_sentence(result['row'], names)} {CAVEAT}"
    outcomes = " with true outcomes" if result["with_outcomes"] else ""
    head = f"Over {result['rows']} row(s){outcomes}, favourable class '{result['favourable_class']}'. "
    body = " ".join(attribute_sentences(section, names) for section in result["attributes"])
    return f"{head}{body} {CAVEAT}"
