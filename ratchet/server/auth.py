"""Keys and checks of production mode (`ratchet start`): signing keys, event keys, SDK bearer tokens.

- The server signs every request to an app with its signing key and rejects replies whose signature does
  not verify (`protocol.sign` / `protocol.verify_signature`, reference §3).
- SDK calls to the server (`/fn/register`, `/v0/runs/*`) carry `Authorization: Bearer <sha256 of the
  hex-decoded key>`; the official Python SDK sends the hash alone, the spec shows it with the
  `signkey-<env>-` prefix kept; both are accepted, for the current key and the fallback.
- A streamed reply (201, the TypeScript SDK's `streaming`) carries its signature inside the wrapper, over
  the inner body (`reply_signed`).
- Events need one of the configured event keys in the URL (`/e/{event_key}`).
- The REST and GraphQL APIs (`/v1/*`, `/v0/gql`) need `Authorization: Bearer <API token>`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence

from ratchet import protocol
from ratchet.server.engine import steps

SIGNING_KEY_PREFIX = "signkey-prod-"


def new_signing_key() -> str:
    """A fresh signing key: `signkey-prod-` and 32 random bytes in hex."""
    return SIGNING_KEY_PREFIX + secrets.token_hex(32)


def new_event_key() -> str:
    """A fresh event key: 32 random bytes in hex (it travels in URLs, so no special characters)."""
    return secrets.token_hex(32)


def check_signing_key(key: str) -> str | None:
    """Why `key` is not a usable signing key, or None when it is."""
    raw = protocol.signing_key_raw(key)
    if not raw or len(raw) % 2:
        return "a signing key is an even number of hex digits, optionally after a `signkey-<env>-` prefix"
    try:
        bytes.fromhex(raw)
    except ValueError:
        return "a signing key is an even number of hex digits, optionally after a `signkey-<env>-` prefix"
    return None


def bearer_ok(headers: Mapping[str, str], signing_keys: Sequence[str]) -> bool:
    """Does the request carry the bearer token of one of `signing_keys`?"""
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return False
    token = auth[7:].strip()
    token = protocol.signing_key_raw(token)  # the prefix form `signkey-<env>-<hash>` too
    return any(hmac.compare_digest(token, protocol.hashed_signing_key(k)) for k in signing_keys)


def reply_signed(reply: steps.Reply, signing_keys: Sequence[str]) -> bool:
    """Is an app's reply signed with one of `signing_keys`?

    A streamed reply (status 201: keep-alive bytes, then the real status, headers and body as one JSON
    object) has no signature on the 201 itself; the SDK signs the inner body and puts the signature in the
    inner headers, so that is what is checked.
    """
    if reply.status == 201:
        reply = steps.unwrap_stream(reply)
    return protocol.verify_signature(reply.body, reply.headers.get(protocol.Header.SIGNATURE), list(signing_keys))


def new_api_token() -> str:
    """A fresh API token for the REST and GraphQL APIs."""
    return "rat_" + secrets.token_urlsafe(32)


def token_ok(headers: Mapping[str, str], tokens: Sequence[str]) -> bool:
    """Does the request carry `Authorization: Bearer <one of tokens>`?"""
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return False
    return secret_matches(auth[7:].strip(), tokens)


def secret_matches(given: str, accepted: Sequence[str]) -> bool:
    """Is `given` one of the `accepted` secrets (event keys, API tokens)? Compared in constant time with
    each of them (no early exit), as UTF-8 bytes (`hmac.compare_digest` refuses non-ASCII text)."""
    given_bytes = given.encode()
    found = False
    for secret in accepted:
        found |= hmac.compare_digest(given_bytes, secret.encode())
    return found


#: Paths of the APIs that need an API token in production mode (the event API, the SDK endpoints and
#: /health have their own rules).
PROTECTED_PREFIXES = ("/v1/", "/v0/gql")
