// Switchboard console: "Talk to this agent" — a browser call over WebRTC,
// signalled with WHIP (RFC 9725): the page's SDP offer (gathered in full,
// no trickle) is POSTed to /v1/agents/{id}/whip with the session's token;
// the 201 answer carries the SDP answer and the call's Location, which a
// DELETE ends. The page shows the live transcript and records both sides
// (microphone left, agent right) on one clock, so the conversation can be
// saved and voice-to-voice measured where the user hears it.
"use strict";
(function () {
  const { h } = SB;
  /// Longest recording kept in memory (seconds): older audio is dropped.
  const MAX_RECORD_SECONDS = 300;
  /// How long ICE gathering may take before the offer is sent as it is.
  const GATHER_MS = 3000;

  /// One browser call. `onLine(line)` gets transcript lines, `onState(text)`.
  class BrowserCall {
    constructor(agentId, onLine, onState) {
      this.agentId = agentId;
      this.onLine = onLine;
      this.onState = onState;
      this.pc = null;
      this.location = null;
      this.callId = null;
      this.mic = null;
      this.ctx = null;
      this.blocks = [];
      this.frames = 0;
      this.dropped = 0;
      this.marks = {};
      this.abort = new AbortController();
      this.ended = false;
    }

    async start() {
      this.marks.start = performance.now();
      this.onState("Asking for the microphone…");
      this.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
      this.marks.micAt = performance.now();
      this.ctx = new AudioContext();
      await this.ctx.audioWorklet.addModule("/console/assets/recorder-worklet.js");
      this.merger = this.ctx.createChannelMerger(2);
      this.ctx.createMediaStreamSource(this.mic).connect(this.merger, 0, 0);
      const node = new AudioWorkletNode(this.ctx, "sb-recorder", {
        numberOfInputs: 1, numberOfOutputs: 1, channelCount: 2,
        channelCountMode: "explicit", channelInterpretation: "discrete",
      });
      node.port.onmessage = (e) => this.keep(e.data);
      this.merger.connect(node);
      const mute = this.ctx.createGain();
      mute.gain.value = 0;
      node.connect(mute).connect(this.ctx.destination);
      this.recorder = node;

      const live = await this.liveIds();
      this.pc = new RTCPeerConnection({ iceServers: [] });
      for (const track of this.mic.getAudioTracks()) this.pc.addTrack(track, this.mic);
      this.pc.addEventListener("track", (e) => this.hear(e));
      this.pc.addEventListener("connectionstatechange", () => {
        const s = this.pc && this.pc.connectionState;
        if (s === "connected") this.onState("Connected: speak to the agent.");
        if (s === "failed" || s === "closed" || s === "disconnected") this.onState("Connection " + s + ".");
      });
      await this.pc.setLocalDescription(await this.pc.createOffer());
      await gathered(this.pc, GATHER_MS);
      this.onState("Calling…");
      const r = await fetch("/v1/agents/" + this.agentId + "/whip", {
        method: "POST",
        headers: { Authorization: "Bearer " + SB.state.token, "Content-Type": "application/sdp" },
        body: this.pc.localDescription.sdp,
      });
      if (r.status !== 201) {
        const body = await r.json().catch(() => null);
        throw new SB.ApiError(r.status, body);
      }
      this.location = new URL(r.headers.get("Location") || "", location.href).href;
      this.callId = r.headers.get("X-Call-Log-Id");
      this.marks.answeredAt = performance.now();
      await this.pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
      this.findCall(live).catch(() => {});
    }

    /// The ids of the workspace's live calls, to tell the new one apart.
    async liveIds() {
      try {
        const { items } = await SB.api("GET", SB.wsPath("calls/live"));
        return new Set(items.map((c) => c.call_log_id));
      } catch (e) {
        return new Set();
      }
    }

    /// Follows the call's transcript once it is live (the call registers
    /// when ICE and DTLS are up). Its id: the answer's `X-Call-Log-Id`,
    /// else the new web call of this agent in the live list.
    async findCall(before) {
      for (let i = 0; i < 80 && !this.ended; i++) {
        const { items } = await SB.api("GET", SB.wsPath("calls/live"));
        const mine = items.find((c) => c.call_log_id === this.callId) ||
          (!this.callId && items.find((c) => !before.has(c.call_log_id) && c.agent_id === this.agentId && c.direction === "web"));
        if (mine) {
          this.callId = mine.call_log_id;
          SB.watchTranscript(this.callId, (kind, data) => {
            if (kind === "line") this.onLine(data);
            if (kind === "end") this.onState("The call has ended.");
          }, this.abort.signal).catch(() => {});
          return;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }

    hear(e) {
      const stream = e.streams[0] || new MediaStream([e.track]);
      // Chrome delivers a remote stream to Web Audio only while a media
      // element plays it too.
      const audio = document.getElementById("talk-audio");
      audio.srcObject = stream;
      audio.play().catch(() => {});
      this.ctx.createMediaStreamSource(stream).connect(this.merger, 0, 1);
      this.marks.trackAt = performance.now();
    }

    keep(block) {
      this.blocks.push(block);
      this.frames += block.left.length;
      const max = MAX_RECORD_SECONDS * this.ctx.sampleRate;
      while (this.frames > max && this.blocks.length) {
        this.frames -= this.blocks.shift().left.length;
        this.dropped += 1;
      }
      if (this.marks.firstAgentAudio === undefined && block.right.some((x) => Math.abs(x) > 0.01)) {
        this.marks.firstAgentAudio = performance.now();
      }
    }

    async hangup() {
      if (this.ended) return;
      this.ended = true;
      this.abort.abort();
      if (this.location) {
        await fetch(this.location, { method: "DELETE", headers: { Authorization: "Bearer " + SB.state.token } }).catch(() => {});
      }
      if (this.pc) this.pc.close();
      if (this.mic) this.mic.getTracks().forEach((t) => t.stop());
      if (this.ctx) await this.ctx.close().catch(() => {});
      this.onState("Call ended.");
    }

    /// The recording as a 16-bit stereo WAV (left: microphone, right: agent).
    wav() {
      const rate = this.ctx ? this.ctx.sampleRate : 48000;
      const data = new Int16Array(this.frames * 2);
      let o = 0;
      for (const b of this.blocks) {
        for (let i = 0; i < b.left.length; i++) {
          data[o++] = Math.max(-32768, Math.min(32767, Math.round(b.left[i] * 32767)));
          data[o++] = Math.max(-32768, Math.min(32767, Math.round(b.right[i] * 32767)));
        }
      }
      const header = new DataView(new ArrayBuffer(44));
      const text = (at, s) => { for (let i = 0; i < s.length; i++) header.setUint8(at + i, s.charCodeAt(i)); };
      text(0, "RIFF"); header.setUint32(4, 36 + data.byteLength, true); text(8, "WAVE");
      text(12, "fmt "); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 2, true);
      header.setUint32(24, rate, true); header.setUint32(28, rate * 4, true); header.setUint16(32, 4, true);
      header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, data.byteLength, true);
      return new Blob([header, data.buffer], { type: "audio/wav" });
    }
  }

  /// Resolves when ICE gathering is complete (or after `ms`): WHIP here
  /// sends the whole offer at once, with every candidate in it.
  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearTimeout(timer); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, ms);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  /// Base64 of a blob (for saving, and for tests that read the recording).
  function base64(blob) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
      r.onerror = () => reject(r.error);
      r.readAsDataURL(blob);
    });
  }

  SB.pages.talk = async function (main, agentId) {
    const agents = (await SB.all("agents")).filter((a) => a.status === "live");
    const select = h("select", { id: "talk-agent" }, agents.map((a) => h("option", { value: a.id }, a.name)));
    if (agentId && agents.some((a) => a.id === agentId)) select.value = agentId;
    const start = h("button", { type: "button", id: "talk-start", disabled: !agents.length }, "Start call");
    const stop = h("button", { type: "button", class: "danger", id: "talk-stop", disabled: true }, "Hang up");
    const save = h("a", { id: "talk-save", hidden: true, download: "conversation.wav" }, "Save the conversation's audio");
    const state = h("p", { class: "status-line", id: "talk-state" }, agents.length ? "Ready." : "No live agent in this workspace.");
    const view = SB.transcriptView("talk-transcript");
    const audio = h("audio", { id: "talk-audio", autoplay: true });
    let call = null;
    const talk = { call: null, state: "idle" };
    talk.recording = async () => (call ? base64(call.wav()) : null);
    talk.marks = () => (call ? Object.assign({ sampleRate: call.ctx && call.ctx.sampleRate, frames: call.frames, dropped: call.dropped, callId: call.callId }, call.marks) : null);
    const setState = (text) => { state.textContent = text; talk.state = text; };

    start.addEventListener("click", async () => {
      start.disabled = true;
      select.disabled = true;
      save.hidden = true;
      view.el.replaceChildren();
      call = new BrowserCall(select.value, (line) => view.add(line), setState);
      talk.call = call;
      stop.disabled = false;
      try {
        await call.start();
      } catch (e) {
        setState("The call could not start: " + (e.message || e));
        await call.hangup();
        start.disabled = false;
        select.disabled = false;
        stop.disabled = true;
      }
    });
    stop.addEventListener("click", async () => {
      stop.disabled = true;
      if (call) {
        await call.hangup();
        save.href = URL.createObjectURL(call.wav());
        save.hidden = false;
      }
      start.disabled = false;
      select.disabled = false;
    });
    SB.cleanups.push(() => { if (call) call.hangup(); });

    // For tests and the devtools: the call on screen.
    SB.talk = talk;
    main.append(
      h("h1", null, "Talk to an agent"),
      h("div", { class: "row" },
        h("div", { class: "card" },
          h("p", { class: "muted small" }, "A call from this browser, like a caller's: it uses the agent's voice, knowledge and usage, and is recorded in the call history."),
          h("form", { class: "grid", onsubmit: (e) => e.preventDefault() }, h("label", { for: "talk-agent" }, "Agent"), select),
          h("div", { class: "actions" }, start, stop), state, audio, save),
        h("div", { class: "card" }, h("h2", null, "Transcript"), view.el))
    );
  };
})();
