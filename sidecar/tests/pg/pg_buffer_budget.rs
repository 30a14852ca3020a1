//! The process-wide buffer budget of the PostgreSQL plane (#17 item 3):
//! large messages of all sessions together are bounded; a session whose
//! message does not fit gets FATAL 53200 and ends, the others go on, and a
//! message's share is given back once it is answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const POLICY: &str = r#"  defaultAction: allow
"#;

/// 1 MiB: room for one 700 KiB message, not two.
const BUDGET: &str = "1048576";

async fn setup(test: &str) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    Sidecar::start_with(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
        &["--buffer-budget", BUDGET],
    )
}

/// A raw client past startup (the sidecar authenticates upstream).
fn connect(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0app\0database\0x\0\0");
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    stream.write_all(&msg).unwrap();
    let startup = read_until_ready(&mut stream);
    assert!(contains(&startup, "Z\0\0\0\x05"), "no ReadyForQuery");
    stream
}

fn read_until_ready(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).unwrap();
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).unwrap();
        all.extend_from_slice(&header);
        all.extend_from_slice(&body);
        if header[0] == b'Z' {
            return all;
        }
    }
}

/// Whole messages until ReadyForQuery (the session goes on) or the end
/// of the stream (it ended).
fn read_until_ready_or_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let mut header = [0u8; 5];
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return all,
            Err(e) => panic!("read: {e}"),
        }
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).unwrap();
        all.extend_from_slice(&header);
        all.extend_from_slice(&body);
        if header[0] == b'Z' {
            return all;
        }
    }
}

/// A simple Query of about 700 KiB whose answer is one short row.
fn big_query(tag: &str) -> Vec<u8> {
    let sql = format!("SELECT length('{}') AS big_{tag}", "x".repeat(700 * 1024));
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// `sluice_buffer_budget_in_use_bytes` of the sidecar's admin port.
fn in_use(admin_port: u16) -> Option<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", admin_port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nhost: sidecar\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_buffer_budget_in_use_bytes "))?
        .trim()
        .parse()
        .ok()
}

/// Polls the gauge until `ok` holds (20 s deadline).
fn wait_in_use(admin_port: u16, what: &str, ok: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        last = in_use(admin_port);
        if last.is_some_and(&ok) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("buffer budget in use never became {what}: last {last:?}");
}

