// lorascope report script: builds the grids from the page's JSON blob, keeps the chosen
// view in the URL fragment, shows full-size images (arrows move, Esc closes) and compares
// picked images side by side, with a slider or blink between two. All run text reaches the
// page through textContent or attributes, never as markup; nothing is fetched.
(function () {
  "use strict";
  var ROW_PAGE = 30;       // rows built per grid until the reader asks for more
  var FIRST_GRIDS = 2;     // grids built before the page shows; the rest right after
  var SEGMENT_MAX = 8;     // a value picker with more values is a <select>
  var started = performance.now();

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function attrName(axisId) { return "data-" + axisId.toLowerCase().replace(/[^a-z0-9-]+/g, "-"); }
  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // ---------------------------------------------------------------- compare picking
  var picked = [];  // [{key, item}] in the order picked
  var tray = document.getElementById("compare-tray");
  var compareDialog = document.getElementById("compare");
  var blinkTimer = null;

  function pickIndex(key) {
    for (var i = 0; i < picked.length; i++) { if (picked[i].key === key) { return i; } }
    return -1;
  }
  function togglePick(key, item) {
    var i = pickIndex(key);
    if (i >= 0) { picked.splice(i, 1); } else { picked.push({key: key, item: item}); }
    syncPicks();
  }
  function syncPicks() {
    var buttons = document.querySelectorAll("button.pick");
    for (var i = 0; i < buttons.length; i++) {
      var on = pickIndex(buttons[i].getAttribute("data-key")) >= 0;
      buttons[i].setAttribute("aria-pressed", on ? "true" : "false");
      buttons[i].textContent = on ? "✓ picked" : "compare";
    }
    if (!tray) { return; }
    tray.textContent = "";
    tray.hidden = picked.length === 0;
    tray.appendChild(el("span", null, picked.length + " picked"));
    var go = el("button", "open-compare", "Compare " + picked.length);
    go.type = "button";
    go.disabled = picked.length < 2;
    go.addEventListener("click", function () { openCompare(picked.map(function (p) { return p.item; })); });
    var clear = el("button", "clear-compare", "Clear");
    clear.type = "button";
    clear.addEventListener("click", function () { picked = []; syncPicks(); });
    tray.appendChild(go);
    tray.appendChild(clear);
  }

  function panel(item, cls) {
    var fig = el("figure", cls || "cmp-panel");
    fig.setAttribute("data-sha", item.sha || "");
    var img = el("img");
    img.src = item.full;
    img.alt = item.label || "";
    fig.appendChild(img);
    var cap = el("figcaption");
    cap.appendChild(el("div", "cmp-label", item.label || ""));
    var list = el("ul", "cmp-facts");
    (item.facts || []).forEach(function (f) { list.appendChild(el("li", null, f)); });
    cap.appendChild(list);
    if (item.sha) { cap.appendChild(el("div", "muted cmp-sha", "sha256 " + item.sha.slice(0, 16))); }
    fig.appendChild(cap);
    return fig;
  }

  function openCompare(items) {
    if (!compareDialog || typeof compareDialog.showModal !== "function" || items.length < 2) { return; }
    var mode = "side";
    function draw() {
      if (blinkTimer) { clearInterval(blinkTimer); blinkTimer = null; }
      compareDialog.textContent = "";
      compareDialog.setAttribute("data-mode", mode);
      var bar = el("div", "cmp-bar");
      bar.appendChild(el("b", null, items.length + " images"));
      var modes = [["side", "side by side"]];
      if (items.length === 2) { modes.push(["slider", "slider"], ["blink", "blink"]); }
      modes.forEach(function (m) {
        var b = el("button", "cmp-mode", m[1]);
        b.type = "button";
        b.setAttribute("data-mode", m[0]);
        b.setAttribute("aria-pressed", m[0] === mode ? "true" : "false");
        b.addEventListener("click", function () { mode = m[0]; draw(); });
        bar.appendChild(b);
      });
      var close = el("button", "cmp-close", "Close (Esc)");
      close.type = "button";
      close.addEventListener("click", function () { compareDialog.close(); });
      bar.appendChild(close);
      compareDialog.appendChild(bar);
      var body = el("div", "cmp-body");
      if (mode === "side") {
        body.className = "cmp-body cmp-side";
        items.forEach(function (item) { body.appendChild(panel(item)); });
      } else {
        body.className = "cmp-body cmp-two";
        var stack = el("div", "cmp-stack");
        var under = el("img", "cmp-a");
        under.src = items[0].full;
        under.alt = items[0].label || "";
        var over = el("img", "cmp-b");
        over.src = items[1].full;
        over.alt = items[1].label || "";
        stack.appendChild(under);
        stack.appendChild(over);
        var info = el("div", "cmp-info");
        if (mode === "slider") {
          var range = el("input", "cmp-range");
          range.type = "range"; range.min = "0"; range.max = "100"; range.value = "50";
          range.setAttribute("aria-label", "left: first image, right: second image");
          var apply = function () { over.style.clipPath = "inset(0 0 0 " + range.value + "%)"; };
          range.addEventListener("input", apply);
          apply();
          info.appendChild(range);
          info.appendChild(el("div", "muted", "left of the line: " + (items[0].label || "first") +
            "; right: " + (items[1].label || "second")));
        } else {
          var which = el("div", "cmp-showing");
          var showB = false;
          var flip = function () {
            showB = !showB;
            over.style.visibility = showB ? "visible" : "hidden";
            which.textContent = "showing: " + (showB ? items[1].label : items[0].label);
          };
          flip();
          blinkTimer = setInterval(flip, 700);
          info.appendChild(which);
        }
        body.appendChild(stack);
        body.appendChild(info);
        var row = el("div", "cmp-side cmp-small");
        items.forEach(function (item) { row.appendChild(panel(item)); });
        body.appendChild(row);
      }
      compareDialog.appendChild(body);
    }
    draw();
    if (!compareDialog.open) { compareDialog.showModal(); }
  }
  if (compareDialog) {
    compareDialog.addEventListener("close", function () {
      if (blinkTimer) { clearInterval(blinkTimer); blinkTimer = null; }
      compareDialog.textContent = "";
    });
  }

  // ---------------------------------------------------------------- grids
  var DATA = readJson("grid-data");
  var grids = [];

  function Grid(section, mount) {
    var axes = DATA.axes;
    this.section = section;
    this.mount = mount;
    this.axisIndex = {};
    for (var a = 0; a < axes.length; a++) { this.axisIndex[axes[a].id] = a; }
    var locked = section.locked || {};
    var lockedAt = {};
    Object.keys(locked).forEach(function (id) {
      var ai = this.axisIndex[id];
      if (ai === undefined) { return; }
      axes[ai].values.forEach(function (v, vi) { if (v.key === locked[id]) { lockedAt[ai] = vi; } });
    }, this);
    // the section's images and the values present on each axis
    var mine = [];
    var present = axes.map(function () { return {}; });
    DATA.images.forEach(function (img, index) {
      for (var ai in lockedAt) {
        if (img.at[ai] !== -1 && img.at[ai] !== lockedAt[ai]) { return; }
      }
      mine.push(index);
      img.at.forEach(function (v, ai) { if (v >= 0) { present[ai][v] = true; } });
    });
    for (var lai in lockedAt) { present[lai] = {}; present[lai][lockedAt[lai]] = true; }
    this.values = present.map(function (set) {
      return Object.keys(set).map(Number).sort(function (x, y) { return x - y; });
    });
    // position -> image, a wildcard (-1) standing for every present value of its axis
    var values = this.values;
    var index = new Map();
    mine.forEach(function (imageIndex) {
      var keys = [""];
      DATA.images[imageIndex].at.forEach(function (v, ai) {
        var choices = v >= 0 ? [v] : (values[ai].length ? values[ai] : [-1]);
        var next = [];
        keys.forEach(function (k) { choices.forEach(function (c) { next.push(k + c + ","); }); });
        keys = next;
      });
      keys.forEach(function (k) { if (!index.has(k)) { index.set(k, imageIndex); } });
    });
    this.index = index;
    this.lockedAt = lockedAt;
    this.state = this.normalise(section.default);
    this.shownRows = ROW_PAGE;
  }

  Grid.prototype.free = function () {  // axes the reader can move: not locked, with a value
    var out = [];
    for (var ai = 0; ai < DATA.axes.length; ai++) {
      if (this.lockedAt[ai] === undefined && this.values[ai].length) { out.push(DATA.axes[ai].id); }
    }
    return out;
  };
  Grid.prototype.valueKeys = function (id) {
    var axis = DATA.axes[this.axisIndex[id]];
    return this.values[this.axisIndex[id]].map(function (vi) { return axis.values[vi].key; });
  };
  Grid.prototype.normalise = function (state) {
    var free = this.free();
    var ok = function (id) { return free.indexOf(id) >= 0; };
    var def0 = this.section.default;
    // an axis this grid lacks (an old or edited link): that choice falls back to the default
    var rows = state.rows && state.rows.every(ok) ? state.rows : def0.rows.filter(ok);
    var cols = (state.cols && state.cols.every(ok) ? state.cols : def0.cols).filter(function (id) {
      return ok(id) && rows.indexOf(id) < 0;
    });
    var fixed = {};
    var def = this.section.default.fixed || {};
    free.forEach(function (id) {
      if (rows.indexOf(id) >= 0 || cols.indexOf(id) >= 0) { return; }
      var keys = this.valueKeys(id);
      var want = (state.fixed || {})[id];
      if (want === undefined) { want = def[id]; }
      if (want !== "*" && keys.indexOf(want) < 0) { want = keys[0]; }
      fixed[id] = want;
    }, this);
    return {rows: rows, cols: cols, fixed: fixed};
  };

  // every combination of the given axes' present values: [[axisId, valueIndex], ...]
  Grid.prototype.combos = function (ids) {
    var out = [[]];
    ids.forEach(function (id) {
      var ai = this.axisIndex[id];
      var next = [];
      out.forEach(function (combo) {
        this.values[ai].forEach(function (vi) { next.push(combo.concat([[ai, vi]])); });
      }, this);
      out = next;
    }, this);
    return out;
  };
  Grid.prototype.lookup = function (parts) {  // parts: list of combos
    var at = [];
    for (var ai in this.lockedAt) { at[ai] = this.lockedAt[ai]; }
    var fixed = this.state.fixed;
    Object.keys(fixed).forEach(function (id) {
      if (fixed[id] === "*") { return; }
      var ai = this.axisIndex[id];
      var vi = DATA.axes[ai].values.findIndex(function (v) { return v.key === fixed[id]; });
      at[ai] = vi;
    }, this);
    parts.forEach(function (combo) { combo.forEach(function (pair) { at[pair[0]] = pair[1]; }); });
    var key = "";
    for (var i = 0; i < DATA.axes.length; i++) {
      key += (at[i] === undefined ? (this.values[i].length ? this.values[i][0] : -1) : at[i]) + ",";
    }
    var hit = this.index.get(key);
    return hit === undefined ? null : hit;
  };

  function valueLabel(ai, vi) {
    var axis = DATA.axes[ai];
    var v = axis.values[vi];
    if (axis.id === "seed") { return "seed " + v.label; }
    if (axis.id === "scale") { return v.key === "baseline" ? v.label : "scale " + v.label; }
    if (axis.id.indexOf("opt:") === 0 || axis.id === "strength") { return axis.label + "=" + v.label; }
    if (axis.id === IMAGE_AXIS) { return axis.label + " " + v.label; }
    return v.label;
  }
  function comboLabel(combo) {
    return combo.map(function (p) { return valueLabel(p[0], p[1]); }).join(" · ");
  }

  // ---------------------------------------------------------------- input pictures
  // img2img/inpaint runs: the input a row (or column) starts from, at its head
  var IMAGE_AXIS = "init_image";
  var INPUTS = (DATA && DATA.inputs) || {};

  // the input keys a row or column header shows: the image value in its own combo; for
  // rows, when the image axis is neither on rows nor columns, the fixed one (or every
  // present one when stacked, each labelled by its id)
  Grid.prototype.inputKeys = function (combo, isRow) {
    var ai = this.axisIndex[IMAGE_AXIS];
    if (ai === undefined || !this.values[ai].length) { return []; }
    var keyOf = function (vi) { return DATA.axes[ai].values[vi].key; };
    for (var i = 0; i < combo.length; i++) { if (combo[i][0] === ai) { return [keyOf(combo[i][1])]; } }
    if (!isRow || this.state.cols.indexOf(IMAGE_AXIS) >= 0 || this.state.rows.indexOf(IMAGE_AXIS) >= 0) { return []; }
    var fixed = this.state.fixed[IMAGE_AXIS];
    if (fixed === undefined) { return []; }
    return fixed === "*" ? this.values[ai].map(keyOf) : [fixed];
  };

  // a stored input picture (or mask) as a linked thumbnail the viewer opens
  function inputThumb(item, alt) {
    var a = el("a", "thumb input-thumb");
    a.href = item.full;
    a.title = item.title || "";
    a.setAttribute("data-caption", item.title || "");
    var t = el("img");
    t.src = item.thumb;
    t.loading = "lazy";
    t.decoding = "async";
    if (item.w) { t.width = item.w; t.height = item.h; }
    t.alt = alt;
    a.appendChild(t);
    return a;
  }

  function inputHead(keys) {
    var box = el("div", "input-heads" + (keys.length > 1 ? " many" : ""));
    keys.forEach(function (key) {
      var input = INPUTS[key];
      var fig = el("figure", "input-fig");
      fig.setAttribute("data-input", key);
      if (!input || input.status !== "ok") {
        fig.setAttribute("data-status", "missing");
        fig.appendChild(el("div", "input-missing", "input " + key + ": " + ((input && input.reason) || "not stored in the run")));
        box.appendChild(fig);
        return;
      }
      fig.setAttribute("data-status", "ok");
      fig.setAttribute("data-sha", input.sha || "");
      fig.appendChild(inputThumb(input, "input " + key));
      var cap = el("figcaption");
      cap.appendChild(el("span", null, "input " + key));
      var itemKey = "input:" + key;
      var pick = el("button", "pick", "compare");
      pick.type = "button";
      pick.setAttribute("data-key", itemKey);
      pick.setAttribute("aria-pressed", pickIndex(itemKey) >= 0 ? "true" : "false");
      pick.addEventListener("click", function () {
        togglePick(itemKey, {full: input.full, label: "input " + key, sha: input.sha,
                             facts: input.size ? [input.size] : []});
      });
      cap.appendChild(pick);
      fig.appendChild(cap);
      box.appendChild(fig);
      var mask = input.mask;
      if (mask && mask.status === "ok") {  // inpaint: the mask beside its picture (white repaints)
        var mf = el("figure", "input-fig mask-fig");
        mf.setAttribute("data-mask", key);
        mf.setAttribute("data-sha", mask.sha || "");
        mf.appendChild(inputThumb(mask, "mask of input " + key));
        mf.appendChild(el("figcaption", null, "mask (white repaints)"));
        box.appendChild(mf);
      }
    });
    return box;
  }

  Grid.prototype.layout = function () {
    var state = this.state;
    var stacked = Object.keys(state.fixed).filter(function (id) { return state.fixed[id] === "*"; });
    var rows = this.combos(state.rows), cols = this.combos(state.cols), stacks = this.combos(stacked);
    var matrix = rows.map(function (r) {
      return cols.map(function (c) {
        return stacks.map(function (k) { return this.lookup([r, c, k]); }, this);
      }, this);
    }, this);
    var keepCol = cols.map(function (_, ci) {
      return matrix.some(function (row) { return row[ci].some(function (x) { return x !== null; }); });
    });
    var out = {rows: [], cols: cols.filter(function (_, ci) { return keepCol[ci]; }), stacks: stacks, cells: []};
    matrix.forEach(function (row, ri) {
      var kept = row.filter(function (_, ci) { return keepCol[ci]; });
      if (kept.some(function (cell) { return cell.some(function (x) { return x !== null; }); })) {
        out.rows.push(rows[ri]);
        out.cells.push(kept);
      }
    });
    return out;
  };

  Grid.prototype.setState = function (state, record) {
    this.state = this.normalise(state);
    this.shownRows = ROW_PAGE;
    if (this.current) { this.render(); }
    if (record) { writeFragment(this); }
  };

  Grid.prototype.renderControls = function () {
    var grid = this, state = this.state, free = this.free();
    var box = el("div", "gridctl");
    var multi = free.filter(function (id) { return grid.valueKeys(id).length > 1; });
    function axisSelect(name, current, withPair) {
      var wrap = el("label", "axis-pick", name + " ");
      var sel = el("select");
      sel.setAttribute("data-role", name);
      var options = [["", "none"]];
      if (withPair && multi.indexOf("prompt") >= 0 && multi.indexOf("seed") >= 0) {
        options.push(["prompt*seed", "prompt × seed"]);
      }
      multi.forEach(function (id) { options.push([id, DATA.axes[grid.axisIndex[id]].label]); });
      var cur = current.join("*");
      if (cur && !options.some(function (o) { return o[0] === cur; })) {
        options.push([cur, current.map(function (id) { return DATA.axes[grid.axisIndex[id]].label; }).join(" × ")]);
      }
      options.forEach(function (o) {
        var opt = el("option", null, o[1]);
        opt.value = o[0];
        opt.selected = o[0] === cur;
        sel.appendChild(opt);
      });
      sel.addEventListener("change", function () {
        var chosen = sel.value ? sel.value.split("*") : [];
        var other = name === "rows" ? state.cols : state.rows;
        var mine = name === "rows" ? state.rows : state.cols;
        var clash = other.some(function (id) { return chosen.indexOf(id) >= 0; });
        var rest = clash ? mine.filter(function (id) { return chosen.indexOf(id) < 0; }) : other;
        var next = name === "rows" ? {rows: chosen, cols: rest} : {rows: rest, cols: chosen};
        next.fixed = state.fixed;
        grid.setState(next, true);
      });
      wrap.appendChild(sel);
      return wrap;
    }
    var axesRow = el("div", "axes");
    axesRow.appendChild(axisSelect("rows", state.rows, true));
    axesRow.appendChild(axisSelect("columns", state.cols, false));
    box.appendChild(axesRow);
    multi.forEach(function (id) {
      if (state.rows.indexOf(id) >= 0 || state.cols.indexOf(id) >= 0) { return; }
      var ai = grid.axisIndex[id];
      var keys = grid.valueKeys(id);
      var allLabel = id === "provider" ? "side by side" : "all";
      var picker = el("div", "value-pick");
      picker.setAttribute("data-axis", id);
      picker.appendChild(el("span", "axis-name", DATA.axes[ai].label + ":"));
      var choose = function (key) {
        var fixed = {};
        Object.keys(state.fixed).forEach(function (k) { fixed[k] = state.fixed[k]; });
        fixed[id] = key;
        grid.setState({rows: state.rows, cols: state.cols, fixed: fixed}, true);
      };
      var entries = keys.map(function (k) {
        var vi = grid.values[ai][keys.indexOf(k)];
        return [k, DATA.axes[ai].values[vi].label, DATA.axes[ai].values[vi].title || ""];
      }).concat([["*", allLabel, ""]]);
      if (entries.length <= SEGMENT_MAX) {
        entries.forEach(function (e) {
          var b = el("button", "seg" + (e[0] === "*" ? " all" : ""), e[1]);
          b.type = "button";
          b.setAttribute("data-value", e[0]);
          if (e[2]) { b.title = e[2]; }
          b.setAttribute("aria-pressed", state.fixed[id] === e[0] ? "true" : "false");
          b.addEventListener("click", function () { choose(e[0]); });
          picker.appendChild(b);
        });
      } else {
        var sel = el("select");
        sel.setAttribute("data-axis", id);
        entries.forEach(function (e) {
          var opt = el("option", null, e[1]);
          opt.value = e[0];
          opt.selected = state.fixed[id] === e[0];
          sel.appendChild(opt);
        });
        sel.addEventListener("change", function () { choose(sel.value); });
        picker.appendChild(sel);
      }
      box.appendChild(picker);
    });
    return box;
  };

  Grid.prototype.figure = function (imageIndex, stackCombo, position) {
    var fig = el("figure", "fig");
    if (imageIndex === null) {
      fig.setAttribute("data-status", "absent");
      fig.appendChild(el("div", "fail absent", "not in this run"));
      var capA = el("figcaption");
      if (stackCombo.length) { capA.appendChild(el("b", null, comboLabel(stackCombo))); }
      fig.appendChild(capA);
      return fig;
    }
    var img = DATA.images[imageIndex];
    if (img.rec) { fig.classList.add("rec"); }
    if (img.nsfw) { fig.classList.add("nsfw"); }
    fig.setAttribute("data-provider", img.provider);
    fig.setAttribute("data-status", img.status);
    fig.setAttribute("data-sha", img.sha || "");
    fig.setAttribute("data-image", String(imageIndex));
    if (img.status === "ok") {
      var a = el("a", "thumb");
      a.href = img.full;
      a.setAttribute("data-caption", img.title || "");
      a.setAttribute("data-pos", position);
      a.title = img.title || "";
      var t = el("img");
      t.src = img.thumb;
      t.loading = "lazy";
      t.decoding = "async";
      if (img.w) { t.width = img.w; t.height = img.h; }
      t.alt = img.title || "";
      a.appendChild(t);
      fig.appendChild(a);
    } else {
      fig.appendChild(el("div", "fail", (img.status === "failed" ? "failed: " : "missing: ") + (img.reason || "")));
      fig.lastChild.title = img.title || "";
    }
    var cap = el("figcaption");
    cap.appendChild(el("b", null, img.provider));
    if (img.rec) { cap.appendChild(document.createTextNode(" ")); cap.appendChild(el("span", "badge run", "rec.")); }
    if (img.nsfw) { cap.appendChild(document.createTextNode(" ")); cap.appendChild(el("span", "badge nsfw", "NSFW")); }
    var extra = stackCombo.filter(function (p) { return DATA.axes[p[0]].id !== "provider"; });
    if (extra.length) { cap.appendChild(el("br")); cap.appendChild(el("span", "stackval", comboLabel(extra))); }
    (img.caption || []).forEach(function (c) { cap.appendChild(el("br")); cap.appendChild(document.createTextNode(c)); });
    fig.appendChild(cap);
    if (img.status === "ok") {
      var key = "img:" + imageIndex;
      var pick = el("button", "pick", "compare");
      pick.type = "button";
      pick.setAttribute("data-key", key);
      pick.setAttribute("aria-pressed", pickIndex(key) >= 0 ? "true" : "false");
      pick.addEventListener("click", function () { togglePick(key, itemOf(imageIndex)); });
      fig.appendChild(pick);
    }
    return fig;
  };

  Grid.prototype.render = function () {
    var grid = this;
    var layout = this.layout();
    this.current = layout;
    var marks = this.section.marks || {};
    this.mount.textContent = "";
    this.mount.appendChild(this.renderControls());
    var wrap = el("div", "gridwrap");
    var table = el("table", "grid");
    table.setAttribute("data-lora", (this.section.locked || {}).lora || "*");
    table.setAttribute("data-rows", this.state.rows.join("*"));
    table.setAttribute("data-cols", this.state.cols.join("*"));
    var head = el("thead"), htr = el("tr");
    var corner = el("th", "rowhead", this.state.rows.map(function (id) {
      return DATA.axes[grid.axisIndex[id]].label; }).join(" · ") || "");
    htr.appendChild(corner);
    layout.cols.forEach(function (combo) {
      var th = el("th", null, comboLabel(combo) || "all");
      combo.forEach(function (p) { th.setAttribute(attrName(DATA.axes[p[0]].id), DATA.axes[p[0]].values[p[1]].key); });
      var colInputs = grid.inputKeys(combo, false);
      if (colInputs.length) { th.appendChild(inputHead(colInputs)); }
      combo.forEach(function (p) {
        if (DATA.axes[p[0]].id !== "scale") { return; }
        (marks[DATA.axes[p[0]].values[p[1]].key] || []).forEach(function (m) {
          th.appendChild(el("br"));
          th.appendChild(el("span", m.indexOf("catalogue") === 0 ? "badge cat" : "badge run", m));
        });
      });
      htr.appendChild(th);
    });
    head.appendChild(htr);
    table.appendChild(head);
    var body = el("tbody");
    var limit = Math.min(layout.rows.length, this.shownRows);
    for (var ri = 0; ri < limit; ri++) {
      var combo = layout.rows[ri];
      var tr = el("tr");
      combo.forEach(function (p) { tr.setAttribute(attrName(DATA.axes[p[0]].id), DATA.axes[p[0]].values[p[1]].key); });
      var rh = el("th", "rowhead");
      rh.scope = "row";
      rh.appendChild(el("div", "pid", comboLabel(combo) || "all"));
      combo.forEach(function (p) {
        var title = DATA.axes[p[0]].values[p[1]].title;
        if (title) { var d = el("div", "prompt", title); d.title = title; rh.appendChild(d); }
      });
      var rowInputs = grid.inputKeys(combo, true);
      if (rowInputs.length) { rh.appendChild(inputHead(rowInputs)); }
      tr.appendChild(rh);
      layout.cells[ri].forEach(function (cell, ci) {
        var td = el("td"), box = el("div", "cell");
        cell.forEach(function (imageIndex, ki) {
          box.appendChild(grid.figure(imageIndex, layout.stacks[ki], ri + "," + ci + "," + ki));
        });
        td.appendChild(box);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    table.appendChild(body);
    wrap.appendChild(table);
    this.mount.appendChild(wrap);
    if (!layout.rows.length) { this.mount.appendChild(el("p", "note", "No image matches this choice.")); }
    if (limit < layout.rows.length) {
      var more = el("button", "more-rows", "Show " + Math.min(ROW_PAGE, layout.rows.length - limit) +
        " more rows (" + limit + " of " + layout.rows.length + " shown)");
      more.type = "button";
      more.addEventListener("click", function () { grid.shownRows += ROW_PAGE; grid.render(); });
      this.mount.appendChild(more);
    }
  };

  function itemOf(imageIndex) {
    var img = DATA.images[imageIndex];
    return {full: img.full, label: img.title ? img.title.split("\n")[0] : img.provider, sha: img.sha,
            facts: (img.caption || []).concat(img.cost ? ["cost " + img.cost] : [])};
  }

  // ---------------------------------------------------------------- URL fragment
  function isViewHash(hash) { return hash.indexOf("=") >= 0; }
  function stateParams(grid, params) {
    var p = grid.section.anchor + ".";
    params.set(p + "rows", grid.state.rows.join("*"));
    params.set(p + "cols", grid.state.cols.join("*"));
    Object.keys(grid.state.fixed).forEach(function (id) { params.set(p + id, grid.state.fixed[id]); });
  }
  function writeFragment(changed) {
    var params = new URLSearchParams();
    grids.forEach(function (g) { if (g.touched || g === changed) { g.touched = true; stateParams(g, params); } });
    params.set("at", changed.section.anchor);
    history.replaceState(null, "", "#" + params.toString());
  }
  function readFragment() {
    var hash = location.hash.slice(1);
    if (!isViewHash(hash)) { return null; }
    var params = new URLSearchParams(hash);
    grids.forEach(function (g) {
      var p = g.section.anchor + ".";
      if (!params.has(p + "rows") && !params.has(p + "cols")) {
        g.touched = false; g.setState(g.section.default, false); return;
      }
      var split = function (v) { return v === null ? null : (v ? v.split("*") : []); };
      var fixed = {};
      params.forEach(function (value, key) {
        if (key.indexOf(p) === 0 && key !== p + "rows" && key !== p + "cols") { fixed[key.slice(p.length)] = value; }
      });
      g.touched = true;
      g.setState({rows: split(params.get(p + "rows")), cols: split(params.get(p + "cols")), fixed: fixed}, false);
    });
    return params.get("at");
  }

  if (DATA) {
    var mounts = document.querySelectorAll("[data-grid]");
    var byAnchor = {};
    DATA.sections.forEach(function (s) { byAnchor[s.anchor] = s; });
    for (var m = 0; m < mounts.length; m++) {
      var section = byAnchor[mounts[m].getAttribute("data-grid")];
      if (section) { grids.push(new Grid(section, mounts[m])); }
    }
    // the grids on the first screen now (up to the one a link points at), the others one
    // per task after the page is shown: a 10,000-image run opens without waiting for them
    var at = readFragment();
    var anchor = at || location.hash.slice(1);
    var first = FIRST_GRIDS;
    grids.forEach(function (g, i) {
      var section = g.mount.closest("section");
      if (anchor && section && (section.id === anchor || section.compareDocumentPosition(
        document.getElementById(anchor) || section) & Node.DOCUMENT_POSITION_FOLLOWING)) { first = Math.max(first, i + 1); }
    });
    grids.slice(0, first).forEach(function (g) { g.render(); });
    if (at) {
      var target = document.getElementById(at);
      if (target) { target.scrollIntoView(); }
    }
    var rest = grids.slice(first);
    var buildNext = function () {
      var g = rest.shift();
      if (g) { g.render(); setTimeout(buildNext, 0); return; }
      document.body.setAttribute("data-ready-ms", String(Math.round(performance.now() - started)));
    };
    setTimeout(buildNext, 0);
    window.addEventListener("hashchange", function () { if (isViewHash(location.hash)) { readFragment(); } });
  }

  // ---------------------------------------------------------------- full-size viewer
  var viewer = document.getElementById("viewer");
  if (viewer && typeof viewer.showModal === "function") {
    var vimg = viewer.querySelector("img");
    var vcap = viewer.querySelector("p");
    var where = null;  // {grid, r, c, k} inside a grid, or {link} elsewhere

    var show = function (href, caption) {
      vimg.src = href;
      vimg.alt = caption;
      vcap.textContent = caption + "\n← → ↑ ↓ move · Esc closes";
      if (!viewer.open) { viewer.showModal(); }
    };
    var showAt = function (pos) {
      var lay = pos.grid.current;
      var imageIndex = lay.cells[pos.r][pos.c][pos.k];
      var img = DATA.images[imageIndex];
      where = pos;
      show(img.full, (img.title || "") + "\n" + comboLabel(lay.rows[pos.r]) + " | " + comboLabel(lay.cols[pos.c]));
    };
    var okAt = function (grid, r, c, k) {
      var lay = grid.current;
      var i = lay.cells[r] && lay.cells[r][c] ? lay.cells[r][c][k] : null;
      return i !== null && i !== undefined && DATA.images[i].status === "ok";
    };
    var move = function (dr, dc) {
      if (!where) { return; }
      if (where.link) {
        var links = Array.prototype.slice.call(document.querySelectorAll("a.thumb"));
        var i = links.indexOf(where.link) + (dr || dc);
        if (i >= 0 && i < links.length) { where = {link: links[i]}; show(links[i].getAttribute("href"), links[i].getAttribute("data-caption") || ""); }
        return;
      }
      var lay = where.grid.current, r = where.r + dr, c = where.c + dc;
      while (r >= 0 && r < lay.rows.length && c >= 0 && c < lay.cols.length) {
        if (okAt(where.grid, r, c, where.k)) { showAt({grid: where.grid, r: r, c: c, k: where.k}); return; }
        r += dr; c += dc;
      }
    };
    document.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a.thumb") : null;
      if (!link) { return; }
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) { return; }
      event.preventDefault();
      var pos = link.getAttribute("data-pos");
      var mount = link.closest("[data-grid]");
      var grid = null;
      grids.forEach(function (g) { if (g.mount === mount) { grid = g; } });
      if (pos && grid) {
        var p = pos.split(",").map(Number);
        showAt({grid: grid, r: p[0], c: p[1], k: p[2]});
      } else {
        where = {link: link};
        show(link.getAttribute("href"), link.getAttribute("data-caption") || "");
      }
    });
    document.addEventListener("keydown", function (event) {
      if (!viewer.open) { return; }
      var d = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]}[event.key];
      if (!d) { return; }
      event.preventDefault();
      move(d[0], d[1]);
    });
    viewer.addEventListener("click", function () { viewer.close(); });
    viewer.addEventListener("close", function () { vimg.removeAttribute("src"); where = null; });
  }

  // ---------------------------------------------------------------- comparison report
  // its figures are in the markup: their pick buttons carry the image in data attributes
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.pick[data-full]") : null;
    if (!button) { return; }
    var facts = button.getAttribute("data-facts");
    togglePick(button.getAttribute("data-key"), {
      full: button.getAttribute("data-full"), label: button.getAttribute("data-label") || "",
      sha: button.getAttribute("data-sha") || "", facts: facts ? facts.split("\n") : []});
  });
  var PAIRS = readJson("compare-data");
  if (PAIRS) {
    document.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("button.pair-compare") : null;
      if (!button) { return; }
      var pair = (PAIRS.pairs || [])[Number(button.getAttribute("data-pair"))];
      if (pair) { openCompare(pair); }
    });
  }

  syncPicks();
  // for benchmarks and tests: when the script started (ms since navigation), how long the
  // first screen took, and (data-ready-ms, set above) when every grid was built
  document.body.setAttribute("data-script-start-ms", String(Math.round(started)));
  document.body.setAttribute("data-first-ms", String(Math.round(performance.now() - started)));
  if (!DATA) { document.body.setAttribute("data-ready-ms", "0"); }
})();
