//! The chart's alerts and dashboard name only families the binaries export:
//! every `sluice_…` series a PromQL expression of
//! charts/sluice/files/prometheus/sluice-rules.yaml or
//! charts/sluice/files/dashboards/sluice.json reads is on `/metrics` of the
//! sidecar (its registry, as `run` and `standalone` build it, with a
//! Connection) or of the operator, from the start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use prometheus_client::registry::Registry;

/// Series names on both binaries' `/metrics` (with a Connection served and
/// a rule's first decision made).
fn exported() -> BTreeSet<String> {
    let mut registry = Registry::default();
    let metrics = sluice_sidecar::metrics::Metrics::register(&mut registry);
    let _http = sluice_sidecar::http::HttpMetrics::register(&mut registry);
    let connection = metrics.for_connection("orders-db");
    // A rule's series comes with its first decision.
    let slot = sluice_sidecar::metrics::RuleSlot::default();
    connection.rule(
        &slot,
        Some("reporting"),
        Some("no-drop"),
        sluice_crds::Action::Deny,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.push_str(&sluice_operator::metrics::Metrics::new().encode());
    let mut names: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for declared in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (family, kind) = declared.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// The `sluice_…` identifiers of `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sluice_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

fn chart_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sluice/files");
    std::fs::read_to_string(root.join(path)).unwrap()
}

#[test]
fn alerts_and_dashboard_read_only_exported_families() {
    let exported = exported();
    let rules = chart_file("prometheus/sluice-rules.yaml");
    let dashboard: serde_json::Value =
        serde_json::from_str(&chart_file("dashboards/sluice.json")).unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .chain(
            dashboard["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v["query"].as_str().map(str::to_string)),
        )
        .collect();
    let mut used = referenced(&rules);
    for q in &queries {
        used.extend(referenced(q));
    }
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the chart reads series no binary exports: {missing:?}\nexported: {exported:?}"
    );
}
