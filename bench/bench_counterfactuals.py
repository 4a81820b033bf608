"""Counterfactuals on the ``loan`` demo: the Candor API (real gunicorn) against dice-ml called directly.

Run from the repository root: ``.venv/bin/python bench/bench_counterfactuals.py [--quick]``.

- Rows: the first N applications of the German credit data that the ``loan`` pipeline declines
  (P(good) < 0.5). Every side asks for 4 counterfactuals toward ``good`` with method ``random`` and seed 0,
  varying the manifest's mutable, non-protected features, each bounded by the manifest min/max (else the
  data's) or the data's categories (``permitted_range``).
- Direct dice-ml, what a user writes per application: ``dice_ml.Data(dataframe, continuous_features,
  outcome)``, ``dice_ml.Model(pipeline, "sklearn")``, ``dice_ml.Dice(data, model, method="random")``, then
  ``generate_counterfactuals(row, total_CFs=4, desired_class="opposite", features_to_vary, permitted_range,
  random_seed=0)``. "generate only" is the same call with the three objects built once, for context.
  tqdm is silenced (``TQDM_DISABLE=1``) and dice-ml's pandas deprecation warnings are ignored.
- API: gunicorn with ``api/ops/gunicorn_conf.py`` (1 worker, 1 thread) on a free loopback port, one keep-alive
  ``requests.Session``; each call encodes the body (the same features_to_vary, permitted_range and seed),
  posts it and decodes the answer with orjson.
The three sides rotate call by call; the benchmark process's garbage collector is paused while a call is
timed. One untimed pass per side (also the warm-up) gives the answers the quality is scored on, all by this
script: validity (argmax of the pipeline's predict_proba is ``good``), constraint violations (a change outside
features_to_vary, a value out of range or category, a monotone feature moved against its direction, a numeric
value off its step grid: the manifest ``step``, else 1 for whole-number columns), sparsity (mean number of
changed features). Exit status 1 when the API returns an invalid or violating counterfactual. Prints a
markdown table; writes ``bench/results/counterfactuals.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import warnings
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm at import: dice-ml's progress bar stays quiet

import dice_ml
import numpy as np
import orjson
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import BenchServer, timed  # noqa: E402

from api.demo import LOAN_TARGET, loan_model  # noqa: E402

PATH = "/v1/models/loan/versions/1/explain/counterfactuals"
TOTAL_CFS = 4
SEED = 0
GOAL_LATENCY_RATIO = 0.3
SIDES = ("api", "direct", "direct_generate_only")
LABELS = {
    "api": "Candor API (HTTP)",
    "direct": "dice-ml direct: build + generate",
    "direct_generate_only": "dice-ml direct: generate only (built once)",
}

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dice_ml\..*")


class Setup:
    """The pipeline, the declined rows, the constraints both sides get, and the checks of their answers."""

    def __init__(self, n_rows: int) -> None:
        manifest, self.pipeline, self.data = loan_model()  # deterministic: what `demo install` registers
        self.features = self.data.drop(columns=[LOAN_TARGET])
        self.specs = {s["name"]: s for s in manifest["features"]}
        self.categorical = [c for c in self.features.columns if self.specs[c]["type"] == "categorical"]
        self.numeric = [c for c in self.features.columns if c not in self.categorical]
        self.favourable = manifest["favourable_class"]
        self.favourable_index = list(self.pipeline.classes_).index(self.favourable)
        p_good = self.pipeline.predict_proba(self.features)[:, self.favourable_index]
        self.declined = [int(i) for i in np.flatnonzero(p_good < 0.5)[:n_rows]]
        self.queries = [self.features.iloc[[i]].reset_index(drop=True) for i in self.declined]
        self.records = [json.loads(q.to_json(orient="records"))[0] for q in self.queries]  # as a client sends
        self.to_vary = [
            c
            for c in self.features.columns
            if self.specs[c].get("mutable", True) and not self.specs[c].get("protected", False)
        ]
        self.permitted_range: dict[str, list[Any]] = {}
        self.step: dict[str, float] = {}
        for c in self.features.columns:
            spec, column = self.specs[c], self.features[c]
            if c in self.categorical:
                self.permitted_range[c] = sorted(spec.get("categories") or column.unique().tolist())
                continue
            lo, hi = spec.get("min", column.min()), spec.get("max", column.max())
            self.permitted_range[c] = [int(lo), int(hi)] if float(lo).is_integer() else [float(lo), float(hi)]
            if "step" in spec:
                self.step[c] = float(spec["step"])
            elif bool((column == column.round()).all()):
                self.step[c] = 1.0
        self.permitted_range = {c: self.permitted_range[c] for c in self.to_vary}
        self.all_bounds = {
            c: (
                sorted(self.features[c].unique().tolist())
                if c in self.categorical
                else [self.features[c].min(), self.features[c].max()]
            )
            for c in self.features.columns
        }

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        out = pd.DataFrame(rows)[list(self.features.columns)]
        for c in self.categorical:
            out[c] = out[c].astype(object)
        for c in self.numeric:
            whole = bool((out[c] == out[c].round()).all())
            out[c] = out[c].astype("int64") if whole else out[c].astype(float)
        return out

    def violations(self, query: dict[str, Any], cf: dict[str, Any]) -> list[str]:
        found = []
        for c in self.features.columns:
            q, x = query[c], cf[c]
            numeric = c in self.numeric
            changed = float(q) != float(x) if numeric else str(q) != str(x)
            if changed and c not in self.to_vary:
                found.append(f"changed outside features_to_vary: {c}")
            bounds = self.permitted_range.get(c, self.all_bounds[c])
            if numeric:
                if not bounds[0] <= float(x) <= bounds[1]:
                    found.append(f"out of range: {c}")
                monotone = self.specs[c].get("monotone", "none")
                if (monotone == "increasing" and float(x) < float(q)) or (
                    monotone == "decreasing" and float(x) > float(q)
                ):
                    found.append(f"monotone broken: {c}")
                step = self.step.get(c)
                if step and abs(float(x) / step - round(float(x) / step)) > 1e-9:
                    found.append(f"off the step grid: {c}")
            elif str(x) not in {str(b) for b in bounds}:
                found.append(f"category not allowed: {c}")
        return found

    def changed(self, query: dict[str, Any], cf: dict[str, Any]) -> int:
        return sum(
            float(query[c]) != float(cf[c]) if c in self.numeric else str(query[c]) != str(cf[c])
            for c in self.features.columns
        )

    def quality(self, answers: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Validity, violations and sparsity of the counterfactuals returned per row (in row order)."""
        cfs = [(i, cf) for i, row in enumerate(answers) for cf in row]
        kinds: Counter[str] = Counter()
        n_violating = 0
        valid = 0
        if cfs:
            proba = self.pipeline.predict_proba(self.frame([cf for _, cf in cfs]))
            predicted = np.asarray(self.pipeline.classes_)[proba.argmax(axis=1)]
            valid = int((predicted == self.favourable).sum())
        changed = []
        for i, cf in cfs:
            found = self.violations(self.records[i], cf)
            n_violating += bool(found)
            kinds.update(found)
            changed.append(self.changed(self.records[i], cf))
        return {
            "rows": len(answers),
            "rows_with_cfs": sum(bool(row) for row in answers),
            "requested": TOTAL_CFS * len(answers),
            "returned": len(cfs),
            "valid": valid,
            "validity": valid / len(cfs) if cfs else None,
            "violating": n_violating,
            "violation_kinds": dict(kinds),
            "sparsity": float(np.mean(changed)) if changed else None,
        }


