//! A PostgreSQL listener's accept loop ([`serve`]): each client within the
//! listener's slots and the process's descriptor share ([`ListenerSlots`]),
//! its session started once its first message arrived in time; past the
//! slots a client gets `FATAL 53300` and is closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::session::ConnectionContext;
use crate::limits::{ListenerSlots, Refused, accept_within};

/// The largest startup packet PostgreSQL accepts (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_PACKET: usize = 10_000;

/// Accepts PostgreSQL sessions on `listener` within `slots`; each gets the
/// Connection's context at that moment, once its first message arrived
/// within `startup_timeout`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    context: watch::Receiver<Arc<ConnectionContext>>,
    slots: ListenerSlots,
    startup_timeout: Duration,
) {
    loop {
        let counted = |socket: TcpStream, refused: Refused| {
            (context.borrow().metrics).session_refused(super::catalog::TOO_MANY_CONNECTIONS);
            refuse(socket, refused)
        };
        let (socket, peer, admitted) = accept_within(&listener, &slots, counted).await;
        let ctx = context.borrow().clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            match tokio::time::timeout(startup_timeout, first_message(&socket)).await {
                Ok(Ok(())) => super::session::serve(ctx, socket, peer).await,
                Ok(Err(_)) => {}
                Err(_) => {
                    // As PostgreSQL after authentication_timeout: closed
                    // without a message (the client sent none to answer).
                    tracing::info!(%peer, timeout_s = startup_timeout.as_secs_f64(), "client sent no startup message in time; closed");
                }
            }
        });
    }
}

/// Waits until the client's first message is complete in the socket's
/// receive buffer (peeked, not read: the session reads it). Returns at once
/// for a length PostgreSQL would refuse (the session says so).
async fn first_message(socket: &TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_STARTUP_PACKET];
    let mut pause = Duration::from_millis(2);
    loop {
        socket.readable().await?;
        let n = socket.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if n >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if n >= len || !(8..=MAX_STARTUP_PACKET).contains(&len) {
                return Ok(());
            }
        }
        // Part of the message is there: readable() stays ready, so wait
        // before peeking again (backing off: a trickling client costs little).
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Answers `FATAL 53300` and closes.
async fn refuse(mut socket: TcpStream, refused: Refused) {
    use tokio::io::AsyncWriteExt;
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', refused.to_string().as_str()),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(&body);
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&message)).await;
}
