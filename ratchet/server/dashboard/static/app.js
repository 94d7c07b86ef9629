// The Ratchet dashboard: a single page over the REST API (the same one users and the CLI use).
// Preact + htm come as one vendored ES module (static/vendor), so there is no build step.
import { html, render, useState, useEffect, useRef, useCallback } from "./vendor/htm-preact.mjs";

// ------------------------------------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-ratchet-csrf"] = "1"; // required for writes made with a login session
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) { location.href = "/login"; throw new ApiError(401, "logged out"); }
  const text = await resp.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch { value = { error: text }; }
  if (!resp.ok) throw new ApiError(resp.status, errorText(value) || `HTTP ${resp.status}`);
  return value;
}

// Why a request was refused: the reply's `error`, or the errors of its results (`{"data": [{ok, error}]}`).
function errorText(value) {
  if (!value || typeof value !== "object") return null;
  if (typeof value.error === "string" && value.error) return value.error;
  const failed = Array.isArray(value.data) ? value.data.filter((r) => r && typeof r.error === "string") : [];
  return failed.length ? failed.map((r) => r.error).join("; ") : null;
}

// An EventSource refused with 401 cannot say so (it only errors): ask the API whether the login is gone.
async function loggedOut() {
  try {
    const resp = await fetch("/v1/info", { headers: { accept: "application/json" }, credentials: "same-origin" });
    return resp.status === 401;
  } catch { return false; } // the server is unreachable: not a reason to log in again
}

const qs = (params) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
};

// ------------------------------------------------------------------------------------------------ live updates

// One EventSource for the page; views subscribe and refetch (at most every 300 ms) when the store changes.
const listeners = new Set();
let liveState = "connecting";
const liveWatchers = new Set();
function startLive() {
  const es = new EventSource("/v1/stream");
  const set = (s) => { liveState = s; liveWatchers.forEach((f) => f(s)); };
  const changed = () => listeners.forEach((f) => f());
  es.addEventListener("hello", () => {
    if (liveState !== "connecting") changed(); // back after a break: what changed meanwhile was not announced
    set("live");
  });
  es.addEventListener("change", changed);
  es.onerror = async () => {
    set("reconnecting");
    if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    // It gave up (a reply other than a stream, such as 401 once the session expired): log in, or start over.
    if (await loggedOut()) location.href = "/login";
    else setTimeout(startLive, 3000);
  };
}

function useLive(refresh) {
  const ref = useRef(refresh);
  ref.current = refresh;
  useEffect(() => {
    let timer = null;
    const f = () => { if (!timer) timer = setTimeout(() => { timer = null; ref.current(); }, 300); };
    listeners.add(f);
    return () => { listeners.delete(f); if (timer) clearTimeout(timer); };
  }, []);
}

function useLiveState() {
  const [s, setS] = useState(liveState);
  useEffect(() => {
    liveWatchers.add(setS);
    setS(liveState); // the stream may have said hello between the first render and this effect
    return () => liveWatchers.delete(setS);
  }, []);
  return s;
}

// ------------------------------------------------------------------------------------------------ helpers

const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : "");
// A time of day, with its date when it is not today (a sleep that wakes next week).
function fmtWhen(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}
function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} m ${Math.round((ms % 60_000) / 1000)} s`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}
const pretty = (v) => JSON.stringify(v, null, 2);
const STATUSES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "SKIPPED"];
const ENDED = new Set(["COMPLETED", "FAILED", "CANCELLED", "SKIPPED"]);
const Badge = ({ status }) => html`<span class=${`badge ${status}`} data-testid="status">${status}</span>`;

// Loads overlap (a filter changes while a live refresh is in flight): an answer is shown only if no
// later-started load has been shown already, so a slow, stale answer never replaces a newer one.
function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const started = useRef(0);
  const shown = useRef(0);
  const reload = useCallback(async () => {
    const n = ++started.current;
    let next;
    try { const data = await load(); next = () => ({ data, error: null, loading: false }); }
    catch (e) { next = (s) => ({ data: s.data, error: e.message, loading: false }); }
    if (n < shown.current) return;
    shown.current = n;
    setState(next);
  }, deps);
  useEffect(() => { setState((s) => ({ ...s, loading: true })); reload(); }, [reload]);
  return [state, reload];
}

// An action in flight (a request a button started): its button stays disabled until it is answered, so a
// second click cannot send it twice. The ref guards clicks that land before the re-render.
function useBusy() {
  const [busy, setBusy] = useState(false);
  const ref = useRef(false);
  const run = useCallback(async (action) => {
    if (ref.current) return;
    ref.current = true;
    setBusy(true);
    try { await action(); } finally { ref.current = false; setBusy(false); }
  }, []);
  return [busy, run];
}

// A JSON editor: a textarea that says what is wrong with its text, inline, before anything is sent.
function parseJsonObject(text) {
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) return { error: "must be a JSON object, like {\"key\": \"value\"}" };
    return { value: v };
  } catch (e) {
    return { error: e.message };
  }
}

function JsonEditor({ value, onInput, testid, label }) {
  const check = parseJsonObject(value);
  return html`<label class="json-editor">${label}
    <textarea class=${check.error ? "invalid" : ""} data-testid=${testid} spellcheck="false"
      aria-invalid=${check.error ? "true" : "false"} value=${value}
      onInput=${(e) => onInput(e.target.value)}></textarea>
    ${check.error && html`<div class="error" role="alert" data-testid=${`${testid}-error`}>Invalid JSON: ${check.error}</div>`}
  </label>`;
}

function Dialog({ title, onClose, children }) {
  return html`<div class="dialog-backdrop" onClick=${(e) => e.target === e.currentTarget && onClose()}>
    <div class="dialog" role="dialog" aria-label=${title}><h2>${title}</h2>${children}</div></div>`;
}

// ------------------------------------------------------------------------------------------------ runs list

const RANGES = { all: null, "1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000, custom: null };

function rangeBounds(f) {
  if (f.range === "custom") {
    return { from: f.from ? new Date(f.from).getTime() : undefined, to: f.to ? new Date(f.to).getTime() : undefined };
  }
  const span = RANGES[f.range];
  return span ? { from: Date.now() - span, to: undefined } : { from: undefined, to: undefined };
}

// The runs list's filters live in the URL (`#/runs?status=FAILED&function_id=...`), so Back, a reload and a
// shared link keep them. Each change is a new history entry.
const NO_FILTERS = { status: "", function_id: "", app_id: "", range: "all", from: "", to: "", q: "" };

