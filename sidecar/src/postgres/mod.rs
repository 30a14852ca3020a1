//! The PostgreSQL data plane: framing and messages know nothing of policy;
//! the session wires them to enforcement.

pub mod bundle;
pub mod cancel;
pub mod catalog;
pub mod framing;
pub mod listen;
pub mod masking;
pub mod messages;
mod rows_affected;
pub mod session;
pub mod settings;
pub use crate::tls;
pub mod upstream;

use std::sync::Arc;

use tokio::net::TcpListener;

use session::ConnectionContext;

/// Accepts clients on `listener` forever, one task per session.
pub async fn serve(listener: TcpListener, ctx: Arc<ConnectionContext>) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                tokio::spawn(session::serve(ctx.clone(), socket, peer));
            }
            Err(e) => {
                tracing::warn!(connection = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
