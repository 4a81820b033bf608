"""Drive a Candor server with the real KServe SDK (``kserve.InferenceRESTClient``, V1 and V2) and print, as
JSON, what the SDK returned. No glue beyond the ``Authorization`` header: every call is the SDK's own.

Runs in the KServe venv (tests/kserve_client/requirements.txt), not Candor's; reads its job from stdin:
``{"base": url, "token": str, "row": {feature: value}, "order": [feature, ...]}``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def _error(call: Any) -> str:
    """The message of the HTTPStatusError the SDK raises for a refused request."""
    try:
        await call
    except httpx.HTTPStatusError as exc:
        return str(exc)
    return "no error"


async def v1(base: str, headers: dict[str, str], row: dict[str, Any]) -> dict[str, Any]:
    async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=120)) as client:
        bad = {**row, "purpose": "yacht"}
        return {
            "server_live": await client.is_server_live(base, headers=headers),
            "model_ready": await client.is_model_ready(base, "loan", headers=headers),
            "predict": await client.infer(base, {"instances": [row]}, model_name="loan", headers=headers),
            "explain": await client.explain(base, "loan", {"instances": [row]}, headers=headers),
            "error": await _error(
                client.infer(base, {"instances": [bad]}, model_name="loan", headers=headers)
            ),
            "unknown_model_error": await _error(client.is_model_ready(base, "ghost", headers=headers)),
        }


def per_feature(row: dict[str, Any], order: list[str]) -> list[InferInput]:
    inputs = []
    for name in order:
        value = row[name]
        numeric = isinstance(value, int | float)
        inputs.append(InferInput(name, [1], "FP64" if numeric else "BYTES", data=[value]))
    return inputs


def one_tensor(row: dict[str, Any], order: list[str]) -> InferInput:
    tensor = InferInput("rows", [1, len(order)], "BYTES")
    tensor.set_data_from_numpy(np.array([[str(row[n]) for n in order]], dtype=object), binary_data=False)
    return tensor


def outputs(response: Any) -> dict[str, Any]:
    return {
        o.name: {"shape": o.shape, "data": list(o.data), "parameters": o.parameters} for o in response.outputs
    }


async def v2(base: str, headers: dict[str, str], row: dict[str, Any], order: list[str]) -> dict[str, Any]:
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=120)) as client:
        by_feature = InferRequest("loan", per_feature(row, order), request_id="e2e-1")
        by_tensor = InferRequest("loan", [one_tensor(row, order)])
        bad = InferRequest("loan", per_feature({**row, "purpose": "yacht"}, order))
        first = await client.infer(base, by_feature, model_name="loan", headers=headers)
        second = await client.infer(base, by_tensor, model_name="loan", headers=headers)
        explained = await client.infer(
            f"{base}/v2/models/loan/explain", by_feature, headers=headers, is_graph_endpoint=True
        )  # the SDK posts an InferRequest to any URL this way; its explain() speaks V1 only
        return {
            "server_live": await client.is_server_live(base, headers=headers),
            "server_ready": await client.is_server_ready(base, headers=headers),
            "model_ready": await client.is_model_ready(base, "loan", headers=headers),
            "unknown_model_ready": await client.is_model_ready(base, "ghost", headers=headers),
            "infer_id": first.id,
            "infer": outputs(first),
            "infer_one_tensor": outputs(second),
            "explain": explained,
            "error": await _error(client.infer(base, bad, model_name="loan", headers=headers)),
        }


async def main() -> None:
    job = json.load(sys.stdin)
    headers = {"Authorization": f"Bearer {job['token']}"}
    result = {
        "v1": await v1(job["base"], headers, job["row"]),
        "v2": await v2(job["base"], headers, job["row"], job["order"]),
    }
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    asyncio.run(main())
