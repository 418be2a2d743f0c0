// Switchboard console: calls — the live calls with their transcript as it
// happens (server-sent events read with fetch, so the token goes in a
// header) and an "end call" button; call history with per-turn latency,
// the transcript and the recording.
"use strict";
(function () {
  const { h } = SB;

  /// Reads `…/calls/live/{id}/transcript` (SSE) and hands each event to
  /// `on(kind, data)`. Resolves when the stream ends; abort with `signal`.
  SB.watchTranscript = async function (callId, on, signal) {
    const r = await SB.api("GET", SB.wsPath("calls/live/" + callId + "/transcript"), undefined, { raw: true, signal: signal });
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let kind = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue; // a keep-alive comment
        let parsed = null;
        try { parsed = JSON.parse(data.join("\n")); } catch (e) { continue; }
        on(kind, parsed);
        if (kind === "end") return;
      }
    }
  };

  /// A transcript box; `add(line)` appends {role, text, at}.
  SB.transcriptView = function (id) {
    const box = h("div", { class: "transcript", id: id || "transcript" });
    const seen = new Set();
    return {
      el: box,
      add(line) {
        if (line.seq !== undefined) {
          if (seen.has(line.seq)) return;
          seen.add(line.seq);
        }
        const who = line.role === "user" ? "Caller" : line.role === "assistant" ? "Agent" : "";
        box.append(h("div", { class: "line " + line.role, "data-role": line.role },
          who ? h("span", { class: "who" }, who + " · " + new Date(line.at || Date.now()).toLocaleTimeString()) : null,
          line.text));
        box.scrollTop = box.scrollHeight;
      },
    };
  };

  // ─────────────── live calls ───────────────
  SB.pages.live = async function (main, selectedId) {
    const list = h("div", { id: "live-list" });
    const detail = h("div", { class: "card", id: "live-detail" }, h("p", { class: "muted" }, "Choose a call to follow its transcript."));
    main.append(h("h1", null, "Live calls"), h("div", { class: "row" }, h("div", { class: "card" }, list), detail));
    const agents = Object.fromEntries((await SB.all("agents")).map((a) => [a.id, a.name]));
    let watching = null;
    let stopped = false;
    const controller = new AbortController();
    SB.cleanups.push(() => { stopped = true; controller.abort(); });

    async function refresh() {
      const { items } = await SB.api("GET", SB.wsPath("calls/live"), undefined, { signal: controller.signal });
      SB.fill(list, SB.table(items, [
        { label: "Started", value: (c) => SB.when(c.started_at) },
        { label: "Agent", value: (c) => agents[c.agent_id] || c.agent_id },
        { label: "From", value: (c) => c.from },
        { label: "To", value: (c) => c.to },
        { label: "Direction", value: (c) => c.direction },
        { label: "State", value: (c) => SB.badge(c.state) },
      ], (c) => follow(c), "No calls right now."));
      list.dataset.count = String(items.length);
      if (selectedId && !watching) {
        const c = items.find((x) => x.call_log_id === selectedId);
        if (c) follow(c);
      }
    }

    function follow(call) {
      if (watching && watching.id === call.call_log_id) return;
      if (watching) watching.abort.abort();
      const abort = new AbortController();
      watching = { id: call.call_log_id, abort: abort };
      SB.cleanups.push(() => abort.abort());
      const view = SB.transcriptView("live-transcript");
      const state = h("p", { class: "muted small", id: "live-state" }, "Connected to the transcript.");
      const end = SB.can("MANAGER") ? h("button", { type: "button", class: "danger", id: "end-call" }, "End call") : null;
      if (end)
        end.addEventListener("click", () =>
          SB.attempt(async () => {
            end.disabled = true;
            await SB.api("DELETE", SB.wsPath("calls/live/" + call.call_log_id));
          }, "Hang-up requested."));
      SB.fill(detail,
        h("h2", null, call.from + " → " + call.to),
        h("p", { class: "small muted" }, "Call " + call.call_log_id + (call.node_id ? " on node " + call.node_id : "")),
        view.el, state, end ? h("div", { class: "actions" }, end) : null);
      SB.watchTranscript(call.call_log_id, (kind, data) => {
        if (kind === "line") view.add(data);
        if (kind === "lost") view.add({ role: "event", text: data.count + " lines were missed" });
        if (kind === "end") { state.textContent = "The call has ended."; if (end) end.disabled = true; }
      }, abort.signal).catch((e) => {
        if (abort.signal.aborted) return;
        state.textContent = e.status === 404 ? "This call is not on this node, or it has ended." : "Transcript stopped: " + e.message;
      });
    }

    await refresh();
    (async function poll() {
      while (!stopped) {
        await new Promise((r) => setTimeout(r, 2000));
        if (stopped) break;
        try { await refresh(); } catch (e) { if (!stopped && !(e.name === "AbortError")) SB.flash(e.message, "error"); }
      }
    })();
  };

  // ─────────────── call history ───────────────
  SB.pages.calls = async function (main, id) {
    if (id) return callPage(main, id);
    const page = Number(sessionStorage.getItem("sb_calls_page") || 0);
    const [data, agents] = await Promise.all([
      SB.api("GET", SB.wsPath("call-logs?limit=50&offset=" + page * 50)),
      SB.all("agents"),
    ]);
    const names = Object.fromEntries(agents.map((a) => [a.id, a.name]));
    const prev = h("button", { type: "button", class: "secondary", disabled: page === 0 }, "Newer");
    const next = h("button", { type: "button", class: "secondary", disabled: data.items.length < 50 }, "Older");
    prev.addEventListener("click", () => { sessionStorage.setItem("sb_calls_page", String(page - 1)); SB.route(); });
    next.addEventListener("click", () => { sessionStorage.setItem("sb_calls_page", String(page + 1)); SB.route(); });
    main.append(
      h("h1", null, "Call history"),
      h("div", { class: "card", id: "call-list" }, SB.table(data.items, [
        { label: "Started", value: (c) => SB.when(c.started_at) },
        { label: "Agent", value: (c) => names[c.agent_id] || "—" },
        { label: "Direction", value: (c) => c.direction },
        { label: "From", value: (c) => c.from_number || "—" },
        { label: "To", value: (c) => c.to_number || "—" },
        { label: "Status", value: (c) => SB.badge(c.status) },
        { label: "Duration", value: (c) => SB.seconds(c.duration_ms) },
        { label: "Voice-to-voice p50", value: (c) => median(turns(c)) },
      ], (c) => (location.hash = "#/calls/" + c.id), "No calls yet."),
      h("div", { class: "actions" }, prev, next))
    );
  };

  const turns = (c) => (Array.isArray(c.latency) ? c.latency : []);
  function median(list) {
    const v = list.map((t) => t.voice_to_voice_ms).filter((x) => typeof x === "number").sort((a, b) => a - b);
    return v.length ? v[Math.floor(v.length / 2)] + " ms" : "—";
  }

  async function callPage(main, id) {
    const call = await SB.api("GET", SB.wsPath("call-logs/" + id));
    const [session, recordings] = await Promise.all([
      call.session_id ? SB.api("GET", SB.wsPath("sessions/" + call.session_id)) : null,
      SB.all("call-recordings", "&call_log_id=" + id),
    ]);
    const view = SB.transcriptView("call-transcript");
    const messages = (session && session.messages) || [];
    messages.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
    for (const m of messages) view.add({ role: m.role === "user" ? "user" : m.role === "assistant" ? "assistant" : "event",
      text: m.content + (m.interrupted ? " (interrupted)" : ""), at: m.created_at });
    if (!messages.length) view.add({ role: "event", text: "No conversation was recorded for this call." });
    main.append(
      h("h1", null, "Call ", SB.badge(call.status)),
      h("div", { class: "row" },
        h("div", { class: "card", id: "call-facts" }, h("h2", null, "Call"),
          h("table", null, h("tbody", null, [
            ["Direction", call.direction], ["From", call.from_number], ["To", call.to_number],
            ["Started", SB.when(call.started_at)], ["Ended", SB.when(call.ended_at)],
            ["Duration", SB.seconds(call.duration_ms)], ["Codec", call.codec], ["Hung up by", call.hangup_by],
            ["Reason", call.hangup_reason], ["SIP code", call.sip_code], ["Node", call.node_id],
          ].map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v == null ? "—" : String(v))))))),
        h("div", { class: "card" }, h("h2", null, "Per-turn latency"), latencyChart(turns(call)))),
      h("div", { class: "row" },
        h("div", { class: "card" }, h("h2", null, "Transcript"), view.el),
        h("div", { class: "card", id: "recording" }, h("h2", null, "Recording"), recordingPlayer(recordings)))
    );
  }

  /// Stacked bars per turn: STT, retrieval, LLM first token, TTS first audio,
  /// and the rest of voice-to-voice (endpointing, queueing, playout).
  function latencyChart(list) {
    if (!list.length) return h("p", { class: "muted" }, "No answered turns.");
    const parts = [
      ["stt_ms", "STT", "#2563eb"],
      ["retrieval_ms", "retrieval", "#7c3aed"],
      ["llm_first_token_ms", "LLM first token", "#db2777"],
      ["tts_first_audio_ms", "TTS first audio", "#ea580c"],
    ];
    const width = 460, height = 200, left = 40, bottom = 22, top = 10;
    const max = Math.max(100, ...list.map((t) => t.voice_to_voice_ms || 0));
    const scale = (ms) => ((height - bottom - top) * ms) / max;
    const band = (width - left) / list.length;
    const bar = Math.min(36, band * 0.7);
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("id", "latency-chart");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", "100%");
    svg.setAttribute("role", "img");
    const el = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    for (const frac of [0, 0.5, 1]) {
      const y = height - bottom - scale(max * frac);
      el("line", { x1: left, x2: width, y1: y, y2: y, stroke: "#d9e2ec" });
      el("text", { x: 2, y: y + 3 }, Math.round(max * frac) + "ms");
    }
    list.forEach((t, i) => {
      const x = left + i * band + (band - bar) / 2;
      let y = height - bottom;
      const total = t.voice_to_voice_ms || 0;
      let used = 0;
      for (const [key, label, colour] of parts) {
        const ms = Math.max(0, Math.min(t[key] || 0, total - used));
        if (!ms) continue;
        used += ms;
        y -= scale(ms);
        el("rect", { x: x, y: y, width: bar, height: scale(ms), fill: colour }).appendChild(
          document.createElementNS(NS, "title")).textContent = label + ": " + ms + " ms";
      }
      const rest = total - used;
      if (rest > 0) {
        y -= scale(rest);
        el("rect", { x: x, y: y, width: bar, height: scale(rest), fill: "#9aa5b1" });
      }
      el("text", { x: x, y: y - 2 }, total + "ms");
      el("text", { x: x, y: height - 6 }, "turn " + (i + 1));
    });
    const legend = h("div", { class: "legend" },
      parts.concat([["", "other (endpointing, queue)", "#9aa5b1"]]).map(([, label, colour]) =>
        h("span", null, h("i", { style: { background: colour } }), label)));
    return h("div", null, svg, legend);
  }

  /// The recording's WAV fetched with the token and played from memory.
  function recordingPlayer(recordings) {
    if (!recordings.length) return h("p", { class: "muted" }, "This call was not recorded (the agent's \"Record calls\" is off).");
    const rec = recordings[0];
    const audio = h("audio", { controls: true, id: "recording-audio" });
    const load = h("button", { type: "button", id: "recording-load" }, "Load recording");
    load.addEventListener("click", () =>
      SB.attempt(async () => {
        load.disabled = true;
        const r = await SB.api("GET", SB.wsPath("call-recordings/" + rec.id + "/audio"), undefined, { raw: true });
        audio.src = URL.createObjectURL(await r.blob());
        SB.cleanups.push(() => URL.revokeObjectURL(audio.src));
      }));
    return h("div", null,
      h("p", { class: "small muted" }, "Stereo WAV: the caller on the left, the agent on the right · " +
        SB.seconds(rec.duration_ms) + " · " + Math.round((rec.size_bytes || 0) / 1024) + " KB"),
      h("div", { class: "actions" }, load), audio);
  }
})();
