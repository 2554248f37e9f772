// lorascope review page: fetch a pair, vote by key or click, show the next (prefetched) pair.
// Run text arrives as JSON and goes in with textContent only; the server commits each vote
// before it answers, and a vote is retried with the same id until it is acknowledged.
"use strict";
(function () {
  const main = document.getElementById("review");
  const rater = main.dataset.rater;
  const token = main.dataset.token;
  const el = (id) => document.getElementById(id);
  const state = { current: null, next: null, busy: false, done: false };
  window.lorascopeReview = { acked: [], shown: 0 };

  function url(path, params) {
    const u = new URL(path, window.location.origin);
    if (token) u.searchParams.set("token", token);
    for (const [k, v] of Object.entries(params || {})) {
      for (const item of [].concat(v)) if (item) u.searchParams.append(k, item);
    }
    return u.toString();
  }

  function voteId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function status(text, error) {
    const s = el("status");
    s.textContent = text;
    s.className = error ? "status error" : "status";
  }

  async function fetchPair(exclude) {
    const r = await fetch(url("/api/next", { rater: rater, exclude: exclude }), { credentials: "same-origin" });
    if (!r.ok) throw new Error("next pair: HTTP " + r.status);
    const body = await r.json();
    showProgress(body.progress);
    return body.pair;
  }

  function preload(pair) {
    if (!pair) return;
    const urls = [pair.left.url, pair.right.url];
    if (pair.input && pair.input.url) urls.push(pair.input.url);
    for (const u of urls) { const img = new Image(); img.src = u; }
  }

  // image-conditioned runs: the strength in words and the input picture beside the pair
  function showInput(pair) {
    const fig = el("input");
    const conditioned = !!pair && (pair.input !== null && pair.input !== undefined);
    el("question").hidden = !conditioned;
    if (!conditioned) {
      fig.hidden = true;
      el("input-img").removeAttribute("src");
      main.dataset.input = "";
      return;
    }
    const strength = pair.strength === null ? "" : ` · strength ${pair.strength}`;
    el("input-caption").textContent = `input “${pair.input.id}”${strength}`;
    if (pair.input.url) {
      el("input-img").src = pair.input.url;
      el("input-img").alt = `input picture ${pair.input.id}`;
    } else {
      el("input-img").removeAttribute("src");
      el("input-img").alt = "the run keeps no copy of this input";
    }
    fig.hidden = false;
    main.dataset.input = pair.input.sha || "";
  }

  function showProgress(progress) {
    const ul = el("progress");
    ul.replaceChildren();
    for (const p of progress || []) {
      const li = document.createElement("li");
      li.textContent = `${p.lora} · ${p.provider}: ${p.votes} / ${p.target} vote(s)`;
      li.dataset.lora = p.lora;
      li.dataset.votes = String(p.votes);
      if (p.votes >= p.target) li.className = "done";
      ul.appendChild(li);
    }
  }

  function show(pair) {
    state.current = pair;
    if (!pair) {
      state.done = true;
      el("context").textContent = "Every pair has your vote. Thank you — `lorascope ratings RUN` shows the result.";
      el("left-img").removeAttribute("src");
      el("right-img").removeAttribute("src");
      showInput(null);
      main.dataset.pair = "";
      return;
    }
    const strength = pair.strength === null || pair.strength === undefined ? "" : ` · strength ${pair.strength}`;
    const input = pair.input ? ` · input “${pair.input.id}”` : "";
    el("context").textContent = `${pair.lora} · ${pair.provider}${strength}${input} · prompt “${pair.prompt}” · seed ${pair.seed}`;
    showInput(pair);
    el("left-img").src = pair.left.url;
    el("right-img").src = pair.right.url;
    main.dataset.pair = pair.key;
    window.lorascopeReview.shown += 1;
  }

  async function post(body) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(url("/api/vote"), {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
        if (r.ok) return await r.json();
        const err = await r.json().catch(() => ({}));
        if (r.status < 500) throw new Error(err.error || "HTTP " + r.status);
      } catch (e) {
        if (!(e instanceof TypeError) || attempt >= 20) throw e;  // TypeError: network down
      }
      status("server unreachable, retrying your vote…", true);
      await new Promise((res) => setTimeout(res, 500));
    }
  }

  const NAMES = { left: "left is better", right: "right is better", tie: "can't tell", skip: "skipped" };

  async function vote(choice) {
    const pair = state.current;
    if (!pair || state.busy) return;
    state.busy = true;
    main.dataset.busy = "1";
    try {
      const ack = await post({ vote_id: voteId(), rater: rater, slot: pair.slot,
                               left: pair.left.sha, right: pair.right.sha, choice: choice });
      window.lorascopeReview.acked.push(ack.vote_id);
      el("reveal").textContent = `Last: ${NAMES[choice]} — left was ${ack.left_label}, right was ${ack.right_label}.`;
      showProgress(ack.progress);
      status(`${window.lorascopeReview.acked.length} vote(s) saved`);
      let next = state.next;
      state.next = null;
      if (!next || next.key === pair.key) next = await fetchPair([pair.key]);
      show(next);
      if (next) { state.next = await fetchPair([next.key]); preload(state.next); }
    } catch (e) {
      status("vote not saved: " + e.message, true);
    } finally {
      state.busy = false;
      main.dataset.busy = "";
    }
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const choice = { "1": "left", ArrowLeft: "left", "2": "right", ArrowRight: "right",
                     "0": "tie", ArrowDown: "tie", s: "skip", S: "skip" }[ev.key];
    if (!choice) return;
    ev.preventDefault();
    vote(choice);
  });
  el("left").addEventListener("click", () => vote("left"));
  el("right").addEventListener("click", () => vote("right"));
  el("vote-left").addEventListener("click", () => vote("left"));
  el("vote-right").addEventListener("click", () => vote("right"));
  el("vote-tie").addEventListener("click", () => vote("tie"));
  el("vote-skip").addEventListener("click", () => vote("skip"));

  (async function start() {
    try {
      const first = await fetchPair([]);
      show(first);
      if (first) { state.next = await fetchPair([first.key]); preload(state.next); }
      main.dataset.ready = "1";
    } catch (e) {
      status("could not load a pair: " + e.message, true);
    }
  })();
})();
