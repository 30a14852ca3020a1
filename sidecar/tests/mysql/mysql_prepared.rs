//! Prepared statements on the MySQL plane (#24, second slice), with a real
//! binary-protocol client (mysql-connector-python's prepared cursors)
//! against a real MariaDB through `sluice-sidecar standalone`: the text is
//! decided at COM_STMT_PREPARE under the same gate as a text query
//! (refused: ERR 1227, no statement id), COM_STMT_EXECUTE is decided again
//! and put on record, and binary rows are masked by column (a masked
//! string gets the masked text, a masked date NULL).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

fn setup(db: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7), (2, NULL, NULL, NULL, -3);
         CREATE TABLE {db}.t (id int);"
    ));
    Sidecar::start(&manifests(m, db, POLICY), "shop/report-job")
}

#[test]
fn prepared_statements_are_decided_masked_and_audited() {
    let db = "my_prep";
    let sidecar = setup(db);
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('SELECT id, name, ssn, born, score FROM customers WHERE id >= ? ORDER BY id', (1,))\n\
             for r in cur.fetchall():\n    \
                 print('row', [x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r])\n\
             cur.execute('SELECT concat(ssn, ?) AS c, upper(name) AS n FROM customers WHERE id = 1', ('',))\n\
             print('derived', [x.decode() if isinstance(x, (bytes, bytearray)) else x for x in cur.fetchone()])\n\
             cur.execute('INSERT INTO t VALUES (?)', (5,))\n\
             c.commit()\n\
             cur.execute('SELECT ? + 1', (41,))\n\
             print('after', cur.fetchone()[0])\n"
        ),
    );
    assert!(!out.contains(SSN), "the SSN reached the client:\n{out}");
    // A masked varchar in a binary row reads as redacted, a masked date as
    // NULL (its bitmap bit set); unmasked columns, NULLs and negative
    // integers around them are untouched.
    assert!(
        out.contains("row [1, 'Alice', '[redacted]', None, 7]"),
        "{out}"
    );
    assert!(out.contains("row [2, None, None, None, -3]"), "{out}");
    assert!(out.contains("derived ['[redacted]', 'ALICE']"), "{out}");
    assert!(out.contains("after 42"), "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT count(*) FROM {db}.t"))
            .trim(),
        "1"
    );
    // On record at EXECUTE: the statement (write-ahead) and its result
    // with what was masked; no SSN anywhere.
    let events = sidecar.audit_events();
    assert!(
        events.iter().any(|e| e["type"] == "statement"
            && e["command"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("customers"))
            && e["decision"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("mysql binary protocol"))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "result" && e["outcome"]["masked"].as_u64() == Some(2)),
        "{events:?}"
    );
    assert!(!sidecar.audit_text().contains(SSN));
}

/// COM_STMT_PREPARE is decided under the text protocol's gate: a denied
/// statement and a text MySQL reads otherwise than Sluice's parser (an
/// executable comment) are refused at PREPARE with ERR 1227, and no
/// statement id is handed out; the session goes on.
#[test]
fn prepare_is_refused_under_the_query_gate() {
    let db = "my_prep_gate";
    let sidecar = setup(db);
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             for sql in ['DROP TABLE t', 'SELECT name /*!50000 , ssn */ FROM customers', 'SELECT name FROM customers WHERE id = ?']:\n    \
                 try:\n        \
                     s = c.cmd_stmt_prepare(sql.encode())\n        \
                     print('prepared', sql, s['statement_id'] > 0)\n    \
                 except mysql.connector.Error as e:\n        \
                     print('refused', e.errno, e.msg)\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('SELECT ? + 1', (41,))\n\
             print('after', cur.fetchone()[0])\n"
        ),
    );
    assert!(
        out.contains("refused 1227 statement denied by Sluice")
            && out.contains("no-schema-changes"),
        "{out}"
    );
    assert!(
        out.contains("refused 1227 statement refused by Sluice") && out.contains("executable"),
        "{out}"
    );
    assert!(
        out.contains("prepared SELECT name FROM customers WHERE id = ? True"),
        "{out}"
    );
    assert!(out.contains("after 42"), "{out}");
    assert_eq!(
        maria()
            .admin(&format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{db}' AND table_name = 't'"
            ))
            .trim(),
        "1",
        "the denied DROP TABLE ran"
    );
    let events = sidecar.audit_events();
    let denial = events.iter().find(|e| e["type"] == "denial").unwrap();
    assert_eq!(denial["decision"]["rule"], "no-schema-changes", "{denial}");
}

