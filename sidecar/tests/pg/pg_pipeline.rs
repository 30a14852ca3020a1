//! Pipelining: answers stay on their own statements.
//!
//! Whole pipelines — allowed, refused (deny rule, a Parse refused by
//! `onParseError`, a fast-path FunctionCall), masked, failing on the server,
//! simple and extended-protocol groups, Syncs and Flushes — are written to
//! the sidecar in one write, in front of a real PostgreSQL. Every answer must
//! come in the order of its statement, with that statement's own value, and
//! no masked value may reach the client. (The sidecar's refusals once waited
//! behind the server's answers that arrived in the same read, so rows met the
//! wrong statement's mask plan.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::frontend::*;
use common::*;
use proptest::prelude::*;

const SSN: &str = "123-45-6789";

const POLICY: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

async fn setup(test: &str) -> (Sidecar, tokio_postgres::Client) {
    setup_with(test, POLICY).await
}

/// [`POLICY`] with `maxRowsAffected: 1`; the table `items` has 3 rows.
async fn setup_limited(test: &str) -> (Sidecar, tokio_postgres::Client) {
    let limited = format!("{POLICY}  limits: {{maxRowsAffected: 1}}\n");
    let (sidecar, admin) = setup_with(test, &limited).await;
    admin
        .batch_execute("CREATE TABLE items (id int primary key, v int); INSERT INTO items VALUES (1, 0), (2, 0), (3, 0);")
        .await
        .unwrap();
    (sidecar, admin)
}

async fn setup_with(test: &str, policy_lines: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, ssn text);
             INSERT INTO customers VALUES (1, '{SSN}');"
        ))
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(policy_lines)),
        "shop/report-job",
    );
    (sidecar, admin)
}

// === messages ===

/// A fast-path FunctionCall of `pg_backend_pid()` (OID 2026), no arguments.
fn function_call() -> (u8, Vec<u8>) {
    let mut b = 2026u32.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    (b'F', b)
}

/// One message as read: its type and body.
type Message = (u8, Vec<u8>);

fn read_message(raw: &mut RawClient) -> Message {
    let (tags, bytes) = raw.read_messages(1);
    (tags[0], bytes[5..].to_vec())
}

/// The values of a DataRow (`None` for NULL).
fn row_values(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(
                String::from_utf8_lossy(&body[at..at + len]).into_owned(),
            ));
            at += len;
        }
    }
    out
}

/// The SQLSTATE of an ErrorResponse.
fn sqlstate(body: &[u8]) -> String {
    for field in body.split(|b| *b == 0) {
        if let Some((b'C', code)) = field.split_first() {
            return String::from_utf8_lossy(code).into_owned();
        }
    }
    String::new()
}

// === the model ===

/// What the client must see, message by message.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// A message of this type, nothing checked in it.
    Tag(u8),
    /// A DataRow whose last value is this marker; with `masked`, its first
    /// value is the masked SSN column and must not be the SSN.
    Row { marker: String, masked: bool },
    /// A COPY data line of `customers` (id 1, ssn masked).
    CopyLine,
    /// An ErrorResponse with this SQLSTATE.
    Error(&'static str),
}

/// A statement of an extended-protocol group.
#[derive(Debug, Clone)]
enum Extended {
    /// `SELECT n`.
    Allowed(u32),
    /// `SELECT ssn, n FROM customers` (or `lower(ssn)`).
    Masked(u32, bool),
    /// Masked, with the client's Describe of the statement and of the
    /// portal before the Execute.
    Described(u32),
    /// `DROP TABLE customers`: refused by a deny rule at Parse.
    Denied,
    /// Not SQL: refused at Parse by `onParseError: deny`.
    Unparseable,
    /// `SELECT 1/0`: the server fails it at Execute.
    ServerError,
    /// A Flush between statements: what came before is decided and sent.
    Flush,
    /// A simple Query inside the unfinished group.
    Query(Simple),
    /// A fast-path FunctionCall inside the unfinished group.
    FunctionCall,
}

/// A simple-protocol unit.
#[derive(Debug, Clone)]
enum Simple {
    Allowed(u32),
    Masked(u32, bool),
    Two(u32, u32),
    Denied,
    ServerError,
    Copy,
}

