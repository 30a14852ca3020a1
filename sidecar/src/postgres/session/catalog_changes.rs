//! What a name stands for can change under a session's cache: `DROP TABLE
//! t; CREATE VIEW t AS SELECT * FROM customers` makes `DELETE FROM t`
//! delete customers, and the rules that follow names through views
//! (see `relations`) must see the view, not the table the session looked
//! up before. Every statement that changes the catalog — DDL, a procedure
//! call, a `DO` block, text Sluice cannot parse — is counted on the
//! Connection's catalog pool when it has run (`CatalogPool::changed`, from
//! the server loop); a session whose cache is older forgets what it cached
//! about names before it decides its next statement, and its prepared
//! statements are decided again, with fresh lookups, before their next
//! Execute (SQL `EXECUTE` is checked as what it runs, see
//! `executes_through_relations`). While rules follow names, such a
//! statement must come last in its query string or extended-protocol group
//! (what follows it would be decided before it ran), and what follows it
//! waits for its answer.
//!
//! A statement that calls a user-defined function (itself or through a
//! view it reads: found by the same lookups, one per function name new to
//! the session), or runs one without naming it (a write to a table whose
//! trigger, rule, default, constraint, index or policy depends on one; any
//! statement on a table whose row security policy does), is counted the
//! same way, as that body may run DDL (`may_change_catalog`); calls of
//! built-ins are not.
//!
//! Not seen: changes made by other clients of the database (another pod,
//! an administrator) after this session looked a name up, until the
//! session looks it up again (see sidecar/README.md). A statement that
//! may run code the database runs unnamed (a cast's, a domain's, an
//! operator's, an event trigger's: `catalog::implicit`) while some is
//! user-defined is counted too.

use super::*;
use crate::enforcement::{Decided, Refusal};
use sluice_policy::sql::Statement;

impl ClientLoop {
    /// Whether the rules follow names through the catalog (see `relations`).
    pub(super) fn follows_names(&self) -> bool {
        self.enforcer.follows_names()
    }

    /// Forgets what the session's catalog cached about names when a
    /// statement that may have changed the catalog ran through the
    /// Connection since it last looked (see the module docs).
    pub(super) async fn sync_catalog(&mut self) {
        let changes = self.ctx.catalog.changes();
        if changes == self.catalog_seen {
            return;
        }
        self.catalog.lock().await.forget_names();
        self.catalog_seen = changes;
    }

    /// Whether [`ClientLoop::sync_catalog`] has anything to forget.
    pub(super) fn catalog_changed(&self) -> bool {
        self.ctx.catalog.changes() != self.catalog_seen
    }

    /// Whether `decided` is the decision last found to need nothing of the
    /// catalog, under the same catalog revision and policies: then it
    /// needs nothing again (the common case of a statement repeated under
    /// function rules, which would otherwise gather its names and take the
    /// catalog's lock for each run). Not for SQL `EXECUTE`, always checked.
    pub(super) fn plain_again(&self, decided: &Arc<Decided>) -> bool {
        self.plain
            .as_ref()
            .is_some_and(|(d, revision, generation)| {
                Arc::ptr_eq(d, decided)
                    && *revision == self.catalog_revision.load(Ordering::Acquire)
                    && *generation == self.enforcer.generation()
            })
    }

    /// Remembers `decided` for [`ClientLoop::plain_again`] when rules
    /// follow names and it needed nothing of the catalog.
    pub(super) fn remember_plain(&mut self, decided: &Arc<Decided>) {
        if self.follows_names() && !self.executes_prepared(decided) {
            self.plain = Some((
                decided.clone(),
                self.catalog_revision.load(Ordering::Acquire),
                self.enforcer.generation(),
            ));
        }
    }

    /// What the decisions of the session's prepared statements rest on:
    /// the policies (the enforcer's generation) and, while rules follow
    /// names, the catalog changes the session has seen.
    pub(super) fn decision_stamp(&self) -> u64 {
        let seen = if self.follows_names() {
            self.catalog_seen & 0xffff_ffff
        } else {
            0
        };
        (self.enforcer.generation() << 32) | seen
    }

