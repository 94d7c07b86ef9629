// An app on the official `inngest` TypeScript SDK (v3, pinned in package.json), unmodified, served with
// the SDK's own Node handler (`inngest/node`) for Ratchet's compat tests (tests/compat_ts/).
//
// Environment: PORT (listen port), COMPAT_DIR (count files), INNGEST_DEV=1 and INNGEST_BASE_URL (the
// Ratchet server); in production mode (test_compat_ts_production.py) INNGEST_DEV=0, INNGEST_SIGNING_KEY,
// INNGEST_EVENT_KEY, INNGEST_API_BASE_URL and INNGEST_EVENT_API_BASE_URL instead, all read by the SDK.
// Each execution of a counted body appends a line to `$COMPAT_DIR/<run id>.<label>`, so tests can tell
// how often code really ran.
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { Inngest, NonRetriableError, RetryAfterError } = require("inngest");
const { serve } = require("inngest/node");

const COUNT_DIR = process.env.COMPAT_DIR;
const PORT = Number(process.env.PORT);

const inngest = new Inngest({ id: "compat-ts" });

function mark(runId, label) {
  const file = path.join(COUNT_DIR, `${runId}.${label}`);
  fs.appendFileSync(file, "x\n");
  return fs.readFileSync(file, "utf8").split("\n").filter(Boolean).length;
}

const twoSteps = inngest.createFunction(
  { id: "two-steps" },
  { event: "ts/two-steps" },
  async ({ event, step }) => {
    const a = await step.run("first", () => `${event.data.x}-a`);
    const b = await step.run("second", () => ({ prev: a, b: 2 }));
    return { a, b };
  },
);

const sleeper = inngest.createFunction(
  { id: "sleep" },
  { event: "ts/sleep" },
  async ({ step }) => {
    await step.run("before", () => "before");
    await step.sleep("nap", "1s");
    return await step.run("after", () => "after");
  },
);

const waiter = inngest.createFunction(
  { id: "wait-event" },
  { event: "ts/wait-start" },
  async ({ step }) => {
    const got = await step.waitForEvent("wait", { event: "ts/wait-done", match: "data.id", timeout: "1m" });
    return got === null ? null : got.data;
  },
);

const waitTimeout = inngest.createFunction(
  { id: "wait-timeout" },
  { event: "ts/wait-timeout" },
  async ({ step }) => {
    const got = await step.waitForEvent("never", { event: "ts/never", match: "data.id", timeout: "1s" });
    return { timedOut: got === null };
  },
);

const child = inngest.createFunction(
  { id: "invoke-child" },
  { event: "ts/invoke-child-direct" },
  async ({ event, step }) => {
    const doubled = await step.run("double", () => event.data.n * 2);
    return { doubled, name: event.name };
  },
);

const parent = inngest.createFunction(
  { id: "invoke-parent" },
  { event: "ts/invoke-parent" },
  async ({ event, step }) => {
    const result = await step.invoke("call-child", { function: child, data: { n: event.data.n } });
    return { child: result };
  },
);

const sender = inngest.createFunction(
  { id: "sender" },
  { event: "ts/sender" },
  async ({ event, step }) => {
    const sent = await step.sendEvent("send", { name: "ts/sent", data: { id: event.data.id } });
    return sent;
  },
);

const onSent = inngest.createFunction(
  { id: "on-sent" },
  { event: "ts/sent" },
  async ({ event }) => ({ got: event.data.id }),
);

const flaky = inngest.createFunction(
  { id: "flaky-step", retries: 2 },
  { event: "ts/flaky-step" },
  async ({ step, runId }) => {
    const value = await step.run("flaky", () => {
      if (mark(runId, "flaky") === 1) {
        throw new Error("first attempt fails");
      }
      return "recovered";
    });
    return { flaky: value };
  },
);

const nonRetriable = inngest.createFunction(
  { id: "non-retriable", retries: 3 },
  { event: "ts/non-retriable" },
  async ({ runId }) => {
    mark(runId, "body");
    throw new NonRetriableError("give up now");
  },
);


const parallel = inngest.createFunction(
  { id: "parallel" },
  { event: "ts/parallel" },
  async ({ step }) => {
    const [a, b] = await Promise.all([step.run("par-a", () => "A"), step.run("par-b", () => "B")]);
    const c = await step.run("after", () => `${a}${b}`);
    return { a, b, c };
  },
);

const exhausted = inngest.createFunction(
  { id: "step-exhausted", retries: 1 },
  { event: "ts/step-exhausted" },
  async ({ step, runId }) => {
    try {
      await step.run("always", () => {
        mark(runId, "always");
        throw new Error("nope");
      });
    } catch (err) {
      return { caught: err.name, message: err.message };
    }
    return "unreachable";
  },
);

