//! Python drivers through the sidecar: psycopg 3 (text and binary results,
//! server-side prepared statements, pipeline mode, server-side cursors,
//! COPY) and asyncpg (binary codecs, prepared statements, `executemany`,
//! cursors), as the adversarial review used them. Masked values reach
//! each driver as values its column's type can read — masked text for
//! strings, NULL for a date or a number — so no row makes a driver raise
//! (`[redacted]` in a date column of a text-format result made psycopg
//! raise `DataError` on the whole row); denied statements are refused in
//! the middle of a pipeline and of `executemany` and change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SSN: &str = "123-45-6789";

const POLICY: &str = r#"  defaultAction: allow
  rules:
    - name: keep-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny
  masking:
    - columns: ["customers.ssn", "customers.born", "customers.score"]
      strategy: redact
"#;

async fn setup(test: &str) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    connect(&pg.admin_url(&db))
        .await
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text, born date, score numeric);
             INSERT INTO customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7.5), (2, 'Bob', NULL, NULL, NULL);
             CREATE TABLE orders (id int, total int);"
        ))
        .await
        .unwrap();
    Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    )
}

/// Runs `script` with `PORT` and `DB` in the environment; its stdout.
/// `package`: what to install when the import fails.
fn driver(sidecar: &Sidecar, db: &str, package: &str, script: &str) -> String {
    let env = [("PORT", sidecar.port.to_string()), ("DB", db.to_string())];
    python(script, &env, package)
}

/// The lines of `out` starting with `label `, without it.
fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no {label} line in:\n{out}"))
}

const PSYCOPG: &str = r#"
import os, psycopg
c = psycopg.connect(host='127.0.0.1', port=int(os.environ['PORT']), dbname=os.environ['DB'], user='workload', password='x', autocommit=True)
def show(label, f):
    try:
        print(label, repr(f()))
    except psycopg.Error as e:
        print(label, 'ERR', e.sqlstate, str(e).splitlines()[0])
q = "SELECT id, name, ssn, born, score FROM customers ORDER BY id"
show('text', lambda: c.execute(q).fetchall())
show('binary', lambda: c.cursor(binary=True).execute(q).fetchall())
show('prepared', lambda: [c.execute("SELECT ssn, born FROM customers WHERE id = %s", (1,), prepare=True).fetchall() for _ in range(3)][-1])
def pipeline():
    with c.pipeline():
        a, b, d = c.cursor(), c.cursor(), c.cursor()
        a.execute("SELECT ssn, born FROM customers WHERE id = %s", (1,))
        b.execute("SELECT name FROM customers WHERE id = %s", (1,))
        d.execute("SELECT score FROM customers WHERE id = %s", (1,))
    return [a.fetchall(), b.fetchall(), d.fetchall()]
show('pipeline', pipeline)
def pipeline_denied():
    with c.pipeline():
        a, b = c.cursor(), c.cursor()
        a.execute("SELECT ssn FROM customers WHERE id = %s", (1,))
        b.execute("DELETE FROM customers WHERE id = %s", (2,))
show('pipeline_denied', pipeline_denied)
show('executemany_denied', lambda: c.cursor().executemany("UPDATE customers SET name = %s WHERE id = %s", [('x', 1), ('y', 2)]))
def server_cursor(binary):
    with c.transaction():
        cur = c.cursor(name='sc_%s' % binary, binary=binary)
        cur.execute(q)
        return cur.fetchall()
show('server_cursor', lambda: server_cursor(False))
show('server_cursor_binary', lambda: server_cursor(True))
def copy():
    with c.cursor().copy("COPY (SELECT id, ssn FROM customers ORDER BY id) TO STDOUT") as cp:
        return b''.join(bytes(d) for d in cp)
show('copy', copy)
def copy_typed(sql):
    with c.cursor().copy(sql) as cp:
        cp.set_types(['int4', 'text', 'text', 'date', 'numeric'])
        return list(cp.rows())
show('copy_table', lambda: copy_typed("COPY customers TO STDOUT"))
show('copy_list', lambda: copy_typed("COPY customers (id, name, ssn, born, score) TO STDOUT"))
show('after', lambda: c.execute("SELECT count(*), count(*) FILTER (WHERE name IN ('x', 'y')) FROM customers").fetchall())
"#;

