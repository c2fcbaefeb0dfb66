// gateway management UI: plain JavaScript over the HTTP API, no build step.
// Pages are hash routes (#/queues, #/queue/<vhost>/<name>, ...); every value shown is put
// in the DOM as text, never as HTML.
"use strict";

const state = { auth: sessionStorage.getItem("gw-auth"), user: null, timer: null };
const enc = encodeURIComponent;

// -- small helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.style.background = bad ? "#c0362c" : "#1d2330";
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Basic " + state.auth,
    "X-Requested-With": "XMLHttpRequest" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch("/api" + path, opts);
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error((data && (data.reason || data.error)) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

const rate = (o, k) => ((o && o[k + "_details"]) || {}).rate || 0;
const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en") : n == null ? "" : String(n));
const num = (v) => el("td", { class: "num" }, fmt(v));
const th = (...names) => el("tr", {}, names.map((n) =>
  el("th", { class: n.startsWith("#") ? "num" : "" }, n.replace(/^#/, ""))));
const table = (head, rows, empty) => rows.length
  ? el("table", {}, el("thead", {}, head), el("tbody", {}, rows))
  : el("p", { class: "muted empty" }, empty || "Nothing here yet.");
const vhostSeg = (v) => enc(v);
const json = (v) => el("pre", {}, JSON.stringify(v, null, 1));

function bar(value, max) {
  const w = max > 0 ? Math.max(value > 0 ? 2 : 0, Math.round(120 * value / max)) : 0;
  const node = el("span", { class: "bar" });
  node.style.width = `${w}px`; // through the CSSOM: a style attribute is refused by the CSP
  return node;
}

function field(label, input) { return el("label", {}, label, input); }

function parseJSON(text, what) {
  if (!text.trim()) return {};
  try { return JSON.parse(text); } catch (e) { throw new Error(what + " is not valid JSON"); }
}

function form(cls, fields, submit, onsubmit) {
  const f = el("form", { class: cls }, fields, el("button", { type: "submit" }, submit));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await onsubmit(new FormData(f), f); } catch (e) { toast(e.message, true); }
  });
  return f;
}

async function vhostSelect(name) {
  const vhosts = await api("GET", "/vhosts");
  return el("select", { name: name || "vhost" },
    vhosts.map((v) => el("option", { value: v.name }, v.name)));
}

// -- charts of the sample history -----------------------------------------------------------

const RANGES = [["60", "Last minute"], ["600", "Last ten minutes"]];
const rangeAge = () => sessionStorage.getItem("gw-range") || "60";
const historyQuery = () => {
  const age = rangeAge();
  return `lengths_age=${age}&lengths_incr=5&msg_rates_age=${age}&msg_rates_incr=5`;
};
const QUEUE_RATES = [["publish", "Publish"], ["deliver_get", "Deliver / get"],
  ["ack", "Consumer ack"], ["redeliver", "Redelivered"]];
const OVERVIEW_RATES = [...QUEUE_RATES, ["return_unroutable", "Unroutable"]];

function rangeSelect(onchange) {
  const select = el("select", { id: "chart-range", "aria-label": "Chart range" },
    RANGES.map(([v, text]) => el("option", { value: v, selected: v === rangeAge() }, text)));
  select.addEventListener("change", () => {
    sessionStorage.setItem("gw-range", select.value);
    onchange();
  });
  return select;
}

// lengths: an object with messages* and messages*_details; stats: one with <rate>_details
function charts(lengths, stats, rateKeys) {
  const level = (key, label, field, dashed) => ({ key, label, dashed,
    points: Charts.levels(lengths[field + "_details"]), current: lengths[field] });
  return el("div", { class: "charts" },
    Charts.line("chart-queued", "Queued messages", [
      level("ready", "Ready", "messages_ready"),
      level("unacked", "Unacked", "messages_unacknowledged"),
      level("total", "Total", "messages", true)], ""),
    Charts.line("chart-rates", "Message rates", rateKeys.map(([key, label]) => ({
      key, label, points: Charts.rates((stats || {})[key + "_details"]),
      current: rate(stats, key) })), "/s"));
}

// -- pages --------------------------------------------------------------------------------

const pages = {};

pages.overview = async (root) => {
  const o = await api("GET", "/overview?" + historyQuery());
  const t = o.object_totals, q = o.queue_totals, m = o.message_stats || {};
  const card = (k, v) => el("div", { class: "card" }, el("div", { class: "v" }, fmt(v)),
    el("div", { class: "k" }, k));
  root.append(el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      card("Connections", t.connections), card("Channels", t.channels),
      card("Queues", t.queues), card("Consumers", t.consumers),
      card("Messages ready", q.messages_ready), card("Unacknowledged", q.messages_unacknowledged),
      card("Publish /s", rate(m, "publish")), card("Deliver /s", rate(m, "deliver_get"))),
    el("div", { class: "flow" }, el("h2", {}, "Totals"), rangeSelect(route)),
    charts(q, m, OVERVIEW_RATES),
    el("h2", {}, "Connections by protocol"),
    table(th("Protocol", "#Connections"), Object.entries(o.connections_by_protocol || {})
      .map(([p, n]) => el("tr", {}, el("td", {}, p), num(n))), "No connections."),
    el("h2", {}, "Listeners"),
    table(th("Protocol", "Address", "#Port"), o.listeners.map((l) =>
      el("tr", {}, el("td", {}, l.protocol), el("td", {}, l.ip_address),
        el("td", { class: "num" }, String(l.port))))),
    el("p", { class: "muted" }, `${o.product_name} ${o.product_version} on ${o.node}`));
};

pages.connections = async (root) => {
  const conns = await api("GET", "/connections");
  const groups = {};
  for (const c of conns) (groups[c.protocol] = groups[c.protocol] || []).push(c);
  root.append(el("h1", {}, "Connections"));
  if (!conns.length) root.append(el("p", { class: "muted empty" }, "No client is connected."));
  for (const [proto, list] of Object.entries(groups).sort()) {
    root.append(el("h2", {}, `${proto} (${list.length})`), table(
      th("Name", "User", "Vhost", "State", "#Channels", "Client", ""),
      list.map((c) => el("tr", {}, el("td", {}, c.name), el("td", {}, c.user || ""),
        el("td", {}, c.vhost || ""), el("td", {}, c.state), num(c.channels),
        el("td", { class: "muted" }, (c.client_properties || {}).product || ""),
        el("td", {}, el("button", { class: "danger", type: "button", onclick: async () => {
          await api("DELETE", "/connections/" + enc(c.name)); toast("Connection closed");
          route(); } }, "Close"))))));
  }
};

pages.channels = async (root) => {
  const channels = await api("GET", "/channels");
  const mode = (c) => [c.confirm ? el("span", { class: "tag", title: "confirm" }, "C") : null,
    c.transactional ? el("span", { class: "tag", title: "transactional" }, "T") : null];
  const prefetch = (c) => el("td", { class: "num" }, fmt(c.prefetch_count) +
    (c.global_prefetch_count ? ` (${fmt(c.global_prefetch_count)} global)` : ""));
  const r = (c, k) => num(rate(c.message_stats, k));
  root.append(el("h1", {}, "Channels"), table(
    th("Connection", "#Channel", "Vhost", "User", "Mode", "State", "#Prefetch", "#Unacked",
      "#Unconfirmed", "#Consumers", "#Publish /s", "#Deliver / get /s", "#Ack /s"),
    channels.map((c) => el("tr", {}, el("td", {}, (c.connection_details || {}).name || ""),
      num(c.number), el("td", {}, c.vhost || ""), el("td", {}, c.user || ""),
      el("td", {}, mode(c)), el("td", {}, c.state), prefetch(c),
      num(c.messages_unacknowledged), num(c.messages_unconfirmed), num(c.consumer_count),
      r(c, "publish"), r(c, "deliver_get"), r(c, "ack"))),
    "No channel is open."));
};

pages.queues = async (root) => {
  const queues = await api("GET", "/queues");
  const max = Math.max(0, ...queues.map((q) => q.messages));
  root.append(el("h1", {}, "Queues"), table(
    th("Vhost", "Name", "Features", "Depth", "#Ready", "#Unacked", "#Consumers", "#In /s",
      "#Out /s"),
    queues.map((q) => el("tr", {}, el("td", {}, q.vhost),
      el("td", {}, el("a", { href: `#/queue/${vhostSeg(q.vhost)}/${enc(q.name)}` }, q.name)),
      el("td", {}, q.durable ? el("span", { class: "tag" }, "D") : null,
        q.auto_delete ? el("span", { class: "tag" }, "AD") : null,
        q.exclusive ? el("span", { class: "tag" }, "Excl") : null,
        q.policy ? el("span", { class: "tag" }, q.policy) : null),
      el("td", {}, bar(q.messages, max)), num(q.messages_ready),
      num(q.messages_unacknowledged), num(q.consumers),
      num(rate(q.message_stats, "publish")), num(rate(q.message_stats, "deliver_get")))),
    "No queues yet."));
  root.append(el("h2", {}, "Add a queue"), form("inline", [
    field("Vhost", await vhostSelect()), field("Name", el("input", { name: "name", required: true })),
    field("Durable", el("select", { name: "durable" }, el("option", { value: "true" }, "yes"),
      el("option", { value: "false" }, "no"))),
    field("Arguments (JSON)", el("input", { name: "arguments", placeholder: '{"x-max-length": 100}' })),
  ], "Add queue", async (d) => {
    await api("PUT", `/queues/${vhostSeg(d.get("vhost"))}/${enc(d.get("name"))}`, {
      durable: d.get("durable") === "true", auto_delete: false,
      arguments: parseJSON(d.get("arguments"), "Arguments") });
    toast("Queue added"); route();
  }));
};

function messageRows(messages, withPosition) {
  return messages.map((m) => el("tr", {},
    withPosition ? num(m.position) : null,
    el("td", {}, m.exchange || "(default)"), el("td", {}, m.routing_key),
    el("td", {}, m.redelivered ? "yes" : "no"),
    el("td", {}, json(m.properties)),
    el("td", { class: "payload" }, el("pre", {}, m.payload),
      el("span", { class: "muted" }, `${m.payload_bytes} bytes, ${m.payload_encoding}`))));
}

pages.queue = async (root, vhost, name) => {
  const base = `/queues/${vhostSeg(vhost)}/${enc(name)}`;
  const q = await api("GET", `${base}?${historyQuery()}`);
  const bindings = await api("GET", base + "/bindings");
  const summary = (q) => [el("div", { class: "cards" }, ...[["Ready", q.messages_ready],
    ["Unacknowledged", q.messages_unacknowledged], ["Consumers", q.consumers],
    ["Published", q.message_stats.publish], ["Delivered", q.message_stats.deliver_get]]
    .map(([k, v]) => el("div", { class: "card" }, el("div", { class: "v" }, fmt(v)),
      el("div", { class: "k" }, k)))), charts(q, q.message_stats, QUEUE_RATES)];
  const live = el("div", { id: "queue-live" }, summary(q));
  // the charts and counts refresh by themselves; the rest of the page keeps its state
  const refresh = async () => live.replaceChildren(...summary(
    await api("GET", `${base}?${historyQuery()}`)));
  state.timer = setInterval(() => refresh().catch(() => {}), 5000);
  root.append(el("h1", {}, `Queue ${q.name}`),
    el("p", { class: "muted" }, `vhost ${q.vhost} · ${q.durable ? "durable" : "transient"} · ` +
      `${q.type} · arguments ${JSON.stringify(q.arguments)}` +
      (q.policy ? ` · policy ${q.policy}` : "")),
    ...(q.unsupported_arguments && q.unsupported_arguments.length ? [el("p",
      { class: "warn", id: "unsupported-arguments" },
      `Unsupported arguments (accepted and ignored): ${q.unsupported_arguments.join(", ")}`)]
      : []),
    el("div", { class: "flow" }, el("span", { class: "muted" }, "Charts:"),
      rangeSelect(() => refresh().catch((e) => toast(e.message, true)))),
    live,
    el("h2", {}, "Consumers"),
    table(th("Tag", "Connection", "Ack", "#Prefetch"), q.consumer_details.map((c) =>
      el("tr", {}, el("td", {}, c.consumer_tag),
        el("td", {}, (c.channel_details || {}).connection_name || ""),
        el("td", {}, c.ack_required ? "manual" : "auto"), num(c.prefetch_count))),
    "No consumers."),
    el("h2", {}, "Bindings"),
    table(th("From exchange", "Routing key", "Arguments"), bindings.map((b) => el("tr", {},
      el("td", {}, b.source || "(default)"), el("td", {}, b.routing_key), el("td", {},
        JSON.stringify(b.arguments))))),
    form("inline", [field("From exchange", el("input", { name: "source", required: true })),
      field("Routing key", el("input", { name: "key" }))], "Bind", async (d) => {
      await api("POST", `/bindings/${vhostSeg(vhost)}/e/${enc(d.get("source"))}/q/${enc(name)}`,
        { routing_key: d.get("key"), arguments: {} });
      toast("Bound"); route();
    }));

  const browseOut = el("div", { id: "browse-result" });
  const browse = async (offset) => {
    const r = await api("GET", `${base}/browse?offset=${offset}&count=20`);
    browseOut.replaceChildren(el("p", { class: "muted" },
      `${r.ready} ready, ${r.unacknowledged} unacknowledged; showing from position ${r.offset}. ` +
      "Browsing takes nothing from the queue."),
    table(th("#Pos", "Exchange", "Routing key", "Redelivered", "Properties", "Payload"),
      messageRows(r.messages, true), "The queue has no ready messages."),
    el("div", { class: "flow" },
      offset > 0 ? el("button", { class: "secondary", type: "button",
        onclick: () => browse(Math.max(0, offset - 20)) }, "Previous") : null,
      offset + 20 < r.ready ? el("button", { class: "secondary", type: "button",
        onclick: () => browse(offset + 20) }, "Next") : null));
  };
  root.append(el("h2", {}, "Browse messages"),
    el("button", { id: "browse", type: "button", onclick: () => browse(0) }, "Browse"), browseOut);

  const getOut = el("div", { id: "get-result" });
  root.append(el("h2", {}, "Get messages"), form("inline", [
    field("Ack mode", el("select", { name: "ackmode" },
      el("option", { value: "ack_requeue_true" }, "Nack, requeue (keep)"),
      el("option", { value: "ack_requeue_false" }, "Ack (remove)"),
      el("option", { value: "reject_requeue_false" }, "Reject (dead-letter)"))),
    field("Count", el("input", { name: "count", type: "number", value: "1", min: "1" }))],
  "Get", async (d) => {
    const got = await api("POST", base + "/get", { count: Number(d.get("count")),
      ackmode: d.get("ackmode"), encoding: "auto" });
    getOut.replaceChildren(table(th("Exchange", "Routing key", "Redelivered", "Properties",
      "Payload"), messageRows(got, false), "The queue is empty."));
  }), getOut);

  root.append(el("h2", {}, "Danger zone"), el("div", { class: "flow" },
    el("button", { class: "danger", type: "button", onclick: async () => {
      await api("DELETE", base + "/contents"); toast("Purged"); route(); } }, "Purge"),
    el("button", { class: "danger", type: "button", onclick: async () => {
      await api("DELETE", base); toast("Deleted"); location.hash = "#/queues"; } }, "Delete")));
};

pages.exchanges = async (root) => {
  const [exchanges, bindings] = [await api("GET", "/exchanges"), await api("GET", "/bindings")];
  const boundFrom = (x) => bindings
    .filter((b) => b.vhost === x.vhost && b.source === x.name && x.name !== "")
    .map((b) => el("div", {}, `→ ${b.destination_type} ${b.destination}` +
      (b.routing_key ? ` [${b.routing_key}]` : "")));
  const row = (x) => el("tr", {}, el("td", {}, x.vhost), el("td", {}, x.name || "(default)"),
    el("td", {}, x.type),
    el("td", {}, x.durable ? el("span", { class: "tag" }, "D") : null,
      x.internal ? el("span", { class: "tag" }, "I") : null),
    el("td", {}, boundFrom(x)));
  root.append(el("h1", {}, "Exchanges"),
    table(th("Vhost", "Name", "Type", "Features", "Bindings"), exchanges.map(row)));
  root.append(el("h2", {}, "Add an exchange"), form("inline", [
    field("Vhost", await vhostSelect()), field("Name", el("input", { name: "name", required: true })),
    field("Type", el("select", { name: "type" }, ["direct", "fanout", "topic", "headers", "x-delayed-message"]
      .map((t) => el("option", { value: t }, t)))),
    field("x-delayed-type (x-delayed-message only)", el("select", { name: "delayed_type" },
      ["direct", "fanout", "topic", "headers"].map((t) => el("option", { value: t }, t))))],
  "Add exchange", async (d) => {
    const type = d.get("type");
    const args = type === "x-delayed-message" ? { "x-delayed-type": d.get("delayed_type") } : {};
    await api("PUT", `/exchanges/${vhostSeg(d.get("vhost"))}/${enc(d.get("name"))}`,
      { type, durable: true, arguments: args });
    toast("Exchange added"); route();
  }));
};

pages.publish = async (root) => {
  const out = el("p", { id: "publish-result" });
  root.append(el("h1", {}, "Publish a message"), form("stack", [
    field("Vhost", await vhostSelect()),
    field("Exchange (empty for the default exchange)", el("input", { name: "exchange" })),
    field("Routing key", el("input", { name: "key" })),
    field("Properties (JSON, e.g. {\"content_type\": \"text/plain\", \"delivery_mode\": 2})",
      el("textarea", { name: "properties" })),
    field("Payload", el("textarea", { name: "payload" }))], "Publish", async (d) => {
    const x = d.get("exchange") || "amq.default";
    const r = await api("POST", `/exchanges/${vhostSeg(d.get("vhost"))}/${enc(x)}/publish`, {
      routing_key: d.get("key"), payload: d.get("payload"), payload_encoding: "string",
      properties: parseJSON(d.get("properties"), "Properties") });
    out.textContent = r.routed ? "Message published and routed." :
      "Message published but not routed to any queue.";
    out.className = r.routed ? "ok" : "error";
  }), out);
};

function traceRecord(r) {
  const hops = r.hops.map((h) => el("div", { class: "flow" },
    el("span", { class: "node x" }, h.from || "(default)"),
    el("span", { class: "arrow" }, `${h.via}${h.key ? " [" + h.key + "]" : ""} →`),
    el("span", { class: h.to_type === "queue" ? "node q" : "node x" }, h.to)));
  const queues = r.queues.map((q) => el("div", { class: "flow" },
    el("span", { class: "node q" }, q.queue), el("span", { class: "arrow" }, q.outcome),
    q.consumer ? el("span", { class: "node c" },
      `${q.consumer.consumer_tag} (${q.consumer.protocol} ${q.consumer.peer}` +
      `${q.consumer.channel ? " channel " + q.consumer.channel : ""})`) : null,
    q.steps.length ? el("span", { class: "muted" },
      q.steps.map((s) => s.event + (s.reason ? ` (${s.reason})` : "")).join(" → ")) : null,
    q.waiting !== undefined ? el("span", { class: "muted" }, `${q.waiting} waiting`) : null));
  return el("div", { class: "trace" },
    el("div", {}, el("strong", {}, `#${r.id} `), `${new Date(r.time * 1000).toLocaleTimeString()} `,
      el("span", { class: "tag" }, r.origin), ` to ${r.exchange || "(default)"} `,
      `key "${r.routing_key}" · ${r.size} bytes`, r.message_id ? ` · id ${r.message_id}` : "",
      r.routed ? "" : el("span", { class: "error" }, " · unroutable")),
    el("pre", {}, r.payload_preview), hops, queues);
}

pages.trace = async (root) => {
  const select = await vhostSelect();
  const list = el("div", { id: "trace-list" });
  const status = el("span", { class: "muted" });
  const load = async () => {
    const t = await api("GET", `/traces/${vhostSeg(select.value)}`);
    status.textContent = t.enabled ? "tracing is on" : "tracing is off";
    list.replaceChildren(...(t.records.length ? t.records.map(traceRecord) :
      [el("p", { class: "muted" }, "No traced messages yet. Turn tracing on, then publish.")]));
  };
  const set = async (on) => { await api("PUT", `/traces/${vhostSeg(select.value)}`,
    { enabled: on }); await load(); };
  select.addEventListener("change", load);
  root.append(el("h1", {}, "Trace: where did my message go?"),
    el("p", { class: "muted" }, "Follows each message published in the vhost (any protocol) " +
      "through exchanges to the queues and consumers it reached."),
    el("div", { class: "flow" }, field("Vhost", select),
      el("button", { id: "trace-on", type: "button", onclick: () => set(true) }, "Start tracing"),
      el("button", { class: "secondary", type: "button", onclick: () => set(false) }, "Stop"),
      el("button", { class: "secondary", type: "button", onclick: load }, "Refresh"), status),
    list);
  await load();
  state.timer = setInterval(() => load().catch(() => {}), 2000);
};

pages.admin = async (root) => {
  const [users, vhosts, perms, policies] = await Promise.all([api("GET", "/users"),
    api("GET", "/vhosts"), api("GET", "/permissions"), api("GET", "/policies")]);
  root.append(el("h1", {}, "Users, vhosts, permissions"),
    el("h2", {}, "Users"), table(th("Name", "Tags"), users.map((u) => el("tr", {},
      el("td", {}, u.name), el("td", {}, u.tags.map((t) => el("span", { class: "tag" }, t)))))),
    form("inline", [field("Name", el("input", { name: "name", required: true })),
      field("Password", el("input", { name: "password", type: "password", required: true })),
      field("Tags", el("input", { name: "tags", placeholder: "management,monitoring" }))],
    "Add user", async (d) => { await api("PUT", "/users/" + enc(d.get("name")),
      { password: d.get("password"), tags: d.get("tags") }); toast("User added"); route(); }),
    el("h2", {}, "Virtual hosts"), table(th("Name", "#Messages"), vhosts.map((v) =>
      el("tr", {}, el("td", {}, v.name), num(v.messages)))),
    form("inline", [field("Name", el("input", { name: "name", required: true }))], "Add vhost",
      async (d) => { await api("PUT", "/vhosts/" + enc(d.get("name")), {});
        toast("Vhost added"); route(); }),
    el("h2", {}, "Permissions"), table(th("User", "Vhost", "Configure", "Write", "Read"),
      perms.map((p) => el("tr", {}, el("td", {}, p.user), el("td", {}, p.vhost),
        el("td", {}, p.configure), el("td", {}, p.write), el("td", {}, p.read)))),
    form("inline", [field("User", el("select", { name: "user" }, users.map((u) =>
      el("option", { value: u.name }, u.name)))), field("Vhost", await vhostSelect()),
    ...["configure", "write", "read"].map((k) => field(k, el("input", { name: k, value: ".*" })))],
    "Set permission", async (d) => {
      await api("PUT", `/permissions/${vhostSeg(d.get("vhost"))}/${enc(d.get("user"))}`,
        { configure: d.get("configure"), write: d.get("write"), read: d.get("read") });
      toast("Permission set"); route(); }),
    el("h2", {}, "Policies"), table(th("Vhost", "Name", "Pattern", "Apply to", "Definition",
      "#Priority"), policies.map((p) => el("tr", {}, el("td", {}, p.vhost),
      el("td", {}, p.name), el("td", {}, p.pattern), el("td", {}, p["apply-to"]),
      el("td", {}, JSON.stringify(p.definition)), num(p.priority))), "No policies."));
};

// -- routing and login --------------------------------------------------------------------

const REFRESH = { overview: 5000, connections: 5000, channels: 5000, queues: 5000 };

async function route() {
  clearInterval(state.timer);
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const name = pages[parts[0]] ? parts[0] : "overview";
  const args = parts.slice(1).map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === name ||
      (name === "queue" && a.dataset.page === "queues"));
  }
  const render = async () => {
    const fresh = el("div", {});
    await pages[name](fresh, ...args);
    document.getElementById("page").replaceChildren(fresh);
  };
  try {
    await render();
    if (REFRESH[name]) state.timer = setInterval(() => render().catch(() => {}), REFRESH[name]);
  } catch (e) {
    if (e.status === 401) return logout();
    document.getElementById("page").replaceChildren(el("p", { class: "error" }, e.message));
  }
}

function showLogin(show) {
  document.getElementById("login").hidden = !show;
  document.getElementById("nav").hidden = show;
  document.getElementById("logout").hidden = show;
  if (show) document.getElementById("page").replaceChildren();
}

function logout() {
  sessionStorage.removeItem("gw-auth");
  state.auth = null;
  clearInterval(state.timer);
  document.getElementById("who").textContent = "";
  showLogin(true);
}

async function start() {
  if (!state.auth) return showLogin(true);
  try {
    state.user = await api("GET", "/whoami");
  } catch (e) {
    document.getElementById("login-error").textContent = e.status === 401 ? e.message :
      "Cannot reach the broker: " + e.message;
    return logout();
  }
  document.getElementById("who").textContent = state.user.name;
  showLogin(false);
  route();
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const d = new FormData(ev.target);
  state.auth = btoa(unescape(encodeURIComponent(d.get("user") + ":" + d.get("password"))));
  sessionStorage.setItem("gw-auth", state.auth);
  document.getElementById("login-error").textContent = "";
  start();
});
document.getElementById("logout").addEventListener("click", logout);
window.addEventListener("hashchange", () => state.auth && route());
start();
