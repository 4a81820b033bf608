"""Running Candor: the command line, gunicorn's configuration and worker, worker warm-up and lifecycle.

Every entry point imports this package first, so it sets what native libraries read once, when they are
loaded: OpenMP's idle threads yield their core (``OMP_WAIT_POLICY=PASSIVE``, unless the environment sets
it). XGBoost and LightGBM run their loops on OpenMP, whose threads otherwise spin for a while after each
loop, taking the cores that the request's next steps (the TreeSHAP row blocks, the OOD forest, the JSON)
and other requests need."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