#[tokio::test]
async fn psycopg_reads_masked_rows_of_every_type_and_is_refused_in_pipelines() {
    let test = "drivers_psycopg";
    let sidecar = setup(test).await;
    let out = driver(&sidecar, &db_name(test), "psycopg[binary]", PSYCOPG);
    assert!(!out.contains(SSN) && !out.contains("1980"), "{out}");
    // Text and binary results: the masked text column redacted, the masked
    // date and numeric NULL (text format too), unmasked columns and NULLs
    // untouched; no row raises.
    let rows = "[(1, 'Alice', '[redacted]', None, None), (2, 'Bob', None, None, None)]";
    for label in ["text", "binary", "server_cursor", "server_cursor_binary"] {
        assert_eq!(line(&out, label), rows, "{label}:\n{out}");
    }
    assert_eq!(line(&out, "prepared"), "[('[redacted]', None)]", "{out}");
    assert_eq!(
        line(&out, "pipeline"),
        "[[('[redacted]', None)], [('Alice',)], [(None,)]]",
        "{out}"
    );
    // Denied inside a pipeline and in executemany: 42501 naming the rule.
    for label in ["pipeline_denied", "executemany_denied"] {
        let l = line(&out, label);
        assert!(
            l.starts_with("ERR 42501") && l.contains("keep-customers"),
            "{label}: {l}"
        );
    }
    assert_eq!(line(&out, "copy"), r"b'1\t[redacted]\n2\t\\N\n'", "{out}");
    // COPY of a table, read by type: a masked date or number is written as
    // `\N` (NULL), as in rows, so the typed reader does not raise.
    for label in ["copy_table", "copy_list"] {
        assert_eq!(line(&out, label), rows, "{label}:\n{out}");
    }
    // Nothing the denied statements would have changed changed.
    assert_eq!(line(&out, "after"), "[(2, 0)]", "{out}");
}

const ASYNCPG: &str = r#"
import os, asyncio, asyncpg
async def main():
    c = await asyncpg.connect(host='127.0.0.1', port=int(os.environ['PORT']), database=os.environ['DB'], user='workload', password='x')
    async def show(label, coro):
        try:
            print(label, repr([tuple(r) for r in await coro]))
        except asyncpg.PostgresError as e:
            print(label, 'ERR', e.sqlstate, str(e).splitlines()[0])
    await show('fetch', c.fetch("SELECT id, name, ssn, born, score FROM customers ORDER BY id"))
    stmt = await c.prepare("SELECT ssn, born, score FROM customers WHERE id = $1")
    await show('prepared', stmt.fetch(1))
    await show('derived', c.fetch("SELECT born + 1, score * 2, upper(ssn) FROM customers WHERE id = $1", 1))
    async def many():
        await c.executemany("DELETE FROM customers WHERE id = $1", [(1,), (2,)])
        return []
    await show('executemany_denied', many())
    async def cursor():
        async with c.transaction():
            return [r async for r in c.cursor("SELECT ssn, born FROM customers ORDER BY id")]
    await show('cursor', cursor())
    await show('after', c.fetch("SELECT count(*) FROM customers"))
    await c.close()
asyncio.run(main())
"#;

#[tokio::test]
async fn asyncpg_reads_masked_rows_through_its_binary_codecs() {
    let test = "drivers_asyncpg";
    let sidecar = setup(test).await;
    let out = driver(&sidecar, &db_name(test), "asyncpg", ASYNCPG);
    assert!(!out.contains(SSN) && !out.contains("1980"), "{out}");
    assert_eq!(
        line(&out, "fetch"),
        "[(1, 'Alice', '[redacted]', None, None), (2, 'Bob', None, None, None)]",
        "{out}"
    );
    assert_eq!(
        line(&out, "prepared"),
        "[('[redacted]', None, None)]",
        "{out}"
    );
    // Values computed from masked columns are masked as their own type.
    assert_eq!(
        line(&out, "derived"),
        "[(None, None, '[redacted]')]",
        "{out}"
    );
    let denied = line(&out, "executemany_denied");
    assert!(
        denied.starts_with("ERR 42501") && denied.contains("keep-customers"),
        "{denied}"
    );
    assert_eq!(
        line(&out, "cursor"),
        "[('[redacted]', None), (None, None)]",
        "{out}"
    );
    assert_eq!(line(&out, "after"), "[(2,)]", "{out}");
}
