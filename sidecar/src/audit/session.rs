//! Who a session is, as its audit events record it ([`SessionInfo`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use sluice_policy::audit::{AuditIdentity, Rendered};
use sluice_policy::engine::Identity;

use crate::standing::Binding;

/// Who a session is, for audit records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Random session id.
    pub id: String,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub subject: String,
    /// Namespace of the identity.
    pub namespace: String,
    /// Service account of the identity.
    pub service_account: String,
    /// Pod, when known.
    pub pod: Option<String>,
    /// Groups of the identity.
    pub groups: Vec<String>,
    /// The Connection.
    pub connection: String,
    /// The client's address (loopback in a pod).
    pub client: String,
    /// The session's audit fields, rendered at its first statement (see
    /// [`crate::audit::AuditLog::statement_pending`]); shared by the session's clones.
    pub(crate) pieces: Arc<OnceLock<Option<SessionPieces>>>,
    /// What the session's recordings have spent (`spec.recording`).
    pub recording: crate::recording::SessionBudget,
    /// Its records' durability, fixed at its first record (see
    /// [`crate::audit::AuditLog::durability`]); shared by its clones.
    pub(crate) durability: Arc<OnceLock<crate::audit::AuditDurability>>,
}

/// A session's `connection`, `identity` and `session` audit fields,
/// serialised once for all its statement and result events.
#[derive(Debug)]
pub(crate) struct SessionPieces {
    pub(crate) connection: Rendered,
    pub(crate) identity: Rendered,
    pub(crate) session: Rendered,
}

impl SessionInfo {
    /// Who the session is, as its audit events record it.
    pub(crate) fn identity(&self) -> AuditIdentity {
        AuditIdentity {
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            pod: self.pod.clone(),
            groups: self.groups.clone(),
        }
    }

    /// [`SessionPieces`], rendered on first use (`None`: they could not be
    /// serialised, and events are drafted field by field instead).
    pub(crate) fn pieces(&self) -> Option<&SessionPieces> {
        self.pieces
            .get_or_init(|| {
                Some(SessionPieces {
                    connection: Rendered::connection(&self.connection).ok()?,
                    identity: Rendered::identity(&self.identity()).ok()?,
                    session: Rendered::session(&self.id).ok()?,
                })
            })
            .as_ref()
    }
}

impl SessionInfo {
    /// A new session of `binding` on `connection`.
    pub fn new(binding: &Binding, connection: &str, client: SocketAddr) -> Self {
        Self::for_identity(binding.identity(), connection, client)
    }

    /// A new session (an HTTP connection, a PostgreSQL session) of
    /// `identity` on `connection`, from `client`, with a random id.
    pub fn for_identity(identity: &Identity, connection: &str, client: SocketAddr) -> Self {
        let id: u128 = rand::random();
        SessionInfo {
            id: format!("{id:032x}"),
            subject: format!("{}/{}", identity.namespace, identity.service_account),
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            pod: identity.pod.clone(),
            groups: identity.groups.clone(),
            connection: connection.to_string(),
            client: client.to_string(),
            pieces: Arc::default(),
            recording: Default::default(),
            durability: Arc::default(),
        }
    }
}