function hashQuery() {
  const hash = location.hash || "";
  const i = hash.indexOf("?");
  return i < 0 ? "" : hash.slice(i + 1);
}

function parseFilters(query) {
  const p = new URLSearchParams(query);
  const f = { ...NO_FILTERS };
  for (const k of Object.keys(NO_FILTERS)) if (p.has(k)) f[k] = p.get(k);
  if (!Object.hasOwn(RANGES, f.range)) f.range = "all";
  if (f.status && !STATUSES.includes(f.status)) f.status = "";
  return f;
}

const runsHash = (f) => `#/runs${qs(Object.fromEntries(Object.entries(f).filter(([k, v]) => v !== NO_FILTERS[k])))}`;

function RunsPage({ query }) {
  const filters = parseFilters(query);
  // Read from the URL at the moment of the change: two changes before a re-render must not undo each other.
  const setFilters = (update) => { location.hash = runsHash(update(parseFilters(hashQuery()))); };
  const [search, setSearch] = useState(filters.q);
  useEffect(() => setSearch(filters.q), [filters.q]); // Back to a list with another search
  const fkey = JSON.stringify(filters);
  // `before` of each page shown so far ([] is the first page), for the filters they were shown with.
  const [paging, setPaging] = useState({ key: fkey, cursors: [] });
  const cursors = paging.key === fkey ? paging.cursors : [];
  const setCursors = (c) => setPaging({ key: fkey, cursors: c });
  const [bulk, setBulk] = useState(null);
  const [notice, setNotice] = useState(null);
  const [meta] = useLoad(async () => ({
    functions: (await api("/v1/functions")).data, apps: (await api("/v1/apps")).data }), []);
  const before = cursors.length ? cursors[cursors.length - 1] : undefined;
  const params = { status: filters.status, function_id: filters.function_id, app_id: filters.app_id,
                   q: filters.q, ...rangeBounds(filters) };
  const key = JSON.stringify([params, before]);
  const [runs, reload] = useLoad(async () => {
    const [page, count] = await Promise.all([api(`/v1/runs${qs({ ...params, limit: 25, before })}`),
                                             api(`/v1/runs/count${qs({ ...params, at_most: 10000 })}`)]);
    return { runs: page.data, count: count.data.count, capped: count.data.capped };
  }, [key]);
  useLive(reload);
  const set = (k) => (e) => { const v = e.target.value; setFilters((f) => ({ ...f, [k]: v })); };
  const fnName = (id) => (meta.data?.functions.find((f) => f.id === id)?.name) || id;

  // Bulk actions take the list's filters, so they act on the runs listed (those of the chosen status, app,
  // search and time range), and the `to` the count was made with: runs created after it are left alone.
  const [bulkBusy, runBulk] = useBusy();
  const status = filters.status;
  const canCancel = !status || !ENDED.has(status);
  const canReplay = !status || ENDED.has(status);
  const openBulk = (action) => runBulk(async () => {
    const bounds = rangeBounds(filters);
    const body = { function_id: filters.function_id, from: bounds.from, to: bounds.to,
                   status: status || undefined, app_id: filters.app_id || undefined, q: filters.q || undefined };
    try {
      const r = await api(`/v1/runs/${action}`, { method: "POST", body: { ...body, dry_run: true } });
      setBulk({ action, body: { ...body, to: r.data.to }, matched: r.data.matched, status });
    } catch (e) { setNotice({ bad: true, text: e.message }); }
  });
  const confirmBulk = () => runBulk(async () => {
    try {
      const r = await api(`/v1/runs/${bulk.action}`, { method: "POST", body: { ...bulk.body, dry_run: false } });
      const n = bulk.action === "cancel" ? r.data.cancelled : r.data.replayed;
      setNotice({ text: `${bulk.action === "cancel" ? "Cancelled" : "Replayed"} ${n} run${n === 1 ? "" : "s"}.` });
    } catch (e) { setNotice({ bad: true, text: e.message }); }
    setBulk(null);
    reload();
  });
  const bulkWhat = (b) => `${b.matched} ${b.status ? b.status.toLowerCase()
    : b.action === "cancel" ? "running or queued" : "failed or cancelled"} run${b.matched === 1 ? "" : "s"}`;

  return html`<section>
    <h1>Runs</h1>
    ${notice && html`<div class=${notice.bad ? "notice bad" : "notice"} data-testid="notice">${notice.text}</div>`}
    <div class="card filters">
      <label>Status<select value=${filters.status} onChange=${set("status")} data-testid="filter-status">
        <option value="">any</option>${STATUSES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}</select></label>
      <label>Function<select value=${filters.function_id} onChange=${set("function_id")} data-testid="filter-function">
        <option value="">any</option>${(meta.data?.functions || []).map((f) => html`<option value=${f.id}>${f.name}</option>`)}</select></label>
      <label>App<select value=${filters.app_id} onChange=${set("app_id")} data-testid="filter-app">
        <option value="">any</option>${(meta.data?.apps || []).map((a) => html`<option value=${a.id}>${a.name}</option>`)}</select></label>
      <label>Created<select value=${filters.range} onChange=${set("range")} data-testid="filter-range">
        <option value="all">any time</option><option value="1h">last hour</option><option value="24h">last 24 hours</option>
        <option value="7d">last 7 days</option><option value="custom">between…</option></select></label>
      ${filters.range === "custom" && html`
        <label>From<input type="datetime-local" value=${filters.from} onChange=${set("from")} /></label>
        <label>To<input type="datetime-local" value=${filters.to} onChange=${set("to")} /></label>`}
      <form class="row" onSubmit=${(e) => { e.preventDefault(); setFilters((f) => ({ ...f, q: search.trim() })); }}>
        <label>Search<input type="search" placeholder="run id or event data" value=${search} size="28"
          onInput=${(e) => setSearch(e.target.value)} data-testid="search" /></label>
        <button type="submit">Search</button>
      </form>
    </div>
    ${filters.function_id && html`<div class="row" style="margin-bottom:10px">
      <span class="muted">Bulk, on the runs of ${fnName(filters.function_id)} listed (these filters):</span>
      ${canCancel && html`<button class="danger" disabled=${bulkBusy} onClick=${() => openBulk("cancel")}
        data-testid="bulk-cancel">Cancel ${status ? status.toLowerCase() : "running"}…</button>`}
      ${canReplay && html`<button disabled=${bulkBusy} onClick=${() => openBulk("replay")}
        data-testid="bulk-replay">Replay ${status ? status.toLowerCase() : "failed"}…</button>`}</div>`}
    ${runs.error && html`<div class="notice bad">${runs.error}</div>`}
    <div class="muted" data-testid="run-count">${runs.data ? `${runs.data.count.toLocaleString("en")}${runs.data.capped ? "+" : ""} run${runs.data.count === 1 ? "" : "s"}` : "…"}</div>
    <table data-testid="runs-table"><thead><tr><th>Run</th><th>Function</th><th>Status</th><th>Created</th><th>Duration</th></tr></thead>
    <tbody>${(runs.data?.runs || []).map((r) => html`
      <tr class="clickable" data-testid="run-row" data-run-id=${r.id} onClick=${() => { location.hash = `#/runs/${r.id}`; }}>
        <td class="mono"><a href=${`#/runs/${r.id}`}>${r.id}</a></td><td>${fnName(r.function_id)}</td>
        <td><${Badge} status=${r.status} /></td><td>${fmtTime(r.created_at)}</td>
        <td>${r.started_at ? fmtDuration((r.ended_at || Date.now()) - r.started_at) : ""}</td></tr>`)}
      ${runs.data && !runs.data.runs.length && html`<tr><td colspan="5" class="muted">No runs match.</td></tr>`}
    </tbody></table>
    <div class="pager">
      <button disabled=${!cursors.length} onClick=${() => setCursors(cursors.slice(0, -1))}>← Newer</button>
      <button disabled=${!runs.data || runs.data.runs.length < 25} data-testid="older"
        onClick=${() => setCursors([...cursors, runs.data.runs[runs.data.runs.length - 1].cursor])}>Older →</button>
      <span class="muted">page ${cursors.length + 1}</span>
    </div>
    ${bulk && html`<${Dialog} title=${bulk.action === "cancel" ? "Cancel runs" : "Replay runs"} onClose=${() => bulkBusy || setBulk(null)}>
      <p data-testid="bulk-count">${bulkWhat(bulk)} will be ${bulk.action === "cancel" ? "cancelled" : "replayed from the start"}.</p>
      <div class="row"><button class="primary" disabled=${!bulk.matched || bulkBusy} onClick=${confirmBulk} data-testid="bulk-confirm">${bulkBusy ? "Working…" : "Confirm"}</button>
      <button disabled=${bulkBusy} onClick=${() => setBulk(null)}>Back</button></div></${Dialog}>`}
  </section>`;
}

