"""Explainer adapters: one module per method, a lazy registry and the shared Explanation envelope."""
