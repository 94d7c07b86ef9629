"""The example app `make dev` serves: a small shop whose order flow is durable.

Run it alone with `uvicorn examples.shop:app --port 3939`, then sync it with `ratchet sync
http://127.0.0.1:3939/api/inngest`, or let `make dev` do both.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import fastapi

import ratchet
import ratchet.sdk.fastapi

client = ratchet.Client(app_id="shop", is_production=False)


def charge_card(order_id: str, total: float) -> dict[str, Any]:
    """Pretend to call a payment provider that sometimes fails (the step is retried)."""
    if random.random() < 0.2:
        raise RuntimeError("payment provider timed out")
    return {"charge_id": f"ch_{order_id}", "amount": total}


@client.function(id="process-order", trigger=ratchet.on_event("shop/order.created"), retries=3)
async def process_order(ctx: ratchet.Context) -> dict[str, Any]:
    order = ctx.event.data
    charge = await ctx.step.run("charge", charge_card, str(order.get("id", "?")), float(order.get("total", 0)))
    await ctx.step.sleep("cool-off", timedelta(seconds=5))
    receipt = await ctx.step.run("send-receipt", lambda: {"sent_to": order.get("email", "customer@example.com")})
    return {"charge": charge, "receipt": receipt}


@client.function(id="hello", trigger=ratchet.on_event("demo/hello"))
def hello(ctx: ratchet.Context) -> str:
    name = ctx.step.run("greet", lambda: ctx.event.data.get("name", "world"))
    return f"Hello, {name}!"


app = fastapi.FastAPI(title="Ratchet example shop")
ratchet.sdk.fastapi.serve(app, client, [process_order, hello])