// ------------------------------------------------------------------------------------------------ run detail

function StepDetail({ step }) {
  return html`<div class="detail" data-testid="step-detail">
    <div class="grid2">
      <div>op</div><div class="mono">${step.op}</div>
      <div>started</div><div>${fmtTime(step.started_at)}</div>
      ${step.status === "sleeping" ? html`<div>wakes at</div><div>${fmtTime(step.ended_at)}</div>`
                                    : html`<div>ended</div><div>${fmtTime(step.ended_at)}</div>`}
      <div>attempts</div><div>${step.attempts}</div>
      ${step.child_run_id && html`<div>child run</div><div><a href=${`#/runs/${step.child_run_id}`} data-testid="child-run">${step.child_run_id}</a></div>`}
      ${step.waiting_for && html`<div>waits for</div><div data-testid="waiting-for"><code>${step.waiting_for.event}</code>
        ${step.waiting_for.if && html` if <code>${step.waiting_for.if}</code>`}
        ${step.waiting_for.expires_at && html` <span class="muted">(until ${fmtWhen(step.waiting_for.expires_at)})</span>`}</div>`}
    </div>
    ${step.input != null && html`<div class="muted">input</div><pre data-testid="step-input">${pretty(step.input)}</pre>`}
    ${step.error && html`<div class="error"><b>${step.error.name || "Error"}</b>: ${step.error.message}</div>
      ${step.error.stack && html`<pre data-testid="step-stack">${step.error.stack}</pre>`}`}
    ${"output" in step && step.op === "WaitForEvent" && step.status === "completed" && html`<div class="muted" data-testid="matched-event">${step.output
      ? html`matched event <code>${step.output.name}</code> <span class="mono">${step.output.id || ""}</span>` : "timed out (no matching event)"}</div>`}
    ${"output" in step && step.output !== undefined && html`<pre data-testid="step-output">${pretty(step.output)}</pre>`}
  </div>`;
}

