"""A fairness report of a tabular classifier over rows: group metrics (fairlearn), a counterfactual flip test
of each protected attribute, and the features that stand in for one (proxies)."""
