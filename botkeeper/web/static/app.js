// botkeeper status page: refreshes itself from /api/status; no framework, no external code.
// Text from the server is only ever set with textContent, never as HTML (reasons are free text).
"use strict";
(function () {
  var body = document.body;
  var every = Math.max(1, parseFloat(body.dataset.refresh || "5")) * 1000;
  var CHART_EVERY = 6; // redraw the chart every 6th refresh; samples arrive once a minute
  var ticks = 0;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function dur(s) {  // fmt.duration(s, "short"): whole seconds cut, never rounded
    if (s === null || s === undefined) return "–";
    s = Math.floor(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function size(n) {
    if (n === null || n === undefined) return "–";
    var units = ["B", "KB", "MB", "GB"];
    for (var i = 0; i < units.length; i++) {
      if (n < 1024 || i === units.length - 1) return (i < 2 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
      n /= 1024;
    }
  }
  function uptime(p) {  // rounded down, like fmt.uptime: 99.996% is not a perfect 100%
    return p === null || p === undefined ? "–" : String(Math.floor(p * 100 + 1e-9) / 100) + "%";
  }
  function pct(p) { return p === null || p === undefined ? "–" : p.toFixed(1) + "%"; }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(t) {  // 24-hour, as the CLI prints it (%F %T), in the viewer's time zone
    if (!t) return "–";
    var d = new Date(t * 1000);
    var today = new Date().toDateString() === d.toDateString();
    var day = d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " ";
    return (today ? "" : day) + two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  var HEARTBEAT_WORDS = {  // fmt.HEARTBEAT_WORDS
    fresh: "fresh", late: "late", stale: "stale: the bot may be hung", missing: "not written yet",
    foreign: "left by an earlier bot run", invalid: "unreadable", disabled: "not used by this bot"
  };
  function localTimes(root) {
    var nodes = (root || document).querySelectorAll("time[data-t]");
    for (var i = 0; i < nodes.length; i++) {
      var t = parseFloat(nodes[i].dataset.t);
      if (t) nodes[i].textContent = clock(t);
    }
  }

  function renderHero(s) {
    var hero = $("hero");
    hero.className = "hero state-" + s.status;
    body.dataset.state = s.state;
    document.title = s.state + " · botkeeper";
    $("state-word").textContent = s.state;
    var since = $("since");
    since.dataset.t = s.since;
    since.textContent = clock(s.since);
    $("since-for").textContent = dur(s.for_seconds) + (s.since_estimated ? ", estimated" : "");
    var cause = $("cause");
    cause.textContent = "";
    cause.hidden = !s.cause;
    if (s.cause) {
      cause.appendChild(el("b", null, s.cause_label));
      cause.appendChild(document.createTextNode(": " + s.detail));
    }
    var cells = $("uptime").querySelectorAll("b[data-w]");
    for (var i = 0; i < cells.length; i++) {
      var w = cells[i].dataset.w, p = s.history.uptime[w];
      cells[i].textContent = p === null ? "no data yet" : uptime(p);
      var seen = $("uptime").querySelector("small[data-o='" + w + "']");
      if (seen) seen.textContent = p === null ? "" : " of " + dur(s.history.observed_seconds[w]) + " watched";
    }
    var inc = s.history.open_incident, line = $("incident");
    line.textContent = "";
    line.hidden = !inc;
    if (inc) {
      line.appendChild(document.createTextNode("Open incident: "));
      line.appendChild(el("b", null, inc.cause_label));
      line.appendChild(document.createTextNode(" since "));
      var at = el("time", null, clock(inc.started_at));
      at.dataset.t = inc.started_at;
      line.appendChild(at);
      line.appendChild(document.createTextNode(" (" + dur(inc.duration_seconds) + ")"));
    }
    var list = $("failing");
    list.textContent = "";
    s.failing.forEach(function (c) {
      var li = el("li");
      li.appendChild(el("b", null, c.name));
      li.appendChild(document.createTextNode(": " + c.detail));
      list.appendChild(li);
    });
  }

  function renderDemoChat(s) {
    var list = $("demo-chat");
    if (!list || !s.demo_chat || !s.demo_chat.length) return;
    list.textContent = "";
    s.demo_chat.forEach(function (m) {
      var li = el("li", "from-" + m.from);
      var t = el("time", null, clock(m.at));
      li.appendChild(t);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("b", null, m.from === "user" ? "demo user" : "bot"));
      li.appendChild(document.createTextNode(" " + m.text));
      list.appendChild(li);
    });
  }

  function renderTiles(s) {
    var hb = s.heartbeat;
    $("hb-age").textContent = hb.age === null ? "no heartbeat yet" : dur(hb.age) + " ago";
    $("hb-status").textContent = (HEARTBEAT_WORDS[hb.status] || hb.status) + (hb.state ? " · " + hb.state : "");
    $("poll-age").textContent = hb.last_poll_age === null ? "–" : dur(hb.last_poll_age) + " ago";
    $("updates").textContent = hb.updates_handled === null ? "–" : hb.updates_handled;
    $("bot-mem").textContent = size(s.bot ? s.bot.memory_bytes : null);
    $("bot-cpu").textContent = pct(s.bot ? s.bot.cpu_percent : null);
    var ob = s.outbox;
    if (ob && $("outbox-waiting")) {
      $("outbox-waiting").textContent = ob.pending_total + " waiting";
      var counts = $("outbox-counts");
      counts.textContent = ob.pending.high + " high · " + ob.pending.normal + " normal · " + ob.pending.low + " low";
      counts.appendChild(document.createElement("br"));
      counts.appendChild(document.createTextNode("sent " + ob.sent + " · retried " + ob.retried + " · dead " + ob.dead));
    }
    var dm = s.deadman;
    if (dm && $("deadman-age")) {
      $("deadman-age").textContent = dm.last_age === null ? "–" : dur(dm.last_age) + " ago";
      $("deadman-text").textContent = dm.text;
    }
  }

  function renderComponents(s) {
    var box = $("components");
    box.textContent = "";
    if (!s.components.length) {
      box.appendChild(el("p", "empty", "No components: the supervisor has not written run/state.json yet."));
    }
    s.components.forEach(function (c) {
      var card = el("article", "card comp state-" + c.state);
      card.dataset.name = c.name;
      var head = el("header");
      head.appendChild(el("h3", null, c.name));
      head.appendChild(el("span", "pill", c.state));
      card.appendChild(head);
      var dl = el("dl");
      [["uptime", dur(c.uptime)], ["restarts", c.restarts], ["memory", size(c.memory_bytes)],
       ["cpu", pct(c.cpu_percent)], ["pid", c.pid || "–"]].forEach(function (row) {
        dl.appendChild(el("dt", null, row[0]));
        dl.appendChild(el("dd", null, row[1]));
      });
      card.appendChild(dl);
      if (c.last_restart_reason) card.appendChild(el("p", "reason", (c.cause || "last restart") + ": " + c.last_restart_reason));
      box.appendChild(card);
    });
    var select = $("admin-comp");
    var chosen = select.value || "bot";
    select.textContent = "";
    s.components.forEach(function (c) { select.appendChild(el("option", null, c.name)); });
    if (chosen) select.value = chosen;
  }

  function renderRestarts(s) {
    var tbody = $("restarts");
    tbody.textContent = "";
    if (!s.recent_restarts.length) {
      var td = el("td", "empty", "No restarts. Good.");
      td.colSpan = 3;
      tbody.appendChild(el("tr")).appendChild(td);
    }
    s.recent_restarts.forEach(function (r) {
      var tr = el("tr");
      var when = el("time", null, clock(r.at));
      when.dataset.t = r.at;
      tr.appendChild(el("td")).appendChild(when);
      tr.appendChild(el("td", null, r.component));
      var reason = el("td");
      reason.appendChild(el("span", "tag " + (r.planned ? "tag-planned" : "tag-failure"), r.cause));
      reason.appendChild(document.createTextNode(" " + r.detail));
      tr.appendChild(reason);
      tbody.appendChild(tr);
    });
  }

  function renderHost(s) {
    var h = s.host;
    var rows = [["CPU", h.cpu_percent, pct(h.cpu_percent)],
                ["Memory", h.memory_percent, size(h.memory_used) + " / " + size(h.memory_total)],
                ["Disk", h.disk_percent || 0, size(h.disk_free) + " free"]];
    var box = $("host");
    box.textContent = "";
    rows.forEach(function (r) {
      var bar = el("div", "bar");
      bar.appendChild(el("span", null, r[0]));
      var m = el("meter");
      m.min = 0; m.max = 100; m.value = r[1];
      bar.appendChild(m);
      bar.appendChild(el("b", null, r[2]));
      box.appendChild(bar);
    });
  }

  function refreshChart() {
    // Drawn for the box's real width, so its labels are not shrunk on a phone.
    var width = Math.round($("chart").clientWidth - 16) || 640;
    fetch("/chart.svg?w=" + width, {cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.text();
    }).then(function (svg) {
      // Same-origin markup rendered by our own server from numbers; reasons in it are escaped.
      if (svg.indexOf("<svg") === 0) $("chart").innerHTML = svg;
    }).catch(function () {});
  }

  function load() {
    ticks++;
    return fetch("/api/status", {cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (j) {
        if (!j.success) throw new Error(j.error);
        var s = j.data;
        renderHero(s); renderTiles(s); renderComponents(s); renderRestarts(s); renderHost(s); renderDemoChat(s);
        var up = $("updated");
        up.textContent = "updated " + clock(s.now);
        body.classList.remove("stale");
        if (ticks % CHART_EVERY === 0) refreshChart();
      })
      .catch(function () {
        body.classList.add("stale");
        $("updated").textContent = "cannot reach the status API; retrying…";
      });
  }
  function loop() { load().then(function () { setTimeout(loop, every); }); }

  // --- admin: token lives in sessionStorage (this tab only) ---
  function adminCall(method, url, show) {
    var token = $("token").value.trim();
    var msg = $("admin-msg");
    if (!token) { msg.textContent = "Enter RESTART_TOKEN first."; return; }
    try { sessionStorage.setItem("botkeeper-token", token); } catch (e) {}
    msg.textContent = "…";
    fetch(url, {method: method, headers: {"Authorization": "Bearer " + token, "Accept": "application/json"}})
      .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (res) {
        var j = res[1];
        if (!j.success) { msg.textContent = res[0] + ": " + j.error; return; }
        show(j.data);
      })
      .catch(function (e) { msg.textContent = "request failed: " + e; });
  }

  function setupAdmin() {
    try { $("token").value = sessionStorage.getItem("botkeeper-token") || ""; } catch (e) {}
    $("btn-logs").addEventListener("click", function () {
      var name = $("admin-comp").value;
      adminCall("GET", "/api/logs/" + encodeURIComponent(name) + "?lines=200", function (d) {
        var pre = $("log-lines");
        pre.hidden = false;
        pre.textContent = d.lines.join("\n") || "(empty)";
        pre.scrollTop = pre.scrollHeight;
        $("admin-msg").textContent = d.lines.length + " lines of " + d.component + ".log";
      });
    });
    $("btn-restart").addEventListener("click", function () {
      var name = $("admin-comp").value;
      if (!window.confirm("Restart " + name + "?")) return;
      adminCall("POST", "/api/restart/" + encodeURIComponent(name), function (d) {
        $("admin-msg").textContent = d.component + ": restart requested";
        setTimeout(load, 300);
      });
    });
  }

  localTimes();
  setupAdmin();
  if (Math.abs(($("chart").clientWidth - 16) - 640) > 40) refreshChart();
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(refreshChart, 300);
  });
  setTimeout(loop, every);
})();
