//! The session's prepared statements and portals decided again when what
//! their decisions rest on changed: the policies, or (while rules follow
//! names) the catalog (see `catalog_changes` and `relations`).

use super::*;

impl ClientLoop {
    /// After a policy change, takes the decisions of the session's prepared
    /// statements and bound portals again, so the next Execute of a statement
    /// prepared under the old policies is decided by the new ones (a deny
    /// added since refuses it).
    pub(super) fn redecide_prepared(&mut self) {
        self.enforcer.refresh();
        let generation = self.decision_stamp();
        if generation == self.decided_generation {
            return;
        }
        self.decided_generation = generation;
        let mut statements = std::mem::take(&mut self.statements);
        for s in statements.values_mut() {
            s.stmt = self.redecided(&s.stmt);
        }
        self.statements = statements;
        let mut portals = std::mem::take(&mut self.portals);
        for p in portals.values_mut() {
            if let Some(stmt) = p.stmt.as_mut() {
                *stmt = self.redecided(stmt);
            }
        }
        self.portals = portals;
    }

    /// `stmt` decided again under the enforcer's current standing. The old
    /// decision is kept when the verdict did not change, so an approval
    /// granted for it still counts.
    fn redecided(&mut self, stmt: &StatementRef) -> StatementRef {
        let generation = self.decision_stamp();
        let Some(sql) = stale_text(stmt, generation) else {
            return stmt.clone();
        };
        let now = self.decide_now(&sql);
        again(stmt, now, generation)
    }

    /// [`ClientLoop::redecided`] with the catalog's lookups (see
    /// [`ClientLoop::warm_relations`]).
    pub(super) async fn redecided_following(
        &mut self,
        stmt: &StatementRef,
        stamp: u64,
    ) -> StatementRef {
        let Some(sql) = stale_text(stmt, stamp) else {
            return stmt.clone();
        };
        let now = self.decide(&sql).await;
        again(stmt, now, stamp)
    }
}

/// The text of `stmt` when it is a prepared statement decided under
/// another stamp than `stamp` (to be decided again); `None` otherwise.
fn stale_text(stmt: &StatementRef, stamp: u64) -> Option<Arc<str>> {
    stmt.prepared
        .as_ref()
        .filter(|(_, taken)| *taken != stamp)
        .map(|(sql, _)| sql.clone())
}

/// `stmt` decided again as `now` under `stamp`: its old decision kept when
/// the verdict did not change (an approval granted for it still counts).
fn again(stmt: &StatementRef, now: Arc<Decided>, stamp: u64) -> StatementRef {
    let (old, new) = (stmt.decided.decision(), now.decision());
    let same = old.enforced == new.enforced
        && old.enforced_policy == new.enforced_policy
        && old.enforced_rule == new.enforced_rule
        && stmt.decided.refusal.is_none() == now.refusal.is_none();
    StatementRef {
        decided: if same { stmt.decided.clone() } else { now },
        index: stmt.index,
        prepared: stmt.prepared.as_ref().map(|(sql, _)| (sql.clone(), stamp)),
    }
}
