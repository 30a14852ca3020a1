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
//! - [`misread`]: statements the parser reads otherwise than the server
//!   (`UPDATE IGNORE t …`): refused;
//! - [`recording`]: the rows the workload received, read back for the
//!   session's recording (`spec.recording`);
//! - [`packet`]: framing (16 MiB continuation), length-encoded values.
//!
//! The views a statement reads are asked of the server right before it
//! runs, by exact schema and name, never from a cache (the session's
//! `views`); what a view returns is masked whole, and a write that stores
//! what it reads from a view is refused while column rules apply.
//!
//! `readOnly` and `maxRowsAffected` are served (a read-only upstream
//! session; a savepoint or transaction guard per write), and stored
//! functions are treated as reading any table (see the session's
//! `functions` and `guard`).
//!
//! `requireApproval` is served in run mode on the sidecar's one approval
//! flow (held, or refused naming the AccessRequest and run once when
//! approved: the session's `approve`); read-only cursors on prepared
//! statements (COM_STMT_FETCH) are masked and counted as any binary rows
//! (the session's `cursor`). Masked values are counted per masking rule
//! on the result events (`outcome.masks`), and the plane counts in the
//! same `sluice_*` series as PostgreSQL's.
//!
//! Not served (refused with an ERR packet that says so): COM_CHANGE_USER
//! (never: it would switch credentials), COM_FIELD_LIST (column
//! definitions with their default values, around every rule; the `mariadb`
//! CLI's auto-rehash asks it per table after `SHOW TABLES` and, refused,
//! completes names without columns and says nothing), and any other
//! command.

pub mod binary;
pub mod bundle;
pub mod gate;
pub mod misread;
pub mod packet;
pub mod recording;
pub mod results;
pub mod session;
pub mod upstream;