/// Long data (COM_STMT_SEND_LONG_DATA) reaches the server for the
/// session's own statement, and the session goes on.
#[test]
fn long_data_is_passed_on() {
    let db = "my_prep_long";
    let sidecar = setup(db);
    let out = connector(
        sidecar.port,
        &format!(
            "import io\n\
             c = connect(database='{db}')\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('UPDATE customers SET name = ? WHERE id = 2', (io.BytesIO(b'Bob'),))\n\
             c.commit()\n\
             cur.execute('SELECT ? + 1', (41,))\n\
             print('after', cur.fetchone()[0])\n"
        ),
    );
    assert!(out.contains("after 42"), "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT name FROM {db}.customers WHERE id = 2"))
            .trim(),
        "Bob"
    );
    assert!(!sidecar.audit_text().contains(SSN));
}

/// Cursors (COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then
/// COM_STMT_FETCH), driven by mysql-connector-python's own
/// `cmd_stmt_execute(flags=1)`, `cmd_stmt_fetch` and `get_rows` (no
/// Python client's cursor class asks for a server cursor by itself): the
/// fetched binary rows are masked like any binary row, `maxRows` counts
/// across the fetches (truncated: the last fetch says the last row was
/// sent), and a fetch for a statement without an open cursor (unknown,
/// executed without one, closed) is refused and not forwarded.
#[test]
fn cursors_are_fetched_masked_and_counted_across_fetches() {
    let db = "my_prep_cursor";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7), (2, 'Bob', '234-56-7890', NULL, -3),
           (3, 'Carol', '345-67-8901', '1990-03-04', 5), (4, 'Dan', '456-78-9012', '2000-05-06', 9);"
    ));
    let policy = format!("{POLICY}  limits: {{maxRows: 3}}\n");
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             sid = c.cmd_stmt_prepare(b'SELECT id, name, ssn, born, score FROM customers ORDER BY id')['statement_id']\n\
             n, cols, eof = c.cmd_stmt_execute(sid, flags=1)\n\
             print('opened', eof['status_flag'] & 0x40 != 0)\n\
             def fetch(s, k):\n    \
                 try:\n        \
                     c.cmd_stmt_fetch(s, k)\n        \
                     rows, eof = c.get_rows(binary=True, columns=cols)\n        \
                     return [[x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r] for r in rows], eof['status_flag'] & 0x80 != 0\n    \
                 except mysql.connector.Error as e:\n        \
                     c.unread_result = False\n        \
                     return 'refused', e.errno, e.msg\n\
             for k in (1, 1, 1, 5):\n    \
                 print('fetch', k, fetch(sid, k))\n\
             print('past the end', fetch(sid, 1))\n\
             print('unknown', fetch(sid + 1000, 1))\n\
             other = c.cmd_stmt_prepare(b'SELECT id FROM customers')['statement_id']\n\
             _, ocols, _ = c.cmd_stmt_execute(other)\n\
             c.unread_result = True\n\
             print('other rows', len(c.get_rows(binary=True, columns=ocols)[0]))\n\
             print('no cursor', fetch(other, 1))\n\
             print('reopened', c.cmd_stmt_execute(sid, flags=1)[2]['status_flag'] & 0x40 != 0)\n\
             c.cmd_stmt_close(sid)\n\
             print('closed', fetch(sid, 1))\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('SELECT ? + 1', (41,))\n\
             print('after', cur.fetchone()[0])\n"
        ),
    );
    assert!(!out.contains(SSN), "the SSN reached the client:\n{out}");
    assert!(out.contains("opened True"), "{out}");
    // Masked as any binary row: the ssn redacted, the date NULL.
    assert!(
        out.contains("fetch 1 ([[1, 'Alice', '[redacted]', None, 7]], False)"),
        "{out}"
    );
    assert!(
        out.contains("fetch 1 ([[2, 'Bob', '[redacted]', None, -3]], False)"),
        "{out}"
    );
    // maxRows 3 across the fetches: the third row, then nothing more, and
    // the client is told the last row was sent; the cursor is done.
    assert!(
        out.contains("fetch 1 ([[3, 'Carol', '[redacted]', None, 5]], False)"),
        "{out}"
    );
    assert!(out.contains("fetch 5 ([], True)"), "{out}");
    assert!(
        !out.contains("Dan"),
        "a row past maxRows reached the client: {out}"
    );
    for case in ["past the end", "unknown", "no cursor", "closed"] {
        assert!(
            out.contains(&format!("{case} ('refused', 1243, "))
                && out.contains("has no cursor open"),
            "{case}: {out}"
        );
    }
    // Without a cursor, maxRows applies as to any result.
    assert!(out.contains("other rows 3"), "{out}");
    assert!(out.contains("reopened True"), "{out}");
    assert!(out.contains("after 42"), "{out}");
    // Each fetch is on record as a result, masked values counted.
    let events = sidecar.audit_events();
    let fetched: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "result"
                && e["command"]["text"]
                    == "SELECT id, name, ssn, born, score FROM customers ORDER BY id"
                && e["outcome"]["rows"].as_u64() > Some(0)
        })
        .collect();
    let masked: Vec<&serde_json::Value> = fetched.iter().map(|e| &e["outcome"]["masked"]).collect();
    // Bob's date is NULL already: one value masked in his row.
    assert_eq!(masked, [2, 1, 2], "{events:#?}");
    assert!(!sidecar.audit_text().contains(SSN));
}

