//! Errors, notices, notifications and reported settings under masking:
//! scrubbed by the detectors, or withheld whole when the statement at hand
//! may read a masked column.

use std::sync::Arc;

use tokio::io::AsyncWrite;

use super::catalog_changes::may_change_catalog;
use super::expect::{BindInfo, Expect, StatementRef};
use super::{MASK_CACHE_ENTRIES, ServerLoop, SessionError};
use crate::postgres::framing::Frame;
use crate::postgres::messages::{backend, error_response};

impl<W: AsyncWrite + Unpin> ServerLoop<'_, W> {
    pub(super) async fn notice(&mut self, frame: Frame) {
        self.scrubbed(&frame, backend::NOTICE_RESPONSE).await;
    }

    /// Forwards an ErrorResponse or NoticeResponse, scrubbed when masking
    /// applies (every field but the SQLSTATE and positions when the
    /// statement may read a masked column: see [`ServerLoop::uncertain`]);
    /// returns its SQLSTATE.
    pub(super) async fn scrubbed(&mut self, frame: &Frame, tag: u8) -> String {
        let decoded = error_response::decode(frame.body());
        let code = decoded
            .as_ref()
            .ok()
            .and_then(|f| error_response::field(f, b'C'))
            .unwrap_or("")
            .to_string();
        if self.suppress {
            return code;
        }
        if !self.masking.active() {
            self.forward(frame);
            return code;
        }
        let Ok(mut fields) = decoded else {
            // Not readable, so not scrubbable: replaced.
            let mut fields = vec![
                error_response::Field {
                    code: b'S',
                    value: "ERROR".into(),
                },
                error_response::Field {
                    code: b'C',
                    value: error_response::INTERNAL_ERROR.into(),
                },
            ];
            error_response::scrub_all(&mut fields);
            error_response::encode_fields(&mut self.out, tag, &fields);
            return code;
        };
        if self.uncertain().await {
            error_response::scrub_all(&mut fields);
        } else {
            let masking = self.masking.clone();
            error_response::scrub(&mut fields, &|t| masking.detect(t));
        }
        error_response::encode_fields(&mut self.out, tag, &fields);
        code
    }

    /// A NotificationResponse: its payload (and channel name) pass the
    /// detectors; while the statement or transaction at hand may read a
    /// masked column the payload is replaced (`pg_notify('c', ssn)`). So is
    /// the payload of another backend's notification: the statement at hand
    /// says nothing about it (an application's trigger `pg_notify('c',
    /// NEW.ssn)` fired by another session's UPDATE arrives at this one's
    /// COMMIT, or in the middle of a pipeline).
    pub(super) async fn notification(&mut self, frame: &Frame) -> Result<(), SessionError> {
        if !self.masking.active() {
            self.forward(frame);
            return Ok(());
        }
        let body = frame.body();
        let (pid, rest) = body.split_at(body.len().min(4));
        let mut parts = rest.split(|b| *b == 0);
        let channel = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let payload = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let other_backend = self.masking.has_column_rules()
            && pid
                .get(..4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                != Some(self.backend_pid);
        let whole = other_backend || self.uncertain().await;
        let channel = self.masking.detect(&channel).unwrap_or(channel);
        let payload = if whole {
            error_response::HIDDEN.to_string()
        } else {
            self.masking.detect(&payload).unwrap_or(payload)
        };
        let at = crate::postgres::messages::begin(&mut self.out, backend::NOTIFICATION_RESPONSE);
        self.out.extend_from_slice(pid);
        crate::postgres::messages::put_cstr(&mut self.out, &channel);
        crate::postgres::messages::put_cstr(&mut self.out, &payload);
        crate::postgres::messages::finish(&mut self.out, at);
        Ok(())
    }

    /// A ParameterStatus of a setting Sluice does not track, while masking
    /// applies: a free-text setting (`application_name`, `search_path`…)
    /// changed while the statement or transaction at hand may read a masked
    /// column is replaced (`set_config('application_name', ssn, false)`);
    /// every value passes the detectors.
    pub(super) async fn scrubbed_parameter(&mut self, name: &str, value: &str) {
        let free_text = !matches!(
            name,
            "server_version"
                | "server_encoding"
                | "client_encoding"
                | "standard_conforming_strings"
                | "integer_datetimes"
                | "is_superuser"
                | "in_hot_standby"
                | "default_transaction_read_only"
                | "scram_iterations"
                | "DateStyle"
                | "IntervalStyle"
        );
        let value = if free_text && self.uncertain().await {
            error_response::HIDDEN.to_string()
        } else {
            self.masking
                .detect(value)
                .unwrap_or_else(|| value.to_string())
        };
        let at = crate::postgres::messages::begin(&mut self.out, backend::PARAMETER_STATUS);
        crate::postgres::messages::put_cstr(&mut self.out, name);
        crate::postgres::messages::put_cstr(&mut self.out, &value);
        crate::postgres::messages::finish(&mut self.out, at);
    }

    /// Whether the answer at hand may carry a value of a masked column: the
    /// statement whose answer is due (or, for what arrives at Sync or at the
    /// end of a transaction, any statement run in it) reads a table with
    /// masked columns (directly or through a view), calls a function (whose
    /// body Sluice does not see), runs SQL `EXECUTE`/`FETCH`/`CALL`, or is
    /// unknown. Only asked when an error, notice, notification or
    /// parameter status arrives, so plain results pay nothing.
    pub(super) async fn uncertain(&mut self) -> bool {
        if !self.masking.has_column_rules() {
            return false;
        }
        let mut statements: Vec<StatementRef> = Vec::new();
        let mut transaction_end = false;
        match self.queue.front() {
            Some(Expect::Simple(s)) => {
                let index = self.simple.as_ref().map_or(0, |p| p.index);
                if let Some(stmt) = s.decided.statement(index)
                    && matches!(
                        stmt.kind,
                        sluice_crds::StatementKind::Commit | sluice_crds::StatementKind::Rollback
                    )
                {
                    transaction_end = true;
                }
                statements.push(StatementRef {
                    decided: s.decided.clone(),
                    index,
                    prepared: None,
                });
            }
            Some(Expect::Execute(e)) if e.stmt.is_some() => {
                statements.extend(e.stmt.iter().cloned());
            }
            Some(Expect::Describe { stmt: Some(s), .. }) => statements.push(s.clone()),
            // Bind plans the statement, and planning runs immutable
            // functions of constants (`SELECT f()` with an application's
            // `IMMUTABLE` f raising what it read): judged as the statement.
            Some(Expect::BindComplete(Some(BindInfo { stmt: Some(s), .. }))) => {
                statements.push(s.clone());
            }
            Some(Expect::BindComplete(_)) => return true,
            // Parse (analysis and rewriting run no function) and Close read
            // no data.
            Some(Expect::ParseComplete(_) | Expect::CloseComplete) => {
                return false;
            }
            Some(Expect::Sync) => transaction_end = true,
            _ => return true,
        }
        if transaction_end {
            if self.ran_overflow {
                return true;
            }
            statements.extend(self.ran.iter().cloned());
        }
        for s in &statements {
            if self.statement_uncertain(s).await {
                return true;
            }
        }
        false
    }

    pub(super) async fn statement_uncertain(&mut self, s: &StatementRef) -> bool {
        use sluice_crds::StatementKind as K;
        let Some(stmt) = s.decided.statement(s.index) else {
            return true;
        };
        if stmt.execute_name.is_some()
            || !stmt.functions.is_empty()
            || stmt
                .kinds
                .iter()
                .any(|k| matches!(k, K::Other | K::Call | K::Do))
        {
            return true;
        }
        if stmt.tables.is_empty() {
            return false;
        }
        // Only "it may" is kept: it cannot turn false. "It reads no masked
        // column" rests on what the statement's names are now, and a name
        // can become a view over a masked column at any time (`DROP TABLE
        // src; CREATE VIEW src AS SELECT ssn …`, a `CREATE OR REPLACE
        // VIEW`, in this session or any other): that answer is looked up
        // afresh every time it is needed (an error, notice, notification
        // or reported setting of a statement that names tables, never a
        // plain result).
        let key = (Arc::as_ptr(&s.decided) as usize, s.index);
        if self.uncertain_cache.contains_key(&key) {
            return true;
        }
        let known = {
            let mut catalog = self.catalog.lock().await;
            // No result columns to go by: a fresh lookup (see
            // `Catalog::reads_beyond_tables`).
            catalog.forget_names();
            match catalog
                .extended_matcher(Some(stmt), &[], self.masking.column_matcher())
                .await
            {
                Ok(extended) => {
                    let m = extended
                        .as_ref()
                        .unwrap_or_else(|| self.masking.column_matcher());
                    stmt.tables.iter().any(|t| {
                        let (schema, table) = match t.rsplit_once('.') {
                            Some((s, t)) => (Some(s), t),
                            None => (None, t.as_str()),
                        };
                        m.table_may_have_masked(schema, table).is_some()
                    })
                }
                Err(_) => true,
            }
        };
        if known {
            if self.uncertain_cache.len() >= MASK_CACHE_ENTRIES {
                self.uncertain_cache.clear();
            }
            // The entry holds the decision, so its address is not reused.
            self.uncertain_cache.insert(key, s.decided.clone());
        }
        known
    }

    /// A statement ran: kept until the transaction ends, for what arrives
    /// at its end (see [`ServerLoop::uncertain`]).
    pub(super) fn ran(&mut self, s: StatementRef) {
        if may_change_catalog(&s.decided, s.index) {
            self.ctx.catalog.changed();
        }
        if !self.masking.has_column_rules() {
            return;
        }
        if self.ran.len() >= MAX_RAN {
            self.ran_overflow = true;
        } else {
            self.ran.push(s);
        }
    }
}

/// How many statements of one transaction the server loop keeps for
/// [`ServerLoop::uncertain`]; beyond, its end is treated as uncertain.
pub(super) const MAX_RAN: usize = 256;
