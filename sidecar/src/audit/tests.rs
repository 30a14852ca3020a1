use std::io::Write;
use std::net::SocketAddr;

use super::time::rfc3339_micros;
use super::*;
use crate::enforcement::record::sql_command;
use crate::standing::Binding;

fn draft() -> AuditEventDraft {
    AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Statement)
}

fn enforcer() -> crate::enforcement::Enforcer {
    let ap: sluice_crds::AccessPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {
            "subjects": [{"serviceAccount": "report-job"}],
            "connections": ["db"],
            "defaultAction": "allow",
            "rules": [{"name": "no-drop", "match": {"statements": ["drop"]}, "action": "deny"}],
        }
    }))
    .unwrap();
    let compiled = Arc::new(
        sluice_policy::engine::CompiledPolicy::compile(&ap, &sluice_policy::engine::NoSecrets)
            .unwrap(),
    );
    Binding::new(&[compiled], enforcer_identity(), "db", None, false)
        .enforcer()
        .unwrap()
}

/// Every field of an event but its time and chain links.
fn content(line: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    let map = v.as_object_mut().unwrap();
    for key in ["time", "hash", "prev"] {
        assert!(map.remove(key).is_some(), "{key} missing from {line}");
    }
    v
}

/// Statement and result events made from pre-rendered pieces record
/// what the drafted events record (all but the time and the chain
/// links, which differ between two logs), in both protocols and again
/// from the cache; the chain verifies; the forward channel carries the
/// lines as written.
#[tokio::test]
async fn pieced_events_record_what_drafted_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let (pieced_path, drafted_path) = (dir.path().join("p"), dir.path().join("d"));
    let mut pieced = AuditLog::open("s", false, Some(&pieced_path)).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    pieced.forward_to(tx);
    let drafted = AuditLog::open("s", false, Some(&drafted_path)).unwrap();
    let mut enforcer = enforcer();
    let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut session = SessionInfo::new(
        &Binding::new(&[], enforcer_identity(), "db", None, false),
        "db",
        addr,
    );
    // A fixed id, for the hand-written line below.
    session.id = "5e5510000000000000000000000000a1".into();
    let result = || ResultRecord {
        rows: 3,
        masked: 1,
        masks: vec![sluice_policy::audit::AuditMaskCount {
            count: 1,
            index: Some(0),
            policy: Some("shop/p".into()),
        }],
        duration: Duration::from_millis(4),
        error: Some("23505".into()),
        recorded: None,
        hold: None,
    };
    for (sql, protocol) in [
        ("SELECT 1", "simple"),
        ("SELECT 1", "extended"),
        ("SELECT name FROM t WHERE id = 4", "simple"),
        ("SELECT 1", "simple"),
    ] {
        let decided = enforcer.decide(sql);
        pieced
            .statement_pending(&session, &decided, protocol)
            .unwrap();
        pieced.result(&session, &decided, result()).unwrap();
        let d = drafted.statement_draft(&session, &decided, protocol, None);
        drafted.append_event(d, WriteMode::Pending).unwrap();
        let mut d = drafted.draft(&session, AuditKind::Result);
        d.command = Some(sql_command(&decided));
        let r = result();
        d.outcome = Some(AuditOutcome {
            recorded: None,
            rows: Some(r.rows),
            duration_ms: Some(r.duration.as_millis() as u64),
            error: r.error,
            masked: Some(r.masked),
            masks: r.masks,
        });
        drafted.append_event(d, WriteMode::Pending).unwrap();
    }
    pieced.flush().unwrap();
    drafted.flush().unwrap();
    let p = std::fs::read_to_string(&pieced_path).unwrap();
    let d = std::fs::read_to_string(&drafted_path).unwrap();
    assert_eq!(p.lines().count(), 8);
    // One statement event written out by hand, byte for byte: the two
    // paths above share `sql_command` and the decision's rendering, so only
    // an independent expectation catches a change there. The time and the
    // chain links differ from run to run and are taken from the line (the
    // hash is checked by `verify_lines` below); the fingerprint is the
    // policy crate's.
    let line = p.lines().nth(4).unwrap();
    let event: sluice_policy::audit::AuditEvent = serde_json::from_str(line).unwrap();
    let fingerprint = enforcer.decide("SELECT name FROM t WHERE id = 4");
    let expected = format!(
        concat!(
            r#"{{"command":{{"fingerprint":"{fp}","kind":"select","text":"SELECT name FROM t WHERE id = ?"}},"#,
            r#""connection":"db","#,
            r#""decision":{{"action":"allow","dryRun":false,"policy":"p","reason":"allow by defaultAction of AccessPolicy \"p\" (simple protocol)"}},"#,
            r#""hash":"{hash}","#,
            r#""identity":{{"groups":["system:serviceaccounts:shop"],"namespace":"shop","pod":"report-7d9","serviceAccount":"report-job"}},"#,
            r#""prev":"{prev}","seq":5,"session":"5e5510000000000000000000000000a1","stream":"s","#,
            r#""time":"{time}","type":"statement","v":1}}"#
        ),
        fp = fingerprint.fingerprint(),
        hash = event.hash,
        prev = event.prev,
        time = event.time,
    );
    assert_eq!(line, expected);
    for (a, b) in p.lines().zip(d.lines()) {
        assert_eq!(content(a), content(b));
    }
    sluice_policy::audit::verify_lines(p.lines(), &[]).unwrap();
    for (i, line) in p.lines().enumerate() {
        let f = rx.try_recv().unwrap();
        assert_eq!(&*f.line, line);
        let event: sluice_policy::audit::AuditEvent = serde_json::from_str(line).unwrap();
        assert_eq!((f.seq, &f.hash), (i as u64 + 1, &event.hash));
        assert_eq!(f.connection.as_deref(), Some("db"));
    }
}