#[derive(Debug, Clone)]
enum Unit {
    Simple(Simple),
    FunctionCall,
    /// Statements then Sync.
    Group(Vec<Extended>),
    /// A Sync with nothing before it.
    BareSync,
    /// Under `maxRowsAffected: 1` (see [`setup_limited`]): a simple-query
    /// write of `items` returning `n`, over the limit (all 3 rows) or not.
    Write {
        over: bool,
        n: u32,
    },
    /// The same writes as one extended-protocol group, then Sync: one write
    /// over the limit rolls back the whole group, and only its error comes.
    WriteGroup(Vec<(bool, u32)>),
}

fn write_sql(over: bool, n: u32) -> String {
    let filter = if over { "id > 0" } else { "id = 1" };
    format!("UPDATE items SET v = v + 1 WHERE {filter} RETURNING {n} AS n")
}

fn masked_sql(n: u32, lower: bool) -> String {
    if lower {
        format!("SELECT lower(ssn), {n} AS n FROM customers")
    } else {
        format!("SELECT ssn, {n} AS n FROM customers")
    }
}

fn simple_unit(s: &Simple, out: &mut Vec<(u8, Vec<u8>)>, expect: &mut Vec<Answer>) {
    use Answer::*;
    let row = |n: u32, masked: bool| Row {
        marker: n.to_string(),
        masked,
    };
    match s {
        Simple::Allowed(n) => {
            out.push(query(&format!("SELECT {n} AS n")));
            expect.extend([Tag(b'T'), row(*n, false), Tag(b'C')]);
        }
        Simple::Masked(n, lower) => {
            out.push(query(&masked_sql(*n, *lower)));
            expect.extend([Tag(b'T'), row(*n, true), Tag(b'C')]);
        }
        Simple::Two(a, b) => {
            out.push(query(&format!("SELECT {a} AS n; SELECT {b} AS n")));
            expect.extend([
                Tag(b'T'),
                row(*a, false),
                Tag(b'C'),
                Tag(b'T'),
                row(*b, false),
                Tag(b'C'),
            ]);
        }
        Simple::Denied => {
            out.push(query("DROP TABLE customers"));
            expect.push(Error("42501"));
        }
        Simple::ServerError => {
            out.push(query("SELECT 1 / (random() * 0)::int"));
            expect.extend([Tag(b'T'), Error("22012")]);
        }
        Simple::Copy => {
            out.push(query("COPY (SELECT id, ssn FROM customers) TO STDOUT"));
            expect.extend([Tag(b'H'), CopyLine, Tag(b'c'), Tag(b'C')]);
        }
    }
    expect.push(Tag(b'Z'));
}