// A sleep or wait still pending when its run ended (cancelled, timed out) never finishes: it is shown as
// interrupted at the run's end, not as sleeping until a time that will not come.
function stepView(s, run) {
  if (run.ended_at && (s.status === "sleeping" || s.status === "waiting")) {
    return { ...s, status: "interrupted", ended_at: Math.max(run.ended_at, s.started_at) };
  }
  return s;
}

// The scale runs from the run's creation to its end, or to now while it runs: a pending sleep's wake time
// (next week) would shrink every other bar to nothing, so the sleep runs to the edge and says when it wakes.
function Timeline({ run, onRerunFrom }) {
  const [open, setOpen] = useState({});
  const steps = run.steps.map((s) => stepView(s, run));
  const start = run.created_at;
  const now = Date.now();
  const end = Math.max(run.ended_at ? Math.max(run.ended_at, ...steps.map((s) => s.ended_at || 0)) : now, start + 1);
  const span = end - start;
  const pos = (t) => `${Math.max(0, Math.min(100, ((t - start) / span) * 100))}%`;
  return html`<div class="timeline" data-testid="timeline">
    ${steps.map((s) => {
      const sEnd = Math.min(s.ended_at || now, end);
      const kept = run.rerun_of && s.ended_at && s.ended_at <= run.created_at; // memo copied from the run this one reruns
      const label = s.status === "sleeping" ? `until ${fmtWhen(s.ended_at)}`
        : s.status === "waiting" ? `waiting for ${s.waiting_for ? s.waiting_for.event : "an event"}`
        : `${kept ? "kept · " : ""}${fmtDuration(sEnd - s.started_at)}`;
      return html`<div class="step" data-testid="step" data-step-id=${s.id} data-step-status=${s.status}
          data-kept=${kept ? "true" : "false"} title=${kept ? "result kept from the run this one reruns" : ""}>
        <div class="head" onClick=${() => setOpen({ ...open, [s.hash]: !open[s.hash] })}>
          <div><span class=${`badge ${s.status}`}>${s.status}</span> <b>${s.id}</b></div>
          <div class="track"><div class=${`bar ${s.status}`} style=${{ left: pos(s.started_at), width: `calc(${pos(sEnd)} - ${pos(s.started_at)})` }}></div></div>
          <div class="muted" data-testid="step-label">${label}${s.attempts > 1 ? ` · ${s.attempts} attempts` : ""}</div>
        </div>
        ${open[s.hash] && html`<${StepDetail} step=${s} />
          <div class="row"><button onClick=${() => onRerunFrom(s)} data-testid="rerun-from-step">Rerun from this step…</button></div>`}
      </div>`;
    })}
    ${!steps.length && html`<div class="muted">No steps recorded yet.</div>`}
  </div>`;
}

