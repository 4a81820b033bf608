"""Clients of models served elsewhere: KServe V1 and the Open Inference Protocol V2 over HTTP.

``endpoint`` reads an endpoint's settings from the environment, ``protocols`` builds each protocol's request
body and reads its answer (side by side), ``client`` sends batches with a timeout and bounded retries and
translates every failure into ``PredictorFailed`` (502) or ``PredictorTimeout`` (504), and ``calls`` counts
the requests made.
"""

from __future__ import annotations

from model_store.predictors.calls import counting_calls
from model_store.predictors.client import PredictorClient
from model_store.predictors.endpoint import PredictorEndpoint

__all__ = ["PredictorClient", "PredictorEndpoint", "counting_calls"]
