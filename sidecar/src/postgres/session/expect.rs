//! What the upstream will answer next, in order, and what each answer
//! belongs to: the spine the two loops share.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::enforcement::{Decided, Masking};
use crate::postgres::masking::CopyMask;
use crate::postgres::messages::bind::FormatCodes;

/// What the upstream will send next, in order, and what it belongs to.
pub(super) enum Expect {
    /// A simple Query: everything up to its ReadyForQuery.
    Simple(Box<SimpleCtx>),
    /// ParseComplete, with the statement's name (`None`: the unnamed one)
    /// as the client loop keeps it: a Parse the server fails or skips is
    /// reported back (see [`super::Answered::failed_parses`]).
    ParseComplete(Option<Arc<str>>),
    /// BindComplete. With masking, what the server loop needs to give the
    /// portal the mask of its statement in the Bind's result formats.
    BindComplete(Option<BindInfo>),
    /// A Describe's answer: ParameterDescription (statements) then
    /// RowDescription or NoData. `forward` is false for the sidecar's own
    /// Describe of a portal, whose answer the client never asked for.
    Describe {
        portal: Option<String>,
        statement: Option<String>,
        stmt: Option<StatementRef>,
        forward: bool,
        /// When the session is recorded: where the described statement's
        /// columns go (see [`DescribedColumns`]).
        columns: Option<DescribedColumns>,
    },
    /// An Execute's rows and its CommandComplete / EmptyQuery / PortalSuspended.
    Execute(Box<ExecCtx>),
    /// CloseComplete.
    CloseComplete,
    /// ReadyForQuery after Sync.
    Sync,
    /// The masking rules or limits changed (run mode): the answers after
    /// this point belong to statements decided under the new masking.
    Masking(Arc<Masking>),
    /// A message from the sidecar (a refusal), sent when its turn comes;
    /// followed by ReadyForQuery when `rfq`. `in_group` marks an error inside
    /// an extended-protocol group, dropped if the server already failed it.
    Synthetic {
        bytes: Bytes,
        rfq: bool,
        in_group: bool,
    },
    /// The client ended a COPY FROM STDIN (CopyDone or CopyFail forwarded).
    CopyEnd,
    /// `maxRowsAffected`: the answers from here to the next ReadyForQuery
    /// are held until the write's row counts are checked (see
    /// [`rows_affected`]). The first `swallow` CommandCompletes answer the
    /// sidecar's own `BEGIN;`/`SAVEPOINT …;` put in front of the client's
    /// query string, and error positions are moved back by its `shift` characters.
    HoldStart { swallow: u32, shift: u32 },
    /// One answer to the sidecar's own extended-protocol BEGIN or
    /// SAVEPOINT in front of a group (never forwarded; an error is, and the
    /// server then skips the group).
    Prefix,
    /// The answers to the sidecar's own COMMIT, RELEASE or ROLLBACK (a
    /// simple query), up to its ReadyForQuery: never forwarded.
    Internal,
}

/// A decided statement within a (possibly multi-statement) string.
#[derive(Clone)]
pub(super) struct StatementRef {
    pub(super) decided: Arc<Decided>,
    pub(super) index: usize,
    /// The text a prepared statement was parsed from, and the enforcer
    /// generation its decision was taken under: after a policy change the
    /// decision is taken again before the statement runs (see
    /// [`super::ClientLoop::redecide_prepared`]). `None` for simple queries, which
    /// are decided each time they come.
    pub(super) prepared: Option<(Arc<str>, u64)>,
}

/// A Bind's portal, statement and result formats, for the server loop:
/// nothing allocated for the unnamed portal, a known statement's name
/// shared with the client loop's entry, and the formats drivers send (none
/// or one) kept inline.
pub(super) struct BindInfo {
    pub(super) portal: String,
    pub(super) statement: Arc<str>,
    pub(super) formats: FormatCodes,
    /// The statement bound (`None`: one the sidecar does not know). Its
    /// plan is made at Bind, which evaluates immutable functions of
    /// constants: errors and notices at Bind are judged by it.
    pub(super) stmt: Option<StatementRef>,
}

pub(super) struct SimpleCtx {
    pub(super) decided: Arc<Decided>,
    pub(super) started: Instant,
    pub(super) copy_masks: Vec<Option<Arc<CopyMask>>>,
    /// Its held decision (batched audit), which its result joins.
    pub(super) hold: Option<crate::audit::HoldId>,
}

pub(super) struct ExecCtx {
    pub(super) portal: String,
    pub(super) stmt: Option<StatementRef>,
    pub(super) started: Instant,
    pub(super) copy_mask: Option<Arc<CopyMask>>,
    /// When the session is recorded: the columns of the portal's
    /// statement, for a result whose RowDescription the client got earlier.
    pub(super) columns: Option<DescribedColumns>,
    /// When the session is recorded: the result formats its portal's Bind
    /// asked for, which the values are in.
    pub(super) formats: Option<FormatCodes>,
    /// Its held decision (batched audit), which its result joins.
    pub(super) hold: Option<crate::audit::HoldId>,
}

/// The columns (names and types) of a prepared statement's result, set by
/// the server loop from the first RowDescription answering a Describe of
/// it (the client's or the sidecar's own), and read when an Execute of a
/// portal bound from it returns rows without a RowDescription of their
/// own: the driver learnt the names from that earlier Describe, and so
/// does the recording (see
/// [`crate::recording::ResultRecorder::execute_columns`]). One per Parse,
/// so a statement name parsed again gets fresh columns; made only while
/// the session is recorded.
pub(super) type DescribedColumns = Arc<crate::recording::StatementColumns>;
