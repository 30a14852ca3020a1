//! Bounds on what one PostgreSQL client can make the sidecar hold, and
//! protocol errors answered with an error before the close.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

const POLICY: &str = r#"  defaultAction: allow
  rules:
    - name: no-schema-changes
      match: {statements: [drop]}
      action: deny
"#;

async fn setup(test: &str) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    )
}

fn sqlstate_of(bytes: &[u8], code: &str) -> bool {
    contains(bytes, &format!("C{code}\0"))
}

#[tokio::test]
async fn an_extended_group_without_sync_is_capped() {
    let sidecar = setup("cap_group").await;
    let mut raw = RawClient::connect(sidecar.port);
    // 5000 Close messages without Sync or Flush: over the message cap.
    let mut messages: Vec<(u8, Vec<u8>)> = (0..5000).map(|_| (b'C', b"Sx\0".to_vec())).collect();
    messages.push((b'S', vec![]));
    raw.send(&messages);
    let bytes = raw.read_until_ready();
    assert!(
        sqlstate_of(&bytes, "54000"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        contains(&bytes, "Sync"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        !contains(&bytes, "3\0\0\0\x04"),
        "CloseComplete of a refused group"
    );
    // Over the byte cap: two 10 MiB Parses in one group.
    let big = format!("SELECT '{}'", "x".repeat(10 * 1024 * 1024));
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(big.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    raw.send(&[(b'P', parse.clone()), (b'P', parse), (b'S', vec![])]);
    let bytes = raw.read_until_ready();
    assert!(
        sqlstate_of(&bytes, "54000"),
        "{}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
    );
    // The session goes on.
    assert!(contains(&raw.simple("SELECT 'still here'"), "still here"));
}

#[tokio::test]
async fn unknown_message_type_gets_fatal_08p01() {
    let sidecar = setup("unknown_type").await;
    let mut raw = RawClient::connect(sidecar.port);
    raw.send(&[(b'!', b"junk".to_vec())]);
    let (tags, bytes) = raw.read_messages(1);
    assert_eq!(tags, vec![b'E'], "{}", String::from_utf8_lossy(&bytes));
    assert!(
        contains(&bytes, "SFATAL"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        sqlstate_of(&bytes, "08P01"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

#[tokio::test]
async fn malformed_startup_packets_get_fatal_08p01() {
    let sidecar = setup("bad_startup").await;
    let packets: Vec<Vec<u8>> = vec![
        // Length below 8.
        vec![0, 0, 0, 2],
        // Length above the startup limit.
        vec![0, 1, 0, 0, 0, 3, 0, 0],
        // Protocol 3.0 with a parameter name that never ends.
        {
            let mut body = 196_608i32.to_be_bytes().to_vec();
            body.extend_from_slice(b"user");
            let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            p.extend_from_slice(&body);
            p
        },
    ];
    for packet in packets {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&packet).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert_eq!(answer.first(), Some(&b'E'), "{packet:?}: {answer:?}");
        assert!(
            contains(&answer, "SFATAL"),
            "{packet:?}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            sqlstate_of(&answer, "08P01"),
            "{packet:?}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}