function RerunDialog({ run, events, fromStep, onClose }) {
  const [edit, setEdit] = useState(false);
  const [text, setText] = useState(pretty((events[0] && events[0].data) || {}));
  const [step, setStep] = useState(fromStep ? fromStep.hash : "");
  const [err, setErr] = useState(null);
  const [busy, runBusy] = useBusy();
  const check = parseJsonObject(text);
  const submit = () => runBusy(async () => {
    const body = {};
    if (step) body.from_step = step;
    if (edit) {
      if (check.error) return;
      body.data = check.value;
    }
    try {
      const r = await api(`/v1/runs/${run.id}/rerun`, { method: "POST", body });
      onClose();
      location.hash = `#/runs/${r.data.id}`;
    } catch (e) { setErr(e.message); }
  });
  return html`<${Dialog} title="Rerun" onClose=${onClose}>
    <label>Start from <select value=${step} onChange=${(e) => setStep(e.target.value)} data-testid="rerun-step">
      <option value="">the beginning</option>
      ${run.steps.map((s) => html`<option value=${s.hash}>step ${s.id} (the steps before it keep their results)</option>`)}
    </select></label>
    <p><label><input type="checkbox" checked=${edit} onChange=${(e) => setEdit(e.target.checked)} data-testid="rerun-edit" /> Edit the event payload</label></p>
    ${edit && html`<${JsonEditor} label="Event data" value=${text} onInput=${setText} testid="rerun-data" />`}
    ${err && html`<div class="notice bad" data-testid="rerun-error">${err}</div>`}
    <div class="row"><button class="primary" onClick=${submit} disabled=${(edit && !!check.error) || busy} data-testid="rerun-confirm">Rerun</button>
      <button onClick=${onClose}>Cancel</button></div>
  </${Dialog}>`;
}

// A failed or cancelled run's error: the SDK's error object (name, message, stack) when it is one.
function RunError({ run }) {
  const out = run.output;
  const isError = out && typeof out === "object" && !Array.isArray(out) && typeof out.message === "string";
  if (!isError) {
    return html`${run.error && html`<div class="error" data-testid="run-error">${run.error}</div>`}
      ${out !== null && out !== undefined && html`<pre data-testid="run-output">${pretty(out)}</pre>`}`;
  }
  return html`<div class="error" data-testid="run-error"><b>${out.name || "Error"}</b>: ${out.message}</div>
    ${out.stack && html`<pre data-testid="run-stack">${out.stack}</pre>`}`;
}

