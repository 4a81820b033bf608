"""Text explanations on the ``notes`` demo: the Candor API (real gunicorn) against transformers and Captum.

Run from the repository root: ``.venv/bin/python bench/bench_text.py [--quick]``.

- The note: texts of ``api/demo/data/notes.csv`` joined in file order and cut at a word boundary to the
  longest prefix the model's tokenizer reads as at most 128 tokens (the manifest's ``max_tokens``; at least
  120), special tokens included.
- In-process, what a user writes: the registered ``notes`` version directory (found through the registry of
  the throw-away data dir, so the very weights the server loads) loaded with ``AutoTokenizer`` and
  ``AutoModelForSequenceClassification`` (local files, safetensors, eager attention), torch at 1 thread.
  (1) attention: per call tokenise and run the model under ``inference_mode`` with ``output_attentions=True``
  (the "mean" row also averages over heads); (2) integrated gradients: ``LayerIntegratedGradients`` on
  ``model.get_input_embeddings()`` built once, forward = softmax(logits), baseline = non-special tokens
  replaced by the pad id, target = the predicted class (one no-grad forward), ``n_steps=50``,
  ``return_convergence_delta=True`` (as the server asks), per call tokenisation included.
- API: gunicorn with ``api/ops/gunicorn_conf.py`` (1 worker, 1 thread, CANDOR_TORCH_THREADS=1) on a free
  loopback port, one keep-alive ``requests.Session``; each call encodes the body, posts it and decodes the
  answer with orjson, the decode included in the API time. Attention, in ``ATTENTION_VARIANTS``: all 6 layers
  x 12 heads (6 x 12 x T x T weights) as JSON numbers (the default), as ``encoding: "base64"`` float32 and as
  base64 ``dtype: "float16"``, each against (1); ``aggregate: "mean"`` as JSON and as base64 float16, against
  the "mean" row of (1); the full map as ``encoding: "safetensors"`` float32 and float16 (the body is a
  safetensors file); one layer and one head as base64 float16 and as safetensors float16, against (1): the
  API's fixed cost. The client turns every weights array it receives into a numpy array (``numpy.asarray`` of
  the JSON lists, ``base64.b64decode`` + ``numpy.frombuffer``, or ``safetensors.numpy.load`` of the body plus
  orjson of the envelope in its ``__metadata__``), inside the timed call. Attributions: method
  integrated_gradients, ``n_steps`` 50, baseline pad.
- (3) ``n_steps: "auto"`` (tolerance 0.05) through the API, one request per note, on the first 10 urgent and
  first 10 routine notes of notes.csv: the steps it needed and why it stopped.
The sides alternate call by call; the benchmark process's garbage collector is paused while a call is timed
(start-up objects frozen first). For IG, the CPU time per call (user, system) of this process and of the
gunicorn worker (from /proc) is reported too: it stays readable when other processes compete for the CPU.
Checks: the API's attention weights equal the in-process ``output_attentions`` (float16: within float16's
rounding of them) and its token attributions equal Captum's (exit status 1 above 1e-5). Prints a markdown
table; writes ``bench/results/text.json``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import orjson
import safetensors.numpy
import torch
import transformers
from captum.attr import LayerIntegratedGradients
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import BenchServer, timed  # noqa: E402

from api.demo.notes import MAX_TOKENS, notes  # noqa: E402
from model_store.store import Store  # noqa: E402

BASE_PATH = "/v1/models/notes/versions/production/explain"
N_STEPS = 50
TOLERANCE = 0.05
MIN_TOKENS = 120
GOAL_ATTENTION_RATIO = 1.3
GOAL_IG_RATIO = 1.15
MAX_ABS_DIFF = 1e-5
THREADS = 1
P50_KEYS = ("server_total", "server_forward", "server_weights", "client_decode")
ATTENTION_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (request options besides the instance, the in-process side it is compared with)
    "json": ({}, "in_process"),
    "base64_float32": ({"encoding": "base64"}, "in_process"),
    "base64_float16": ({"encoding": "base64", "dtype": "float16"}, "in_process"),
    "mean_json": ({"aggregate": "mean"}, "in_process_mean"),
    "mean_base64_float16": (
        {"aggregate": "mean", "encoding": "base64", "dtype": "float16"},
        "in_process_mean",
    ),
    "safetensors_float32": ({"encoding": "safetensors"}, "in_process"),
    "safetensors_float16": ({"encoding": "safetensors", "dtype": "float16"}, "in_process"),
    "safetensors_float32_same_note": ({"encoding": "safetensors"}, "in_process"),
    "safetensors_float16_same_note": ({"encoding": "safetensors", "dtype": "float16"}, "in_process"),
    "one_head_base64_float16": (
        {"layers": [0], "heads": [0], "encoding": "base64", "dtype": "float16"},
        "in_process",
    ),
    "one_head_safetensors_float16": (
        {"layers": [0], "heads": [0], "encoding": "safetensors", "dtype": "float16"},
        "in_process",
    ),
}
IG_SIDES = ("in_process", "api")

torch.set_num_threads(THREADS)
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


class Server(BenchServer):
    """The bench server with the text model's thread count, and what the text benchmark reads of it."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, {"CANDOR_TORCH_THREADS": str(THREADS)})
        self.worker: Path | None = None

    def worker_cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time of the gunicorn worker (the master's one child), from /proc."""
        if self.worker is None:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError):
                    if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        self.worker = stat
                        break
            else:
                raise RuntimeError("no gunicorn worker process found")
        fields = self.worker.read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def model_dir(self) -> Path:
        """The registered ``notes`` production version's directory: the files the server loads."""
        store = Store(self.data_dir, self.database_url, migrate=False)
        try:
            info = store.registry.resolve("notes", "production")
            return Path(store.registry.directory(info))
        finally:
            store.close()

    def post_method(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("encoding") == "safetensors":
            return self.post_safetensors(f"{BASE_PATH}/{method}", body)
        return self.post(f"{BASE_PATH}/{method}", body)

    def post_safetensors(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST for a safetensors answer and read it as a client would: ``safetensors.numpy.load`` for the
        arrays, the header's ``__metadata__["explanation"]`` for the envelope (timed into
        ``last_decode_s``); returns the envelope with each tensor name replaced by its array."""
        response = self.session.post(self.base + path, data=orjson.dumps(body))
        if not response.ok:
            raise RuntimeError(f"{response.status_code} from the API: {response.text[:2000]}")
        started = time.perf_counter()
        content = response.content
        tensors = safetensors.numpy.load(content)
        size = int.from_bytes(content[:8], "little")
        envelope = orjson.loads(orjson.loads(content[8 : 8 + size])["__metadata__"]["explanation"])
        for result in envelope["results"]:
            for entry in result.get("attention", []):
                entry["weights"] = tensors[entry["weights"]]
            if "rollout" in result:
                result["rollout"]["weights"] = tensors[result["rollout"]["weights"]]
        self.last_decode_s = time.perf_counter() - started
        self.last_bytes = len(content)
        return envelope  # type: ignore[no-any-return]


class InProcess:
    """The registered model loaded with transformers as a user would, and one LayerIntegratedGradients."""

    def __init__(self, directory: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            directory,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            attn_implementation="eager",
        )
        self.model.eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.integrated = LayerIntegratedGradients(self.forward, self.model.get_input_embeddings())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def attention(self, text: str) -> tuple[torch.Tensor, ...]:
        encoded = self.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            return self.model(**encoded, output_attentions=True).attentions  # type: ignore[no-any-return]

    def attention_mean(self, text: str) -> torch.Tensor:
        encoded = self.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            attentions = self.model(**encoded, output_attentions=True).attentions
            return torch.stack([a[0] for a in attentions]).mean(dim=1)

    def integrated_gradients(self, text: str) -> tuple[torch.Tensor, float, int]:
        encoded = self.tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        base = torch.where(encoded["special_tokens_mask"].bool(), ids, self.tokenizer.pad_token_id)
        with torch.no_grad():
            target = int(self.forward(ids, mask)[0].argmax())
        values, delta = self.integrated.attribute(
            inputs=ids,
            baselines=base,
            additional_forward_args=(mask,),
            target=target,
            n_steps=N_STEPS,
            return_convergence_delta=True,
        )
        return values.sum(dim=-1)[0].detach(), float(delta.abs().max()), target


def long_note(local: InProcess) -> str:
    """notes.csv texts joined in order, cut at a word boundary: the longest prefix of <= MAX_TOKENS tokens."""
    words: list[str] = []
    for text in notes()["text"]:
        words += text.split()
        if local.tokens(" ".join(words)) > MAX_TOKENS:
            break
    while local.tokens(" ".join(words)) > MAX_TOKENS:
        words.pop()
    text = " ".join(words)
    if not MIN_TOKENS <= local.tokens(text) <= MAX_TOKENS:
        raise RuntimeError(f"the note has {local.tokens(text)} tokens")
    return text


def distinct_notes(local: InProcess, tokens: int, count: int, other_than: str) -> list[str]:
    """``count`` different notes of exactly ``tokens`` tokens: windows of notes.csv's words, each cut at a
    word boundary to the longest prefix of <= MAX_TOKENS tokens, kept when it has ``tokens`` tokens. Every
    call gets its own note, so every answer's weights are new to the audit trail's blob store (a note sent
    again would find its blobs stored already)."""
    words = " ".join(notes()["text"]).split()
    found: list[str] = []
    for start in range(len(words) - 100):
        window = words[start : start + 100]
        while local.tokens(" ".join(window)) > MAX_TOKENS:
            window.pop()
        note = " ".join(window)
        if note != other_than and local.tokens(note) == tokens:
            found.append(note)
            if len(found) == count:
                return found
    raise RuntimeError(f"only {len(found)} notes of {tokens} tokens")


def alternate(
    calls: dict[str, tuple[Callable[..., Any], Any]], repeats: int, after: Callable[[str], None] | None = None
) -> dict[str, list[float]]:
    """``repeats`` timed calls per side, the order rotated call by call."""
    gc.collect()
    gc.freeze()  # torch, transformers and the warm-up answers: ~0.6M objects a full collection would walk
    order = list(calls)
    times: dict[str, list[float]] = {side: [] for side in order}
    for i in range(repeats):
        k = i % len(order)
        for side in order[k:] + order[:k]:
            fn, arg = calls[side]
            times[side].append(timed(fn, arg)[0])
            if after is not None:
                after(side)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        side: {
            "p50": statistics.median(v) * 1000,
            "p95": float(np.percentile(v, 95)) * 1000,
            "min": min(v) * 1000,
        }
        for side, v in times.items()
    }


def to_numpy(weights: Any) -> np.ndarray:
    """What a client does with one weights array it received: JSON numbers, or a base64 tensor object
    (``{"dtype", "shape", "byte_order", "data"}``) through ``base64.b64decode`` and ``numpy.frombuffer``
    (a safetensors answer's arrays are numpy arrays already)."""
    if isinstance(weights, np.ndarray):
        return weights
    if isinstance(weights, dict):
        dtype = np.dtype(weights["dtype"]).newbyteorder("<" if weights["byte_order"] == "little" else ">")
        return np.frombuffer(base64.b64decode(weights["data"]), dtype=dtype).reshape(weights["shape"])
    return np.asarray(weights, dtype=np.float32)


def attention_check(
    answer: dict[str, Any], options: dict[str, Any], reference: np.ndarray
) -> tuple[float, bool]:
    """Largest |API - output_attentions| over the answer's matrices, and whether every weight is within
    MAX_ABS_DIFF (float32), or within float16's rounding of the reference plus MAX_ABS_DIFF (float16)."""
    worst, passed = 0.0, True
    for entry in answer["results"][0]["attention"]:
        got = to_numpy(entry["weights"]).astype(float)
        layer = reference[entry["layer"]]
        expected = layer.mean(axis=0) if entry["head"] == "mean" else layer[entry["head"]]
        diff = np.abs(got - expected)
        bound = MAX_ABS_DIFF + (
            2.0**-11 * np.abs(expected) + 2.0**-25 if options.get("dtype") == "float16" else 0
        )
        worst = max(worst, float(diff.max()))
        passed = passed and bool(np.all(diff <= bound))
    return worst, passed


def attention_phase(server: Server, local: InProcess, text: str, repeats: int) -> dict[str, Any]:
    """Every attention variant through the API and both in-process sides, alternated call by call. Each call
    takes the next note of its side's own pool of distinct notes of ``text``'s token count (the ``same_note``
    variants send ``text`` every time: their weights' blobs are stored already, so they show the cost of
    a record that only references its weights)."""
    instances = [{"text": text}]
    attentions = local.attention(text)
    reference = torch.stack([a[0] for a in attentions]).double().numpy()
    sides = ["in_process", "in_process_mean", *ATTENTION_VARIANTS]
    pool = iter(distinct_notes(local, local.tokens(text), len(sides) * (repeats + 1), text))
    pools = {side: [next(pool) for _ in range(repeats + 1)] for side in sides}

    def fresh(side: str) -> Callable[[], str]:
        texts = iter(pools[side])
        return lambda: next(texts)

    def local_attention(next_note: Callable[[], str]) -> Any:
        return local.attention(next_note())

    def local_mean(next_note: Callable[[], str]) -> Any:
        return local.attention_mean(next_note())

    calls: dict[str, tuple[Callable[..., Any], Any]] = {
        "in_process": (local_attention, fresh("in_process")),
        "in_process_mean": (local_mean, fresh("in_process_mean")),
    }
    variants: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in ATTENTION_VARIANTS}

    def api(call: tuple[str, dict[str, Any], Callable[[], str] | None]) -> list[np.ndarray]:
        name, body, next_note = call
        if next_note is not None:
            body = {**body, "instances": [{"text": next_note()}]}
        answer = server.post_method("attention", body)
        started = time.perf_counter()
        matrices = [to_numpy(e["weights"]) for e in answer["results"][0]["attention"]]
        decode_ms = (server.last_decode_s + time.perf_counter() - started) * 1000
        t = answer["timing_ms"]
        samples[name].append((t["total"], t["forward"], t["weights"], decode_ms))
        return matrices

    for name, (options, baseline) in ATTENTION_VARIANTS.items():
        body = {"instances": instances, **options}
        answer = server.post_method("attention", body)  # warm-up and correctness
        worst, passed = attention_check(answer, options, reference)
        variants[name] = {
            "options": options,
            "baseline": baseline,
            "response_bytes": server.last_bytes,
            "matrices": len(answer["results"][0]["attention"]),
            "max_abs_diff": worst,
            "check_passed": passed,
        }
        calls[name] = (api, (name, body, None if name.endswith("same_note") else fresh(name)))
    del answer  # out of the collector's way
    ms = summary(alternate(calls, repeats))
    for name, variant in variants.items():
        api_ms, local_ms = ms[name], ms[variant["baseline"]]
        columns = list(zip(*samples[name], strict=True))
        variant["ms"] = api_ms
        variant.update({f"ratio_{k}": api_ms[k] / local_ms[k] for k in ("p50", "p95", "min")})
        variant["p50_ms"] = {k: statistics.median(v) for k, v in zip(P50_KEYS, columns, strict=True)}
    return {
        "calls_per_side": repeats,
        "shape": [len(attentions), *attentions[0].shape[1:]],
        "values": int(np.prod(reference.shape)),
        "in_process_ms": {side: ms[side] for side in ("in_process", "in_process_mean")},
        "variants": variants,
        "max_abs_diff": max(
            v["max_abs_diff"] for v in variants.values() if v["options"].get("dtype") != "float16"
        ),
        "checks_passed": all(v["check_passed"] for v in variants.values()),
    }


def run(n_attention: int, n_ig: int, n_auto_per_label: int) -> dict[str, Any]:
    load = {"start": os.getloadavg()}
    phases: dict[str, float] = {}
    data = notes()
    auto_texts = [
        (label, text)
        for label in ("urgent", "routine")
        for text in data.loc[data["label"] == label, "text"].head(n_auto_per_label)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            local = InProcess(server.model_dir())
            text = long_note(local)
            instances = [{"text": text}]
            ig_body = {
                "instances": instances,
                "method": "integrated_gradients",
                "n_steps": N_STEPS,
                "baseline": "pad",
            }
            phase_start = time.monotonic()
            attention = attention_phase(server, local, text, n_attention)

            load["after_attention"] = os.getloadavg()
            phases["attention"] = time.monotonic() - phase_start
            phase_start = time.monotonic()

            # warm-up and correctness: integrated gradients
            ig = server.post_method("attributions", ig_body)
            server.worker_cpu_seconds()  # finds the worker's pid now, outside the timed calls
            values, delta, target = local.integrated_gradients(text)
            api_values = np.array([t["attribution"] for t in ig["results"][0]["tokens"]])
            ig_worst = float(np.abs(api_values - values.double().numpy()).max())
            ig_server_ms: list[float] = []
            ig_cpu: dict[str, list[tuple[float, float]]] = {"in_process": [], "api": []}

            def local_ig(note_text: str) -> Any:
                before = os.times()
                result = local.integrated_gradients(note_text)
                after = os.times()
                ig_cpu["in_process"].append((after.user - before.user, after.system - before.system))
                return result

            def api_ig(body: dict[str, Any]) -> dict[str, Any]:
                user, system = server.worker_cpu_seconds()
                answer = server.post_method("attributions", body)
                user_after, system_after = server.worker_cpu_seconds()
                ig_cpu["api"].append((user_after - user, system_after - system))
                ig_server_ms.append(answer["timing_ms"]["total"])
                return answer

            ig_times = alternate({"in_process": (local_ig, text), "api": (api_ig, ig_body)}, n_ig)

            load["after_integrated_gradients"] = os.getloadavg()
            phases["integrated_gradients"] = time.monotonic() - phase_start
            phase_start = time.monotonic()

            # n_steps "auto"
            auto = []
            gc.collect()
            gc.freeze()
            for label, note_text in auto_texts:
                seconds, answer = timed(
                    server.post_method,
                    "attributions",
                    {"instances": [{"text": note_text}], "n_steps": "auto", "tolerance": TOLERANCE},
                )
                q = answer["quality"]["per_instance"][0]
                auto.append(
                    {
                        "label": label,
                        "predicted": answer["results"][0]["prediction"]["label"],
                        "tokens": len(answer["results"][0]["tokens"]),
                        "n_steps": q["n_steps"],
                        "stopped": q["auto"]["stopped"],
                        "convergence_delta": q["convergence_delta"],
                        "ms": seconds * 1000,
                    }
                )
        finally:
            server.stop()
            phases["auto"] = time.monotonic() - phase_start
        phases["demo_install"] = server.install_seconds
    igs = summary(ig_times)
    steps = [a["n_steps"] for a in auto]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            **{d: metadata.version(d) for d in ("torch", "transformers", "captum", "gunicorn")},
        },
        "load_average": {**load, "end": os.getloadavg()},
        "phase_seconds": phases,
        "note": {
            "text": text,
            "tokens": local.tokens(text),
            "predicted": local.labels[target],
            "api_predicted": ig["results"][0]["prediction"]["label"],
        },
        "attention": attention,
        "integrated_gradients": {
            "calls_per_side": n_ig,
            "n_steps": N_STEPS,
            "ms": igs,
            "ratio_p50": igs["api"]["p50"] / igs["in_process"]["p50"],
            "ratio_p95": igs["api"]["p95"] / igs["in_process"]["p95"],
            "server_timing_ms_p50": statistics.median(ig_server_ms),
            "cpu_ms_p50": {
                side: {
                    "total": statistics.median(1000 * (u + s) for u, s in v),
                    "user": statistics.median(1000 * u for u, _ in v),
                    "system": statistics.median(1000 * s for _, s in v),
                }
                for side, v in ig_cpu.items()
            },
            "calls_ms": {side: [1000 * t for t in v] for side, v in ig_times.items()},
            "cpu_ms": {side: [[1000 * u, 1000 * s] for u, s in v] for side, v in ig_cpu.items()},
            "max_abs_diff": ig_worst,
            "convergence_delta": {"api": ig["quality"]["convergence_delta"], "in_process": delta},
        },
        "auto": {
            "tolerance": TOLERANCE,
            "notes": auto,
            "n_steps": {"min": min(steps), "median": statistics.median(steps), "max": max(steps)},
            "n_steps_counts": dict(sorted(Counter(steps).items())),
            "stopped": dict(Counter(a["stopped"] for a in auto)),
            "by_label": {
                label: dict(sorted(Counter(a["n_steps"] for a in auto if a["label"] == label).items()))
                for label in ("urgent", "routine")
            },
        },
    }


