"""Ratchet: a self-hostable durable-execution engine that speaks the Inngest SDK protocol.

This top-level package re-exports the SDK (`ratchet.sdk`); it never imports the server (`ratchet.server`)
nor a web framework. Framework adapters: `ratchet.sdk.fastapi`, `ratchet.sdk.flask`.
"""

from __future__ import annotations

from ratchet import sdk as _sdk
from ratchet.sdk import *

__version__ = "0.1.0"

__all__ = [*_sdk.__all__, "__version__"]  # noqa: PLE0604 - the SDK's (string) names
