"""The adapter interface every explanation method implements."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from explainers.envelope import Explanation
from model_store.versions import VersionInfo


class Explainer(abc.ABC):
    """Wraps one explanation library; which method uses it, for which model flavour, is declared by the method
    (``api.methods``)."""

    name: ClassVar[str]
    kind: ClassVar[str]

    @abc.abstractmethod
    def explain(
        self, info: VersionInfo, model: Any, instances: list[Any], options: dict[str, Any]
    ) -> Explanation:
        """Explain validated ``instances`` of ``model`` with request ``options``."""
