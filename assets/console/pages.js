// Switchboard console: configuration pages — agents (with voice preview and
// the web widget), personas, knowledge (ingestion with progress, "test a
// question"), trunks and numbers, usage against the plan.
"use strict";
(function () {
  const { h } = SB;

  const AGENT_FIELDS = (personas) => [
    { name: "name", label: "Name", required: true },
    { name: "description", label: "Description", type: "textarea", rows: 2 },
    { name: "status", label: "Status", type: "select", options: ["draft", "live"], help: "Only live agents take calls." },
    { name: "domain", label: "Domain", type: "select", options: ["healthcare", "retail", "finance", "realestate", "hospitality", "other"] },
    { name: "persona_id", label: "Persona", type: "select", nullable: true, options: personas.map((p) => [p.id, p.name]) },
    { name: "instructions", label: "Instructions", type: "textarea", rows: 4 },
    { name: "tts_provider", label: "Voice engine", type: "select", options: ["piper", "espeak", "openai", "elevenlabs"] },
    { name: "tts_voice", label: "Voice", help: "Engine's voice name (Piper: en_US-joe-medium; OpenAI: alloy, …)" },
    { name: "tts_speed", label: "Speed", type: "number", step: "0.05", notNull: true },
    { name: "stt_provider", label: "Speech-to-text", type: "select", options: ["whisper", "openai", "groq", "deepgram"] },
    { name: "stt_language", label: "Language", help: "e.g. en; empty: automatic" },
    { name: "interruptible", label: "Caller can interrupt", type: "bool" },
    { name: "recording_enabled", label: "Record calls", type: "bool" },
    { name: "silence_timeout_ms", label: "Silence timeout (ms)", type: "number", notNull: true },
    { name: "max_call_seconds", label: "Longest call (s)", type: "number", notNull: true },
    { name: "transfer_to", label: "Transfer to", help: "E.164 number or sip: URI of a person" },
  ];

  // ─────────────── agents ───────────────
  SB.pages.agents = async function (main, id) {
    if (id) return agentPage(main, id);
    const [agents, personas] = await Promise.all([SB.all("agents"), SB.all("personas")]);
    const byId = Object.fromEntries(personas.map((p) => [p.id, p.name]));
    main.append(
      h("h1", null, "Agents"),
      h("div", { class: "card" },
        SB.table(agents, [
          { label: "Name", value: (a) => a.name },
          { label: "Status", value: (a) => SB.badge(a.status) },
          { label: "Persona", value: (a) => byId[a.persona_id] || "—" },
          { label: "Voice", value: (a) => a.tts_provider + (a.tts_voice ? " · " + a.tts_voice : "") },
          { label: "Updated", value: (a) => SB.when(a.updated_at) },
        ], (a) => (location.hash = "#/agents/" + a.id), "No agents yet.")),
      SB.can("MANAGER")
        ? SB.editor("New agent", "agents", AGENT_FIELDS(personas).slice(0, 6), null, (a) => (location.hash = "#/agents/" + a.id))
        : null
    );
  };

  async function agentPage(main, id) {
    const [agent, personas, widgets] = await Promise.all([
      SB.api("GET", SB.wsPath("agents/" + id)),
      SB.all("personas"),
      SB.all("web-widgets", "&agent_id=" + id),
    ]);
    const preview = voicePreview(agent);
    const talk = h("a", { href: "#/talk/" + agent.id }, h("button", { type: "button", class: "secondary" }, "Talk to this agent"));
    main.append(
      h("h1", null, agent.name, " ", SB.badge(agent.status)),
      h("div", { class: "row" },
        SB.editor("Agent", "agents", AGENT_FIELDS(personas), agent, (a) => {
          if (a) SB.route(); else location.hash = "#/agents";
        }, talk),
        h("div", null, preview, await widgetCard(agent, widgets[0])))
    );
  }

  /// Plays the agent's voice as calls would speak it (POST …/tts-preview).
  function voicePreview(agent) {
    const text = h("input", { type: "text", id: "preview-text", placeholder: "Text (default: the persona's greeting)" });
    const audio = h("audio", { controls: true, id: "preview-audio" });
    const button = h("button", { type: "button", id: "preview-play" }, "Hear the voice");
    const status = h("p", { class: "muted small" });
    button.addEventListener("click", () =>
      SB.attempt(async () => {
        button.disabled = true;
        status.textContent = "Synthesising…";
        try {
          const body = {};
          if (text.value.trim()) body.text = text.value.trim();
          // Unsaved edits of the voice are heard before saving them.
          for (const k of ["tts_provider", "tts_voice", "tts_speed"]) {
            const input = document.getElementById("f-agents-" + k);
            if (input && input.value !== "") body[k] = k === "tts_speed" ? Number(input.value) : input.value;
          }
          const r = await SB.api("POST", SB.wsPath("agents/" + agent.id + "/tts-preview"), body, { raw: true });
          const blob = await r.blob();
          if (audio.src) URL.revokeObjectURL(audio.src);
          audio.src = URL.createObjectURL(blob);
          status.textContent = "Ready (" + Math.round(blob.size / 1024) + " KB).";
          await audio.play().catch(() => { status.textContent += " Press play to listen."; });
        } finally {
          button.disabled = false;
        }
      })
    );
    return h("div", { class: "card" }, h("h2", null, "Voice preview"), text, h("div", { class: "actions" }, button), audio, status);
  }

  /// The agent's web widget: look, allowed domains, public key and snippet.
  async function widgetCard(agent, widget) {
    const fields = [
      { name: "primary_color", label: "Colour", type: "color" },
      { name: "position", label: "Position", type: "select", options: ["bottom-right", "bottom-left", "top-right", "top-left"] },
      { name: "welcome_message", label: "Welcome message", type: "textarea", rows: 2 },
      { name: "allowed_domains", label: "Allowed domains", type: "list",
        help: "Comma-separated: https origins or hosts (shop.example.com, *.example.com, http://127.0.0.1:8000)" },
    ];
    const card = h("div", { class: "card", id: "widget-card" }, h("h2", null, "Web widget"));
    const form = SB.form(fields, widget || { position: "bottom-right", allowed_domains: [] }, { editable: SB.can("MANAGER"), prefix: "widget-" });
    card.append(form.el);
    if (!SB.can("MANAGER")) {
      card.append(h("p", { class: "muted small" }, widget ? "The public key and snippet are shown to managers." : "No widget yet."));
      return card;
    }
    const save = h("button", { type: "button", id: "widget-save" }, widget ? "Save widget" : "Create widget");
    save.addEventListener("click", () =>
      SB.attempt(async () => {
        if (widget) await SB.api("PATCH", SB.wsPath("web-widgets/" + widget.id), form.body(true));
        else await SB.api("POST", SB.wsPath("web-widgets"), Object.assign({ agent_id: agent.id }, form.body(false)));
        SB.route();
      }, "Widget saved.")
    );
    card.append(h("div", { class: "actions" }, save));
    if (!widget) return card;
    const key = await SB.api("GET", SB.wsPath("web-widgets/" + widget.id + "/public-key"));
    const snippet = '<script src="' + location.origin + '/widget.js" data-agent="' + agent.id +
      '" data-key="' + key.public_key + '"></script>';
    const rotate = h("button", { type: "button", class: "secondary", id: "widget-rotate" }, "Rotate key");
    rotate.addEventListener("click", () => {
      if (!confirm("Pages with the old key stop working at once. Rotate?")) return;
      SB.attempt(async () => {
        await SB.api("POST", SB.wsPath("web-widgets/" + widget.id + "/public-key"));
        SB.route();
      }, "New key made.");
    });
    card.append(
      h("h2", null, "Public key"),
      h("pre", { id: "widget-key" }, key.public_key),
      h("p", { class: "muted small" }, "Paste into your site:"),
      h("pre", { id: "widget-snippet" }, snippet),
      h("div", { class: "actions" }, rotate)
    );
    return card;
  }

  // ─────────────── personas ───────────────
  const PERSONA_FIELDS = [
    { name: "name", label: "Name" },
    { name: "tone", label: "Tone", type: "select", options: ["professional", "friendly", "casual", "formal"] },
    { name: "greeting", label: "Greeting", type: "textarea", rows: 2 },
    { name: "fallback_message", label: "Fallback message", type: "textarea", rows: 2 },
    { name: "escalation_policy", label: "Escalation", type: "select", options: ["apologize", "escalate", "retry", "transfer"] },
    { name: "instructions", label: "Instructions", type: "textarea", rows: 4 },
  ];

  SB.pages.personas = async function (main, id) {
    const personas = await SB.all("personas");
    const selected = personas.find((p) => p.id === id);
    main.append(
      h("h1", null, "Personas"),
      h("div", { class: "row" },
        h("div", { class: "card" }, SB.table(personas, [
          { label: "Name", value: (p) => p.name },
          { label: "Tone", value: (p) => p.tone },
          { label: "Greeting", value: (p) => p.greeting || "—" },
        ], (p) => (location.hash = "#/personas/" + p.id), "No personas yet.")),
        selected
          ? SB.editor("Persona: " + selected.name, "personas", PERSONA_FIELDS, selected, () => (location.hash = "#/personas"))
          : SB.can("MANAGER")
            ? SB.editor("New persona", "personas", PERSONA_FIELDS, null, (p) => (location.hash = "#/personas/" + p.id))
            : null)
    );
  };

  // ─────────────── knowledge ───────────────
  SB.pages.knowledge = async function (main) {
    const [sources, agents] = await Promise.all([SB.all("knowledge"), SB.all("agents")]);
    const agentName = Object.fromEntries(agents.map((a) => [a.id, a.name]));
    const list = h("div", { class: "card", id: "sources" }, h("h2", null, "Sources"),
      SB.table(sources, [
        { label: "Name", value: (s) => s.name },
        { label: "Type", value: (s) => s.type },
        { label: "Agent", value: (s) => (s.agent_id ? agentName[s.agent_id] || s.agent_id : "whole workspace") },
        { label: "Status", value: (s) => h("span", null, SB.badge(s.status), s.error ? h("div", { class: "small muted" }, s.error) : null) },
        { label: "Chunks", value: (s) => String(s.chunk_count == null ? "—" : s.chunk_count) },
        { label: "", value: (s) => (SB.can("MANAGER") ? deleteButton(s) : "") },
      ], null, "No knowledge yet."));
    main.append(h("h1", null, "Knowledge"), h("div", { class: "row" }, SB.can("MANAGER") ? uploadCard(agents) : null, testCard(agents)), list);
  }

  function deleteButton(s) {
    const b = h("button", { type: "button", class: "secondary small" }, "Delete");
    b.addEventListener("click", () => {
      if (!confirm("Delete " + s.name + " and its chunks?")) return;
      SB.attempt(async () => { await SB.api("DELETE", SB.wsPath("knowledge/" + s.id)); SB.route(); }, "Deleted.");
    });
    return b;
  }

  function uploadCard(agents) {
    const type = h("select", { id: "k-type" }, ["TEXT", "FAQ", "URL", "PDF"].map((t) => h("option", { value: t }, t)));
    const agent = h("select", { id: "k-agent" }, h("option", { value: "" }, "whole workspace"), agents.map((a) => h("option", { value: a.id }, a.name)));
    const name = h("input", { type: "text", id: "k-name", placeholder: "Opening hours" });
    const text = h("textarea", { id: "k-content", rows: 5, placeholder: "Text of the source" });
    const faq = h("textarea", { id: "k-faq", rows: 5, placeholder: "Q: When do you open?\nA: At nine.\n\nQ: …" });
    const url = h("input", { type: "url", id: "k-url", placeholder: "https://example.com/faq" });
    const file = h("input", { type: "file", id: "k-file", accept: "application/pdf,.pdf" });
    const bar = h("div", { class: "progress", id: "k-progress", hidden: true }, h("div"));
    const status = h("p", { class: "muted small", id: "k-status" });
    const go = h("button", { type: "button", id: "k-submit" }, "Add source");
    const rows = { TEXT: text, FAQ: faq, URL: url, PDF: file };
    const holders = {};
    const form = h("form", { class: "grid", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "k-name" }, "Name"), name,
      h("label", { for: "k-type" }, "Type"), type,
      h("label", { for: "k-agent" }, "Agent"), agent);
    for (const [t, el] of Object.entries(rows)) {
      holders[t] = [h("label", null, t === "PDF" ? "PDF file" : t === "FAQ" ? "Questions" : t === "URL" ? "URL" : "Text"), el];
      form.append(...holders[t]);
    }
    const show = () => { for (const [t, els] of Object.entries(holders)) els.forEach((e) => (e.hidden = t !== type.value)); };
    type.addEventListener("change", show);
    show();
    go.addEventListener("click", async () => {
      let body;
      try { body = await sourceBody(type.value, name.value, agent.value, text, faq, url, file); }
      catch (e) { SB.flash(e.message, "error"); return; }
      go.disabled = true;
      try {
        await ingest(body, bar, status);
        SB.flash("Source ready.");
        SB.route();
      } catch (e) {
        status.textContent = e.message;
        SB.flash(e.message, "error");
      } finally {
        go.disabled = false;
      }
    });
    return h("div", { class: "card", id: "upload" }, h("h2", null, "Add knowledge"), form, h("div", { class: "actions" }, go), bar, status);
  }

  async function sourceBody(type, name, agentId, text, faq, url, file) {
    const body = { name: name.trim() || type + " source", type: type };
    if (agentId) body.agent_id = agentId;
    if (type === "TEXT") body.content = text.value;
    if (type === "URL") body.url = url.value.trim();
    if (type === "FAQ") body.faqs = parseFaq(faq.value);
    if (type === "PDF") {
      if (!file.files.length) throw new Error("Choose a PDF file.");
      body.content_base64 = await fileBase64(file.files[0]);
    }
    return body;
  }

  /// "Q: …\nA: …" blocks into [{question, answer}].
  function parseFaq(text) {
    const pairs = [];
    let q = null;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (/^q[:.]/i.test(line)) q = line.slice(2).trim();
      else if (/^a[:.]/i.test(line) && q) { pairs.push({ question: q, answer: line.slice(2).trim() }); q = null; }
      else if (line && pairs.length && q === null) pairs[pairs.length - 1].answer += " " + line;
    }
    if (!pairs.length) throw new Error("Write the FAQ as lines 'Q: …' followed by 'A: …'.");
    return pairs;
  }

  function fileBase64(f) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
      r.onerror = () => reject(new Error("The file could not be read."));
      r.readAsDataURL(f);
    });
  }

  /// POST the source with upload progress; the server answers once the
  /// source is ingested (ready or failed), so the bar turns to "processing"
  /// when the upload is done and the row's status is shown meanwhile.
  function ingest(body, bar, status) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const fill = bar.firstChild;
      bar.hidden = false;
      bar.classList.remove("indeterminate");
      fill.style.width = "0%";
      status.textContent = "Uploading…";
      xhr.open("POST", SB.wsPath("knowledge"));
      xhr.setRequestHeader("Authorization", "Bearer " + SB.state.token);
      xhr.setRequestHeader("Content-Type", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) fill.style.width = Math.round((100 * e.loaded) / e.total) + "%";
      });
      xhr.upload.addEventListener("load", () => {
        fill.style.width = "";
        bar.classList.add("indeterminate");
        status.textContent = "Processing: extracting, chunking and embedding…";
      });
      xhr.addEventListener("load", () => {
        bar.classList.remove("indeterminate");
        fill.style.width = "100%";
        let out = null;
        try { out = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 201 && out && out.status === "ready") {
          status.textContent = "Ready: " + out.chunk_count + " chunks.";
          resolve(out);
        } else if (xhr.status === 201) {
          reject(new Error("The source failed: " + ((out && out.error) || "unknown reason")));
        } else {
          reject(new SB.ApiError(xhr.status, out));
        }
      });
      xhr.addEventListener("error", () => reject(new Error("The upload failed (network).")));
      xhr.send(JSON.stringify(body));
    });
  }

  /// What retrieval returns for a question, as a call would rank it.
  function testCard(agents) {
    const agent = h("select", { id: "q-agent" }, agents.map((a) => h("option", { value: a.id }, a.name)));
    const q = h("input", { type: "text", id: "q-text", placeholder: "What time do you open on Saturday?" });
    const out = h("div", { id: "q-results" });
    const ask = h("button", { type: "button", id: "q-ask" }, "Test");
    const run = () =>
      SB.attempt(async () => {
        if (!agent.value || !q.value.trim()) return;
        ask.disabled = true;
        try {
          const r = await SB.api("POST", SB.wsPath("agents/" + agent.value + "/knowledge/search"), { query: q.value.trim(), limit: 5 });
          SB.fill(out,
            r.items.length
              ? r.items.map((c, i) => h("div", { class: "result" },
                  h("div", { class: "small muted" }, "#" + (i + 1) + " · score " + c.score.toFixed(3) +
                    " (text " + (c.text_score == null ? "—" : c.text_score.toFixed(3)) +
                    ", vector " + (c.vector_score == null ? "—" : c.vector_score.toFixed(3)) + ")"),
                  h("div", null, c.content)))
              : h("p", { class: "muted" }, "Nothing relevant: a call would get the persona's fallback line.")
          );
        } finally {
          ask.disabled = false;
        }
      });
    ask.addEventListener("click", run);
    q.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); run(); } });
    return h("div", { class: "card", id: "test-question" }, h("h2", null, "Test a question"),
      h("form", { class: "grid", onsubmit: (e) => e.preventDefault() },
        h("label", { for: "q-agent" }, "Agent"), agent, h("label", { for: "q-text" }, "Question"), q),
      h("div", { class: "actions" }, ask), out);
  }

  // ─────────────── trunks and numbers ───────────────
  const TRUNK_FIELDS = [
    { name: "name", label: "Name" },
    { name: "provider", label: "Provider", type: "select", options: ["generic", "twilio", "telnyx"] },
    { name: "direction", label: "Direction", type: "select", options: ["both", "inbound", "outbound"] },
    { name: "inbound_cidrs", label: "Inbound sources", type: "list", help: "CIDRs the trunk's INVITEs come from" },
    { name: "inbound_username", label: "Inbound username" },
    { name: "inbound_password", label: "Inbound password", type: "secret" },
    { name: "outbound_host", label: "Outbound host" },
    { name: "outbound_port", label: "Outbound port", type: "number" },
    { name: "outbound_transport", label: "Transport", type: "select", options: ["udp", "tcp", "tls"] },
    { name: "outbound_username", label: "Outbound username" },
    { name: "outbound_password", label: "Outbound password", type: "secret" },
    { name: "codecs", label: "Codecs", type: "list", help: "in preference order: PCMU, PCMA, …" },
    { name: "max_concurrent_calls", label: "Concurrent calls", type: "number", notNull: true },
    { name: "enabled", label: "Enabled", type: "bool" },
  ];

  SB.pages.telephony = async function (main, id) {
    const [trunks, numbers, agents] = await Promise.all([SB.all("sip-trunks"), SB.all("phone-numbers"), SB.all("agents")]);
    const trunkName = Object.fromEntries(trunks.map((t) => [t.id, t.name]));
    const agentName = Object.fromEntries(agents.map((a) => [a.id, a.name]));
    const trunk = trunks.find((t) => t.id === id);
    const number = numbers.find((n) => n.id === id);
    const numberFields = [
      { name: "e164", label: "Number (E.164)" },
      { name: "label", label: "Label" },
      { name: "agent_id", label: "Agent", type: "select", nullable: true, options: agents.map((a) => [a.id, a.name]) },
      { name: "sip_trunk_id", label: "Trunk", type: "select", nullable: true, options: trunks.map((t) => [t.id, t.name]) },
      { name: "enabled", label: "Enabled", type: "bool" },
    ];
    const back = () => (location.hash = "#/telephony");
    main.append(
      h("h1", null, "Trunks and numbers"),
      h("div", { class: "row" },
        h("div", { class: "card", id: "trunks" }, h("h2", null, "SIP trunks"), SB.table(trunks, [
          { label: "Name", value: (t) => t.name },
          { label: "Provider", value: (t) => t.provider },
          { label: "Direction", value: (t) => t.direction },
          { label: "Sources", value: (t) => (t.inbound_cidrs || []).join(", ") || "—" },
          { label: "Enabled", value: (t) => (t.enabled ? "yes" : "no") },
        ], (t) => (location.hash = "#/telephony/" + t.id), "No trunks yet.")),
        h("div", { class: "card", id: "numbers" }, h("h2", null, "Phone numbers"), SB.table(numbers, [
          { label: "Number", value: (n) => n.e164 },
          { label: "Agent", value: (n) => agentName[n.agent_id] || "—" },
          { label: "Trunk", value: (n) => trunkName[n.sip_trunk_id] || "any" },
          { label: "Enabled", value: (n) => (n.enabled ? "yes" : "no") },
        ], (n) => (location.hash = "#/telephony/" + n.id), "No numbers yet."))),
      h("div", { class: "row" },
        trunk ? SB.editor("Trunk: " + trunk.name, "sip-trunks", TRUNK_FIELDS, trunk, back)
          : number ? SB.editor("Number: " + number.e164, "phone-numbers", numberFields, number, back)
          : SB.can("MANAGER") ? [SB.editor("New trunk", "sip-trunks", TRUNK_FIELDS.slice(0, 4), null, back),
                                 SB.editor("New number", "phone-numbers", numberFields, null, back)] : null)
    );
  };

  // ─────────────── usage ───────────────
  function meter(label, used, limit, unit) {
    const pct = limit ? Math.min(100, (100 * used) / limit) : 0;
    return h("div", { class: "meter" },
      h("span", { class: "label" }, label),
      h("div", { class: "bar" }, h("div", { class: pct >= 100 ? "over" : "", style: { width: (limit ? pct : 0) + "%" } })),
      h("span", { class: "value" }, used.toLocaleString() + " / " + (limit == null ? "unlimited" : limit.toLocaleString()) + " " + unit));
  }

  SB.pages.usage = async function (main) {
    const [s, months] = await Promise.all([SB.api("GET", SB.wsPath("usage-summary")), SB.all("usage")]);
    const u = s.usage;
    const plan = s.plan;
    const minutes = Math.round(u.call_seconds / 6) / 10;
    main.append(
      h("h1", null, "Usage"),
      h("div", { class: "card", id: "plan" },
        h("h2", null, "This month (" + s.month + ") against ", plan ? "the " + plan.name + " plan" : "no plan"),
        s.within_limits ? h("p", null, SB.badge("live"), " New calls are admitted.")
          : h("p", null, SB.badge("failed"), " The plan's limit is reached: new calls are refused."),
        meter("Conversations", u.conversations, plan && plan.conversation_limit, ""),
        meter("Call minutes", minutes, plan && plan.minute_limit, "min"),
        h("p", { class: "muted small" },
          u.messages + " messages · " + Number(u.tokens_used).toLocaleString() + " tokens · " +
          Number(u.stt_seconds).toFixed(0) + " s transcribed · " + Number(u.tts_characters).toLocaleString() + " characters spoken")),
      h("div", { class: "card" }, h("h2", null, "Past months"), SB.table(months, [
        { label: "Month", value: (m) => m.month },
        { label: "Conversations", value: (m) => String(m.conversations) },
        { label: "Minutes", value: (m) => (m.call_seconds / 60).toFixed(1) },
        { label: "Messages", value: (m) => String(m.messages) },
        { label: "Tokens", value: (m) => String(m.tokens_used) },
      ], null, "No usage yet."))
    );
  };
})();
