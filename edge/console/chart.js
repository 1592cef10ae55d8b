// Rejects by reason over time as an inline SVG: one line per reason, the rejects between two samples.
// The samples are the run's cumulative counters (GatewayStatus.reject_history), so a difference of two
// consecutive samples is what that interval added; a reason first seen later counts from 0.
import { el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
// Distinguishable colours, each at least 4.5:1 on white; the legend also names every line.
const COLOURS = ["#a4161a", "#0b4f9c", "#0a6b2d", "#6a3d9a", "#8a4b00", "#006d77", "#b3005e", "#4a4a4a"];
const W = 600, H = 200, PAD = { left: 40, right: 10, top: 12, bottom: 26 };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

// { reasons: [...], times: [ms of each interval's end], series: {reason: [added per interval]} }
export function intervals(samples) {
  const reasons = [...new Set(samples.flatMap((s) => Object.keys(s.rejected)))].sort();
  const series = Object.fromEntries(reasons.map((r) => [r, []]));
  for (let i = 1; i < samples.length; i++) {
    for (const r of reasons) {
      series[r].push(Math.max(0, (samples[i].rejected[r] || 0) - (samples[i - 1].rejected[r] || 0)));
    }
  }
  return { reasons, times: samples.slice(1).map((s) => s.time_ms), series };
}

export function rejectChart(samples, label, timeText) {
  const { reasons, times, series } = intervals(samples);
  const max = Math.max(1, ...reasons.flatMap((r) => series[r]));
  const t0 = samples[0].time_ms, t1 = samples[samples.length - 1].time_ms;
  const x = (t) => PAD.left + ((t - t0) / Math.max(1, t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const lines = reasons.map((r, i) => svg("polyline", {
    points: times.map((t, k) => `${x(t).toFixed(1)},${y(series[r][k]).toFixed(1)}`).join(" "),
    fill: "none", stroke: COLOURS[i % COLOURS.length], "stroke-width": 2, "data-reason": r,
  }));
  const axis = svg("g", {},
    svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, stroke: "#767676" }),
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, stroke: "#767676" }),
    svg("text", { x: PAD.left - 4, y: PAD.top + 4, "text-anchor": "end" }, String(max)),
    svg("text", { x: PAD.left - 4, y: H - PAD.bottom, "text-anchor": "end" }, "0"),
    svg("text", { x: PAD.left, y: H - 6 }, timeText(t0)),
    svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, timeText(t1)));
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    svg("title", {}, label), axis, ...lines);
  const legend = el("ul", { class: "legend" }, ...reasons.map((r, i) =>
    el("li", {}, el("span", { class: "swatch", style: `background:${COLOURS[i % COLOURS.length]}`, "aria-hidden": "true" }),
      el("code", {}, r))));
  return { chart, legend, inWindow: Object.fromEntries(reasons.map((r) => [r, series[r].reduce((a, b) => a + b, 0)])) };
}