def attention_rows(
    a: dict[str, Any], row: Callable[..., str], verdict: Callable[[float, float], str]
) -> list[str]:
    """One table row per attention variant, against the in-process side it is compared with."""
    shape = f"{a['shape'][0]} layers x {a['shape'][1]} heads"
    rows = []
    for name, v in a["variants"].items():
        options = ", ".join(f"{k}: {val}" for k, val in v["options"].items()) or "default options (JSON)"
        what = {"in_process": f"all {shape}", "in_process_mean": f"mean over heads, {a['shape'][0]} x T x T"}
        if name.startswith("one_head"):
            what["in_process"] = "1 layer x 1 head (the fixed cost)"
        label = (
            f"Attention {name}: {what[v['baseline']]} ({options}; {v['response_bytes'] / 1e6:.2f} MB), "
            f"{a['calls_per_side']} calls"
        )
        goal = verdict(v["ratio_p50"], GOAL_ATTENTION_RATIO) if v["baseline"] == "in_process" else "(context)"
        ms = {**a["in_process_ms"], name: v["ms"]}
        rows.append(row(label, ms, v["baseline"], name, goal, 1))
    return rows


def markdown(r: dict[str, Any]) -> str:
    a, g, auto = r["attention"], r["integrated_gradients"], r["auto"]
    cpu = g["cpu_ms_p50"]

    def verdict(value: float, goal: float) -> str:
        return f"<= {goal} ({'met' if value <= goal else 'missed'})"

    def row(name: str, ms: dict[str, dict[str, float]], local: str, api: str, goal: str, digits: int) -> str:
        lo, hi = ms[local], ms[api]
        cells = [
            *(f"{lo[k]:.{digits}f} / {hi[k]:.{digits}f} ms" for k in ("p50", "p95", "min")),
            *(f"{hi[k] / lo[k]:.2f}" for k in ("p50", "p95", "min")),
        ]
        return f"| {name} | {' | '.join(cells)} | {goal} |"

    loads = ", ".join(f"{k} {v[0]:.2f}" for k, v in r["load_average"].items())
    steps = auto["n_steps"]
    lines = [
        f"Run {r['date']}, {r['machine']}",
        f"1-minute load average: {loads}; phases (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["phase_seconds"].items()),
        f"Note: {r['note']['tokens']} tokens, predicted {r['note']['predicted']}. "
        f"Times are in-process / API; torch {r['machine']['torch_threads']} thread(s) on both sides; the API "
        "time includes the client's decode into numpy arrays (orjson, then asarray or base64 + frombuffer).",
        "",
        "| Measure | p50 | p95 | best | Ratio p50 | Ratio p95 | Ratio best | Goal (p50) |",
        "|---|---|---|---|---|---|---|---|",
        *attention_rows(a, row, verdict),
        row(
            f"Integrated gradients, {g['n_steps']} steps, {g['calls_per_side']} calls",
            g["ms"],
            "in_process",
            "api",
            verdict(g["ratio_p50"], GOAL_IG_RATIO),
            0,
        ),
        "",
        "Attention p50 (ms): server timing_ms total / forward / weights; client decode (orjson + numpy); "
        "max abs diff vs output_attentions (check):",
        *(
            f"- {name}: {v['p50_ms']['server_total']:.1f} / {v['p50_ms']['server_forward']:.1f} / "
            f"{v['p50_ms']['server_weights']:.1f}; {v['p50_ms']['client_decode']:.1f}; "
            f"{v['max_abs_diff']:.2e} ({'passed' if v['check_passed'] else 'FAILED'})"
            for name, v in a["variants"].items()
        ),
        "IG CPU time p50 (ms), in-process (bench process) / API (gunicorn worker): "
        + ", ".join(f"{k} {cpu['in_process'][k]:.0f} / {cpu['api'][k]:.0f}" for k in cpu["api"])
        + f"; server-side timing_ms.total p50: {g['server_timing_ms_p50']:.0f} ms; "
        f"max abs diff API vs Captum: {g['max_abs_diff']:.2e}; convergence delta {g['convergence_delta']}",
        "",
        f"n_steps auto, tolerance {auto['tolerance']}, {len(auto['notes'])} notes "
        f"({', '.join(f'{k}: {sum(v.values())}' for k, v in auto['by_label'].items())}), one request each",
        "",
        "| Steps min / median / max | Notes per steps | Stopped | Urgent | Routine | Request p50 |",
        "|---|---|---|---|---|---|",
        f"| {steps['min']} / {steps['median']:g} / {steps['max']} | {auto['n_steps_counts']} | "
        f"{auto['stopped']} | {auto['by_label']['urgent']} | {auto['by_label']['routine']} | "
        f"{statistics.median(n['ms'] for n in auto['notes']):.0f} ms |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 5 attention calls, 2 IG calls per side, 4 auto notes (full: 80, 10, 20)",
    )
    args = parser.parse_args(argv)
    result = run(5, 2, 2) if args.quick else run(80, 10, 10)
    print(markdown(result))
    out = ROOT / "bench" / "results" / "text.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    worst = max(result["attention"]["max_abs_diff"], result["integrated_gradients"]["max_abs_diff"])
    return 0 if worst <= MAX_ABS_DIFF and result["attention"]["checks_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
