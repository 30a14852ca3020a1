#!/usr/bin/env python3
"""Draws the chart's Grafana dashboard from a real Prometheus, to look at it.

Usage: dashboard_preview.py PROMETHEUS_URL DASHBOARD.json START END OUT.html

Each panel's queries run as Prometheus range queries (Grafana's variables
filled in: every namespace and Connection, a 10 s rate window) and are drawn
where the dashboard's gridPos puts them: time series as lines, stats as the
last value. Standard library only; the page is static SVG.
"""
import html
import json
import sys
import urllib.parse
import urllib.request

COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
COL, ROW = 1560 / 24, 30  # pixels per grid column and row


def query(prom, expr, start, end, step):
    expr = expr.replace("$__rate_interval", "10s").replace("$namespace", ".*").replace("$connection", ".*")
    url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def human(v, unit):
    if v != v:  # NaN
        return "NaN"
    if unit == "s":
        for scale, suffix in ((86400, " d"), (3600, " h"), (60, " min"), (1, " s"), (1e-3, " ms"), (1e-6, " µs")):
            if abs(v) >= scale or scale == 1e-6:
                return f"{v / scale:.3g}{suffix}"
    if unit == "ops":
        return f"{v:.3g}/s"
    return f"{v:.4g}"


def timeseries(series, unit, w, h, start, end):
    values = [float(v) for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
    if not values:
        return f'<text x="{w / 2}" y="{h / 2}" fill="#888" text-anchor="middle">No data</text>'
    lo, hi = min(0.0, min(values)), max(values)
    hi = hi if hi > lo else lo + 1
    left, bottom, right, top = 70, h - 20, w - 10, 10
    def x(t):
        return left + (float(t) - start) / max(end - start, 1) * (right - left)
    def y(v):
        return bottom - (v - lo) / (hi - lo) * (bottom - top)
    parts = []
    for frac in (0, 0.5, 1):
        v = lo + frac * (hi - lo)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#333"/>'
                     f'<text x="{left - 5}" y="{y(v) + 4:.1f}" fill="#aaa" font-size="11" text-anchor="end">{html.escape(human(v, unit))}</text>')
    for i, s in enumerate(series):
        pts = " ".join(f"{x(t):.1f},{y(float(v)):.1f}" for t, v in s["values"] if v not in ("NaN", "+Inf", "-Inf"))
        parts.append(f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="2" points="{pts}"/>')
    return "".join(parts)


def main():
    prom, dash_path, start, end, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    dash = json.load(open(dash_path))
    step = max(1, int((end - start) / 120))
    blocks = []
    height = 0
    for p in dash["panels"]:
        g = p["gridPos"]
        left, top, w, h = g["x"] * COL + 20, g["y"] * ROW + 60, g["w"] * COL - 8, g["h"] * ROW - 8
        height = max(height, top + h)
        if p["type"] == "row":
            blocks.append(f'<div class="row" style="left:{left}px;top:{top}px;width:{w}px">{html.escape(p["title"])}</div>')
            continue
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        results = []
        for t in p["targets"]:
            for s in query(prom, t["expr"], start, end, step):
                s["legend"] = legend(t["legendFormat"], s["metric"])
                results.append(s)
        if p["type"] == "stat":
            body = "".join(
                f'<div class="stat"><span class="big">{html.escape(human(float(s["values"][-1][1]), unit))}</span>'
                f'<span class="leg">{html.escape(s["legend"])}</span></div>' for s in results) or '<div class="nodata">No data</div>'
        else:
            svg = timeseries(results, unit, w - 16, h - 70, start, end)
            keys = "".join(f'<span style="color:{COLOURS[i % len(COLOURS)]}">▬ {html.escape(s["legend"])}</span> '
                           for i, s in enumerate(results))
            body = f'<svg width="{w - 16}" height="{h - 70}">{svg}</svg><div class="keys">{keys}</div>'
        blocks.append(f'<div class="panel" style="left:{left}px;top:{top}px;width:{w}px;height:{h}px">'
                      f'<div class="title">{html.escape(p["title"])}</div>{body}</div>')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ background:#111217; color:#ccccdc; font:13px sans-serif; margin:0; height:{height + 40}px; position:relative }}
h1 {{ font-size:18px; margin:16px 20px }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c3235; border-radius:3px; padding:6px 8px; box-sizing:border-box; overflow:hidden }}
.row {{ position:absolute; font-size:15px; font-weight:bold; border-bottom:1px solid #2c3235 }}
.title {{ font-weight:bold; margin-bottom:4px }}
.keys {{ font-size:11px; margin-top:2px }}
.stat {{ display:inline-block; margin:8px 14px 0 0 }} .big {{ font-size:30px; color:#73bf69; display:block }}
.leg, .nodata {{ color:#888; font-size:11px }}
</style></head><body><h1>{html.escape(dash["title"])} — namespace: All, connection: All</h1>{"".join(blocks)}</body></html>"""
    open(out, "w").write(page)


if __name__ == "__main__":
    main()
