//! A value equated with a masked one is that value: `SELECT g FROM
//! generate_series(…) g JOIN customers c ON g = replace(c.ssn, '-',
//! '')::int` returned every number in one statement, though `g` reads no
//! masked column. Per form: JOIN … ON, WHERE, IN a subquery, a correlated
//! EXISTS, chains of equalities, a whole row and `*`; simple and extended
//! protocol.

use crate::common;
use crate::pg_implicit_code::withholds;
use common::*;

#[tokio::test]
async fn values_equated_with_masked_ones_are_masked() {
    let pg = server();
    let db = db_name("equated_masking");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, name text, ssn text);
             INSERT INTO customers VALUES (1, 'a', '111-11-1111'), (2, 'b', '222-22-2222');
             CREATE TABLE numbers (n bigint, label text);
             INSERT INTO numbers VALUES (111111111, 'x'), (222222222, 'y'), (5, 'z');",
        )
        .await
        .unwrap();
    let masking = "  masking:\n    - columns: [\"customers.ssn\"]\n      strategy: redact";
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(masking)),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "SELECT x.n FROM numbers x JOIN customers c ON x.n = replace(c.ssn, '-', '')::bigint",
        "SELECT n FROM numbers, customers WHERE replace(ssn, '-', '')::bigint = n",
        "SELECT n FROM numbers WHERE n IN (SELECT replace(ssn, '-', '')::bigint FROM customers)",
        "SELECT a.n FROM numbers a, numbers b, customers c WHERE a.n = b.n AND b.n = replace(c.ssn, '-', '')::bigint",
        "SELECT x.* FROM numbers x JOIN customers c ON x.n = replace(c.ssn, '-', '')::bigint",
        "SELECT x FROM numbers x JOIN customers c ON x.n = replace(c.ssn, '-', '')::bigint",
        "SELECT x.n FROM numbers x WHERE EXISTS (SELECT 1 FROM customers c WHERE replace(c.ssn, '-', '')::bigint = x.n)",
    ] {
        withholds(&mut raw, sql, &["111111111", "222222222"]);
    }
    // Equal to a constant or to another plain column: values as they are.
    let bytes = raw.simple("SELECT n FROM numbers WHERE n = 111111111");
    assert!(
        contains(&bytes, "111111111"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = raw.simple("SELECT c.name FROM customers c JOIN numbers x ON x.n = c.id");
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}
