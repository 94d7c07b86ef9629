"""Dashboard logins in production mode: a user logs in with an API token and gets a session cookie.

The cookie is `<expiry ms>.<token id>.<signature>`: the token id is a short hash of the API token used
(so removing that token from the server's configuration ends its sessions), and the signature is an
HMAC over both with a key derived from the server's signing key (every node of a cluster shares it, so
any node accepts a session another one issued; nothing is stored). The token itself is never in it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

COOKIE = "ratchet_session"
#: How long a login lasts.
LIFETIME_MS = 12 * 3600 * 1000
#: Requests authenticated by the cookie that change something must carry this header: a page on another
#: site cannot send it without the server's consent (no CORS here), which stops cross-site requests.
CSRF_HEADER = "x-ratchet-csrf"


def _key(signing_key: str) -> bytes:
    return hmac.new(signing_key.encode(), b"ratchet dashboard session", hashlib.sha256).digest()


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def issue(token: str, signing_key: str, now_ms: int) -> str:
    """A session cookie value for someone who logged in with `token` (checked by the caller)."""
    payload = f"{now_ms + LIFETIME_MS}.{token_id(token)}"
    return f"{payload}.{_sign(_key(signing_key), payload)}"


def valid(cookie: str | None, *, tokens: Sequence[str], signing_keys: Sequence[str], now_ms: int) -> bool:
    """Is `cookie` a session issued by this cluster (any of its signing keys), not expired, for an API
    token that is still configured?"""
    if not cookie or not tokens or not signing_keys:
        return False
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    expiry, tid, signature = parts
    if int(expiry) <= now_ms or tid not in {token_id(t) for t in tokens}:
        return False
    payload = f"{expiry}.{tid}"
    return any(hmac.compare_digest(signature, _sign(_key(k), payload)) for k in signing_keys)
