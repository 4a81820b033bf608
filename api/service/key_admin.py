"""API key administration within the caller's reach: a key may only create, list, read, rotate or revoke keys
whose scopes it has and whose models lie within its own allowlist (``caller`` None: the CLI, unlimited)."""

from __future__ import annotations

from typing import Any

from model_store.errors import Conflict, Forbidden, NotFound
from model_store.keys import KeyStore, Principal


class KeyAdmin:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def within_reach(self, caller: Principal | None) -> list[dict[str, Any]]:
        """Every key within reach (never its secret), revoked ones included."""
        return [k for k in self.keys.list() if _in_reach(caller, k)]

    def get(self, caller: Principal | None, key_id: str) -> dict[str, Any]:
        """The key, or 404 when it does not exist or lies beyond the caller's reach."""
        described = self.keys.describe(key_id)
        if described is None or not _in_reach(caller, described):
            raise NotFound(f"No key '{key_id}'.")
        return described

    def create(
        self, caller: Principal | None, name: str, scopes: list[str], models: list[str] | None
    ) -> dict[str, Any]:
        """A new key (its token under ``key``, in this answer only) with scopes the caller may grant."""
        _check_grant(caller, scopes, models)
        token, principal = self.keys.create(name, scopes, models)
        return {"key": token, **self.get(caller, principal.key_id)}

    def revoke(self, caller: Principal | None, key_id: str) -> dict[str, Any]:
        _not_the_callers_own(caller, key_id)
        self.get(caller, key_id)
        if not self.keys.revoke(key_id):
            raise NotFound(f"No key '{key_id}'.")
        return self.get(caller, key_id)

    def rotate(self, caller: Principal | None, key_id: str) -> dict[str, Any]:
        """A new secret for the same key id, scopes and models (under ``key``)."""
        _not_the_callers_own(caller, key_id)
        self.get(caller, key_id)
        rotated = self.keys.rotate(key_id)
        if rotated is None:
            raise NotFound(f"No active key '{key_id}'.")
        return {"key": rotated[0], **self.get(caller, key_id)}


def _in_reach(caller: Principal | None, described: dict[str, Any]) -> bool:
    return caller is None or caller.reaches(described["scopes"], described["models"])


def _not_the_callers_own(caller: Principal | None, key_id: str) -> None:
    """A key cannot revoke or rotate itself here, so a client cannot lock itself out by mistake."""
    if caller is not None and key_id == caller.key_id:
        raise Conflict("A key cannot revoke or rotate itself; use another admin key or the CLI.")


def _check_grant(caller: Principal | None, scopes: list[str], models: list[str] | None) -> None:
    """403 unless the caller may grant ``scopes`` over ``models`` (None: every model)."""
    if caller is None or caller.reaches(scopes, models):
        return
    if caller.models is not None and models is None:
        allowed = ", ".join(sorted(caller.models))
        detail = f"This key is limited to the models {allowed}: a key it creates must name its models."
    else:
        detail = "A key cannot grant more than it has: choose scopes and models within this key's own."
    raise Forbidden(detail)