const retryAfter = inngest.createFunction(
  { id: "retry-after", retries: 2 },
  { event: "ts/retry-after" },
  async ({ runId }) => {
    if (mark(runId, "body") === 1) {
      throw new RetryAfterError("later", "1s");
    }
    return "done";
  },
);

const failingChild = inngest.createFunction(
  { id: "failing-child", retries: 0 },
  { event: "ts/failing-child-direct" },
  async () => {
    throw new NonRetriableError("child gave up");
  },
);

const invokeFails = inngest.createFunction(
  { id: "invoke-fails" },
  { event: "ts/invoke-fails" },
  async ({ step }) => {
    try {
      await step.invoke("call-failing", { function: failingChild, data: {} });
    } catch (err) {
      return { caught: err.message };
    }
    return "unreachable";
  },
);

// Flow-control and lifecycle options in the TS SDK's own spellings: `concurrency` as a plain number,
// `cancelOn` with `match`, `onFailure` (synced as a separate `-failure` function).
const fragile = inngest.createFunction(
  {
    id: "fragile",
    retries: 0,
    concurrency: 2,
    cancelOn: [{ event: "ts/fragile-cancel", match: "data.id" }],
    onFailure: async ({ event }) => {
      mark(event.data.run_id, "on-failure");
      return { failed: event.data.function_id, run: event.data.run_id, error: event.data.error.message };
    },
  },
  { event: "ts/fragile" },
  async ({ event, step }) => {
    if (event.data.wait) {
      await step.sleep("hold", "30s");
    }
    throw new Error("fragile broke");
  },
);

// Opt-in async checkpointing: the SDK runs steps back to back and reports them to `/v1/checkpoint/...`;
// when that API is unavailable it falls back to a 206 with the buffered steps and a `RunComplete` op.
const checkpointed = inngest.createFunction(
  { id: "checkpointed", checkpointing: true },
  { event: "ts/checkpointed" },
  async ({ step }) => {
    const a = await step.run("cp-a", () => "A");
    const b = await step.run("cp-b", () => `${a}B`);
    return { b };
  },
);

const functions = [twoSteps, sleeper, waiter, waitTimeout, child, parent, sender, onSent, flaky, nonRetriable,
  parallel, exhausted, retryAfter, failingChild, invokeFails, fragile,
  checkpointed];

// A second app on the same server, served with `streaming: "force"`: the SDK answers calls with 201 and
// keep-alive bytes, then the real status, headers and body as one JSON object.
const streamClient = new Inngest({ id: "compat-ts-stream" });
const streamFunctions = [
  streamClient.createFunction({ id: "two-steps" }, { event: "ts-stream/two-steps" }, async ({ event, step }) => {
    const a = await step.run("first", () => `${event.data.x}-a`);
    const b = await step.run("second", () => `${a}-b`);
    return { a, b };
  }),
  streamClient.createFunction({ id: "fails", retries: 0 }, { event: "ts-stream/fails" }, async () => {
    throw new NonRetriableError("stream gave up");
  }),
];

const mainHandler = serve({ client: inngest, functions });
const streamHandler = serve({ client: streamClient, functions: streamFunctions, streaming: "force" });

function handler(req, res) {
  return (req.url.startsWith("/api/stream") ? streamHandler : mainHandler)(req, res);
}

// COMPAT_TRACE=1 logs each request and response (method, URL, headers, bodies) to stdout, for debugging.
function traced(req, res) {
  const chunks = [];
  const [write, end, writeHead] = [res.write, res.end, res.writeHead];
  const emit = req.emit;
  req.emit = function (event, chunk) {
    if (event === "data") chunks.push(Buffer.from(chunk));
    return emit.apply(this, arguments);
  };
  res.writeHead = function (status, headers) {
    console.log(`<<< ${req.method} ${req.url} ${JSON.stringify(req.headers)}\n${Buffer.concat(chunks)}`);
    console.log(`>>> ${status} ${JSON.stringify(headers)}`);
    return writeHead.apply(this, arguments);
  };
  res.write = function (c) { console.log(`>>> ${c}`); return write.apply(this, arguments); };
  res.end = function (c) { if (c) console.log(`>>> ${c}`); return end.apply(this, arguments); };
  return handler(req, res);
}

http.createServer(process.env.COMPAT_TRACE ? traced : handler).listen(PORT, "127.0.0.1", () => {
  console.log(`compat-ts app listening on ${PORT}`);
});