/// The messages of a pipeline and the answers the client must get.
fn build(units: &[Unit]) -> (Vec<(u8, Vec<u8>)>, Vec<Answer>) {
    use Answer::*;
    let mut out = Vec::new();
    let mut expect = Vec::new();
    for unit in units {
        match unit {
            Unit::Simple(s) => simple_unit(s, &mut out, &mut expect),
            Unit::FunctionCall => {
                out.push(function_call());
                expect.extend([Error("42501"), Tag(b'Z')]);
            }
            Unit::BareSync => {
                out.push(sync());
                expect.push(Tag(b'Z'));
            }
            Unit::Write { over, n } => {
                out.push(query(&write_sql(*over, *n)));
                if *over {
                    expect.push(Error("54000"));
                } else {
                    expect.extend([
                        Tag(b'T'),
                        Row {
                            marker: n.to_string(),
                            masked: false,
                        },
                        Tag(b'C'),
                    ]);
                }
                expect.push(Tag(b'Z'));
            }
            Unit::WriteGroup(writes) => {
                for (over, n) in writes {
                    out.extend([parse(&write_sql(*over, *n)), bind(), execute()]);
                }
                out.push(sync());
                if writes.iter().any(|(over, _)| *over) {
                    expect.push(Error("54000"));
                } else {
                    for (_, n) in writes {
                        expect.extend([
                            Tag(b'1'),
                            Tag(b'2'),
                            Row {
                                marker: n.to_string(),
                                masked: false,
                            },
                            Tag(b'C'),
                        ]);
                    }
                }
                expect.push(Tag(b'Z'));
            }
            Unit::Group(items) => {
                // The sidecar decides what is pending at each Flush, simple
                // Query, FunctionCall and at the Sync: a refusal answers one
                // error for the pending part; after any error (the
                // sidecar's or the server's) nothing but ReadyForQuery comes
                // until the Sync, as PostgreSQL skips to Sync.
                let mut failed = false;
                let mut pending: Vec<Answer> = Vec::new();
                let mut refused = false;
                let settle = |pending: &mut Vec<Answer>,
                              refused: &mut bool,
                              failed: &mut bool,
                              expect: &mut Vec<Answer>| {
                    if *failed {
                        pending.clear();
                        *refused = false;
                        return;
                    }
                    if *refused {
                        expect.push(Error("42501"));
                        *failed = true;
                    } else {
                        for a in pending.drain(..) {
                            let error = matches!(a, Error(_));
                            expect.push(a);
                            if error {
                                *failed = true;
                                break;
                            }
                        }
                    }
                    pending.clear();
                    *refused = false;
                };
                for item in items {
                    match item {
                        Extended::Allowed(n) => {
                            out.extend([parse(&format!("SELECT {n} AS n")), bind(), execute()]);
                            pending.extend([
                                Tag(b'1'),
                                Tag(b'2'),
                                Row {
                                    marker: n.to_string(),
                                    masked: false,
                                },
                                Tag(b'C'),
                            ]);
                        }
                        Extended::Masked(n, lower) => {
                            out.extend([parse(&masked_sql(*n, *lower)), bind(), execute()]);
                            pending.extend([
                                Tag(b'1'),
                                Tag(b'2'),
                                Row {
                                    marker: n.to_string(),
                                    masked: true,
                                },
                                Tag(b'C'),
                            ]);
                        }
                        Extended::Described(n) => {
                            out.extend([
                                parse(&masked_sql(*n, false)),
                                (b'D', b"S\0".to_vec()),
                                bind(),
                                (b'D', b"P\0".to_vec()),
                                execute(),
                            ]);
                            pending.extend([
                                Tag(b'1'),
                                Tag(b't'),
                                Tag(b'T'),
                                Tag(b'2'),
                                Tag(b'T'),
                                Row {
                                    marker: n.to_string(),
                                    masked: true,
                                },
                                Tag(b'C'),
                            ]);
                        }
                        Extended::Denied => {
                            out.extend([parse("DROP TABLE customers"), bind(), execute()]);
                            refused = true;
                        }
                        Extended::Unparseable => {
                            out.extend([parse("SELEKT ssn FROM customers"), bind(), execute()]);
                            refused = true;
                        }
                        Extended::ServerError => {
                            out.extend([
                                parse("SELECT 1 / (random() * 0)::int"),
                                bind(),
                                execute(),
                            ]);
                            pending.extend([Tag(b'1'), Tag(b'2'), Error("22012")]);
                        }
                        Extended::Flush => {
                            out.push(flush());
                            settle(&mut pending, &mut refused, &mut failed, &mut expect);
                        }
                        Extended::Query(s) => {
                            settle(&mut pending, &mut refused, &mut failed, &mut expect);
                            let mut answers = Vec::new();
                            simple_unit(s, &mut out, &mut answers);
                            if !failed {
                                expect.extend(answers);
                            }
                        }
                        Extended::FunctionCall => {
                            settle(&mut pending, &mut refused, &mut failed, &mut expect);
                            out.push(function_call());
                            if !failed {
                                expect.extend([Error("42501"), Tag(b'Z')]);
                            }
                        }
                    }
                }
                out.push(sync());
                settle(&mut pending, &mut refused, &mut failed, &mut expect);
                expect.push(Tag(b'Z'));
            }
        }
    }
    (out, expect)
}