class Direct:
    """dice-ml as a user calls it: the three objects, then one generate per application."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.built = self.build()
        self.errors: Counter[str] = Counter()

    def build(self) -> Any:
        s = self.setup
        data = dice_ml.Data(dataframe=s.data, continuous_features=s.numeric, outcome_name=LOAN_TARGET)
        model = dice_ml.Model(model=s.pipeline, backend="sklearn")
        return dice_ml.Dice(data, model, method="random")

    def generate(self, explainer: Any, query: pd.DataFrame) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # dice prints on failure
            try:
                return explainer.generate_counterfactuals(
                    query,
                    total_CFs=TOTAL_CFS,
                    desired_class="opposite",
                    features_to_vary=self.setup.to_vary,
                    permitted_range=self.setup.permitted_range,
                    random_seed=SEED,
                )
            except Exception as error:  # dice raises when it finds nothing; counted, not fatal
                self.errors[f"{type(error).__name__}: {error}"[:160]] += 1
                return None

    def build_and_generate(self, query: pd.DataFrame) -> Any:
        return self.generate(self.build(), query)

    def generate_only(self, query: pd.DataFrame) -> Any:
        return self.generate(self.built, query)

    def rows(self, result: Any) -> list[dict[str, Any]]:
        if result is None:
            return []
        example = result.cf_examples_list[0]
        frame = example.final_cfs_df_sparse
        if frame is None:
            frame = example.final_cfs_df
        if frame is None:
            return []
        features = list(self.setup.features.columns)
        return json.loads(frame[features].to_json(orient="records"))  # type: ignore[no-any-return]


class Server(BenchServer):
    def explain(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(PATH, body)


def stable(answer: dict[str, Any]) -> bytes:
    """The answer without what may differ between identical requests: id, created_at, timings."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("timing_ms", "elapsed_ms")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return orjson.dumps(
        strip({k: v for k, v in answer.items() if k not in ("id", "created_at")}), option=orjson.OPT_SORT_KEYS
    )


