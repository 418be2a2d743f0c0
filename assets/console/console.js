// Switchboard console: the core — API client, session, router, DOM and form
// helpers. Pages register themselves in SB.pages (pages.js, calls.js,
// talk.js). Plain JavaScript over the public API; nothing is loaded from
// anywhere but this server. Text from the API is always set as text, never
// parsed as HTML.
"use strict";

const SB = (window.SB = {
  pages: {},
  state: { token: null, me: null, ws: null, role: null },
  // Work a page started (timers, streams, calls) that must stop when the
  // page is left: functions run on the next navigation.
  cleanups: [],
});

const ROLES = { VIEWER: 1, MANAGER: 2, OWNER: 3 };

class ApiError extends Error {
  constructor(status, body) {
    const msg = (body && body.error && (body.error.message || body.error.code)) || "HTTP " + status;
    const field = body && body.error && body.error.field;
    super(field ? field + ": " + msg : msg);
    this.status = status;
    this.body = body;
  }
}
SB.ApiError = ApiError;

/// JSON request with the session's token. `opts.raw`: the Response itself.
SB.api = async function (method, path, body, opts) {
  opts = opts || {};
  const headers = { Authorization: "Bearer " + SB.state.token };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method: method, headers: headers, body: payload, signal: opts.signal });
  if (r.status === 401 && SB.state.token) {
    SB.logout("Your session has ended; sign in again.");
    throw new ApiError(401, null);
  }
  if (opts.raw) {
    if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
    return r;
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = { raw: text }; }
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
};

/// `/v1/workspaces/<current>/<rest>`
SB.wsPath = (rest) => "/v1/workspaces/" + SB.state.ws + "/" + rest;
SB.can = (role) => (ROLES[SB.state.role] || 0) >= ROLES[role];

/// Every page of a list (the API caps a page at 200 rows).
SB.all = async function (rest, query) {
  const out = [];
  for (let offset = 0; offset < 10000; offset += 200) {
    const sep = rest.includes("?") ? "&" : "?";
    const page = await SB.api("GET", SB.wsPath(rest) + sep + "limit=200&offset=" + offset + (query || ""));
    const items = page.items || [];
    out.push(...items);
    if (items.length < 200) break;
  }
  return out;
};

// ───────────────────────────── DOM helpers ─────────────────────────────

/// h("div", {class: "x", onclick: f}, "text", child, …): an element.
function h(tag, attrs) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
  }
  for (let i = 2; i < arguments.length; i++) append(el, arguments[i]);
  return el;
}
function append(el, child) {
  if (child === undefined || child === null || child === false) return;
  if (Array.isArray(child)) child.forEach((c) => append(el, c));
  else if (child instanceof Node) el.appendChild(child);
  else el.appendChild(document.createTextNode(String(child)));
}
SB.h = h;
/// Replaces an element's children (arrays flattened, null/false skipped).
SB.fill = function (el) {
  el.replaceChildren();
  for (let i = 1; i < arguments.length; i++) append(el, arguments[i]);
  return el;
};

SB.flash = function (message, kind) {
  const box = document.getElementById("flash");
  const item = h("div", { class: kind || "" }, message);
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 3500);
};

/// Runs an action, reporting its failure on screen (never as an uncaught error).
SB.attempt = async function (fn, okMessage) {
  try {
    const out = await fn();
    if (okMessage) SB.flash(okMessage);
    return out;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) SB.flash(e.message || String(e), "error");
    return undefined;
  }
};

SB.badge = (text) => h("span", { class: "badge " + String(text || "").replace(/[^a-z_]/gi, "") }, text || "—");
SB.when = (t) => (t ? new Date(t).toLocaleString() : "—");
SB.seconds = (ms) => (ms === null || ms === undefined ? "—" : (ms / 1000).toFixed(1) + " s");

/// A table: columns [{label, value: row => node|text}], click → onRow(row).
SB.table = function (rows, columns, onRow, emptyText) {
  if (!rows.length) return h("p", { class: "muted" }, emptyText || "Nothing yet.");
  return h(
    "table",
    null,
    h("thead", null, h("tr", null, columns.map((c) => h("th", null, c.label)))),
    h(
      "tbody",
      null,
      rows.map((r) =>
        h(
          "tr",
          { class: onRow ? "clickable" : null, onclick: onRow ? () => onRow(r) : null },
          columns.map((c) => h("td", null, c.value(r)))
        )
      )
    )
  );
};