#[tokio::test]
async fn a_message_past_the_buffer_budget_ends_only_its_session() {
    let sidecar = setup("buffer_budget").await;
    let (port, admin) = (sidecar.port, sidecar.admin_port);

    // A: the first half of a 700 KiB message; it is charged while it is
    // assembled.
    let mut a = connect(port);
    let msg_a = big_query("a");
    let (first, rest) = msg_a.split_at(msg_a.len() / 2);
    a.write_all(first).unwrap();
    wait_in_use(admin, "A's message", |n| n >= msg_a.len());

    // B: another 700 KiB message, within its own caps (64 MiB), but the
    // budget holds A's: FATAL 53200 naming the budget, and B's session ends.
    let mut b = connect(port);
    b.write_all(&big_query("b")).unwrap();
    let mut answer = Vec::new();
    b.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(contains(&answer, "SFATAL\0"), "{text}");
    assert!(contains(&answer, "C53200\0"), "{text}");
    assert!(
        contains(&answer, "buffer budget of 1048576 bytes"),
        "{text}"
    );
    assert!(contains(&answer, "--buffer-budget"), "{text}");
    assert!(!contains(&answer, "big_b"), "B's statement ran: {text}");

    // C: small statements keep working meanwhile.
    let mut c = RawClient::connect(port);
    assert!(contains(
        &c.simple("SELECT 'small still works'"),
        "small still works"
    ));

    // A finishes its message and gets its answer; its share is given back.
    a.write_all(rest).unwrap();
    let answer = read_until_ready(&mut a);
    let text = String::from_utf8_lossy(&answer);
    assert!(contains(&answer, "big_a"), "{text}");
    assert!(contains(&answer, &(700 * 1024).to_string()), "{text}");
    assert!(!contains(&answer, "C53200\0"), "{text}");
    wait_in_use(admin, "0 after A's answer", |n| n == 0);
    drop(a);

    // D: once A's message is answered, a new big message fits.
    let mut d = connect(port);
    d.write_all(&big_query("d")).unwrap();
    let answer = read_until_ready(&mut d);
    let text = String::from_utf8_lossy(&answer);
    assert!(contains(&answer, "big_d"), "{text}");
    assert!(!contains(&answer, "C53200\0"), "{text}");
    assert!(contains(&c.simple("SELECT 'c at the end'"), "c at the end"));
    wait_in_use(admin, "0 at the end", |n| n == 0);

    // The server's messages are charged too: a 2 MB row does not fit in
    // 1 MiB; that session ends with 53200, the others go on.
    let mut e = connect(port);
    let q = b"SELECT repeat('y', 2000000) AS wide\0";
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((q.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(q);
    e.write_all(&m).unwrap();
    let answer = read_until_ready_or_end(&mut e);
    let text = String::from_utf8_lossy(&answer[..answer.len().min(2000)]);
    assert!(contains(&answer, "C53200\0"), "{text}");
    assert!(contains(&answer, "the upstream server sent"), "{text}");
    assert!(
        !contains(&answer, "yyyyyyyy"),
        "the row came through: {text}"
    );
    assert!(contains(&c.simple("SELECT 'c after e'"), "c after e"));
    wait_in_use(admin, "0 after E", |n| n == 0);
}

/// `sluice_bytes_total{direction="fromClient"}` and
/// `sluice_pg_clients_not_read` of the sidecar's admin port.
fn read_state(admin_port: u16) -> Option<(u64, u64)> {
    let mut s = TcpStream::connect(("127.0.0.1", admin_port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nhost: sidecar\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        value("sluice_bytes_total{connection=\"orders-db\",direction=\"fromClient\"} ")
            .unwrap_or(0),
        value("sluice_pg_clients_not_read ")?,
    ))
}

/// A client that pipelines refused statements without reading any answer
/// stops being read once it owes more than 1024 answers: the bytes the
/// sidecar takes from it stay bounded (the unread refusals cannot pile up
/// in the sidecar), and once it reads, every answer comes, in order.
#[tokio::test]
async fn a_client_that_does_not_read_its_answers_is_not_read() {
    const STATEMENTS: usize = 200_000;
    /// Far more than 1024 statements and what the sockets' buffers hold of
    /// their answers, far less than the client sends (3.6 MB).
    const BOUND: u64 = 1024 * 1024;
    let pg = server();
    let db = db_name("not_read");
    pg.create_database(&db).await;
    let deny = "  defaultAction: allow\n  rules:\n    - name: no-drops\n      match: {statements: [drop]}\n      action: deny\n";
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(deny)),
        "shop/report-job",
    );
    let (port, admin) = (sidecar.port, sidecar.admin_port);
    let mut client = connect(port);
    let before = read_state(admin).unwrap().0;

    let mut writer = client.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let mut one = vec![b'Q'];
        one.extend_from_slice(&(4 + 13i32).to_be_bytes());
        one.extend_from_slice(b"DROP TABLE t\0");
        let chunk = one.repeat(1000);
        for _ in 0..STATEMENTS / 1000 {
            if writer.write_all(&chunk).is_err() {
                return false;
            }
        }
        true
    });

    // Until the sidecar says it stopped reading the client, what it read
    // stays bounded; without the read-stop it reads everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    let read_at_pause = loop {
        let (read, not_read) = read_state(admin).unwrap();
        let read = read - before;
        assert!(
            read <= BOUND,
            "the sidecar read {read} bytes from a client that reads none of its answers"
        );
        if not_read == 1 {
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never stopped reading the client ({read} bytes read)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // (The client's writes may all have gone into the sockets' buffers:
    // what counts is what the sidecar took from them.)
    let (read, not_read) = read_state(admin).unwrap();
    assert!(read - before <= BOUND, "read {} bytes", read - before);
    assert_eq!(not_read, 1);

    // The client reads: every statement gets its refusal and its
    // ReadyForQuery, in order, and the sidecar reads the client again.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, &mut client);
    let (mut refusals, mut ready) = (0usize, 0usize);
    while ready < STATEMENTS {
        let mut header = [0u8; 5];
        reader.read_exact(&mut header).unwrap();
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        reader.read_exact(&mut body).unwrap();
        match header[0] {
            b'E' => {
                assert!(
                    contains(&body, "no-drops"),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                assert_eq!(refusals, ready, "two answers for one statement");
                refusals += 1;
            }
            b'Z' => {
                ready += 1;
                assert_eq!(refusals, ready, "a statement without its refusal");
            }
            other => panic!("unexpected message {:?}", other as char),
        }
    }
    assert!(sending.join().unwrap(), "the client's writes failed");
    let (read, not_read) = read_state(admin).unwrap();
    assert_eq!(read - before, (STATEMENTS * 18) as u64);
    assert_eq!(not_read, 0);
    eprintln!(
        "read at the pause: {read_at_pause} bytes of {}",
        STATEMENTS * 18
    );
}
