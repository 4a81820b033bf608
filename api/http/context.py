"""Access to the per-app objects from views: the settings and the service layer's facades (views call these,
never the store)."""

from __future__ import annotations

import dataclasses

from flask import current_app

from api.jobs.service import Jobs
from api.service.explanations import ExplanationService
from api.service.key_admin import KeyAdmin
from api.service.model_admin import Models
from api.service.plotting import Plots
from api.service.readiness import ModelReadiness
from api.service.records import Records
from api.settings import Settings
from model_store.store import Store


@dataclasses.dataclass(frozen=True)
class Candor:
    settings: Settings
    store: Store
    """For the app's wiring (authentication, metrics); views use the facades below."""
    service: ExplanationService
    readiness: ModelReadiness
    models: Models
    records: Records
    key_admin: KeyAdmin
    jobs: Jobs
    plots: Plots

    @classmethod
    def build(cls, settings: Settings, store: Store) -> Candor:
        service = ExplanationService(store, settings)
        readiness = ModelReadiness(store)
        records = Records(service)
        return cls(
            settings=settings,
            store=store,
            service=service,
            readiness=readiness,
            models=Models(service, readiness),
            records=records,
            key_admin=KeyAdmin(store.keys),
            jobs=Jobs(service),
            plots=Plots(service, records),
        )


def candor() -> Candor:
    return current_app.extensions["candor"]  # type: ignore[no-any-return]
