// The minimal chat page (until the browser app lands): plain JS over /ws/conversations/<id>/.
//
// Streams tokens, colours each generated token by the recipe's first probe (hover: the score and
// the logit lens), drives the interventions' scale/enabled live (adjust) or per turn
// (overrides), stops, compares, replays, and on a dropped socket reconnects and resumes every
// active run from the last (attempt, seq) it saw, dropping frames it already has.
(() => {
  "use strict";

  const data = JSON.parse(document.getElementById("playground-data").textContent);
  const $ = (id) => document.getElementById(id);
  const transcript = $("transcript");
  const errors = $("errors");
  const connection = $("connection");
  const stopButton = $("stop");
  const compareBox = $("compare");

  const WRITE_OPS = new Set(["steer", "ablate", "project_out", "clamp", "patch"]);
  const ACTIVE = new Set(["queued", "running"]);
  const RESUME_FINISHED = 10; // on load, the latest finished runs are re-streamed for their colours

  const runs = new Map(); // run id -> view
  const turns = new Map(); // turn key -> {el, columns}
  const pendingPrompts = new Map(); // ref -> prompt text (generate) or replayed run id
  let interventions = [];
  let knobs = []; // per intervention: {scale, enabled, initial: {scale, enabled}} (writes only)
  let socket = null;
  let attempts = 0;
  let refCounter = 0;

  // ------------------------------------------------------------------ helpers
  const el = (tag, attrs = {}, text = "") => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value);
    }
    if (text) node.textContent = text;
    return node;
  };
  const after = (a, b) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
  const send = (message) => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    showError("offline", "not connected: the message was not sent (reconnecting…)");
    return false;
  };
  const nextRef = (prefix) => `${prefix}${++refCounter}`;

  function showError(code, message) {
    const line = el("p", {}, `${code}: ${message}`);
    errors.prepend(line);
    while (errors.children.length > 5) errors.lastChild.remove();
  }

  function describe(item, index) {
    const name = item.name ? ` “${item.name}”` : "";
    const layer = item.layer !== undefined ? ` @ layer ${item.layer}` : "";
    return `#${index} ${item.op}${name}${layer}`;
  }

  // ------------------------------------------------------------------ intervention controls
  function buildControls(list) {
    interventions = list;
    knobs = [];
    const box = $("interventions");
    box.replaceChildren();
    if (!list.length) {
      box.append(el("p", {}, "No recipe: plain chat."));
      return;
    }
    list.forEach((item, index) => {
      const row = el("div", { class: "knob" });
      if (!WRITE_OPS.has(item.op)) {
        row.append(el("span", {}, `${describe(item, index)} (a read: no live control)`));
        box.append(row);
        knobs.push(null);
        return;
      }
      const scale = typeof item.scale === "number" ? item.scale : 1;
      const enabled = item.enabled !== false;
      const range = Math.max(10, Math.abs(scale) * 4);
      const knob = { scale, enabled, initial: { scale, enabled } };
      knobs.push(knob);

      const scaleId = `scale-${index}`;
      const enabledId = `enabled-${index}`;
      const slider = el("input", {
        id: scaleId,
        type: "range",
        min: String(-range),
        max: String(range),
        step: String(range / 200),
        value: String(scale),
      });
      const shown = el("output", { for: scaleId }, scale.toFixed(2));
      const box2 = el("input", { id: enabledId, type: "checkbox" });
      box2.checked = enabled;

      let timer = null;
      slider.addEventListener("input", () => {
        knob.scale = Number(slider.value);
        shown.textContent = knob.scale.toFixed(2);
        clearTimeout(timer); // at most one adjust per 80 ms while dragging
        timer = setTimeout(() => adjustLive(index, { scale: knob.scale }), 80);
      });
      box2.addEventListener("change", () => {
        knob.enabled = box2.checked;
        adjustLive(index, { enabled: knob.enabled });
      });
      row.append(
        el("span", {}, describe(item, index)),
        el("label", { for: scaleId }, "Scale"),
        slider,
        shown,
        box2,
        el("label", { for: enabledId }, "Enabled"),
      );
      box.append(row);
    });
  }

  function overrides() {
    const out = [];
    knobs.forEach((knob, index) => {
      if (!knob) return;
      if (knob.scale !== knob.initial.scale || knob.enabled !== knob.initial.enabled) {
        out.push({ index, scale: knob.scale, enabled: knob.enabled });
      }
    });
    return out;
  }

  function adjustLive(index, change) {
    // A run in progress with interventions gets the change now; the next turn gets it as an override.
    for (const view of runs.values()) {
      if (ACTIVE.has(view.status) && view.interventions.length) {
        send({ type: "adjust", run: view.id, intervention: index, ...change });
      }
    }
  }

  // ------------------------------------------------------------------ the transcript
  function turnFor(key, heading) {
    let turn = turns.get(key);
    if (!turn) {
      const node = el("div", { class: "turn" });
      node.append(el("p", { class: "prompt" }, heading));
      const columns = el("div", { class: "columns" });
      node.append(columns);
      transcript.append(node);
      turn = { el: node, columns };
      turns.set(key, turn);
    }
    return turn;
  }

  function runView(summary, turn) {
    let view = runs.get(summary.id);
    if (view) {
      setStatus(view, summary.status);
      return view;
    }
    const node = el("div", { class: "run" });
    const title = el("h3");
    const answer = el("div", { class: "answer" });
    const error = el("p", { class: "run-error" });
    const log = el("p", { class: "log" });
    const actions = el("div");
    node.append(title, answer, error, log, actions);
    (turn || turnFor(`run-${summary.id}`, `run ${summary.id}`)).columns.append(node);
    const list = summary.interventions || [];
    view = {
      id: summary.id,
      kind: summary.kind,
      status: summary.status,
      interventions: list,
      probe: list.findIndex((item) => item.op === "probe"),
      last: [0, 0],
      attempt: 0,
      cells: [],
      reads: new Map(),
      maxAbs: 0,
      plain: false,
      node,
      title,
      answer,
      error,
      log,
      actions,
      detail: "",
    };
    if (summary.text) {
      answer.textContent = summary.text; // until (if) its events are re-streamed
      view.plain = true;
    }
    runs.set(view.id, view);
    setStatus(view, summary.status);
    return view;
  }

  function setStatus(view, status, detail = "") {
    view.status = status;
    view.detail = detail;
    const kind = view.kind === "chat" ? "" : `${view.kind} · `;
    view.title.textContent = `run ${view.id} · ${kind}${status}${detail ? ` (${detail})` : ""}`;
    view.actions.replaceChildren();
    if (!ACTIVE.has(status)) {
      const replay = el("button", { type: "button", "aria-label": `Replay run ${view.id}` }, "Replay");
      replay.addEventListener("click", () => {
        const ref = nextRef("r");
        pendingPrompts.set(ref, { replayOf: view.id });
        send({ type: "replay", run: view.id, ref });
      });
      view.actions.append(replay);
    }
    stopButton.disabled = ![...runs.values()].some((v) => ACTIVE.has(v.status));
  }

  function reset(view) {
    view.answer.replaceChildren();
    view.cells = [];
    view.reads = new Map();
    view.maxAbs = 0;
    view.plain = false;
    view.error.textContent = "";
  }

  function colour(view, cell, index) {
    const read = view.reads.get(index);
    if (!cell || !read) return;
    const lines = [`token ${index}: ${JSON.stringify(cell.textContent)}`];
    const score = view.probe >= 0 ? read.probes[String(view.probe)] : undefined;
    if (typeof score === "number") {
      const alpha = view.maxAbs > 0 ? (0.65 * Math.abs(score)) / view.maxAbs : 0;
      cell.style.backgroundColor =
        score >= 0 ? `rgba(220, 50, 47, ${alpha.toFixed(3)})` : `rgba(38, 139, 210, ${alpha.toFixed(3)})`;
      lines.push(`${describe(view.interventions[view.probe], view.probe)}: ${score.toFixed(4)}`);
    }
    for (const [key, lens] of Object.entries(read.lens || {})) {
      const item = view.interventions[Number(key)];
      const top = lens.tokens.map((t, i) => `${JSON.stringify(t)} ${(lens.probs[i] || 0).toFixed(3)}`);
      lines.push(`${item ? describe(item, Number(key)) : `#${key} logit lens`}: ${top.join(", ")}`);
    }
    cell.title = lines.join("\n");
  }

  function onReads(view, frame) {
    if (frame.index < 0) return; // a prompt position
    view.reads.set(frame.index, frame);
    const score = view.probe >= 0 ? frame.probes[String(view.probe)] : undefined;
    if (typeof score === "number" && Math.abs(score) > view.maxAbs) {
      view.maxAbs = Math.abs(score); // a new extreme: recolour the run
      view.cells.forEach((cell, i) => colour(view, cell, i));
    } else {
      colour(view, view.cells[frame.index], frame.index);
    }
  }

  function onToken(view, frame) {
    if (view.plain) reset(view);
    const cell = el("span", { class: "tok" }, frame.text);
    view.cells[frame.index] = cell;
    view.answer.append(cell);
    colour(view, cell, frame.index);
  }

  function onRunFrame(frame) {
    const view = runs.get(frame.run) || runView({ id: frame.run, kind: "run", status: "running" });
    const key = [frame.attempt, frame.seq];
    if (!after(key, view.last)) return; // already seen (a resume re-sends from the database)
    view.last = key;
    if (frame.attempt !== view.attempt) {
      if (view.attempt !== 0) reset(view); // a retried run starts over on its next attempt
      view.attempt = frame.attempt;
    }
    switch (frame.type) {
      case "started":
        if (view.plain) reset(view);
        setStatus(view, "running", frame.attempt > 1 ? `attempt ${frame.attempt}` : "");
        break;
      case "token":
        onToken(view, frame);
        break;
      case "reads":
        onReads(view, frame);
        break;
      case "adjusted": {
        const parts = [];
        if (frame.scale !== undefined) parts.push(`scale ${Number(frame.scale).toFixed(2)}`);
        if (frame.enabled !== undefined) parts.push(frame.enabled ? "enabled" : "disabled");
        view.log.append(el("span", {}, `from token ${frame.step}: #${frame.index} ${parts.join(", ")}. `));
        break;
      }
      case "finished":
        setStatus(view, frame.status, frame.reason);
        if (frame.error) view.error.textContent = frame.error;
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ server frames
  function onFrame(frame) {
    switch (frame.type) {
      case "runs": {
        const pending = pendingPrompts.get(frame.ref);
        pendingPrompts.delete(frame.ref);
        let turn = null;
        if (pending && pending.prompt !== undefined) {
          turn = turnFor(`ref-${frame.ref}`, pending.prompt);
        } else if (pending && pending.replayOf !== undefined) {
          turn = turnFor(`ref-${frame.ref}`, `Replay of run ${pending.replayOf}`);
        }
        for (const summary of frame.runs) {
          runView(summary, turn);
          // The conversation's recipe may have changed: its runs' interventions are the controls.
          const list = summary.kind === "replay" ? [] : summary.interventions || [];
          if (list.length && JSON.stringify(list) !== JSON.stringify(interventions)) buildControls(list);
        }
        break;
      }
      case "queued": {
        const view = runs.get(frame.run);
        if (view && view.status === "queued") setStatus(view, "queued", `${frame.position} ahead`);
        break;
      }
      case "resumed": {
        const view = runs.get(frame.run.id);
        if (view && view.status !== frame.run.status && view.last[1] === 0) setStatus(view, frame.run.status);
        break;
      }
      case "cancelled": {
        const view = runs.get(frame.run);
        if (view) setStatus(view, frame.status || "cancelled");
        break;
      }
      case "gap": {
        const view = runs.get(frame.run);
        if (view) view.log.append(el("span", {}, "(some events were lost) "));
        break;
      }
      case "error":
        showError(frame.code, frame.message);
        break;
      case "started":
      case "token":
      case "reads":
      case "adjusted":
      case "finished":
        onRunFrame(frame);
        break;
      default:
        break; // ack, pong, status, recipe
    }
  }

  // ------------------------------------------------------------------ the socket
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + data.socket);
    connection.textContent = "connecting…";
    socket.addEventListener("open", () => {
      attempts = 0;
      connection.textContent = "connected";
      // Resume every run still in progress from the last event seen (nothing is lost or doubled).
      for (const view of runs.values()) {
        if (ACTIVE.has(view.status) || view.resumeOnOpen) {
          view.resumeOnOpen = false;
          send({ type: "resume", run: view.id, attempt: view.last[0], seq: view.last[1] });
        }
      }
    });
    socket.addEventListener("message", (event) => {
      try {
        onFrame(JSON.parse(event.data));
      } catch (exc) {
        showError("client", String(exc));
      }
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4404) {
        connection.textContent = event.code === 4401 ? "not logged in" : "no such conversation";
        return;
      }
      const delay = Math.min(10000, 500 * 2 ** attempts++);
      connection.textContent = `disconnected; reconnecting in ${Math.round(delay / 100) / 10} s`;
      setTimeout(connect, delay);
    });
  }

  // ------------------------------------------------------------------ the composer
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("message");
    const content = box.value;
    if (!content.trim()) return;
    const ref = nextRef("g");
    const message = {
      type: "generate",
      ref,
      content,
      sampling: {
        max_new_tokens: Number($("max-new-tokens").value) || 64,
        temperature: Number($("temperature").value),
      },
      compare: compareBox.checked,
    };
    const extra = overrides();
    if (extra.length) message.overrides = extra;
    pendingPrompts.set(ref, { prompt: content });
    if (send(message)) box.value = "";
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  stopButton.addEventListener("click", () => {
    for (const view of runs.values()) {
      if (ACTIVE.has(view.status)) send({ type: "stop", run: view.id });
    }
  });

  // ------------------------------------------------------------------ start
  buildControls(data.interventions);
  const past = data.turns;
  past.forEach((item, i) => {
    const key = item.run.kind === "replay" ? `replay-${item.run.id}` : `message-${item.message}`;
    const heading = item.run.kind === "replay" ? `Replay of run ${item.run.replay_of}: ${item.prompt}` : item.prompt;
    const view = runView(item.run, turnFor(key, heading));
    view.resumeOnOpen = i >= past.length - RESUME_FINISHED; // re-stream for the token colours
  });
  connect();
})();
