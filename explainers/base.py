"""The adapter interface every explanation method implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from explainers.envelope import Explanation
from explainers.rows import Rows
from model_store.versions import VersionInfo

NO_LIMITS: Mapping[str, Any] = MappingProxyType({})


class Explainer(abc.ABC):
    """Wraps one explanation library; which method uses it, for which model flavour, is declared by the method
    (``api.methods``)."""

    name: ClassVar[str]
    kind: ClassVar[str]

    @abc.abstractmethod
    def explain(
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        """Explain validated ``rows`` of ``model`` with the client's ``options``, within the server's
        ``limits`` (the method's ``MethodSpec.limits``; never recorded as options)."""
