//! `report.html`: one offline page with the charts as inline SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::soc2::Criterion;
use super::stats::{NO_RULE, Stats, UNATTRIBUTED};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The most characters of a bar's label shown.
const LABEL_CHARS: usize = 34;

/// A horizontal bar chart as inline SVG.
fn bars(title: &str, data: &[(String, u64)]) -> String {
    let mut out = format!("<h2>{}</h2>", escape(title));
    if data.is_empty() {
        out.push_str("<p class=\"none\">none in the period</p>");
        return out;
    }
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1);
    let height = data.len() * 26 + 10;
    let _ = write!(
        out,
        "<svg width=\"760\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    for (i, (label, value)) in data.iter().enumerate() {
        let y = i * 26 + 5;
        let w = (*value as f64 / max as f64 * 420.0).round().max(1.0);
        // The label column is 260 px: a longer label (a namespace and name
        // may be 316 characters) is cut, and whole in its tooltip.
        let shown: String = if label.chars().count() > LABEL_CHARS {
            label.chars().take(LABEL_CHARS - 1).chain(['…']).collect()
        } else {
            label.clone()
        };
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"13\"><title>{}</title>{}</text><rect x=\"260\" y=\"{y}\" width=\"{w}\" height=\"20\" fill=\"#3b6ea5\"/><text x=\"{}\" y=\"{}\" font-size=\"13\">{value}</text>",
            y + 15,
            escape(label),
            escape(&shown),
            266.0 + w,
            y + 15
        );
    }
    out.push_str("</svg>");
    out
}

/// Decisions per day as stacked columns (allow, deny, requireApproval).
fn per_day(data: &BTreeMap<String, BTreeMap<String, u64>>) -> String {
    let mut out = "<h2>Decisions over time</h2>".to_string();
    if data.is_empty() {
        out.push_str("<p class=\"none\">none in the period</p>");
        return out;
    }
    let colours = [
        ("allow", "#4c9a5b"),
        ("deny", "#c0392b"),
        ("requireApproval", "#e0a030"),
    ];
    let max = data
        .values()
        .map(|a| a.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let width = (data.len() * 40 + 60).max(300);
    let _ = write!(
        out,
        "<svg width=\"{width}\" height=\"260\" role=\"img\" aria-label=\"Decisions over time\">"
    );
    for (i, (day, actions)) in data.iter().enumerate() {
        let x = 40 + i * 40;
        let mut top = 220.0;
        for (action, colour) in colours {
            let n = actions.get(action).copied().unwrap_or(0);
            let h = n as f64 / max as f64 * 200.0;
            top -= h;
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{top:.1}\" width=\"28\" height=\"{h:.1}\" fill=\"{colour}\"><title>{day} {action}: {n}</title></rect>"
            );
        }
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"240\" font-size=\"10\">{}</text>",
            escape(day.get(5..).unwrap_or(day))
        );
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"20\" font-size=\"11\">{max}</text><line x1=\"36\" y1=\"220\" x2=\"{width}\" y2=\"220\" stroke=\"#888\"/></svg>"
    );
    out.push_str("<p class=\"legend\"><span style=\"color:#4c9a5b\">■</span> allow <span style=\"color:#c0392b\">■</span> deny <span style=\"color:#e0a030\">■</span> requireApproval</p>");
    out
}

/// Masked values by AccessPolicy, with what the entries that are not a
/// policy mean.
fn masked_by_policy(data: &BTreeMap<String, u64>) -> String {
    let list: Vec<(String, u64)> = data.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut out = bars("Masked values by policy", &list);
    if !list.is_empty() {
        let _ = write!(
            out,
            "<p class=\"legend\">By the AccessPolicy (namespace/name) whose masking rule masked them. \
             <i>{}</i>: values of events that do not say which policy masked them (sidecars before \
             per-policy counts, planes that record only a total). <i>{}</i>: values Sluice masked \
             under no rule (a row wider than its description, rules that could not be combined).</p>",
            escape(UNATTRIBUTED),
            escape(NO_RULE)
        );
    }
    out
}

pub(super) fn html(
    summary: &Value,
    stats: &Stats,
    latencies: &[i64],
    mapping: &[Criterion],
    audit_ok: bool,
) -> String {
    let mut buckets: BTreeMap<usize, u64> = BTreeMap::new();
    let labels = ["< 1 min", "1–10 min", "10–60 min", "1–24 h", "> 24 h"];
    for l in latencies {
        let b = match *l {
            ..60 => 0,
            60..600 => 1,
            600..3600 => 2,
            3600..86400 => 3,
            _ => 4,
        };
        *buckets.entry(b).or_default() += 1;
    }
    let latency: Vec<(String, u64)> = buckets
        .iter()
        .map(|(b, n)| (labels[*b].to_string(), *n))
        .collect();
    let to_list =
        |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>();
    let mut rows = String::new();
    for (c, d, f) in mapping {
        let _ = write!(
            rows,
            "<tr><td>{c}</td><td>{}</td><td>{}</td></tr>",
            escape(d),
            escape(&f.join(", "))
        );
    }
    let s = |p: &str| {
        summary
            .pointer(p)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sluice evidence {since} .. {until}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:900px;color:#222}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}} .ok{{color:#2e7d32}} .bad{{color:#c62828}} .none{{color:#777}} .legend{{font-size:12px}}</style>
</head><body>
<h1>Sluice access evidence</h1>
<p>Period {since} .. {until}, {scope}. Audit: <b class="{class}">{audit}</b> ({events} events in the period). {policies} AccessPolicies, {connections} Connections, {requests} AccessRequests.</p>
{per_day}
{denials}
{masked}
{by_policy}
{latency}
<h2>SOC 2 mapping</h2>
<table><tr><th>Criterion</th><th>How Sluice supports it</th><th>Evidence in this package</th></tr>{rows}</table>
<p class="none">Files and their SHA-256 are in manifest.json; re-check with <code>kubectl sluice evidence verify DIR</code>.</p>
</body></html>
"#,
        since = escape(
            summary
                .pointer("/period/since")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        until = escape(
            summary
                .pointer("/period/until")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        scope = escape(summary["scope"].as_str().unwrap_or("")),
        class = if audit_ok { "ok" } else { "bad" },
        audit = if audit_ok {
            "verified"
        } else {
            "FAILED verification"
        },
        events = stats.events,
        policies = s("/accessPolicies"),
        connections = s("/connections"),
        requests = s("/accessRequests"),
        per_day = per_day(&stats.per_day),
        denials = bars("Denials by rule", &to_list(&stats.denials_by_rule)),
        masked = bars(
            "Masked values by Connection",
            &to_list(&stats.masked_by_connection)
        ),
        by_policy = masked_by_policy(&stats.masked_by_policy),
        latency = bars(
            "Approval latency (first decision after the request)",
            &latency
        ),
    )
}
