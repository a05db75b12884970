"""Bearer API keys with ``read`` and ``write`` scopes.

``SEGMENTS_API_KEYS="k1:read;k2:read,write"`` turns authentication on for
every ``/v1`` route: reads (GET, reach, overlap) need ``read``, changes need
``write``. Unset, the API is open. Keys are compared in constant time: the
SHA-256 digest of the presented key is compared with every configured key's
digest with ``hmac.compare_digest``, without stopping at the first match, so
neither the position nor the length of a key leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError

SCOPES = frozenset({"read", "write"})
#: Values copied from examples that must never guard a real deployment.
PLACEHOLDERS = frozenset({"changethis", "changeme", "secret", "password", "key", "apikey", "api_key"})


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_api_keys(text: str) -> list[ApiKey]:
    """Parse ``key:scope[,scope];key2:scope``; ``ValueError`` names the bad entry (never the key)."""
    keys: list[ApiKey] = []
    seen: set[bytes] = set()
    entries = [e.strip() for e in text.split(";")]
    for number, entry in enumerate(entries, 1):
        if not entry:
            if number == len(entries):
                continue  # a trailing ';'
            raise ValueError(f"SEGMENTS_API_KEYS entry {number} is empty; expected key:scope[,scope]")
        key, sep, scope_text = entry.partition(":")
        key = key.strip()
        where = f"SEGMENTS_API_KEYS entry {number}"
        if not sep:
            raise ValueError(f"{where} has no ':'; expected key:scope[,scope] with scopes read, write")
        if not key:
            raise ValueError(f"{where} has an empty key")
        if any(c.isspace() or c == "," for c in key):
            raise ValueError(f"{where}: keys cannot contain spaces or ','")
        if key.lower() in PLACEHOLDERS:
            raise ValueError(f"{where} uses the placeholder key {key!r}; generate a random key")
        scopes = [s.strip() for s in scope_text.split(",")]
        if not all(scopes):
            raise ValueError(f"{where} has an empty scope; scopes are read and write")
        unknown = sorted(set(scopes) - SCOPES)
        if unknown:
            raise ValueError(f"{where} has unknown scope(s) {', '.join(unknown)}; scopes are read and write")
        digest = _digest(key)
        if digest in seen:
            raise ValueError(f"{where} repeats a key given earlier")
        seen.add(digest)
        keys.append(ApiKey(digest, frozenset(scopes)))
    if not keys:
        raise ValueError("SEGMENTS_API_KEYS is set but names no key; unset it to run without authentication")
    return keys


def find_key(keys: list[ApiKey], presented: str) -> ApiKey | None:
    """The configured key equal to ``presented``; every key is compared, in constant time."""
    digest = _digest(presented)
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(digest, key.digest):
            found = key
    return found


_bearer = HTTPBearer(auto_error=False, description="An API key from SEGMENTS_API_KEYS")
#: ``openapi_extra`` for routes that call ``authorize`` inline instead of using the dependency.
BEARER_SECURITY: dict[str, object] = {"security": [{"HTTPBearer": []}]}


def authorize(request: Request, scope: str, token: str | None = None) -> None:
    """Admit the request if its bearer key has ``scope`` (or if authentication is off); else 401/403.

    The hot routes call this inline rather than through ``require``: every FastAPI
    dependency costs tens of microseconds, which matters next to a sub-millisecond query.
    """
    keys: list[ApiKey] = request.app.state.api_keys
    if not keys:
        return
    if token is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    challenge = {"WWW-Authenticate": "Bearer"}
    if not token:
        raise ApiError(
            401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'", headers=challenge
        )
    key = find_key(keys, token)
    if key is None:
        raise ApiError(401, "unauthorized", "invalid API key", headers=challenge)
    if scope not in key.scopes:
        raise ApiError(
            403,
            "forbidden",
            f"this API key lacks the {scope!r} scope needed for this request",
            required_scope=scope,
        )


def require(scope: str) -> Callable[..., Awaitable[None]]:
    """A dependency that admits requests whose bearer key has ``scope`` (or any request, if auth is off)."""

    async def check(  # async: cheap, and a sync dependency would cost a thread hop
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        authorize(request, scope, credentials.credentials if credentials is not None else "")

    check.__name__ = f"require_{scope}"
    return check


ReadAccess = Depends(require("read"))
WriteAccess = Depends(require("write"))
