// gateway management UI: line charts in plain SVG, for the sample history the API serves
// (RabbitMQ's `samples` in `<field>_details`, newest first). No library, no inline style:
// colours come from the classes s0..s5 in style.css.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 190;
  const PAD = { left: 52, right: 10, top: 10, bottom: 24 };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
    return node;
  }

  // a round upper bound for the y axis and its step: 1, 2 or 5 times a power of ten
  function scale(max) {
    if (!(max > 0)) return { top: 1, step: 0.5 };
    const raw = max / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
    return { top: Math.ceil(max / step) * step, step };
  }

  function number(v, digits) {
    return v.toLocaleString("en", { maximumFractionDigits: digits });
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
  }

  // samples (newest first) as points [[ms, value], ...], oldest first
  function levels(details) {
    return ((details && details.samples) || []).map((s) => [s.timestamp, s.sample]).reverse();
  }

  // counter samples (newest first) as rates per second between neighbours, oldest first
  function rates(details) {
    const pts = levels(details);
    const out = [];
    for (let i = 1; i < pts.length; i++) {
      const dt = (pts[i][0] - pts[i - 1][0]) / 1000;
      if (dt > 0) out.push([pts[i][0], Math.max(0, (pts[i][1] - pts[i - 1][1]) / dt)]);
    }
    return out;
  }

  // series: [{key, label, points, current?, dashed?}]; unit: "" or "/s"
  function line(id, title, series, unit) {
    const all = series.flatMap((s) => s.points);
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.id = id;
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    figure.append(caption);
    if (!all.length) {
      const p = document.createElement("p");
      p.className = "muted chart-empty";
      p.textContent = "Collecting samples: one every 5 seconds.";
      figure.append(p);
      return figure;
    }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    const { top, step } = scale(Math.max(...all.map((p) => p[1])));
    const x0 = PAD.left, x1 = W - PAD.right, y0 = H - PAD.bottom, y1 = PAD.top;
    const x = (t) => (t1 > t0 ? x0 + (x1 - x0) * (t - t0) / (t1 - t0) : x1);
    const y = (v) => y0 - (y0 - y1) * v / top;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": title, "data-top": top, "data-baseline": y0, "data-ceiling": y1 });
    for (let v = 0; v <= top + step / 2; v += step) {
      chart.append(svg("line", { class: "grid", x1: x0, x2: x1, y1: y(v), y2: y(v) }),
        svg("text", { class: "tick", x: x0 - 6, y: y(v) + 4, "text-anchor": "end" },
          number(v, 2) + unit));
    }
    chart.append(
      svg("text", { class: "tick", x: x0, y: H - 6, "text-anchor": "start" }, clock(t0)),
      svg("text", { class: "tick", x: x1, y: H - 6, "text-anchor": "end" }, clock(t1)));
    const legend = document.createElement("div");
    legend.className = "legend";
    series.forEach((s, i) => {
      const cls = `s${i % 6}`;
      const coords = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      // the legend tells the value now, as RabbitMQ's does; the line ends at the last sample
      const last = s.current !== undefined ? s.current
        : s.points.length ? s.points[s.points.length - 1][1] : 0;
      const poly = svg("polyline", { class: `series ${cls}${s.dashed ? " dashed" : ""}`,
        "data-series": s.key,
        points: coords.join(" ") }, svg("title", {}, s.label));
      chart.append(poly);
      if (s.points.length === 1) {
        const [t, v] = s.points[0];
        chart.append(svg("circle", { class: `dot ${cls}`, cx: x(t), cy: y(v), r: 2.5 }));
      }
      const item = document.createElement("span");
      item.className = "legend-item";
      item.dataset.series = s.key;
      const swatch = document.createElement("i");
      swatch.className = `swatch ${cls}`;
      const value = document.createElement("b");
      value.textContent = number(last, unit ? 1 : 0) + unit;
      item.append(swatch, s.label + " ", value);
      legend.append(item);
    });
    figure.append(chart, legend);
    return figure;
  }

  return { line, levels, rates };
})();