#[test]
fn event_time_is_what_chrono_writes() {
    use chrono::TimeZone;
    let mut times = vec![
        chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        chrono::Utc
            .with_ymd_and_hms(1999, 12, 31, 23, 59, 59)
            .unwrap(),
        chrono::Utc
            .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .unwrap(),
        chrono::Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        chrono::Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
        chrono::Utc::now(),
    ];
    let base = times[0];
    for micros in [0, 1, 999, 123_456, 999_999] {
        times.push(base + chrono::Duration::microseconds(micros));
    }
    // Sub-microsecond digits are cut, not rounded, as chrono does.
    times.push(base + chrono::Duration::nanoseconds(999));
    for t in times {
        assert_eq!(
            rfc3339_micros(&t),
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
    }
}

fn enforcer_identity() -> sluice_policy::engine::Identity {
    let mut identity = sluice_policy::engine::Identity::parse("shop/report-job").unwrap();
    identity.pod = Some("report-7d9".into());
    identity.groups = vec!["system:serviceaccounts:shop".into()];
    identity
}

/// Group commit: lines appended by several sessions are written by one
/// write, and every waiter learns its line is on record.
#[tokio::test]
async fn durable_writes_pending_lines_once_for_all_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open("s", false, Some(&path)).unwrap());
    // Several sessions: the committer task writes.
    log.open_sessions
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let a = log.append_event(draft(), WriteMode::Pending).unwrap();
    let b = log.append_event(draft(), WriteMode::Pending).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    let (ra, rb) = tokio::join!(log.durable(a), log.durable(b));
    ra.unwrap();
    rb.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2);
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
    // Already written: no wait.
    log.durable(a).await.unwrap();
}

/// A failed batch write fails every statement waiting on it (fail closed).
#[tokio::test]
async fn durable_reports_a_failed_write_to_every_waiter() {
    let log = Arc::new(AuditLog::open("s", false, Some(Path::new("/dev/full"))).unwrap());
    let a = log.append_event(draft(), WriteMode::Pending).unwrap();
    let b = log.append_event(draft(), WriteMode::Pending).unwrap();
    let (ra, rb) = tokio::join!(log.durable(a), log.durable(b));
    assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
    let c = log.append_event(draft(), WriteMode::Pending).unwrap();
    assert!(log.durable(c).await.is_err());
    assert!(log.durable(a).await.is_err());
    // One session writes at once; a failure reaches it too.
    log.open_sessions
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let d = log.append_event(draft(), WriteMode::Pending).unwrap();
    assert!(log.durable(d).await.is_err());
}

