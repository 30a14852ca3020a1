//! A text at the token bound is parsed off the runtime thread (issue #17,
//! item 2): while one session's statement takes seconds to parse, another
//! session on the same sidecar (one runtime thread, the default) keeps
//! getting answers. Counted, not timed: the small session must get many
//! answers between the moment the large text is sent and its answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn a_large_parse_does_not_stall_other_sessions() {
    let pg = server();
    let db = db_name("parse_off_thread");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute("CREATE TABLE victims (id int); INSERT INTO victims VALUES (1), (2), (3);")
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(
            pg,
            &db,
            ADMIN,
            "disable",
            &policy(
                "  defaultAction: allow\n  rules:\n    - {name: no-drop, action: deny, match: {statements: [drop]}}\n",
            ),
        ),
        "shop/report-job",
    );

    // The small session: SELECT 1 in a loop, counting answers.
    let small = sidecar.connect().await;
    let answers = Arc::new(AtomicUsize::new(0));
    let counter = answers.clone();
    let looping = tokio::spawn(async move {
        loop {
            let rows = small.simple_query("SELECT 1").await.expect("small answer");
            assert!(!rows.is_empty());
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the small session got no answer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The large text: just under the 400,000-token bound, denied by the
    // rule once parsed, so the sidecar answers it without the server (all
    // the time between sending it and its answer is the sidecar's parse).
    let mut big = String::from("SELECT 1");
    while big.len() < 390_000 {
        big.push_str(",1");
    }
    big.push_str("; DROP TABLE victims");
    let large = sidecar.connect().await;
    let before = answers.load(Ordering::SeqCst);
    let err = large
        .simple_query(&big)
        .await
        .expect_err("the DROP is denied");
    let during = answers.load(Ordering::SeqCst) - before;
    looping.abort();
    assert_eq!(
        code(&err),
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{}",
        message(&err)
    );
    assert!(
        during >= 20,
        "the small session got {during} answers while the large text was parsed: the parse stalled it"
    );
    let n: i64 = admin
        .query_one("SELECT count(*) FROM victims", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}