/// Detectors read binary rows too (strings and integers; the values of
/// every type are walked): a detected string becomes the masked
/// text, a detected integer (a card number in a BIGINT) NULL; other values
/// are untouched.
#[test]
fn detectors_mask_binary_rows() {
    let db = "my_prep_detect";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.accounts (id int primary key, email varchar(80), seen datetime(6), ratio double, small tinyint, card bigint, visits bigint);
         INSERT INTO {db}.accounts VALUES (1, 'ann.lee@example.com', '2024-05-06 07:08:09.123456', 0.5, -2, 4111111111111111, 4111);"
    ));
    let policy = "  defaultAction: allow\n  masking:\n    - detectors: [creditCard, email]\n      strategy: redact\n";
    let sidecar = Sidecar::start(&manifests(m, db, policy), "shop/report-job");
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('SELECT id, email, seen, ratio, small, card, visits FROM accounts WHERE id = ?', (1,))\n\
             print('row', [x.decode() if isinstance(x, (bytes, bytearray)) else x for x in cur.fetchone()])\n"
        ),
    );
    assert!(!out.contains("ann.lee@example.com"), "{out}");
    assert!(!out.contains("4111111111111111"), "{out}");
    // Dates, floats and negative small integers are walked and passed on.
    assert!(
        out.contains("row [1, '[redacted]', datetime.datetime(2024, 5, 6, 7, 8, 9, 123456), 0.5, -2, None, 4111]"),
        "{out}"
    );
}

/// A session holds at most 1,024 prepared statements: the next PREPARE is
/// refused with a message that says so, and closing one makes room.
#[test]
fn prepared_statements_are_bounded_per_session() {
    let db = "my_prep_bound";
    let sidecar = setup(db);
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             ids = [c.cmd_stmt_prepare(('SELECT %d' % i).encode())['statement_id'] for i in range(1024)]\n\
             print('prepared', len(ids))\n\
             try:\n    \
                 c.cmd_stmt_prepare(b'SELECT 1024')\n    \
                 print('1025th prepared')\n\
             except mysql.connector.Error as e:\n    \
                 print('refused', e.errno, e.msg)\n\
             c.cmd_stmt_close(ids[0])\n\
             print('after close', c.cmd_stmt_prepare(b'SELECT 1')['statement_id'] > 0)\n"
        ),
    );
    assert!(out.contains("prepared 1024"), "{out}");
    assert!(
        out.contains("refused 1227") && out.contains("at most 1024"),
        "{out}"
    );
    assert!(out.contains("after close True"), "{out}");
}
