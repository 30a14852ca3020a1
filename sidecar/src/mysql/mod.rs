//! The MySQL data plane (MySQL and MariaDB clients and servers): the text
//! protocol and prepared statements (the binary protocol).
//!
//! - [`bundle`]: the plane's [`crate::plane::Plane`]: the mysql Connections
//!   of a bundle, each on its own listener;
//! - [`upstream`]: the sidecar's session with the server (TLS per
//!   `tls.mode`, `mysql_native_password`, `caching_sha2_password`);
//! - [`session`]: a client session: handshake on loopback, then the
//!   command loop (COM_QUERY decided per statement, refused with an ERR
//!   packet naming policy and rule, audited write-ahead; prepared
//!   statements decided at PREPARE and again at each EXECUTE);
//! - [`results`]: a query's answer relayed, text rows masked by column
//!   (origin table and column of the column definitions, and the engine's
//!   lineage analysis) and by detector, with values valid for the column's
//!   type (masked text for strings, NULL for every other type);
//! - [`binary`]: binary result rows (prepared statements) masked by
//!   column: masked text for strings, the NULL bitmap bit for the rest;
//! - [`gate`]: the session settings and lexical forms under which MySQL
//!   reads a text otherwise than Sluice's parser: tracked or refused;
//! - [`packet`]: framing (16 MiB continuation), length-encoded values.
//!
//! `readOnly` and `maxRowsAffected` are served (a read-only upstream
//! session; a savepoint or transaction guard per write), and stored
//! functions are treated as reading any table (see the session's
//! `functions` and `guard`).
//!
//! Not served yet (refused with an ERR packet that says so): cursors on
//! prepared statements (COM_STMT_FETCH), COM_CHANGE_USER, COM_FIELD_LIST;
//! approvals (a statement a policy sends to requireApproval is refused).

pub mod binary;
pub mod bundle;
pub mod gate;
pub mod packet;
pub mod results;
pub mod session;
pub mod upstream;
