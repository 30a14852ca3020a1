//! `evidence export`'s masked values by policy (#21): from the audit's
//! `outcome.masks`, in `summary.json`, the GRC table and the HTML report's
//! chart, rendered in headless Chromium when it is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sluice_e2e::TestCluster;
use sluice_policy::audit::{AuditChain, AuditEventDraft};

use common::{cluster_with_crds, export};

/// A chained log of one sidecar: masked values of two policies (`pii`,
/// `cards`), from result events and a batched statement event; an older
/// event without `masks`; values masked under no rule; and an event
/// outside the period.
fn audit_log(now: Timestamp) -> String {
    let mut chain = AuditChain::new("sidecar:shop/report-job:report-0:boot-1");
    let t = |m: i64| now.checked_sub(m.minutes()).unwrap().to_string();
    let old = now.checked_sub((200 * 24).hours()).unwrap().to_string();
    let events = [
        (
            old,
            "result",
            json!({"masked": 100, "masks": [{"count": 100, "index": 0, "policy": "pii"}]}),
        ),
        (
            t(50),
            "result",
            json!({"rows": 3, "masked": 7, "masks": [
                {"count": 3, "index": 0, "policy": "cards"},
                {"count": 4, "index": 0, "policy": "pii"}]}),
        ),
        (
            t(40),
            "statement",
            json!({"rows": 5, "masked": 5, "masks": [{"count": 5, "index": 1, "policy": "pii"}]}),
        ),
        (t(30), "result", json!({"rows": 6, "masked": 6})),
        (
            t(20),
            "result",
            json!({"rows": 1, "masked": 3, "masks": [
                {"count": 2, "index": 0, "policy": "cards"}, {"count": 1}]}),
        ),
    ];
    let mut text = String::new();
    for (time, kind, outcome) in events {
        let mut draft = AuditEventDraft::new(time, serde_json::from_value(json!(kind)).unwrap());
        draft.connection = Some("orders-db".into());
        draft.identity = Some(
            serde_json::from_value(
                json!({"namespace": "shop", "serviceAccount": "report-job", "pod": "report-0"}),
            )
            .unwrap(),
        );
        if kind == "statement" {
            draft.decision = Some(
                serde_json::from_value(json!({"action": "allow", "policy": "reporting"})).unwrap(),
            );
        }
        draft.outcome = Some(serde_json::from_value(outcome).unwrap());
        text.push_str(&chain.append(draft).unwrap().to_line().unwrap());
        text.push('\n');
    }
    text
}

/// The test control plane with the CRDs and namespace `shop`.
async fn cluster() -> TestCluster {
    let (cluster, client) = cluster_with_crds().await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    cluster
}

/// The bars of the chart titled `title` in `html`: (label, value), in order.
/// A label is read from its tooltip (the whole label, never cut).
fn chart(html: &str, title: &str) -> Vec<(String, u64)> {
    let start = html
        .find(&format!("<h2>{title}</h2>"))
        .unwrap_or_else(|| panic!("no chart {title:?} in {html}"));
    let section = &html[start..];
    let section = &section[..section[4..].find("<h2>").map_or(section.len(), |e| e + 4)];
    let mut bars = Vec::new();
    let mut rest = section;
    while let Some(i) = rest.find("<title>") {
        rest = &rest[i + "<title>".len()..];
        let label = &rest[..rest.find("</title>").unwrap()];
        // The value is the text after the bar's rect.
        let after_rect = &rest[rest.find("<rect").unwrap()..];
        let value_start = after_rect.find("font-size=\"13\">").unwrap() + "font-size=\"13\">".len();
        let value = &after_rect[value_start..];
        let value = &value[..value.find("</text>").unwrap()];
        bars.push((label.to_string(), value.parse().unwrap()));
    }
    bars
}

/// The bars the period's events make, sorted as the summary sorts them.
fn expected() -> Vec<(String, u64)> {
    [
        ("shop/cards", 5),
        ("shop/pii", 9),
        ("sluice (no rule)", 1),
        ("unattributed", 6),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_are_reported_by_the_policy_that_masked_them() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(&audit, audit_log(Timestamp::now())).unwrap();
    let out_dir = dir.path().join("evidence");
    let out = export(&cluster.kubeconfig_path(), Some("90d"), &audit, &out_dir);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();

    // The summary: each policy exactly its own count; the event without
    // `masks` whole as unattributed; the 200-day-old event not at all.
    let summary: Value = serde_json::from_str(&read("summary.json")).unwrap();
    assert_eq!(
        summary["maskedValuesByPolicy"],
        json!({"shop/cards": 5, "shop/pii": 9, "sluice (no rule)": 1, "unattributed": 6}),
        "{summary}"
    );
    assert_eq!(
        summary["maskedValuesByConnection"],
        json!({"orders-db": 21})
    );
    assert_eq!(
        read("grc/masked-values-by-policy.csv"),
        "policy,maskedValues\nshop/cards,5\nshop/pii,9\nsluice (no rule),1\nunattributed,6\n"
    );

    // The report's chart, as written.
    let html = read("report.html");
    assert_eq!(chart(&html, "Masked values by policy"), expected());

    // And as a browser reads it: the DOM Chromium builds from the file
    // holds the same chart; its screenshot is kept to be looked at.
    let Some(chromium) = find_chromium() else {
        eprintln!(
            "NOT RENDERED: chromium is not installed (apt-get install chromium); \
             the report was checked as written only"
        );
        return;
    };
    let report = out_dir.join("report.html");
    let profile = dir.path().join("chromium-profile");
    let dom = run_chromium(&chromium, &profile, &report, &["--dump-dom"]);
    assert_eq!(chart(&dom, "Masked values by policy"), expected(), "{dom}");
    assert!(
        dom.contains("aria-label=\"Masked values by policy\""),
        "{dom}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("evidence-masks-report.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &chromium,
        &profile,
        &report,
        &[
            "--window-size=1000,1800",
            "--hide-scrollbars",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
    eprintln!("screenshot of the report: {}", shot.display());
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `args`; its stdout (through a
/// file: a helper process Chromium leaves behind cannot hold a pipe open).
/// Killed (and the test failed) if it has not finished within a minute.
fn run_chromium(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> String {
    let out = profile.with_extension("stdout");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out).unwrap()
}