#[tokio::test]
async fn a_single_session_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open("s", false, Some(&path)).unwrap());
    let a = log.append_event(draft(), WriteMode::Pending).unwrap();
    log.durable(a).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    assert!(!log.committer.load(std::sync::atomic::Ordering::Relaxed));
}

/// A file that takes only `room` more bytes (a full disk): a write past
/// it takes what fits, then fails with ENOSPC, as a real file system does.
struct FullDisk {
    file: File,
    room: Arc<std::sync::atomic::AtomicUsize>,
}

impl AuditSink for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::sync::atomic::Ordering;
        let room = self.room.load(Ordering::SeqCst);
        if room == 0 {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = Write::write(&mut self.file, &buf[..buf.len().min(room)])?;
        self.room.fetch_sub(n, Ordering::SeqCst);
        Ok(n)
    }

    fn truncate(&mut self, len: u64) -> io::Result<bool> {
        AuditSink::truncate(&mut self.file, len)
    }

    fn cut_len(&mut self) -> io::Result<Option<u64>> {
        AuditSink::cut_len(&mut self.file)
    }
}

/// A transient full disk: the failed writes are refused to their
/// callers (write-ahead), the file never holds a partial line, and once
/// the disk has room the kept events are written in order with an
/// `outage` event after them: the chain verifies and the outage shows.
#[tokio::test]
async fn a_transient_full_disk_keeps_the_chain_and_records_the_outage() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let room = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let sink = FullDisk {
        file,
        room: room.clone(),
    };
    let log = Arc::new(AuditLog::open_sink("s", &path, Box::new(sink)).unwrap());
    let a = log.append_event(draft(), WriteMode::Pending).unwrap();
    log.durable(a).await.unwrap();
    let whole_lines = |n: usize| {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a torn line: {text:?}"
        );
        assert_eq!(text.lines().count(), n, "{text}");
        sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap()
    };
    whole_lines(1);
    // The disk fills up in the middle of the next line.
    room.store(40, Ordering::SeqCst);
    let b = log.append_event(draft(), WriteMode::Pending).unwrap();
    let err = log.durable(b).await.unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    whole_lines(1);
    // A result waits, a decision fails: both are kept.
    log.append_event(draft(), WriteMode::Pending).unwrap();
    let d = log.append_event(draft(), WriteMode::Pending).unwrap();
    assert!(log.durable(d).await.is_err());
    assert!(log.flush().is_err());
    whole_lines(1);
    // Room again: the next flush writes b, c, d and the outage.
    room.store(usize::MAX, Ordering::SeqCst);
    log.flush().unwrap();
    let report = whole_lines(5);
    assert_eq!(report.outages.len(), 1, "{report:?}");
    let o = &report.outages[0];
    assert_eq!((o.seq, o.outage.from_seq, o.outage.to_seq), (5, 2, 4));
    assert_eq!(o.outage.failed_writes, 3);
    assert!(o.outage.error.contains("No space left"), "{o:?}");
    // The log goes on as before.
    let e = log.append_event(draft(), WriteMode::Pending).unwrap();
    log.durable(e).await.unwrap();
    assert_eq!(whole_lines(6).outages.len(), 1);
}