// ───────────────────────────── forms ─────────────────────────────
// Field specs: {name, label, type: text|textarea|number|select|bool|list|
// secret|color, options: [values] or [[value, label]], help, required}.

SB.form = function (fields, values, opts) {
  opts = opts || {};
  const editable = opts.editable !== false;
  const inputs = {};
  const form = h("form", { class: "grid", onsubmit: (e) => e.preventDefault() });
  for (const f of fields) {
    const v = values ? values[f.name] : undefined;
    const id = "f-" + (opts.prefix || "") + f.name;
    let input;
    if (f.type === "textarea") {
      input = h("textarea", { id: id, name: f.name, rows: f.rows || 3 });
      input.value = v == null ? "" : v;
    } else if (f.type === "select") {
      input = h("select", { id: id, name: f.name });
      const opts2 = (f.options || []).map((o) => (Array.isArray(o) ? o : [o, o]));
      if (f.nullable) input.appendChild(h("option", { value: "" }, "— none —"));
      for (const [val, label] of opts2) input.appendChild(h("option", { value: val }, label));
      input.value = v == null ? (f.nullable ? "" : opts2.length ? opts2[0][0] : "") : String(v);
    } else if (f.type === "bool") {
      input = h("input", { id: id, name: f.name, type: "checkbox" });
      input.checked = !!v;
    } else if (f.type === "secret") {
      const set = values && values[f.name + "_set"];
      input = h("input", { id: id, name: f.name, type: "password", autocomplete: "new-password",
        placeholder: set ? "set (leave empty to keep)" : "not set" });
    } else {
      const type = f.type === "number" ? "number" : f.type === "color" ? "color" : "text";
      input = h("input", { id: id, name: f.name, type: type, step: f.step || (f.type === "number" ? "any" : null) });
      if (f.type === "list") input.value = Array.isArray(v) ? v.join(", ") : "";
      else if (f.type === "color") input.value = v || "#2563eb";
      else input.value = v == null ? "" : v;
    }
    if (!editable || f.readonly) input.disabled = true;
    inputs[f.name] = input;
    form.appendChild(h("label", { for: id }, f.label || f.name));
    form.appendChild(f.help ? h("div", null, input, h("div", { class: "muted small" }, f.help)) : input);
  }
  /// The body to send: empty optional text → null, lists split on commas,
  /// secrets only when typed, numbers as numbers.
  function body(onlyChanged) {
    const out = {};
    for (const f of fields) {
      if (f.readonly) continue;
      const input = inputs[f.name];
      let v;
      if (f.type === "bool") v = input.checked;
      else if (f.type === "number") v = input.value === "" ? null : Number(input.value);
      else if (f.type === "list") v = input.value.split(",").map((s) => s.trim()).filter(Boolean);
      else if (f.type === "secret") { if (!input.value) continue; v = input.value; }
      else v = input.value === "" ? null : input.value;
      if (v === null && f.notNull) continue;
      if (onlyChanged && values && JSON.stringify(values[f.name]) === JSON.stringify(v)) continue;
      out[f.name] = v;
    }
    return out;
  }
  return { el: form, inputs: inputs, body: body };
};

/// A card that edits one row of a generic resource: create (POST) when
/// `row` is null, else PATCH; DELETE when allowed. `after` runs on success.
SB.editor = function (title, resource, fields, row, after, extra) {
  const editable = SB.can("MANAGER");
  const form = SB.form(fields, row || {}, { editable: editable, prefix: resource + "-" });
  const save = h("button", { type: "button" }, row ? "Save" : "Create");
  save.addEventListener("click", () =>
    SB.attempt(async () => {
      const out = row
        ? await SB.api("PATCH", SB.wsPath(resource + "/" + row.id), form.body(true))
        : await SB.api("POST", SB.wsPath(resource), form.body(false));
      if (after) after(out);
    }, row ? "Saved." : "Created.")
  );
  const del = row
    ? h("button", { type: "button", class: "danger" }, "Delete")
    : null;
  if (del)
    del.addEventListener("click", () => {
      if (!confirm("Delete " + (row.name || row.e164 || row.id) + "?")) return;
      SB.attempt(async () => {
        await SB.api("DELETE", SB.wsPath(resource + "/" + row.id));
        if (after) after(null);
      }, "Deleted.");
    });
  return h(
    "div",
    { class: "card", "data-editor": resource },
    h("h2", null, title),
    form.el,
    editable ? h("div", { class: "actions" }, save, del, extra) : h("div", { class: "actions" }, extra),
    editable ? null : h("p", { class: "muted small" }, "Your role (" + SB.state.role + ") can view but not change this.")
  );
};

