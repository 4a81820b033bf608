"""The tabular flavour: scikit-learn estimators and Pipelines over named raw features."""

from model_store.tabular.model import TabularModel

__all__ = ["TabularModel"]
