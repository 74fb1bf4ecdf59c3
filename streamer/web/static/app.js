// streamer live view: one WebSocket carries every camera's pictures (binary) and the state (JSON).
// Binary message: "SJ", version (1), kind (0 tile, 1 full size: JPEG; 4 tile, 5 full size: H.264 in
// fragmented MP4; +0x80: an H.264 init segment), frame index (uint32, big-endian, 0xFFFFFFFF: none),
// name length (uint16), the camera's name (UTF-8), then the JPEG, or the media segment (moof + mdat),
// or for an init segment: codec string length (uint8), codec string, ftyp + moov.
// Pictures come as JPEG drawn on canvases (the default), or with ?codec=h264 (or the H.264 box) as
// H.264 played by Media Source Extensions, kept near the live edge (faster playback, or a jump).
// Each canvas fires a "frame" event (detail: {index}) after it drew a picture; window.streamerStats
// counts pictures received and drawn, and bytes received (for benchmarks).
"use strict";

(() => {
  const KIND_TILE = 0;
  const KIND_FULL = 1;
  const KIND_H264_TILE = 4;
  const KIND_H264_FULL = 5;
  const INIT_FLAG = 0x80;
  const NO_INDEX = 0xffffffff;
  const RETRY_FIRST_MS = 500;
  const RETRY_MAX_MS = 10000;

  const grid = document.getElementById("grid");
  const h264Box = document.getElementById("h264");
  const statusEl = document.getElementById("status");
  const big = document.getElementById("enlarged");
  const decoder = new TextDecoder();

  const tiles = new Map(); // camera name -> picture target (see makeTarget)
  let enlarged = null; // the enlarged camera's name, or null
  let bigTarget = null;
  let socket = null;
  let retryMs = RETRY_FIRST_MS;
  let runEnded = false;
  let lastState = null;
  const stats = { received: 0, drawn: 0, bytes: 0 };
  window.streamerStats = stats;
  let codec = chosenCodec();

  function chosenCodec() {
    const asked = new URLSearchParams(location.search).get("codec");
    if (asked === "h264" || asked === "jpeg") return asked;
    try {
      return localStorage.getItem("streamer.codec") === "h264" ? "h264" : "jpeg";
    } catch (err) {
      return "jpeg";
    }
  }

  function setStatus(text, problem) {
    statusEl.textContent = text;
    statusEl.classList.toggle("problem", Boolean(problem));
  }

  function fmt(value, digits, unit) {
    return value === null || value === undefined ? "–" : value.toFixed(digits) + unit;
  }

  // Where one camera's pictures go: a canvas for JPEGs (only the newest is drawn: a picture
  // arriving while one is decoded replaces the waiting one), a video for H.264 (its Player).
  function makeTarget(stage) {
    const canvas = stage.querySelector("canvas");
    const video = stage.querySelector("video");
    const target = { stage, canvas, ctx: canvas.getContext("2d"), video, player: null, next: null, busy: false,
                     drawn: 0 };
    if (video.requestVideoFrameCallback) {
      const shown = () => {
        if (target.player) {
          stats.drawn += 1;
          stage.classList.add("drawn");
          video.dispatchEvent(new CustomEvent("frame"));
        }
        video.requestVideoFrameCallback(shown);
      };
      video.requestVideoFrameCallback(shown);
    }
    return target;
  }

  // H.264 in fragmented MP4 through Media Source Extensions, one picture per media segment.
  class Player {
    constructor(video) {
      this.video = video;
      this.ms = null;
      this.sb = null;
      this.queue = [];
      this.url = null;
    }

    init(codecName, segment) {
      this.close();
      const type = `video/mp4; codecs="${codecName}"`;
      if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
        setStatus(`this browser cannot play ${codecName}: untick H.264`, true);
        return;
      }
      const ms = new MediaSource();
      this.ms = ms;
      this.queue = [segment];
      this.url = URL.createObjectURL(ms);
      this.video.src = this.url;
      ms.addEventListener("sourceopen", () => {
        if (this.ms !== ms) return;
        this.sb = ms.addSourceBuffer(type);
        this.sb.addEventListener("updateend", () => this.pump());
        this.pump();
      }, { once: true });
    }

    push(segment) {
      if (!this.ms) return; // no init segment yet: the server sends one with the next keyframe
      this.queue.push(segment);
      this.pump();
    }

    pump() {
      const sb = this.sb;
      if (!sb || sb.updating) return;
      if (this.queue.length) {
        const segment = this.queue.shift();
        try {
          sb.appendBuffer(segment);
        } catch (err) { // full (QuotaExceededError): drop what was played, then try again
          this.queue.unshift(segment);
          const v = this.video;
          if (sb.buffered.length && v.currentTime - sb.buffered.start(0) > 1) sb.remove(0, v.currentTime - 1);
          else this.close();
        }
        return;
      }
      this.keepUp();
    }

    keepUp() {
      const v = this.video;
      const ranges = this.sb.buffered;
      if (!ranges.length) return;
      const start = ranges.start(ranges.length - 1);
      const end = ranges.end(ranges.length - 1);
      const lag = end - v.currentTime;
      if (v.currentTime < start || lag > 1.0) {
        v.currentTime = Math.max(start, end - 0.04); // behind or before a gap: jump to the live edge
      } else {
        v.playbackRate = lag > 0.25 ? 1.5 : lag > 0.1 ? 1.15 : 1.0;
      }
      if (v.paused) v.play().catch(() => {});
      if (v.currentTime - ranges.start(0) > 20) this.sb.remove(0, v.currentTime - 10);
    }

    close() {
      if (this.url) URL.revokeObjectURL(this.url);
      if (this.ms) {
        this.video.removeAttribute("src");
        this.video.load();
      }
      this.ms = null;
      this.sb = null;
      this.queue = [];
      this.url = null;
    }
  }

  function onH264(target, init, payload) {
    if (!target.player) target.player = new Player(target.video);
    if (init) {
      const n = payload[0];
      target.player.init(decoder.decode(payload.subarray(1, 1 + n)), payload.slice(1 + n));
    } else {
      target.player.push(payload.slice());
    }
  }

  function stopPlayers() {
    for (const target of [...tiles.values(), bigTarget]) {
      if (target && target.player) {
        target.player.close();
        target.player = null;
        target.stage.classList.remove("drawn");
      }
    }
  }

  function offer(target, blob, index) {
    target.next = { blob, index };
    if (!target.busy) pump(target);
  }

  function pump(target) {
    const item = target.next;
    if (!item) return;
    target.next = null;
    target.busy = true;
    createImageBitmap(item.blob).then((bitmap) => {
      const canvas = target.canvas;
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      target.ctx.drawImage(bitmap, 0, 0);
      bitmap.close();
      target.drawn += 1;
      stats.drawn += 1;
      target.stage.classList.add("drawn");
      canvas.dispatchEvent(new CustomEvent("frame", { detail: { index: item.index } }));
    }).catch(() => {}).finally(() => {
      target.busy = false;
      if (target.next) pump(target);
    });
  }

  function onFrame(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < 10 || view.getUint8(0) !== 0x53 || view.getUint8(1) !== 0x4a || view.getUint8(2) !== 1) {
      return;
    }
    const code = view.getUint8(3);
    const kind = code & ~INIT_FLAG;
    const rawIndex = view.getUint32(4);
    const length = view.getUint16(8);
    const name = decoder.decode(new Uint8Array(buffer, 10, length));
    if (kind === KIND_H264_TILE || kind === KIND_H264_FULL) {
      const target = kind === KIND_H264_FULL ? (name === enlarged ? bigTarget : null) : tiles.get(name);
      if (target) onH264(target, (code & INIT_FLAG) !== 0, new Uint8Array(buffer, 10 + length));
      return;
    }
    const blob = new Blob([new Uint8Array(buffer, 10 + length)], { type: "image/jpeg" });
    const index = rawIndex === NO_INDEX ? null : rawIndex;
    if (kind === KIND_FULL && name === enlarged && bigTarget) {
      offer(bigTarget, blob, index);
    } else if (kind === KIND_TILE && tiles.has(name)) {
      offer(tiles.get(name), blob, index);
    }
  }

  function makeTile(name) {
    const tile = document.createElement("article");
    tile.className = "tile";
    tile.dataset.camera = name;
    tile.innerHTML =
      '<div class="bar"><span class="name"></span><span class="badge"></span></div>' +
      '<div class="stage"><canvas></canvas><video muted playsinline></video><div class="banner" hidden></div>' +
      '<div class="waiting">waiting for frames</div></div><div class="figures"></div>' +
      '<div class="counts"></div><ul class="events"></ul>';
    tile.querySelector(".name").textContent = name;
    tile.querySelector("canvas").dataset.camera = name;
    tile.querySelector("video").dataset.camera = name;
    tile.addEventListener("click", () => enlarge(name));
    const target = makeTarget(tile.querySelector(".stage"));
    target.tile = tile;
    return target;
  }

  function figuresText(cam) {
    const parts = [
      "display " + fmt(cam.display_fps, 1, " fps"),
      "source " + fmt(cam.source_fps, 1, " fps"),
      "detections " + fmt(cam.detections_per_s, 1, "/s"),
      "detection age " + fmt(cam.detection_age_s, 1, " s"),
    ];
    if (cam.detections_count) parts.push(cam.detections_count + " shown");
    if (cam.motion === true) parts.push("motion");
    else if (cam.motion === false) parts.push("still");
    return parts.join(" · ");
  }

  function showState(root, cam) {
    const badge = root.querySelector(".badge");
    badge.textContent = cam.state.toUpperCase();
    badge.className = "badge " + cam.state;
    const banner = root.querySelector(".banner");
    const reason = cam.state === "up" ? null : (cam.reason || cam.state.toUpperCase());
    banner.hidden = !reason;
    banner.textContent = reason || "";
    root.querySelector(".figures").textContent = figuresText(cam);
    showEvents(root, cam, root === big ? 20 : 3);
  }

  function total(per) {
    return Object.values(per || {}).reduce((a, b) => a + b, 0);
  }

  function countsText(counts) {
    if (!counts) return "";
    const parts = [];
    for (const [name, dirs] of Object.entries(counts.lines)) {
      parts.push(`${name}: in ${total(dirs.in)} · out ${total(dirs.out)}`);
    }
    for (const [name, kinds] of Object.entries(counts.zones)) {
      parts.push(`${name}: ${total(kinds.inside)} now · ${total(kinds.entered)} entered`);
    }
    return parts.join("  |  ");
  }

  function eventText(e) {
    const what = e.crossings.length
      ? e.crossings.map((c) => `crossed ${c.line} (${c.direction})`).join(", ")
      : e.reasons.length ? e.reasons.join(", ").replaceAll("_", " ") : e.type;
    const zones = e.zones.length ? ` · in ${e.zones.join(", ")}` : "";
    return `${e.label} #${e.track_id} ${what}${zones}`;
  }

  function showEvents(root, cam, most) {
    const counts = root.querySelector(".counts");
    if (counts) {
      counts.textContent = countsText(cam.counts);
      counts.hidden = !cam.counts;
    }
    const list = root.querySelector(".events");
    if (!list) return;
    const recent = (cam.events || []).slice(-most).reverse();
    list.replaceChildren(...recent.map((e) => {
      const li = document.createElement("li");
      li.className = "event " + e.type;
      li.textContent = eventText(e);
      return li;
    }));
    list.hidden = recent.length === 0;
  }

  function onState(state) {
    lastState = state;
    const names = state.cameras.map((c) => c.name);
    for (const [name, target] of tiles) {
      if (!names.includes(name)) {
        if (target.player) target.player.close();
        target.tile.remove();
        tiles.delete(name);
      }
    }
    state.cameras.forEach((cam, i) => {
      let target = tiles.get(cam.name);
      if (!target) {
        target = makeTile(cam.name);
        tiles.set(cam.name, target);
      }
      if (grid.children[i] !== target.tile) grid.insertBefore(target.tile, grid.children[i] || null);
      showState(target.tile, cam);
      if (cam.name === enlarged) showBig(cam);
    });
    const up = state.cameras.filter((c) => c.state === "up").length;
    if (state.ended) {
      setStatus("the run has ended", true);
    } else {
      setStatus(`live · ${up} of ${state.cameras.length} camera(s) up · ${state.viewers} viewer(s)`);
    }
    if (enlarged && !names.includes(enlarged) && names.length) unenlarge();
  }

  function showBig(cam) {
    showState(big, cam);
    const hud = big.querySelector(".hud");
    hud.replaceChildren(...cam.hud.map((line) => {
      const li = document.createElement("li");
      li.textContent = line;
      return li;
    }));
    hud.hidden = cam.hud.length === 0;
    const dets = big.querySelector(".detections");
    dets.replaceChildren(...cam.detections.map((d) => {
      const li = document.createElement("li");
      li.textContent = `${d.name}${d.track_id !== undefined ? " #" + d.track_id : ""} ${(d.score * 100).toFixed(0)}%`;
      return li;
    }));
    const outs = big.querySelector(".outputs");
    outs.replaceChildren(...cam.outputs.map((path) => {
      const li = document.createElement("li");
      li.textContent = "recording: " + path;
      return li;
    }));
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function enlarge(name) {
    enlarged = name;
    big.querySelector(".name").textContent = name;
    const stage = big.querySelector(".stage");
    const old = stage.querySelector("canvas");
    const fresh = document.createElement("canvas"); // a clean canvas: no picture of another camera
    fresh.dataset.camera = name;
    fresh.className = "big";
    old.replaceWith(fresh);
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.dataset.camera = name;
    stage.querySelector("video").replaceWith(video);
    stage.classList.remove("drawn");
    if (bigTarget && bigTarget.player) bigTarget.player.close();
    bigTarget = makeTarget(stage);
    big.hidden = false;
    grid.hidden = true;
    if (location.hash !== "#camera=" + encodeURIComponent(name)) {
      history.replaceState(null, "", "#camera=" + encodeURIComponent(name));
    }
    if (lastState) {
      const cam = lastState.cameras.find((c) => c.name === name);
      if (cam) showBig(cam);
    }
    send({ type: "view", camera: name, codec });
  }

  function unenlarge() {
    enlarged = null;
    if (bigTarget && bigTarget.player) bigTarget.player.close();
    bigTarget = null;
    big.hidden = true;
    grid.hidden = false;
    history.replaceState(null, "", location.pathname + location.search);
    send({ type: "view", camera: null, codec });
  }

  function setCodec(value) {
    codec = value;
    document.body.classList.toggle("h264", codec === "h264");
    h264Box.checked = codec === "h264";
    stopPlayers();
    for (const target of tiles.values()) target.stage.classList.remove("drawn");
    send({ type: "view", camera: enlarged, codec });
  }

  function connect() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.hash = "";
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    let heard = false;
    socket = ws;
    ws.onopen = () => {
      stopPlayers(); // a new connection starts every H.264 stream with a new init segment
      if (enlarged || codec !== "jpeg") send({ type: "view", camera: enlarged, codec });
    };
    ws.onmessage = (event) => {
      if (!heard) {
        heard = true;
        retryMs = RETRY_FIRST_MS; // the connection works: the next drop retries quickly again
        runEnded = false;
      }
      if (typeof event.data !== "string") {
        stats.received += 1;
        stats.bytes += event.data.byteLength;
        onFrame(event.data);
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (message.type === "state") onState(message);
      else if (message.type === "end") runEnded = true;
    };
    ws.onclose = (event) => {
      if (socket === ws) socket = null;
      const wait = retryMs;
      retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
      let why;
      if (event.code === 1013) why = event.reason || "too many viewers";
      else if (runEnded) why = "the run has ended; waiting for a new one";
      else why = "connection lost";
      setStatus(`${why}: reconnecting in ${Math.round(wait / 100) / 10} s`, true);
      setTimeout(connect, wait);
    };
  }

  document.getElementById("back").addEventListener("click", unenlarge);
  h264Box.addEventListener("change", () => {
    try {
      localStorage.setItem("streamer.codec", h264Box.checked ? "h264" : "jpeg");
    } catch (err) { /* storage refused: the choice lasts for this page */ }
    setCodec(h264Box.checked ? "h264" : "jpeg");
  });
  setCodec(codec);
  big.querySelector(".stage").addEventListener("click", unenlarge);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && enlarged) unenlarge();
  });
  // The camera named in the address (#camera=NAME); a malformed one is ignored, never fatal.
  function hashCamera() {
    const hash = location.hash.match(/^#camera=(.+)$/);
    if (!hash) return null;
    try {
      return decodeURIComponent(hash[1]);
    } catch (err) {
      history.replaceState(null, "", location.pathname + location.search);
      return null;
    }
  }
  const fromHash = hashCamera();
  if (fromHash !== null) enlarge(fromHash);
  connect();
})();