// ───────────────────────────── session ─────────────────────────────

SB.logout = function (message) {
  SB.state.token = null;
  SB.state.me = null;
  sessionStorage.removeItem("sb_token");
  location.hash = "#/login";
  if (message) SB.flash(message, "error");
};

async function loadSession() {
  const me = await SB.api("GET", "/v1/me");
  SB.state.me = me;
  const list = me.kind === "api_key"
    ? [{ id: me.workspace_id, name: "API key workspace", role: me.role }]
    : me.workspaces || [];
  if (!list.length) throw new Error("This account belongs to no workspace.");
  const saved = sessionStorage.getItem("sb_ws");
  const current = list.find((w) => w.id === saved) || list[0];
  SB.state.ws = current.id;
  SB.state.role = current.role;
  SB.state.workspaces = list;
  drawSession();
}

function drawSession() {
  const box = document.getElementById("session");
  box.replaceChildren();
  document.getElementById("nav").hidden = !SB.state.token;
  if (!SB.state.token || !SB.state.me) return;
  const select = h("select", { id: "workspace", "aria-label": "Workspace" });
  for (const w of SB.state.workspaces) select.appendChild(h("option", { value: w.id }, w.name));
  select.value = SB.state.ws;
  select.addEventListener("change", () => {
    const w = SB.state.workspaces.find((x) => x.id === select.value);
    SB.state.ws = w.id;
    SB.state.role = w.role;
    sessionStorage.setItem("sb_ws", w.id);
    drawSession();
    route();
  });
  const logout = h("button", { type: "button", class: "secondary", id: "logout" }, "Sign out");
  logout.addEventListener("click", () => SB.logout());
  box.append(
    select,
    h("span", { class: "badge", id: "role" }, SB.state.role),
    h("span", { class: "small" }, SB.state.me.email || "API key"),
    logout
  );
}

SB.pages.login = function (main) {
  const email = h("input", { type: "email", id: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", id: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "muted", id: "login-error" });
  const submit = h("button", { type: "submit", id: "login-submit" }, "Sign in");
  const form = h(
    "form",
    { class: "grid" },
    h("label", { for: "email" }, "Email"), email,
    h("label", { for: "password" }, "Password"), password,
    h("div", { class: "full actions" }, submit)
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      const r = await fetch("/v1/auth/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ email: email.value, password: password.value }),
      });
      const body = await r.json().catch(() => null);
      if (!r.ok) throw new ApiError(r.status, body);
      SB.state.token = body.access_token;
      sessionStorage.setItem("sb_token", SB.state.token);
      await loadSession();
      location.hash = "#/agents";
    } catch (err) {
      error.textContent = err.status === 401 ? "Wrong email or password." : err.message;
      SB.state.token = null;
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h("div", { class: "card login" }, h("h1", null, "Sign in"), form, error));
};

// ───────────────────────────── router ─────────────────────────────

async function route() {
  while (SB.cleanups.length) {
    try { SB.cleanups.pop()(); } catch (e) { /* a page's own cleanup failing must not stop navigation */ }
  }
  const [name, arg] = (location.hash.replace(/^#\/?/, "") || "agents").split("/");
  const main = document.getElementById("main");
  main.replaceChildren();
  if (!SB.state.token && name !== "login") {
    location.hash = "#/login";
    return;
  }
  for (const a of document.querySelectorAll("nav#nav a"))
    a.classList.toggle("active", a.dataset.page === name);
  const page = SB.pages[name] || SB.pages.agents;
  main.dataset.page = SB.pages[name] ? name : "agents";
  main.dataset.ready = "false";
  // Each navigation draws into its own element: a page still loading when
  // the user moves on finishes into a detached element, not over the next.
  const seq = (SB.seq = (SB.seq || 0) + 1);
  const view = h("div", { class: "view" });
  main.append(view);
  try {
    await page(view, arg ? decodeURIComponent(arg) : undefined);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      view.append(h("div", { class: "card" }, h("p", null, "This page could not load: " + (e.message || e))));
    }
  }
  if (seq === SB.seq) main.dataset.ready = "true";
}
SB.route = route;

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  SB.state.token = sessionStorage.getItem("sb_token");
  if (SB.state.token) {
    try { await loadSession(); } catch (e) { SB.state.token = null; sessionStorage.removeItem("sb_token"); }
  }
  drawSession();
  route();
});