    /// `decided` refused when a SQL `EXECUTE name` of it runs a statement
    /// prepared under `name` that the rules, followed through what its
    /// names stand for now, refuse: the server plans a prepared statement
    /// again when the catalog changed, so `PREPARE p AS DELETE FROM t`
    /// while `t` was a table, then `t` swapped for a view of `customers`,
    /// then `EXECUTE p` deleted customers. Only while rules follow names.
    pub(super) async fn executes_through_relations(
        &mut self,
        decided: Arc<Decided>,
    ) -> Arc<Decided> {
        for index in 0..decided.len() {
            let Some(name) = decided
                .statement(index)
                .and_then(|s| s.execute_name.clone())
            else {
                continue;
            };
            let prepared = match self.executed_statements(&name) {
                Ok(prepared) => prepared,
                Err(refusal) => return Arc::new(decided.refused(refusal)),
            };
            for p in prepared {
                let Some(names) = self.names_to_follow(&p.decided) else {
                    continue;
                };
                let now = self.through_relations(p.decided.clone(), names).await;
                if let Some(why) = &now.refusal {
                    return Arc::new(decided.refused(Refusal::plain(&format!(
                        "statement refused by Sluice: EXECUTE {name} runs a statement prepared under that name that is refused now: {}",
                        why.message
                    ))));
                }
            }
        }
        decided
    }

    /// Whether `decided` has a SQL `EXECUTE` that
    /// [`ClientLoop::executes_through_relations`] checks.
    pub(super) fn executes_prepared(&self, decided: &Decided) -> bool {
        self.follows_names()
            && (0..decided.len()).any(|i| {
                decided
                    .statement(i)
                    .is_some_and(|s| s.execute_name.is_some())
            })
    }

    /// The refusal of a text in which a statement that may change the
    /// catalog is followed by another, while rules follow names.
    pub(super) fn catalog_change_refusal(&self, decided: &Decided) -> Option<Refusal> {
        if decided.len() < 2 || !self.follows_names() {
            return None;
        }
        (0..decided.len() - 1)
            .any(|i| may_change_catalog(decided, i))
            .then(followed_refusal)
    }
}

/// Whether statement `index` of `decided` may change what names stand for:
/// it is one [`changes_catalog`] counts, or it was found to call a
/// user-defined function (directly or through a view it reads), whose body
/// may run DDL (`CREATE FUNCTION swap() … AS $$ DROP TABLE t; CREATE VIEW
/// t AS SELECT * FROM customers $$`, then `SELECT swap()`).
pub(super) fn may_change_catalog(decided: &Decided, index: usize) -> bool {
    changes_catalog(decided.statement(index)) || decided.runs_user_code(index)
}

/// Whether `statement` (`None`: not parsed) is DDL, a procedure call, a
/// `DO` block or a statement Sluice does not classify: counted once it has
/// run; what follows it in a text or group is refused, and the next text
/// waits for its answer. Function calls are left out (see the module
/// docs): statements calling `now()` or `count(*)` are ordinary, and
/// counting them would make every session look every name up again.
pub(super) fn changes_catalog(statement: Option<&Statement>) -> bool {
    use sluice_crds::StatementKind as K;
    let Some(s) = statement else {
        return true;
    };
    s.kinds.iter().any(|k| {
        matches!(
            k,
            K::Create | K::Alter | K::Drop | K::Call | K::Do | K::Other
        )
    })
}

/// The refusal of a catalog change followed by more in the same text or group.
pub(super) fn followed_refusal() -> Refusal {
    Refusal {
        code: crate::postgres::messages::error_response::FEATURE_NOT_SUPPORTED,
        ..Refusal::plain(
            "statement refused by Sluice: the policy has rules on tables or functions, and a statement that may change what names stand for (DDL, CALL, DO, a statement Sluice does not classify) must come last in its query string or extended-protocol group; what follows it is decided once it has run. Nothing ran",
        )
    }
}