/// Sends the pipeline in one write and checks every answer against the model.
fn run_pipeline(port: u16, units: &[Unit]) -> Result<(), String> {
    let (messages, expect) = build(units);
    let mut raw = RawClient::connect(port);
    raw.send(&messages);
    let mut seen = Vec::new();
    for (i, want) in expect.iter().enumerate() {
        let (tag, body) = read_message(&mut raw);
        let text = String::from_utf8_lossy(&body).into_owned();
        if text.contains(SSN) || text.contains("123456789") {
            return Err(format!(
                "message {i} ({:?}) holds the SSN: {text}",
                tag as char
            ));
        }
        seen.push(tag as char);
        let ok = match want {
            Answer::Tag(t) => tag == *t,
            Answer::Error(code) => tag == b'E' && sqlstate(&body) == *code,
            Answer::Row { marker, masked } => {
                let values = row_values(&body);
                tag == b'D'
                    && values.last() == Some(&Some(marker.clone()))
                    && (!masked || values.len() == 2 && values[0].as_deref() != Some(SSN))
            }
            Answer::CopyLine => tag == b'd' && text.starts_with("1\t") && !text.contains("6789"),
        };
        if !ok {
            return Err(format!(
                "answer {i}: expected {want:?}, got {:?} {text:?}; answers so far {seen:?}; pipeline {units:?}",
                tag as char
            ));
        }
    }
    // Nothing more: a final simple query is answered as itself.
    let bytes = raw.simple("SELECT 'end-of-pipeline'");
    if !contains(&bytes, "end-of-pipeline") || contains(&bytes, "SERROR") {
        return Err(format!(
            "after the pipeline: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(())
}

#[tokio::test]
async fn refusals_between_pipelined_statements_keep_answers_in_place() {
    let (sidecar, admin) = setup("pipe_repro").await;
    // The report's repro: select 1, a denied drop, three times, then a COPY
    // and a select of masked data, all in one write.
    let mut units = Vec::new();
    for n in 1..=3 {
        units.push(Unit::Simple(Simple::Allowed(n)));
        units.push(Unit::Simple(Simple::Denied));
    }
    units.push(Unit::Simple(Simple::Copy));
    units.push(Unit::Simple(Simple::Masked(7, true)));
    for _ in 0..10 {
        run_pipeline(sidecar.port, &units).unwrap();
    }
    // The same with fast-path calls, refused Parses and Syncs around them.
    let units = vec![
        Unit::Simple(Simple::Allowed(1)),
        Unit::FunctionCall,
        Unit::Group(vec![Extended::Unparseable]),
        Unit::BareSync,
        Unit::Simple(Simple::Masked(2, false)),
        Unit::Group(vec![Extended::Denied]),
        Unit::Group(vec![Extended::Masked(3, true)]),
        Unit::FunctionCall,
        Unit::Simple(Simple::Masked(4, true)),
    ];
    for _ in 0..10 {
        run_pipeline(sidecar.port, &units).unwrap();
    }
    let n: i64 = admin
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the denied DROPs never ran");
}

fn simple_strategy() -> impl Strategy<Value = Simple> {
    prop_oneof![
        (1u32..1000).prop_map(Simple::Allowed),
        (1u32..1000, any::<bool>()).prop_map(|(n, l)| Simple::Masked(n, l)),
        (1u32..1000, 1u32..1000).prop_map(|(a, b)| Simple::Two(a, b)),
        Just(Simple::Denied),
        Just(Simple::ServerError),
        Just(Simple::Copy),
    ]
}

fn extended_strategy() -> impl Strategy<Value = Extended> {
    prop_oneof![
        3 => (1u32..1000).prop_map(Extended::Allowed),
        3 => (1u32..1000, any::<bool>()).prop_map(|(n, l)| Extended::Masked(n, l)),
        1 => (1u32..1000).prop_map(Extended::Described),
        1 => Just(Extended::Denied),
        1 => Just(Extended::Unparseable),
        1 => Just(Extended::ServerError),
        2 => Just(Extended::Flush),
        1 => simple_strategy().prop_map(Extended::Query),
        1 => Just(Extended::FunctionCall),
    ]
}

fn unit_strategy() -> impl Strategy<Value = Unit> {
    prop_oneof![
        3 => simple_strategy().prop_map(Unit::Simple),
        1 => Just(Unit::FunctionCall),
        3 => prop::collection::vec(extended_strategy(), 1..6).prop_map(Unit::Group),
        1 => Just(Unit::BareSync),
    ]
}

#[test]
fn arbitrary_pipelines_answer_every_statement_in_place() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sidecar, admin) = rt.block_on(setup("pipe_props"));
    let port = sidecar.port;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(unit_strategy(), 1..12), |units| {
            run_pipeline(port, &units).map_err(TestCaseError::fail)
        })
        .unwrap();
    let n: i64 = rt
        .block_on(admin.query_one("SELECT count(*) FROM customers", &[]))
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the denied DROPs never ran");
}

