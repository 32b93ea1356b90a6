/* The decision inspector page: POST /v1/inspect and render what came back. */
(function () {
  "use strict";

  function num(x, digits) {
    var v = Number(x || 0);
    return Number.isFinite(v) ? v.toPrecision(digits || 4) : String(x);
  }

  function age(s) {
    var v = Number(s);
    if (!(v >= 0)) { return ""; }
    if (v < 120) { return v.toFixed(0) + " s"; }
    if (v < 7200) { return (v / 60).toFixed(0) + " min"; }
    if (v < 172800) { return (v / 3600).toFixed(1) + " h"; }
    return (v / 86400).toFixed(1) + " d";
  }

  function row(tbody, cells, attrs) {
    var tr = document.createElement("tr");
    Object.keys(attrs || {}).forEach(function (k) { tr.setAttribute(k, attrs[k]); });
    cells.forEach(function (c) {
      var td = document.createElement("td");
      td.textContent = c[0];
      if (c[1]) { td.className = c[1]; }
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }

  function clear(id) {
    var tbody = document.querySelector("#" + id + " tbody");
    tbody.textContent = "";
    return tbody;
  }

  function render(r) {
    var d = r.decision || {};
    document.getElementById("summary").textContent =
      "decision " + d.decisionId + " · model " + (d.modelVersion || "none") + " · catalog " +
      d.catalogVersion + (d.degraded ? " · degraded: " + d.degradedReasons.join(", ") : "");
    var served = clear("served");
    (d.recommendations || []).forEach(function (a) {
      row(served, [[a.rank], [a.actionId], [a.actionType], [num(a.priority), "num"],
                   [num(a.propensity), "num"], [num(a.contextWeight), "num"],
                   [num(a.value), "num"], [num(a.lever), "num"], [a.reasonCodes.join(", ")]],
          { "data-action": a.actionId });
    });
    var cands = clear("candidates");
    ((d.explanation || {}).candidates || []).forEach(function (c) {
      row(cands, [[c.actionId], [c.removedBy || "served", "removed-by"], [c.detail],
                  [num(c.propensity), "num"], [num(c.contextWeight), "num"],
                  [num(c.value), "num"], [num(c.lever), "num"], [num(c.priority), "num"],
                  [c.rank || ""]],
          { "data-action": c.actionId, class: c.removedBy ? "removed" : "served" });
    });
    var feats = clear("features");
    (r.features || []).forEach(function (f) {
      var state = f.missing ? "missing (default)" : (f.stale ? "stale (default)" : "");
      row(feats, [[f.name], [f.source], [f.value], [age(f.ageS)], [state, state ? "flag" : ""]],
          { "data-feature": f.name });
    });
    var hist = clear("history");
    (r.history || []).forEach(function (h) {
      row(hist, [[h.actionId], [h.outcome], [h.channel || ""], [h.count, "num"],
                 [new Date(Number(h.lastMs)).toISOString()]], { "data-action": h.actionId });
    });
    document.getElementById("result").hidden = false;
  }

  function inspect(ev) {
    if (ev) { ev.preventDefault(); }
    var err = document.getElementById("inspect-error");
    err.textContent = "";
    var context = {};
    var raw = document.getElementById("context").value.trim();
    try {
      var parsed = raw ? JSON.parse(raw) : {};
      Object.keys(parsed).forEach(function (k) {
        var v = parsed[k];
        context[k] = typeof v === "boolean" ? { boolValue: v }
          : typeof v === "number" ? { numberValue: v } : { stringValue: String(v) };
      });
    } catch (e) { err.textContent = "context: not JSON: " + e.message; return; }
    var body = {
      customerId: document.getElementById("customer-id").value.trim(),
      channel: document.getElementById("channel").value,
      placement: document.getElementById("placement").value.trim(),
      context: context,
    };
    var q = new URLSearchParams(window.location.search);
    q.set("customer_id", body.customerId);
    q.set("channel", body.channel);
    window.history.replaceState(null, "", "?" + q.toString());
    var headers = { "content-type": "application/json" };
    // The token stays in this tab only (sessionStorage), never in the URL.
    var token = document.getElementById("token").value.trim();
    window.sessionStorage.setItem("nba.inspector.token", token);
    if (token) { headers.authorization = "Bearer " + token; }
    fetch("/v1/inspect", {
      method: "POST", headers: headers, body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { throw new Error(j.error ? j.error.status + ": " + j.error.message : r.status); }
        render(j);
      });
    }).catch(function (e) { err.textContent = e.message; });
  }

  document.getElementById("inspect-form").addEventListener("submit", inspect);
  document.getElementById("token").value = window.sessionStorage.getItem("nba.inspector.token") || "";
  var q = new URLSearchParams(window.location.search);
  if (q.get("customer_id")) {
    document.getElementById("customer-id").value = q.get("customer_id");
    document.getElementById("channel").value = q.get("channel") || "WEB";
    inspect();
  }
})();