function RunPage({ id }) {
  const [state, reload] = useLoad(async () => {
    const run = (await api(`/v1/runs/${id}`)).data;
    const events = await Promise.all(run.event_ids.map((e) => api(`/v1/events/${e}`).then((r) => r.data).catch(() => null)));
    return { run, events: events.filter(Boolean) };
  }, [id]);
  useLive(reload);
  const [rerun, setRerun] = useState(null);
  const [notice, setNotice] = useState(null);
  const [confirmCancel, setConfirmCancel] = useState(false);
  const [cancelling, runCancel] = useBusy();
  if (state.error && !state.data) return html`<div class="notice bad">${state.error}</div>`;
  if (!state.data) return html`<p class="loading">Loading…</p>`;
  const { run, events } = state.data;
  const cancel = () => runCancel(async () => {
    try { await api(`/v1/runs/${run.id}/cancel`, { method: "POST" }); reload(); }
    catch (e) { setNotice(e.message); }
    setConfirmCancel(false);
  });
  return html`<section data-testid="run-page" data-run-id=${run.id}>
    <h1>Run <span class="mono">${run.id}</span> <${Badge} status=${run.status} /></h1>
    ${notice && html`<div class="notice bad">${notice}</div>`}
    <div class="card">
      <div class="grid2">
        <div>function</div><div><a href=${runsHash({ ...NO_FILTERS, function_id: run.function_id })} data-testid="function-runs">${run.function_id}</a></div>
        <div>created</div><div>${fmtTime(run.created_at)}</div>
        <div>started</div><div>${fmtTime(run.started_at)}</div>
        <div>ended</div><div>${fmtTime(run.ended_at)}${run.ended_at && run.started_at ? ` (${fmtDuration(run.ended_at - run.started_at)})` : ""}</div>
        ${run.rerun_of && html`<div>rerun of</div><div><a class="mono" href=${`#/runs/${run.rerun_of}`}>${run.rerun_of}</a></div>`}
        ${run.invoked_by && html`<div>invoked by</div><div><a class="mono" href=${`#/runs/${run.invoked_by.run_id}`} data-testid="parent-run">${run.invoked_by.run_id}</a></div>`}
        ${(run.reruns || []).length > 0 && html`<div>reruns</div><div>${run.reruns.map((r) => html`<a class="mono" href=${`#/runs/${r}`}>${r}</a> `)}</div>`}
      </div>
      <div class="row" style="margin-top:10px">
        ${!ENDED.has(run.status) && html`<button class="danger" onClick=${() => setConfirmCancel(true)} data-testid="cancel-run">Cancel run…</button>`}
        <button onClick=${() => setRerun({ from: null })} data-testid="rerun">Rerun…</button>
      </div>
    </div>
    <h2>Steps</h2>
    <div class="card"><${Timeline} run=${run} onRerunFrom=${(s) => setRerun({ from: s })} /></div>
    ${ENDED.has(run.status) && html`<h2>${run.status === "COMPLETED" ? "Output" : "Error"}</h2>
      <div class="card">${run.status === "COMPLETED" ? html`<pre data-testid="run-output">${pretty(run.output)}</pre>`
        : html`<${RunError} run=${run} />`}</div>`}
    <h2>Triggering event${events.length === 1 ? "" : "s"}</h2>
    ${events.map((e) => html`<div class="card"><div class="row"><b>${e.name}</b><span class="muted mono">${e.id}</span>
      <span class="muted">${fmtTime(e.ts)}</span></div><pre data-testid="event-payload">${pretty(e.data)}</pre></div>`)}
    ${rerun && html`<${RerunDialog} run=${run} events=${events} fromStep=${rerun.from} onClose=${() => setRerun(null)} />`}
    ${confirmCancel && html`<${Dialog} title="Cancel run" onClose=${() => cancelling || setConfirmCancel(false)}>
      <p>Cancel run <span class="mono">${run.id}</span> of ${run.function_id}? It stops where it is: steps not yet run never run.</p>
      ${ENDED.has(run.status) && html`<p class="muted">It has ended meanwhile (${run.status}).</p>`}
      <div class="row"><button class="danger" onClick=${cancel} disabled=${cancelling || ENDED.has(run.status)} data-testid="cancel-run-confirm">Cancel run</button>
        <button onClick=${() => setConfirmCancel(false)} disabled=${cancelling}>Back</button></div></${Dialog}>`}
  </section>`;
}

// ------------------------------------------------------------------------------------------------ events

function SendEvent({ onSent }) {
  const [name, setName] = useState("");
  const [text, setText] = useState("{}");
  const [result, setResult] = useState(null);
  const [busy, runBusy] = useBusy();
  const check = parseJsonObject(text);
  const send = (e) => {
    e.preventDefault();
    if (check.error || !name.trim()) return;
    runBusy(async () => {
      try {
        const r = await api("/v1/events", { method: "POST", body: { name: name.trim(), data: check.value } });
        setResult({ text: `Sent: event ${r.ids[0]}` });
        onSent();
      } catch (err) { setResult({ bad: true, text: err.message }); }
    });
  };
  return html`<form class="card" onSubmit=${send} data-testid="send-form">
    <h2 style="margin-top:0">Send an event</h2>
    <label class="field">Name <input value=${name} onInput=${(e) => setName(e.target.value)} placeholder="shop/order.created" size="40" data-testid="send-name" required /></label>
    <${JsonEditor} label="Data" value=${text} onInput=${setText} testid="send-data" />
    ${result && html`<div class=${result.bad ? "notice bad" : "notice"} data-testid="send-result">${result.text}</div>`}
    <button class="primary" type="submit" disabled=${!!check.error || !name.trim() || busy} data-testid="send-submit">Send</button>
  </form>`;
}

// The runs an event started, fetched when its row opens and again as they progress (the live stream).
function EventRuns({ ev }) {
  const [runs, reload] = useLoad(async () => (await api(`/v1/events/${encodeURIComponent(ev.internal_id)}/runs`)).data,
                                 [ev.internal_id]);
  useLive(reload);
  return html`<div data-testid="event-runs">Runs: ${runs.data === null ? (runs.error ? "" : "…")
      : runs.data.length ? runs.data.map((r) => html`<span data-testid="event-run" data-run-id=${r.id}><a class="mono" href=${`#/runs/${r.id}`}>${r.id}</a> <${Badge} status=${r.status} /></span> `)
      : html`<span class="muted">none</span>`}
    ${runs.error && html`<span class="error" data-testid="event-runs-error">Could not load its runs: ${runs.error}</span>
      <button onClick=${(e) => { e.stopPropagation(); reload(); }} data-testid="event-runs-retry">Retry</button>`}</div>`;
}

function EventRow({ ev }) {
  const [open, setOpen] = useState(false);
  return html`<tr class="clickable" onClick=${() => setOpen(!open)} data-testid="event-row" data-event-name=${ev.name}>
      <td><b>${ev.name}</b></td><td class="mono">${ev.id}</td><td>${fmtTime(ev.received_at)}</td></tr>
    ${open && html`<tr><td colspan="3"><pre>${pretty(ev.data)}</pre><${EventRuns} ev=${ev} /></td></tr>`}`;
}

function EventsPage({ query }) {
  const params = new URLSearchParams(query); // in the URL, as the runs list's filters
  const name = params.get("name") || "", q = params.get("q") || "";
  const [paging, setPaging] = useState({ name, q, cursors: [] });
  const cursors = paging.name === name && paging.q === q ? paging.cursors : [];
  const setCursors = (c) => setPaging({ name, q, cursors: c });
  const before = cursors.length ? cursors[cursors.length - 1] : undefined;
  const [events, reload] = useLoad(async () => (await api(`/v1/events${qs({ name, q, limit: 25, before })}`)).data, [name, q, before]);
  useLive(reload);
  return html`<section><h1>Events</h1>
    <${SendEvent} onSent=${reload} />
    <div class="card filters"><label>Name<input value=${name} onChange=${(e) => { location.hash = `#/events${qs({ name: e.target.value.trim(), q })}`; }}
      placeholder="exact event name" data-testid="filter-event-name" /></label>
      <label>Data has<input value=${q} onChange=${(e) => { location.hash = `#/events${qs({ name, q: e.target.value.trim() })}`; }}
      placeholder="text in the payload" data-testid="filter-event-q" /></label></div>
    <table data-testid="events-table"><thead><tr><th>Name</th><th>Id</th><th>Received</th></tr></thead>
      <tbody>${(events.data || []).map((ev) => html`<${EventRow} key=${ev.internal_id + ev.cursor} ev=${ev} />`)}
        ${events.data && !events.data.length && html`<tr><td colspan="3" class="muted">No events${name || q ? " match" : " yet"}.</td></tr>`}</tbody></table>
    <div class="pager">
      <button disabled=${!cursors.length} onClick=${() => setCursors(cursors.slice(0, -1))}>← Newer</button>
      <button disabled=${!events.data || events.data.length < 25} onClick=${() => setCursors([...cursors, events.data[events.data.length - 1].cursor])}>Older →</button>
    </div></section>`;
}

// ------------------------------------------------------------------------------------------------ functions and apps

const FLOW_KEYS = ["concurrency", "throttle", "rateLimit", "debounce", "batchEvents", "priority", "idempotency",
                   "singleton", "cancel", "timeouts"];

function InvokeDialog({ fn, onClose }) {
  const [text, setText] = useState("{}");
  const [err, setErr] = useState(null);
  const [busy, runBusy] = useBusy();
  const check = parseJsonObject(text);
  const invoke = () => runBusy(async () => {
    if (check.error) return;
    try {
      const r = await api(`/v1/functions/${encodeURIComponent(fn.id)}/invoke`, { method: "POST", body: { data: check.value } });
      onClose();
      location.hash = `#/runs/${r.data.run_id}`;
    } catch (e) { setErr(e.message); }
  });
  return html`<${Dialog} title=${`Invoke ${fn.name}`} onClose=${onClose}>
    <${JsonEditor} label="Payload (event data)" value=${text} onInput=${setText} testid="invoke-data" />
    ${err && html`<div class="notice bad">${err}</div>`}
    <div class="row"><button class="primary" onClick=${invoke} disabled=${!!check.error || busy} data-testid="invoke-confirm">Invoke</button>
    <button onClick=${onClose}>Cancel</button></div></${Dialog}>`;
}

