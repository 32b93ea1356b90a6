/* nba chat widget: reports the session to the service and shows a proactive chat invite when
 * the service says so. Configure with window.NBA_CHAT before loading this script:
 *   endpoint        base URL of the nba HTTP gateway ('' = same origin)
 *   token           bearer token of the chat-widget scope, when the service requires auth
 *   customerId      the signed-in customer, '' for an anonymous visitor
 *   pageType        home | product | pricing | checkout | support | account | other
 *   cartValue       current cart value
 *   pollMs          how often to ask /v1/chat-trigger (default 2000)
 *   dwellEventMs    how often to send dwell time to /v1/events (default 10000)
 *   inviteTimeoutMs an unanswered invite is dismissed after this (default 60000)
 * Everything the widget learns is in #nba-chat-status (data-reasons: the last reason codes).
 */
(function () {
  "use strict";
  var cfg = Object.assign({
    endpoint: "", token: "", customerId: "", pageType: "other", cartValue: 0, channel: "WEB",
    pollMs: 2000, dwellEventMs: 10000, inviteTimeoutMs: 60000,
  }, window.NBA_CHAT || {});
  var session = window.sessionStorage;

  function randomId() {
    var a = new Uint8Array(12);
    window.crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); })
      .join("");
  }

  var sessionId = session.getItem("nba.session");
  if (!sessionId) { sessionId = "s-" + randomId(); session.setItem("nba.session", sessionId); }
  var pages = Number(session.getItem("nba.pages") || "0") + 1;
  session.setItem("nba.pages", String(pages));
  var errors = Number(session.getItem("nba.errors") || "0");
  var returning = window.localStorage.getItem("nba.visited") === "1";
  window.localStorage.setItem("nba.visited", "1");
  // Anonymous visitors get a per-session id so their events and answers can be recorded.
  var subjectId = cfg.customerId || "visitor-" + sessionId;
  var loadedAt = Date.now();
  var lastDwellSent = loadedAt;
  var state = { invite: null, stopped: false, timer: null, inviteTimer: null };

  function post(path, body) {
    var headers = { "content-type": "application/json" };
    if (cfg.token) { headers.authorization = "Bearer " + cfg.token; }
    return fetch(cfg.endpoint + path, {
      method: "POST", headers: headers, body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) {
          var e = j && j.error ? j.error.status + ": " + j.error.message : "HTTP " + r.status;
          throw new Error(e);
        }
        return j;
      });
    });
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) { e.textContent = text; }
    return e;
  }

  var root = el("div", { id: "nba-chat", class: "nba-chat" });
  var status = el("div", { id: "nba-chat-status", class: "nba-chat-status", "data-reasons": "" });
  root.appendChild(status);
  document.body.appendChild(root);

  function setStatus(reasons, text) {
    status.setAttribute("data-reasons", reasons.join(" "));
    status.textContent = text || reasons.join(", ");
  }

  function event(feature, value, op) {
    return post("/v1/events", {
      customerId: subjectId, events: [{ feature: feature, value: value, op: op }],
    });
  }

  function outcome(invite, kind) {
    return post("/v1/outcome", {
      decisionId: invite.inviteId, actionId: invite.actionId, customerId: subjectId,
      outcome: kind, eventId: invite.inviteId + ":" + kind.toLowerCase(), channel: cfg.channel,
    });
  }

  function removeBox(id) {
    var box = document.getElementById(id);
    if (box) { box.parentNode.removeChild(box); }
  }

  function showInvite(r) {
    removeBox("nba-chat-callback");
    state.invite = r;
    var t = r.treatment || {};
    var box = el("div", { id: "nba-chat-invite", class: "nba-chat-box", "data-queue": r.queue,
                          "data-kind": r.kind, "data-invite": r.inviteId });
    box.appendChild(el("h4", {}, t.title || "Chat with us"));
    box.appendChild(el("p", {}, t.text || ""));
    var accept = el("button", { id: "nba-chat-accept", type: "button" }, t.callToAction || "Chat");
    var decline = el("button", { id: "nba-chat-decline", type: "button", class: "secondary" },
                     "No thanks");
    box.appendChild(accept);
    box.appendChild(decline);
    root.appendChild(box);
    outcome(r, "IMPRESSION").catch(function (e) { setStatus(["OUTCOME_ERROR"], e.message); });
    accept.addEventListener("click", function () { answer("ACCEPT"); });
    decline.addEventListener("click", function () { answer("REJECT"); });
    state.inviteTimer = window.setTimeout(function () { answer("DISMISS"); },
                                          cfg.inviteTimeoutMs);
  }

  function answer(kind) {
    var invite = state.invite;
    if (!invite) { return; }
    window.clearTimeout(state.inviteTimer);
    state.invite = null;
    removeBox("nba-chat-invite");
    outcome(invite, kind).then(function () {
      if (kind === "ACCEPT") {
        state.stopped = true;
        root.appendChild(el("div", { id: "nba-chat-connected", class: "nba-chat-box" },
                            "Connecting you to the " + invite.queue + " team..."));
        setStatus(["ACCEPTED"]);
      } else {
        setStatus([kind === "REJECT" ? "DECLINED" : "DISMISSED"]);
        schedule();
      }
    }).catch(function (e) { setStatus(["OUTCOME_ERROR"], e.message); schedule(); });
  }

  function showCallback(r) {
    if (document.getElementById("nba-chat-callback")) { return; }
    var box = el("div", { id: "nba-chat-callback", class: "nba-chat-box", "data-queue": r.queue });
    box.appendChild(el("p", {}, "All our advisors are busy right now. Shall we call you back?"));
    var yes = el("button", { id: "nba-chat-callback-yes", type: "button" }, "Call me back");
    yes.addEventListener("click", function () {
      box.textContent = "Thanks, we will call you back shortly.";
    });
    box.appendChild(yes);
    root.appendChild(box);
  }

  function dwellSeconds() { return (Date.now() - loadedAt) / 1000; }

  function sendDwell() {
    var now = Date.now();
    var delta = (now - lastDwellSent) / 1000;
    lastDwellSent = now;
    return event("session_dwell_s", { numberValue: delta }, "ADD").catch(function () {});
  }

  function poll() {
    state.timer = null;
    if (state.invite || state.stopped) { return; }
    if (Date.now() - lastDwellSent >= cfg.dwellEventMs) { sendDwell(); }
    post("/v1/chat-trigger", {
      sessionId: sessionId, customerId: cfg.customerId, pageType: cfg.pageType,
      dwellTimeS: dwellSeconds(), pagesInSession: pages, cartValue: Number(cfg.cartValue) || 0,
      errorsSeen: errors, returningVisitor: returning,
    }).then(function (r) {
      setStatus(r.reasonCodes || []);
      if (r.showInvite) { showInvite(r); return; }
      if (r.offerCallback) { showCallback(r); }
      schedule();
    }).catch(function (e) { setStatus(["ERROR"], e.message); schedule(); });
  }

  function schedule() {
    if (!state.timer && !state.stopped) {
      state.timer = window.setTimeout(poll, cfg.pollMs);
    }
  }

  window.nbaChat = {
    sessionId: sessionId,
    subjectId: subjectId,
    setCartValue: function (v) {
      cfg.cartValue = v;
      event("cart_value", { numberValue: Number(v) }, "SET").catch(function () {});
    },
    reportError: function () {
      errors += 1;
      session.setItem("nba.errors", String(errors));
      event("errors_seen", { intValue: "1" }, "ADD").catch(function () {});
    },
  };
  window.addEventListener("error", function () { window.nbaChat.reportError(); });
  event("session_page_views", { intValue: "1" }, "ADD").catch(function () {});
  poll();
})();