fn limited_unit_strategy() -> impl Strategy<Value = Unit> {
    prop_oneof![
        6 => unit_strategy(),
        2 => (any::<bool>(), 1u32..1000).prop_map(|(over, n)| Unit::Write { over, n }),
        1 => prop::collection::vec((prop::bool::weighted(0.3), 1u32..1000), 1..4)
            .prop_map(Unit::WriteGroup),
    ]
}

/// The same pipelines with `maxRowsAffected` writes among them: held
/// answers, the sidecar's own BEGIN/COMMIT/ROLLBACK and its refusals never
/// move an answer off its statement, and no refused write stays.
#[test]
fn arbitrary_pipelines_with_counted_writes_answer_every_statement_in_place() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sidecar, admin) = rt.block_on(setup_limited("pipe_props_writes"));
    let port = sidecar.port;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &prop::collection::vec(limited_unit_strategy(), 1..12),
            |units| run_pipeline(port, &units).map_err(TestCaseError::fail),
        )
        .unwrap();
    let row = rt
        .block_on(admin.query_one(
            "SELECT count(*), count(*) FILTER (WHERE v > 0 AND id <> 1) FROM items",
            &[],
        ))
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, i64>(1), 0, "a write over the limit stayed");
}

/// An Execute of a portal the sidecar did not bind (a cursor declared in
/// SQL): its columns are unknown to the sidecar, so its values are withheld.
#[tokio::test]
async fn execute_of_a_sql_cursor_does_not_pass_unmasked() {
    let (sidecar, _admin) = setup("pipe_cursor").await;
    let mut raw = RawClient::connect(sidecar.port);
    let bytes = raw.simple("BEGIN; DECLARE c CURSOR FOR SELECT ssn, 5 AS n FROM customers");
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let mut exec = b"c\0".to_vec();
    exec.extend_from_slice(&[0, 0, 0, 0]);
    raw.send(&[(b'E', exec), sync()]);
    let row = read_message(&mut raw);
    assert_eq!(row.0, b'D', "{:?}", String::from_utf8_lossy(&row.1));
    assert!(
        !contains(&row.1, SSN),
        "the cursor's row reached the client unmasked: {:?}",
        row_values(&row.1)
    );
    let rest = raw.read_until_ready();
    assert!(!contains(&rest, SSN));
    assert!(
        contains(&rest, "SELECT 1"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // Described as a portal first (the client's Describe), over a computed
    // column: the description does not make its rows passable.
    let bytes = raw.simple("DECLARE d CURSOR FOR SELECT lower(ssn), 6 AS n FROM customers");
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let mut exec = b"d\0".to_vec();
    exec.extend_from_slice(&[0, 0, 0, 0]);
    raw.send(&[(b'D', b"Pd\0".to_vec()), (b'E', exec), sync()]);
    let bytes = raw.read_until_ready();
    assert!(
        !contains(&bytes, SSN),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        contains(&bytes, "SELECT 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// COPY FROM STDIN through the extended protocol, as tokio-postgres sends it:
/// Bind/Execute/Sync, the data, CopyDone and Sync. The server ignores the
/// Sync that comes during the COPY; the session stays in step.
#[tokio::test]
async fn extended_copy_in_keeps_the_session_in_step() {
    let (sidecar, admin) = setup("pipe_copy_in").await;
    admin
        .batch_execute("CREATE TABLE notes (id int, t text)")
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    raw.send(&[
        parse("COPY notes FROM STDIN"),
        bind(),
        execute(),
        sync(),
        (b'd', b"1\tone\n".to_vec()),
        (b'd', b"2\ttwo\n".to_vec()),
        (b'c', vec![]),
        sync(),
    ]);
    let (tags, bytes) = raw.read_messages(3);
    assert_eq!(tags, b"12G".to_vec(), "{}", String::from_utf8_lossy(&bytes));
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "COPY 2"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = raw.simple("SELECT 'in-step'");
    assert!(
        contains(&bytes, "in-step"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = raw.simple("SELECT ssn, 9 FROM customers");
    assert!(
        !contains(&bytes, SSN),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}
