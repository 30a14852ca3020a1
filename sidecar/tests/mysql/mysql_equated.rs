//! A value equated with a masked one is that value (#24): `SELECT s.seq
//! FROM seq_100000000_to_999999999 s JOIN customers c ON s.seq =
//! CAST(REPLACE(c.ssn, '-', '') AS INT)` returned every number in one
//! statement, though `s.seq` reads no masked column. Per form: JOIN … ON,
//! WHERE, IN a subquery, a correlated EXISTS, chains of equalities, `*`;
//! read back with PyMySQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

const MASKING: &str = r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

#[test]
fn values_equated_with_masked_ones_are_masked() {
    let db = "my_equated";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(20), ssn varchar(20));
         INSERT INTO {db}.customers VALUES (1, 'ann', '{SSN}');
         CREATE TABLE {db}.numbers (n bigint, label varchar(10));
         INSERT INTO {db}.numbers VALUES (123456789, 'x'), (5, 'y');"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, MASKING), "shop/report-job");
    let statements = [
        "SELECT s.seq FROM seq_123456780_to_123456799 s JOIN customers c ON s.seq = CAST(REPLACE(c.ssn, '-', '') AS INT)",
        "SELECT seq FROM seq_123456780_to_123456799 WHERE seq IN (SELECT REPLACE(ssn, '-', '') FROM customers)",
        "SELECT n FROM numbers, customers WHERE REPLACE(ssn, '-', '') = n",
        "SELECT a.n FROM numbers a, numbers b, customers c WHERE a.n = b.n AND b.n <=> REPLACE(c.ssn, '-', '')",
        "SELECT x.* FROM numbers x JOIN customers c ON x.n = REPLACE(c.ssn, '-', '')",
        "SELECT s.seq FROM seq_123456780_to_123456799 s WHERE EXISTS (SELECT 1 FROM customers c WHERE REPLACE(c.ssn, '-', '') = s.seq)",
    ];
    let list = serde_json::to_string(&statements).unwrap();
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
for sql in json.loads({list:?}):
    cur.execute(sql)
    print(">>>", sql)
    print(cur.rowcount, cur.fetchall())
"#
        ),
    );
    for sql in statements {
        assert!(out.contains(sql), "{sql} did not run: {out}");
    }
    assert!(
        !out.contains("123456789") && !out.contains(SSN),
        "a number equal to an SSN came back: {out}"
    );
    // Each statement found its row (the value itself withheld).
    assert_eq!(out.matches("\n1 ").count(), statements.len(), "{out}");
    // A comparison with a constant gives the value as it is.
    let plain = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
cur.execute("SELECT n FROM numbers WHERE n = 123456789")
print(cur.fetchall())
"#
        ),
    );
    assert!(plain.contains("123456789"), "{plain}");
}