function FunctionsPage() {
  const [state] = useLoad(async () => ({ functions: (await api("/v1/functions")).data, apps: (await api("/v1/apps")).data }), []);
  const [invoke, setInvoke] = useState(null);
  if (!state.data) return html`<p class="loading">${state.error || "Loading…"}</p>`;
  const appName = (id) => state.data.apps.find((a) => a.id === id)?.name || id;
  return html`<section><h1>Functions</h1>
    <table data-testid="functions-table"><thead><tr><th>Function</th><th>App</th><th>Triggers</th><th>Flow control</th><th></th></tr></thead>
    <tbody>${state.data.functions.map((f) => html`<tr data-testid="function-row" data-function-id=${f.id}>
      <td><b>${f.name}</b><div class="muted mono">${f.id}</div>
        <a href=${runsHash({ ...NO_FILTERS, function_id: f.id })} data-testid="function-runs">Runs →</a></td><td>${appName(f.app_id)}</td>
      <td>${(f.config.triggers || []).map((t) => html`<div>${t.event ? html`event <code>${t.event}</code>${t.expression ? html` if <code>${t.expression}</code>` : ""}`
          : html`cron <code>${t.cron}</code>`}</div>`)}
        ${(f.cron || []).map((c) => html`<div class="muted" data-testid="next-fire">next: ${fmtTime(c.next_at)}</div>`)}</td>
      <td>${FLOW_KEYS.filter((k) => f.config[k] !== undefined).map((k) => html`<div><span class="muted">${k}</span> <code>${JSON.stringify(f.config[k])}</code></div>`)}</td>
      <td><button onClick=${() => setInvoke(f)} data-testid="invoke">Invoke…</button></td></tr>`)}</tbody></table>
    ${invoke && html`<${InvokeDialog} fn=${invoke} onClose=${() => setInvoke(null)} />`}
  </section>`;
}

