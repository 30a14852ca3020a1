//! Masked values by policy (#21): a result event's `outcome.masks` counts
//! the values each masking rule masked, per AccessPolicy and index in its
//! `spec.masking`, through real clients (tokio-postgres: the extended protocol and a
//! simple query string; psql: COPY TO STDOUT).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use serde_json::{Value, json};

const CARD: &str = "4111 1111 1111 1111";

/// Two policies bind the identity; `reporting` masks the ssn, `pii` the
/// note (rule 0), the email (rule 1) and cards its detectors find (rule 2).
fn policies() -> String {
    let reporting = policy(
        r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#,
    );
    let pii = named_policy(
        "pii",
        "orders-db",
        r#"  defaultAction: allow
  masking:
    - columns: ["customers.note"]
      strategy: redact
    - columns: ["customers.email"]
      strategy: partial
    - detectors: [creditCard]
      strategy: redact"#,
    );
    format!("{reporting}---\n{pii}")
}

async fn setup(test: &str) -> Sidecar {
    let db = database(
        test,
        &format!(
            "CREATE TABLE customers (id int, ssn text, email text, note text, comment text);
             INSERT INTO customers VALUES
               (1, '123-45-6789', 'a@example.com', 'n1', 'card {CARD}'),
               (2, '234-56-7890', 'b@example.com', 'n2', 'no card'),
               (3, '345-67-8901', 'c@example.com', 'n3', 'card {CARD}');"
        ),
    )
    .await;
    Sidecar::start(
        &manifests(server(), &db, ADMIN, "disable", &policies()),
        "shop/report-job",
    )
}

/// The `masks` of the result event whose command text is `text`, with its
/// `masked` total (polled: result events are written within 200 ms).
async fn masks_of(sidecar: &Sidecar, text: &str) -> (Value, Value) {
    let is_it = |e: &Value| e["type"] == "result" && e["command"]["text"] == text;
    let events = sidecar.audit_events_until(text, is_it).await;
    let event = events.iter().find(|e| is_it(e)).unwrap();
    (
        event["outcome"]["masks"].clone(),
        event["outcome"]["masked"].clone(),
    )
}

fn count(policy: &str, index: u64, count: u64) -> Value {
    json!({"count": count, "index": index, "policy": policy})
}

#[tokio::test]
async fn result_events_count_masked_values_by_policy_and_rule() {
    let sidecar = setup("audit_masks").await;
    let client = sidecar.connect().await;

    // Extended protocol: the ssn is `reporting`'s, the email `pii`'s rule 1.
    let rows = client
        .query("SELECT id, ssn, email FROM customers ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let ssn: &str = rows[0].get(1);
    assert_ne!(ssn, "123-45-6789");
    let (masks, masked) =
        masks_of(&sidecar, "SELECT id, ssn, email FROM customers ORDER BY id").await;
    assert_eq!(masked, 6);
    let (reporting, pii) = ("reporting", "pii");
    assert_eq!(masks, json!([count(pii, 1, 3), count(reporting, 0, 3)]));

    // A simple query string of two statements: one event, the counts summed.
    client
        .simple_query("SELECT ssn FROM customers; SELECT note, comment FROM customers")
        .await
        .unwrap();
    let (masks, masked) = masks_of(
        &sidecar,
        "SELECT ssn FROM customers; SELECT note, comment FROM customers",
    )
    .await;
    // The cards in `comment` are found by `pii`'s detectors (rule 2).
    assert_eq!(masked, 8);
    assert_eq!(
        masks,
        json!([count(pii, 0, 3), count(pii, 2, 2), count(reporting, 0, 3)])
    );

    // COPY … TO STDOUT (psql), masked field by field.
    let (ok, out, err) = psql(
        sidecar.port,
        &["-c", "COPY customers (ssn, email) TO STDOUT"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!out.contains("123-45-6789"), "{out}");
    let (masks, masked) = masks_of(&sidecar, "COPY customers (ssn, email) TO STDOUT").await;
    assert_eq!(masked, 6);
    assert_eq!(masks, json!([count(pii, 1, 3), count(reporting, 0, 3)]));

    // Nothing masked: no `masks` (and no `masked`).
    client.query("SELECT id FROM customers", &[]).await.unwrap();
    let (masks, masked) = masks_of(&sidecar, "SELECT id FROM customers").await;
    assert_eq!((masks, masked), (Value::Null, Value::Null));

    // The log with the new field verifies.
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
}
