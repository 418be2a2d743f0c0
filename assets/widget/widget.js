/*! Switchboard web widget: a call button for a business's site.
 *
 *   <script src="https://YOUR-SWITCHBOARD/widget.js"
 *           data-agent="AGENT-ID" data-key="pk_…"></script>
 *
 * Draws a round call button with the widget's colour, position and welcome
 * message (GET /v1/widgets/{key}, answered only to pages on the widget's
 * allowed domains) and calls the agent from the browser over WebRTC,
 * signalled with WHIP (POST /v1/agents/{agent}/whip, the key as the
 * credential; DELETE on the returned Location hangs up). No dependencies;
 * everything it draws lives in a shadow root, so the site's styles and the
 * widget's do not meet.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.SwitchboardWidget) return;
  var agent = script.getAttribute("data-agent") || "";
  var key = script.getAttribute("data-key") || "";
  var base = new URL(script.src, location.href).origin;
  var GATHER_MS = 3000;
  var POSITIONS = {
    "bottom-right": "bottom:20px;right:20px", "bottom-left": "bottom:20px;left:20px",
    "top-right": "top:20px;right:20px", "top-left": "top:20px;left:20px",
  };
  var widget = (window.SwitchboardWidget = { state: "loading", agent: agent, error: null });

  function setState(s, detail) {
    widget.state = s;
    if (widget.button) widget.button.setAttribute("data-state", s);
    if (widget.status) widget.status.textContent = detail || "";
  }

  function colour(c) {
    return /^#[0-9a-fA-F]{6}$/.test(c || "") ? c : "#2563eb";
  }

  function draw(cfg) {
    var host = document.createElement("switchboard-widget");
    var root = host.attachShadow({ mode: "open" });
    var where = POSITIONS[cfg.position] || POSITIONS["bottom-right"];
    var accent = colour(cfg.primary_color);
    var style = document.createElement("style");
    style.textContent =
      ":host{all:initial}" +
      ".box{position:fixed;" + where + ";z-index:2147483000;display:flex;flex-direction:column;align-items:flex-end;gap:8px;font:14px/1.4 system-ui,sans-serif}" +
      ".bubble{max-width:260px;background:#fff;color:#1f2933;border-radius:10px;padding:10px 12px;box-shadow:0 4px 16px rgba(0,0,0,.18)}" +
      ".status{font-size:12px;color:#616e7c;margin-top:4px}" +
      "button{width:60px;height:60px;border-radius:50%;border:none;cursor:pointer;color:#fff;background:" + accent + ";box-shadow:0 4px 14px rgba(0,0,0,.25)}" +
      "button[data-state=live]{background:#c62828}" +
      "button:disabled{opacity:.6;cursor:default}" +
      "svg{width:26px;height:26px;fill:currentColor}";
    var box = document.createElement("div");
    box.className = "box";
    if (/left$/.test(cfg.position)) box.style.alignItems = "flex-start";
    var bubble = document.createElement("div");
    bubble.className = "bubble";
    var text = document.createElement("div");
    text.className = "welcome";
    text.textContent = cfg.welcome_message || ("Talk to " + (cfg.agent_name || "us"));
    var status = document.createElement("div");
    status.className = "status";
    bubble.appendChild(text);
    bubble.appendChild(status);
    var button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-label", "Call " + (cfg.agent_name || "us"));
    button.setAttribute("part", "button");
    button.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z"/></svg>';
    button.disabled = !cfg.available;
    button.addEventListener("click", function () {
      if (widget.call) hangup(); else call(cfg);
    });
    var audio = document.createElement("audio");
    audio.autoplay = true;
    box.appendChild(bubble);
    box.appendChild(button);
    box.appendChild(audio);
    root.appendChild(style);
    root.appendChild(box);
    document.body.appendChild(host);
    widget.button = button;
    widget.status = status;
    widget.audio = audio;
    widget.config = cfg;
    setState(cfg.available ? "ready" : "unavailable", cfg.available ? "" : "Not available right now.");
  }

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      var timer = setTimeout(resolve, GATHER_MS);
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  function call(cfg) {
    var c = (widget.call = { pc: null, mic: null, location: null });
    setState("calling", "Calling…");
    navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } })
      .then(function (mic) {
        c.mic = mic;
        c.pc = new RTCPeerConnection({ iceServers: [] });
        mic.getAudioTracks().forEach(function (t) { c.pc.addTrack(t, mic); });
        c.pc.addEventListener("track", function (e) {
          widget.audio.srcObject = e.streams[0] || new MediaStream([e.track]);
          widget.audio.play().catch(function () {});
        });
        c.pc.addEventListener("connectionstatechange", function () {
          if (!c.pc) return;
          var s = c.pc.connectionState;
          if (s === "connected") setState("live", "Connected: speak now.");
          if (s === "failed" || s === "disconnected") hangup("The call was cut off.");
        });
        return c.pc.createOffer();
      })
      .then(function (offer) { return c.pc.setLocalDescription(offer); })
      .then(function () { return gathered(c.pc); })
      .then(function () {
        return fetch(base + (cfg.whip_path || "/v1/agents/" + agent + "/whip"), {
          method: "POST",
          headers: { Authorization: "Bearer " + key, "Content-Type": "application/sdp" },
          body: c.pc.localDescription.sdp,
        });
      })
      .then(function (r) {
        if (r.status !== 201) throw new Error("the call was refused (" + r.status + ")");
        c.location = new URL(r.headers.get("Location") || "", base).href;
        return r.text();
      })
      .then(function (sdp) { return c.pc.setRemoteDescription({ type: "answer", sdp: sdp }); })
      .catch(function (e) {
        widget.error = String(e && e.message || e);
        hangup("Sorry, the call could not start: " + widget.error);
      });
  }

  function hangup(message) {
    var c = widget.call;
    widget.call = null;
    if (!c) return;
    if (c.location) {
      fetch(c.location, { method: "DELETE", headers: { Authorization: "Bearer " + key } }).catch(function () {});
    }
    if (c.pc) { var pc = c.pc; c.pc = null; pc.close(); }
    if (c.mic) c.mic.getTracks().forEach(function (t) { t.stop(); });
    setState("ready", message || "Call ended.");
  }
  widget.hangup = hangup;

  function start() {
    if (!agent || !/^pk_[0-9a-f]{32,128}$/.test(key)) {
      widget.state = "misconfigured";
      widget.error = "data-agent and data-key (pk_…) are required";
      console.warn("Switchboard widget: " + widget.error);
      return;
    }
    fetch(base + "/v1/widgets/" + encodeURIComponent(key), { credentials: "omit" })
      .then(function (r) {
        if (!r.ok) throw new Error("widget configuration refused (" + r.status + ")");
        return r.json();
      })
      .then(function (cfg) {
        if (cfg.agent_id !== agent) throw new Error("this key belongs to another agent");
        draw(cfg);
      })
      .catch(function (e) {
        widget.state = "failed";
        widget.error = String(e && e.message || e);
        console.warn("Switchboard widget: " + widget.error);
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
