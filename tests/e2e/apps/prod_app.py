"""An official-SDK app in production mode (signing key, event key; no INNGEST_DEV)."""

from __future__ import annotations

import datetime

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id="prod")  # mode, keys and URLs from the INNGEST_* environment


@client.create_function(fn_id="signed", trigger=inngest.TriggerEvent(event="prod/go"), retries=1)
async def signed(ctx: inngest.Context) -> dict:
    a = await ctx.step.run("a", lambda: "A")
    await ctx.step.sleep("nap", datetime.timedelta(milliseconds=200))
    return {"a": a, "n": ctx.event.data["n"]}


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [signed])
