"""Batch explanation jobs: inputs, the Dask task, per-row results, summaries and the runner."""