function AppsPage() {
  const [state, reload] = useLoad(async () => (await api("/v1/apps")).data, []);
  const [msg, setMsg] = useState(null);
  const [syncing, runSync] = useBusy();
  const [newUrl, setNewUrl] = useState("");
  const sync = (url, name) => runSync(async () => {
    try {
      await api("/v1/apps/sync", { method: "POST", body: { url } });
      setMsg({ text: `Synced ${name}.` });
    } catch (e) { setMsg({ bad: true, text: e.message }); }
    reload();
  });
  const resync = (app) => sync(app.url, app.name);
  const urlOk = /^https?:\/\/\S+$/.test(newUrl.trim());
  return html`<section><h1>Apps</h1>
    <div class="row"><input class="grow" placeholder="An app's URL, e.g. http://localhost:3000/api/inngest" value=${newUrl}
        onInput=${(e) => setNewUrl(e.target.value)} data-testid="sync-url" />
      <button class="primary" disabled=${!urlOk || syncing} onClick=${() => sync(newUrl.trim(), newUrl.trim())}
        data-testid="sync-new">Sync app</button></div>
    ${newUrl.trim() && !urlOk && html`<div class="error" data-testid="sync-url-error">An app's URL starts with http:// or https://</div>`}
    ${msg && html`<div class=${msg.bad ? "notice bad" : "notice"} data-testid="sync-result">${msg.text}</div>`}
    <table data-testid="apps-table"><thead><tr><th>App</th><th>URL</th><th>SDK</th><th>Functions</th><th>Synced</th><th>Last error</th><th></th></tr></thead>
    <tbody>${(state.data || []).map((a) => html`<tr data-testid="app-row">
      <td><b>${a.name}</b></td><td class="mono">${a.url}</td><td>${a.sdk} ${a.framework ? `(${a.framework})` : ""}</td>
      <td>${a.function_count}</td><td>${fmtTime(a.synced_at)}</td><td class="error">${a.error || ""}</td>
      <td><button onClick=${() => resync(a)} disabled=${syncing} data-testid="resync">Re-sync</button></td></tr>`)}</tbody></table>
  </section>`;
}

function DeadLettersPage() {
  const [state, reload] = useLoad(async () => (await api("/v1/dead-letters")).data, []);
  useLive(reload);
  return html`<section><h1>Dead letters</h1>
    <p class="muted">Queue items the engine gave up on after repeated failures; their runs failed with the reason.</p>
    <table><thead><tr><th>When</th><th>Run</th><th>Kind</th><th>Failures</th><th>Reason</th></tr></thead>
    <tbody>${(state.data || []).map((d) => html`<tr><td>${fmtTime(d.created_at)}</td>
      <td class="mono"><a href=${`#/runs/${d.run_id}`}>${d.run_id}</a></td><td>${d.kind}</td><td>${d.failures}</td><td>${d.reason}</td></tr>`)}
      ${state.data && !state.data.length && html`<tr><td colspan="5" class="muted">None.</td></tr>`}</tbody></table></section>`;
}

// ------------------------------------------------------------------------------------------------ shell

function useHash() {
  const [hash, setHash] = useState(location.hash || "#/runs");
  useEffect(() => {
    const f = () => setHash(location.hash || "#/runs");
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return hash;
}

function App() {
  const hash = useHash();
  const live = useLiveState();
  const [info] = useLoad(async () => (await api("/v1/info")).data, []);
  const route = hash.replace(/^#\/?/, "");
  const q = route.indexOf("?");
  const parts = (q < 0 ? route : route.slice(0, q)).split("/");
  const query = q < 0 ? "" : route.slice(q + 1);
  let page;
  if (parts[0] === "runs" && parts[1]) page = html`<${RunPage} key=${parts[1]} id=${decodeURIComponent(parts[1])} />`;
  else if (parts[0] === "events") page = html`<${EventsPage} query=${query} />`;
  else if (parts[0] === "functions") page = html`<${FunctionsPage} />`;
  else if (parts[0] === "apps") page = html`<${AppsPage} />`;
  else if (parts[0] === "dead-letters") page = html`<${DeadLettersPage} />`;
  else page = html`<${RunsPage} query=${query} />`;
  const link = (name, label) => html`<a href=${`#/${name}`} class=${parts[0] === name ? "active" : ""}>${label}</a>`;
  return html`<header class="top"><span class="brand">Ratchet</span>
      <nav>${link("runs", "Runs")}${link("events", "Events")}${link("functions", "Functions")}${link("apps", "Apps")}${link("dead-letters", "Dead letters")}</nav>
      <span class="spacer"></span><span class=${`live ${live === "live" ? "on" : ""}`} data-testid="live">${live}</span>
      ${info.data?.mode === "production" && html`<form method="post" action="/logout"><button type="submit" data-testid="logout">Log out</button></form>`}</header>
    <main>${page}</main>`;
}

startLive();
const root = document.getElementById("root");
root.textContent = "";
render(html`<${App} />`, root);
