"""The full attention map through the API, recorded by digest (the default) or in full, against the in-process
forward pass.

Run from the repository root: ``.venv/bin/python bench/bench_attention_record.py [--quick]``.

- Model and note as ``bench_text.py``: the ``notes`` demo (registered in this process), a note of at most 128
  tokens cut from notes.csv; every call takes its own distinct note of the same token count, so no answer's
  weights are stored already.
- In-process: the registered version's directory loaded with transformers, ``output_attentions=True`` under
  ``inference_mode``, torch at 1 thread (``bench_text.InProcess.attention``).
- API: two gunicorn servers (1 worker, 1 thread each, CANDOR_TORCH_THREADS=1) on one data dir (SQLite),
  one with ``CANDOR_AUDIT_ATTENTION=digest`` (the default), one with ``full`` (the weights kept as blobs); the
  full map (6 layers x 12 heads) as ``encoding: safetensors`` float32 and float16, the client reading the body
  with ``safetensors.numpy.load`` inside the timed call.
The sides alternate call by call. Checks: every answer's weights equal ``output_attentions`` (float16 within
its rounding); the digest server's record of its warm-up answer keeps each array as ``"kept": false`` with the
sha256 of the bytes received, and the full server's has blobs. Prints a markdown table; writes
``bench/results/attention_record.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_text import (  # noqa: E402
    BASE_PATH,
    GOAL_ATTENTION_RATIO,
    InProcess,
    Server,
    alternate,
    attention_check,
    distinct_notes,
    long_note,
    summary,
    to_numpy,
)
from harness import BenchServer  # noqa: E402

VARIANTS = {
    "float32": {"encoding": "safetensors"},
    "float16": {"encoding": "safetensors", "dtype": "float16"},
}
MODES = ("digest", "full")


class RecordServer(Server):
    """A bench server whose attention records keep ``mode`` (digest or full), on a shared data dir."""

    def __init__(self, data_dir: Path, mode: str) -> None:
        env = {"CANDOR_TORCH_THREADS": "1", "CANDOR_AUDIT_ATTENTION": mode}
        BenchServer.__init__(self, data_dir, env, scopes=("explain", "audit:read"), demos=("notes",))
        self.worker = None
        self.mode = mode

    def record(self, record_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.base}/v1/explanations/{record_id}")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


def record_check(server: RecordServer, answer: dict[str, Any]) -> bool:
    """The record of ``answer`` keeps each weights array as its mode says, with the sha256 of the bytes
    sent."""
    recorded = server.record(answer["id"])["explanation"]["results"][0]["attention"]
    good = len(recorded) == len(answer["results"][0]["attention"])
    for ref, sent in zip(recorded, answer["results"][0]["attention"], strict=False):
        array = to_numpy(sent["weights"])
        good = good and ref["weights"]["blob_sha256"] == hashlib.sha256(array.tobytes()).hexdigest()
        good = good and (ref["weights"].get("kept") is False) == (server.mode == "digest")
    return good


def run(repeats: int) -> dict[str, Any]:
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {mode: RecordServer(Path(tmp), mode) for mode in MODES}
        try:
            local = InProcess(servers["digest"].model_dir())
            text = long_note(local)
            reference = torch.stack([a[0] for a in local.attention(text)]).double().numpy()
            sides = ["in_process", *(f"{m}_{v}" for m in MODES for v in VARIANTS)]
            pool = iter(distinct_notes(local, local.tokens(text), len(sides) * (repeats + 1), text))
            notes = {side: iter([next(pool) for _ in range(repeats + 1)]) for side in sides}
            checks: dict[str, Any] = {}
            server_ms: dict[str, list[dict[str, float]]] = {}
            calls: dict[str, tuple[Callable[..., Any], Any]] = {
                "in_process": (lambda side: local.attention(next(notes[side])), "in_process")
            }

            def api(call: tuple[str, RecordServer, dict[str, Any]]) -> list[np.ndarray]:
                side, server, options = call
                body = {"instances": [{"text": next(notes[side])}], **options}
                answer = server.post_safetensors(f"{BASE_PATH}/attention", body)
                server_ms.setdefault(side, []).append(answer["timing_ms"])
                return [to_numpy(e["weights"]) for e in answer["results"][0]["attention"]]

            for mode, server in servers.items():
                for name, options in VARIANTS.items():
                    answer = server.post_safetensors(
                        f"{BASE_PATH}/attention", {"instances": [{"text": text}], **options}
                    )
                    worst, passed = attention_check(answer, options, reference)
                    side = f"{mode}_{name}"
                    checks[side] = {
                        "max_abs_diff": worst,
                        "weights_passed": passed,
                        "record_passed": record_check(server, answer),
                        "response_bytes": server.last_bytes,
                    }
                    calls[side] = (api, (side, server, options))
            ms = summary(alternate(calls, repeats))
        finally:
            for server in servers.values():
                server.stop()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{d: metadata.version(d) for d in ("torch", "transformers", "gunicorn")},
        },
        "load_average": {**load, "end": os.getloadavg()},
        "tokens": local.tokens(text),
        "shape": list(reference.shape),
        "calls_per_side": repeats,
        "ms": ms,
        "ratio_p50": {side: ms[side]["p50"] / ms["in_process"]["p50"] for side in ms if side != "in_process"},
        "checks": checks,
        "server_timing_ms_p50": {
            side: {key: statistics.median(t[key] for t in times) for key in times[0]}
            for side, times in server_ms.items()
        },
    }


def markdown(r: dict[str, Any]) -> str:
    base = r["ms"]["in_process"]
    lines = [
        f"Run {r['date']}, {r['machine']}, load {r['load_average']}",
        f"Full attention map {r['shape']} of a {r['tokens']}-token note, "
        f"{r['calls_per_side']} calls per side "
        f"(in-process p50 {base['p50']:.1f} ms, p95 {base['p95']:.1f} ms)",
        "",
        "| Record, answer | p50 | p95 | Ratio p50 | Goal | Checks |",
        "|---|---|---|---|---|---|",
    ]
    for side, ratio in r["ratio_p50"].items():
        mode, dtype = side.split("_")
        check = r["checks"][side]
        ok = check["weights_passed"] and check["record_passed"]
        goal = f"<= {GOAL_ATTENTION_RATIO} ({'met' if ratio <= GOAL_ATTENTION_RATIO else 'missed'})"
        lines.append(
            f"| {mode}, safetensors {dtype} ({check['response_bytes'] / 1e6:.2f} MB) | "
            f"{r['ms'][side]['p50']:.1f} ms | {r['ms'][side]['p95']:.1f} ms | {ratio:.2f} | "
            f"{goal if mode == 'digest' else '(context)'} | {'passed' if ok else 'FAILED'} |"
        )
    lines.append("")
    lines.append("Server timing_ms p50 per side: " + json.dumps(r["server_timing_ms_p50"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 calls per side (full: 40)")
    args = parser.parse_args(argv)
    result = run(5 if args.quick else 40)
    print(markdown(result))
    out = ROOT / "bench" / "results" / "attention_record.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    checks = result["checks"].values()
    return 0 if all(c["weights_passed"] and c["record_passed"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