/// While the sink fails, the events kept for the retry are bounded
/// ([`MAX_BACKLOG`]): past it new events are refused (not chained) and
/// counted in the outage event; the chain on the sink stays whole.
#[tokio::test]
async fn the_retry_backlog_is_bounded() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let room = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let sink = FullDisk {
        file,
        room: room.clone(),
    };
    let log = Arc::new(AuditLog::open_sink("s", &path, Box::new(sink)).unwrap());
    let first = log.append_event(draft(), WriteMode::Pending).unwrap();
    assert!(log.durable(first).await.is_err());
    let mut kept = 1u64;
    let refused = loop {
        match log.append_event(draft(), WriteMode::Pending) {
            Ok(_) => kept += 1,
            Err(e) => break e,
        }
        let pending = log.inner.lock().unwrap().pending.len();
        assert!(pending < MAX_BACKLOG + 1024, "the backlog is not bounded");
    };
    assert!(matches!(refused, AuditError::Backlog(_)), "{refused}");
    let pending = log.inner.lock().unwrap().pending.len();
    assert!(
        (MAX_BACKLOG..MAX_BACKLOG + 1024).contains(&pending),
        "{pending}"
    );
    assert!(log.append_event(draft(), WriteMode::Pending).is_err());
    room.store(usize::MAX, Ordering::SeqCst);
    log.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let report = sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
    assert_eq!(report.events, kept + 1);
    let o = &report.outages[0].outage;
    assert_eq!((o.from_seq, o.to_seq, o.dropped), (1, 1, 2));
    // After the outage, events are chained again.
    let next = log.append_event(draft(), WriteMode::Pending).unwrap();
    log.durable(next).await.unwrap();
}

/// Polls `f` once.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// A batched log at `path` whose batch is written at `batch_events` events
/// (or in an hour), and a session of `shop/report-job` on `db`.
fn batched(path: &Path, batch_events: u64) -> (AuditLog, SessionInfo) {
    let log = AuditLog::open("s", false, Some(path))
        .unwrap()
        .with_settings(AuditSettings {
            durability: AuditDurability::Batched,
            batch_window: Duration::from_secs(3600),
            batch_events,
        });
    let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    (
        log,
        SessionInfo::for_identity(&enforcer_identity(), "db", addr),
    )
}