def fingerprint(side: str, result: Any, direct: Direct) -> Any:
    """What must repeat under the same seed: the counterfactual rows (API: the answer minus id/timings)."""
    return stable(result) if side == "api" else direct.rows(result)


def run(n_rows: int, passes: int, with_api: bool) -> dict[str, Any]:
    setup = Setup(n_rows)
    direct = Direct(setup)
    bodies = [
        {
            "instances": [record],
            "total_cfs": TOTAL_CFS,
            "desired_class": setup.favourable,
            "features_to_vary": setup.to_vary,
            "permitted_range": setup.permitted_range,
            "method": "random",
            "seed": SEED,
        }
        for record in setup.records
    ]
    sides = SIDES if with_api else SIDES[1:]
    times: dict[str, list[float]] = {side: [] for side in sides}
    extra: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        server = None
        if with_api:
            server = Server(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            stack.callback(server.stop)
        calls: dict[str, tuple[Any, list[Any]]] = {
            "direct": (direct.build_and_generate, setup.queries),
            "direct_generate_only": (direct.generate_only, setup.queries),
        }
        if server is not None:
            calls["api"] = (server.explain, bodies)
        order = [side for side in SIDES if side in calls]
        for side in order:  # warm-up: one untimed call each (imports, caches, the server's first request)
            calls[side][0](calls[side][1][0])
        first: dict[str, list[Any]] = {side: [] for side in order}  # pass 0: the answers quality is scored on
        same = dict.fromkeys(order, True)  # every later call answered exactly as pass 0 did
        for p in range(passes):
            for row in range(len(setup.queries)):
                k = (p * len(setup.queries) + row) % len(order)
                for side in order[k:] + order[:k]:  # rotate which side goes first, call by call
                    fn, args = calls[side]
                    seconds, result = timed(fn, args[row])
                    times[side].append(seconds)
                    if p == 0:
                        first[side].append(result)
                    else:
                        same[side] &= fingerprint(side, result, direct) == fingerprint(
                            side, first[side][row], direct
                        )
    answers = {side: [direct.rows(r) for r in first[side]] for side in order if side != "api"}
    if "api" in first:
        results = [answer["results"][0] for answer in first["api"]]
        cfs = [cf for result in results for cf in result["counterfactuals"]]
        answers["api"] = [[cf["instance"] for cf in result["counterfactuals"]] for result in results]
        extra["api_statuses"] = dict(Counter(result["status"] for result in results))
        extra["api_flags"] = dict(
            Counter(f"valid={cf['valid']} constraints_ok={cf['constraints_ok']}" for cf in cfs)
        )
        extra["api_reported_sparsity"] = float(np.mean([len(cf["changes"]) for cf in cfs])) if cfs else None
        extra["api_engine"] = first["api"][0]["method"]["params"].get("engine")
        extra["api_server_timing_ms_p50"] = statistics.median(a["timing_ms"]["total"] for a in first["api"])
    if passes > 1:
        extra["same_answer_every_call"] = same
    quality = {side: setup.quality(answers[side]) for side in calls}
    p50 = {side: statistics.median(v) * 1000 for side, v in times.items()}
    p95 = {side: float(np.percentile(v, 95)) * 1000 for side, v in times.items()}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{d: metadata.version(d) for d in ("dice-ml", "scikit-learn", "pandas", "gunicorn")},
        },
        "rows": setup.declined,
        "calls_per_side": passes * len(setup.queries),
        "features_to_vary": setup.to_vary,
        "latency_ms": {
            "p50": p50,
            "p95": p95,
            "ratio_p50": p50["api"] / p50["direct"] if with_api else None,
            "ratio_p50_generate_only": p50["api"] / p50["direct_generate_only"] if with_api else None,
        },
        "quality": quality,
        "direct_identical_to_generate_only": answers["direct"] == answers["direct_generate_only"],
        "direct_errors": dict(direct.errors),
        **extra,
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def markdown(r: dict[str, Any]) -> str:
    lat, q = r["latency_ms"], r["quality"]
    sides = [s for s in SIDES if s in q]
    lines = [
        f"Run {r['date']}, {r['machine']}",
        f"{len(r['rows'])} declined `loan` rows, {r['calls_per_side']} timed calls per side, "
        f"{TOTAL_CFS} counterfactuals, method random, seed {SEED}",
        "",
        "| Side | p50 | p95 | Rows with CFs | CFs returned | Validity | CFs violating | Sparsity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side in sides:
        s = q[side]
        lines.append(
            f"| {LABELS[side]} | {lat['p50'][side]:.1f} ms | {lat['p95'][side]:.1f} ms | "
            f"{s['rows_with_cfs']}/{s['rows']} | {s['returned']}/{s['requested']} | "
            f"{_fmt(s['validity'] and 100 * s['validity'], '.1f')}% | {s['violating']} | "
            f"{_fmt(s['sparsity'], '.2f')} |"
        )
    if "api" in q:
        a, d = q["api"], q["direct"]
        ratio, ratio_gen = lat["ratio_p50"], lat["ratio_p50_generate_only"]
        sparser = None not in (a["sparsity"], d["sparsity"]) and a["sparsity"] <= d["sparsity"]
        goals = [
            (
                "p50, Candor / direct build + generate",
                f"{ratio:.2f}",
                f"<= {GOAL_LATENCY_RATIO}",
                ratio <= GOAL_LATENCY_RATIO,
            ),
            ("p50, Candor / direct generate only", f"{ratio_gen:.2f}", "(context)", None),
            (
                "Candor validity",
                f"{_fmt(a['validity'] and 100 * a['validity'], '.1f')}%",
                "100%",
                a["validity"] == 1.0,
            ),
            ("Candor CFs violating a constraint", str(a["violating"]), "0", a["violating"] == 0),
            (
                "Candor sparsity vs direct",
                f"{_fmt(a['sparsity'], '.2f')} vs {_fmt(d['sparsity'], '.2f')}",
                "<= direct",
                sparser,
            ),
        ]
        lines += ["", "| Goal | Measured | Target | |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {value} | {target} | {'' if ok is None else 'met' if ok else 'missed'} |"
            for name, value, target, ok in goals
        ]
    lines += ["", "Violation kinds: " + json.dumps({s: q[s]["violation_kinds"] for s in sides})]
    for key in (
        "api_statuses",
        "api_flags",
        "api_reported_sparsity",
        "api_engine",
        "api_server_timing_ms_p50",
        "same_answer_every_call",
        "direct_identical_to_generate_only",
        "direct_errors",
    ):
        if key in r:
            lines.append(f"{key}: {r[key]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 5 declined rows, 1 timed pass (full: 20 rows, 4 passes)",
    )
    parser.add_argument("--direct-only", action="store_true", help="skip the API (no server)")
    args = parser.parse_args(argv)
    result = run(5, 1, not args.direct_only) if args.quick else run(20, 4, not args.direct_only)
    print(markdown(result))
    name = "counterfactuals-direct.json" if args.direct_only else "counterfactuals.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    api = result["quality"].get("api")
    return 1 if api is not None and (api["returned"] != api["valid"] or api["violating"]) else 0


if __name__ == "__main__":
    sys.exit(main())
