use super::*;
use crate::approvals::fixtures::{self, t};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[test]
fn body_is_slack_compatible() {
    let v: serde_json::Value = serde_json::from_slice(&body_of("a \"b\"")).unwrap();
    assert_eq!(v, serde_json::json!({"text": "a \"b\""}));
}

#[tokio::test]
async fn only_http_urls_are_taken() {
    assert!(Notifier::start("ftp://x").is_err());
    let error = Notifier::start("htps://hooks.example/T0/B0/secret-token").unwrap_err();
    assert!(!error.to_string().contains("secret-token"), "{error}");
    assert!(Notifier::start("not a url").is_err());
    assert!(Notifier::start("http://127.0.0.1:9/hook").is_ok());
}

/// The shared request (filed at t(0), expiring at t(60), under rule `bulk`
/// in `shop`) with a statement and a reason, in `phase`.
fn request(phase: Option<RequestPhase>, changed: Option<i64>, notified: &str) -> AccessRequest {
    let mut ar = fixtures::request(1);
    ar.metadata.name = Some("orders-db-7f2c".into());
    ar.spec.command.text = "DELETE FROM orders WHERE id = ?".into();
    ar.spec.command.statement = Some("DELETE FROM orders WHERE id = 7".into());
    ar.spec.reason = Some("cleanup".into());
    if !notified.is_empty() {
        ar.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(NOTIFIED_ANNOTATION.into(), notified.into());
    }
    fixtures::in_phase(
        ar,
        phase,
        changed.map(|s| (s, "Approved", "approved by alice")),
    )
}

#[test]
fn a_pending_request_is_due_its_request_notification_once() {
    use NotifyEvent::*;
    let pending = Some(RequestPhase::Pending);
    assert_eq!(due(&request(pending, None, ""), t(1)), vec![Requested]);
    assert_eq!(due(&request(None, None, ""), t(1)), vec![Requested]);
    assert!(due(&request(pending, None, "requested"), t(1)).is_empty());
    // Past its expiry nobody can approve it any more.
    assert!(due(&request(pending, None, ""), t(61)).is_empty());
}

#[test]
fn a_decision_is_due_once_within_the_window() {
    use NotifyEvent::*;
    for (phase, event) in [
        (RequestPhase::Approved, Approved),
        (RequestPhase::Executed, Approved),
        (RequestPhase::NotRun, Approved),
        (RequestPhase::Denied, Denied),
        (RequestPhase::Expired, Expired),
    ] {
        assert_eq!(
            due(&request(Some(phase), Some(10), "requested"), t(20)),
            vec![event],
            "{phase:?}"
        );
        // A settled request is not announced as requested any more.
        assert_eq!(
            due(&request(Some(phase), Some(10), ""), t(20)),
            vec![event],
            "{phase:?}"
        );
        let done = format!("requested,{}", event.word());
        assert!(due(&request(Some(phase), Some(10), &done), t(20)).is_empty());
        // Stale news is not sent.
        let late = 10 + DELIVERY_WINDOW.as_secs() as i64 + 1;
        assert!(due(&request(Some(phase), Some(10), ""), t(late)).is_empty());
        assert!(due(&request(Some(phase), None, ""), t(20)).is_empty());
    }
}

#[test]
fn the_annotation_accumulates_what_was_delivered() {
    let ar = request(Some(RequestPhase::Approved), Some(1), "requested");
    assert_eq!(
        notified_value(&ar, NotifyEvent::Approved),
        "approved,requested"
    );
    assert_eq!(notified_value(&ar, NotifyEvent::Requested), "requested");
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    assert_eq!(backoff(0), Duration::from_secs(1));
    assert_eq!(backoff(1), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(32));
    assert_eq!(backoff(6), MAX_BACKOFF);
    assert_eq!(backoff(40), MAX_BACKOFF);
}

#[test]
fn the_payload_names_the_request_and_how_to_decide() {
    let ar = request(Some(RequestPhase::Pending), None, "");
    let p = payload(&ar, NotifyEvent::Requested);
    assert_eq!(p["event"], "requested");
    assert_eq!(p["namespace"], "shop");
    assert_eq!(p["request"], "orders-db-7f2c");
    assert_eq!(p["requester"], "system:serviceaccount:shop:report-job");
    assert_eq!(p["connection"], "orders-db");
    assert_eq!(p["policy"], "reporting");
    assert_eq!(p["rule"], "bulk");
    assert_eq!(p["command"]["statement"], "DELETE FROM orders WHERE id = 7");
    assert_eq!(p["command"]["sha256"], "a".repeat(64));
    assert_eq!(p["reason"], "cleanup");
    assert_eq!(p["expiresAt"], serde_json::json!(Time(t(60))));
    assert_eq!(
        p["approve"],
        "kubectl sluice approve orders-db-7f2c -n shop"
    );
    assert_eq!(p["deny"], "kubectl sluice deny orders-db-7f2c -n shop");
    let text = slack_text(&ar, NotifyEvent::Requested);
    assert!(
        text.starts_with("Approval requested: orders-db-7f2c in shop."),
        "{text}"
    );
    assert!(
        text.contains("kubectl sluice deny orders-db-7f2c -n shop"),
        "{text}"
    );
}

#[tokio::test]
async fn routes_select_by_namespace_then_rule_first_match_wins() {
    let route = |namespace: Option<&str>, rule: Option<&str>, url: &str| Route {
        namespace: namespace.map(str::to_string),
        rule: rule.map(str::to_string),
        url: url.to_string(),
        format: Format::Json,
    };
    let n = Notifier::with_routes(vec![
        route(Some("shop"), Some("bulk"), "http://a.example/"),
        route(Some("shop"), None, "http://b.example/"),
        route(None, Some("bulk"), "http://c.example/"),
        Route::catch_all("http://d.example/", Format::Slack),
    ])
    .unwrap();
    let url = |ns, rule| n.route_for(ns, rule).map(|r| r.url.as_str());
    assert_eq!(url("shop", "bulk"), Some("http://a.example/"));
    assert_eq!(url("shop", "other"), Some("http://b.example/"));
    assert_eq!(url("web", "bulk"), Some("http://c.example/"));
    assert_eq!(url("web", "other"), Some("http://d.example/"));
    let only = Notifier::with_routes(vec![route(Some("shop"), None, "http://b.example/")]).unwrap();
    assert_eq!(only.route_for("web", "bulk"), None);
}
