"""Access to the per-app objects (settings, store, service) from views."""

from __future__ import annotations

import dataclasses

from flask import current_app

from api.service import ExplanationService
from api.settings import Settings
from model_store.store import Store


@dataclasses.dataclass(frozen=True)
class Candor:
    settings: Settings
    store: Store
    service: ExplanationService


def candor() -> Candor:
    return current_app.extensions["candor"]  # type: ignore[no-any-return]