/// batched: records wait unwritten, their tickets let the plane forward at
/// once while at most a batch waits; one more and the client waits (fail
/// closed) until the write, which takes every record: none is dropped.
#[tokio::test]
async fn a_full_batch_makes_the_client_wait_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, session) = batched(&path, 4);
    let log = Arc::new(log);
    // Several sessions: a wait goes through the committer task.
    log.open_sessions
        .store(2, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(log.durability(&session), AuditDurability::Batched);
    let decided = enforcer().decide("SELECT 1");
    for _ in 0..4 {
        let t = log.statement_pending(&session, &decided, "simple").unwrap();
        let mut wait = std::pin::pin!(log.durable(t));
        assert!(matches!(
            poll_once(&mut wait).await,
            std::task::Poll::Ready(Ok(()))
        ));
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    let t = log.statement_pending(&session, &decided, "simple").unwrap();
    let mut wait = std::pin::pin!(log.durable(t));
    assert!(
        poll_once(&mut wait).await.is_pending(),
        "the client must wait"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    wait.await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5);
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
}

/// A Connection's `spec.audit.durability` applies to its sessions; one that
/// does not set it gets the sidecar's default.
#[test]
fn each_connection_gets_its_durability() {
    let bundle: sluice_policy::wire::Bundle = serde_json::from_value(serde_json::json!({
        "revision": "1",
        "identity": {"namespace": "shop", "serviceAccount": "a", "pod": "p", "groups": []},
        "expiresAt": "2099-01-01T00:00:00Z",
        "connections": [
            {"name": "fast", "bound": true, "spec": {
                "protocol": "postgres", "upstream": {"host": "h"},
                "credentials": {"secretRef": {"name": "c"}}, "listen": {"port": 15432},
                "audit": {"durability": "batched"}}},
            {"name": "plain", "bound": true, "spec": {
                "protocol": "postgres", "upstream": {"host": "h"},
                "credentials": {"secretRef": {"name": "c"}}, "listen": {"port": 15433}}},
        ],
        "policies": [],
    }))
    .unwrap();
    let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let session = |c| SessionInfo::for_identity(&enforcer_identity(), c, addr);
    for (default, plain) in [
        (AuditDurability::WriteAhead, AuditDurability::WriteAhead),
        (AuditDurability::Batched, AuditDurability::Batched),
    ] {
        let log = AuditLog::with_sinks("s", Vec::new()).with_settings(AuditSettings {
            durability: default,
            ..AuditSettings::default()
        });
        log.configure(&bundle);
        assert_eq!(log.durability(&session("fast")), AuditDurability::Batched);
        assert_eq!(log.durability(&session("plain")), plain);
        assert_eq!(log.durability(&session("unknown")), default);
    }
}

/// batched: a statement's decision is held and its result joins it in one
/// `statement` event carrying the outcome (the content a drafted statement
/// event with that outcome has), paired by its hold, not by its text; it
/// verifies, and an edit of it fails. A held decision whose statement
/// never ran is written alone with the batch; a result that comes after
/// the batch was written is a `result` event of its own; nothing is
/// written before the batch is.
#[tokio::test]
async fn batched_decisions_and_results_become_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, session) = batched(&path, 64);
    let mut enforcer = enforcer();
    let decided = enforcer.decide("SELECT 1");
    let result = |rows, hold| ResultRecord {
        rows,
        masked: 0,
        masks: Vec::new(),
        duration: Duration::from_millis(2),
        error: None,
        recorded: None,
        hold,
    };
    let first = log
        .statement_recorded(&session, &decided, "simple")
        .unwrap();
    // Never runs (say, skipped after an error in its group).
    let skipped = log
        .statement_recorded(&session, &decided, "extended")
        .unwrap();
    let third = log
        .statement_recorded(&session, &decided, "simple")
        .unwrap();
    for r in [first, skipped, third] {
        assert_eq!(r.ticket, 0, "a batched record does not wait");
        assert!(r.hold.is_some());
    }
    log.result(&session, &decided, result(3, third.hold))
        .unwrap();
    log.result(&session, &decided, result(1, first.hold))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    log.flush().unwrap();
    // Held when the batch is written: written alone; its result follows.
    let late = log
        .statement_recorded(&session, &decided, "simple")
        .unwrap();
    log.flush().unwrap();
    log.result(&session, &decided, result(4, late.hold))
        .unwrap();
    log.flush().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shape: Vec<(&str, Option<u64>, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["outcome"]["rows"].as_u64(),
                e["decision"]["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let simple = "allow by defaultAction of AccessPolicy \"p\" (simple protocol)";
    let extended = "allow by defaultAction of AccessPolicy \"p\" (extended protocol)";
    assert_eq!(
        shape,
        [
            ("statement", Some(3), simple),
            ("statement", Some(1), simple),
            ("statement", None, extended),
            ("statement", None, simple),
            ("result", Some(4), ""),
        ],
        "{text}"
    );
    // A joined event is the statement event its decision makes, with the
    // result's outcome, at the decision's time.
    let drafted = AuditLog::open("d", false, None).unwrap();
    let mut d = drafted.statement_draft(&session, &decided, "simple", None);
    d.outcome = Some(AuditOutcome {
        rows: Some(3),
        duration_ms: Some(2),
        ..AuditOutcome::default()
    });
    let mut line = Vec::new();
    sluice_policy::audit::AuditChain::new("s")
        .append_line(d, &mut line)
        .unwrap();
    let line = String::from_utf8(line).unwrap();
    assert_eq!(
        content(text.lines().next().unwrap()),
        content(line.trim_end())
    );
    assert!(events[0]["time"].as_str() >= events[1]["time"].as_str());

    let report = sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
    assert_eq!(report.events, 5);
    let edited = text.replacen("\"rows\":3", "\"rows\":30", 1);
    assert_ne!(edited, text);
    let e = sluice_policy::audit::verify_lines(edited.lines(), &[]).unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (1, sluice_policy::audit::VerifyErrorKind::Edited)
    );
}

/// batched: a session's end follows its held decisions on record.
#[tokio::test]
async fn a_session_end_follows_its_held_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, session) = batched(&path, 64);
    let decided = enforcer().decide("SELECT 1");
    log.statement_recorded(&session, &decided, "simple")
        .unwrap();
    log.session_end(&session, Duration::from_millis(5), None)
        .unwrap();
    log.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| content(l)["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["statement", "sessionEnd"], "{text}");
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
}
