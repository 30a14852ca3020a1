//! Table rules through the relations a name stands for: `DELETE FROM v`
//! deletes rows of the table view `v` reads, `TRUNCATE customers_p1`
//! empties a partition of `customers`, `UPDATE people_child …` changes rows
//! `SELECT … FROM people` reads. A rule that denies or holds statements on
//! `customers` must hold for each of them, so before a statement runs its
//! names are followed through the catalog ([`Catalog::related_names`]) and
//! the deny and requireApproval rules are matched against what they reach
//! too (`PolicySet::through_relations`; allow rules are not, so a wider
//! reading never loosens a decision). Only when such a rule names tables;
//! the lookups are cached for the session like the masking ones.
//!
//! Function rules the same way: `SELECT * FROM v`, where `v` is defined as
//! `SELECT pg_read_file(…)`, runs `pg_read_file`, so a rule that denies or
//! holds statements calling it must hold for the read of `v` (and of a view
//! over `v`). When a rule that denies or holds names functions, the
//! functions the definitions of the views a statement's names stand for
//! call count as called by the statement ([`Reach::functions`]), with the
//! same lookups and the same cache: one lookup per name new to the
//! session, none for a statement that names no relation. What is not
//! followed (a user-defined function's body, triggers, rules, column
//! defaults, row security policies) is listed in sidecar/README.md.
//!
//! [`Reach::functions`]: sluice_policy::engine::Reach::functions
//!
//! [`Catalog::related_names`]: crate::postgres::catalog::Catalog::related_names

use super::client::catalog_refusal;
use super::*;
use crate::enforcement::Refusal;
use crate::postgres::catalog::CatalogError;
use sluice_policy::engine::Reach;

impl ClientLoop {
    /// `decided`, made stricter through the relations its names reach; a
    /// refusal when they cannot be looked up (fail closed).
    /// `names`: the statement's names to follow
    /// ([`ClientLoop::names_to_follow`]).
    pub(super) async fn through_relations(
        &mut self,
        decided: Arc<Decided>,
        names: Vec<String>,
    ) -> Arc<Decided> {
        // Boxed, as the masking lookups: their future is large.
        let related = {
            let mut catalog = self.catalog.lock().await;
            Box::pin(catalog.related_names(&names)).await
        };
        self.settle(decided, related)
    }

    /// [`ClientLoop::through_relations`] without a lookup, for a prepared
    /// statement decided again after a policy change (a synchronous step):
    /// from what the session's catalog holds, else refused, to be prepared
    /// again (then its names are looked up).
    pub(super) fn through_relations_now(&mut self, decided: Arc<Decided>) -> Arc<Decided> {
        let Some(names) = self.names_to_follow(&decided) else {
            return decided;
        };
        let cached = self
            .catalog
            .try_lock()
            .ok()
            .and_then(|catalog| catalog.related_cached(&names));
        match cached {
            Some(related) => self.settle(decided, related),
            None => Arc::new(decided.refused(Refusal::plain(
                "statement refused: the policies changed and have table or function rules; Sluice has not looked up what this prepared statement's names stand for (views, partitions): prepare it again",
            ))),
        }
    }

    /// `decided` made stricter through `related` (what its names reach), or
    /// refused when they could not be looked up.
    fn settle(
        &self,
        decided: Arc<Decided>,
        related: Result<HashMap<String, Reach>, CatalogError>,
    ) -> Arc<Decided> {
        match related {
            Ok(related) => self
                .enforcer
                .through_relations(&decided, &related)
                .unwrap_or(decided),
            Err(e) => Arc::new(decided.refused(catalog_refusal(UNKNOWN, &e))),
        }
    }

    /// Before the session's prepared statements and portals are decided
    /// again after a policy change (a synchronous step, see
    /// [`ClientLoop::through_relations_now`]), looks up the names they
    /// name, so that they are found in the cache. A failed lookup leaves
    /// them out of it: those statements are refused then.
    pub(super) async fn warm_relations(&mut self) {
        if !self.relations_to_warm() {
            return;
        }
        let mut names: Vec<String> = self
            .statements
            .values()
            .map(|s| &s.stmt)
            .chain(self.portals.values().filter_map(|p| p.stmt.as_ref()))
            .flat_map(|s| s.decided.sql.statements.iter())
            .flat_map(|(s, _)| s.tables.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return;
        }
        let mut catalog = self.catalog.lock().await;
        if let Err(e) = Box::pin(catalog.related_names(&names)).await {
            tracing::warn!(error = %e, "names of prepared statements could not be looked up: those statements are refused");
        }
    }

    /// Whether [`ClientLoop::warm_relations`] has names to look up: the
    /// policies changed since the session's statements were decided, and
    /// have table or function rules that deny or hold.
    pub(super) fn relations_to_warm(&mut self) -> bool {
        self.enforcer.refresh();
        self.enforcer.generation() != self.decided_generation && self.enforcer.follows_names()
    }

    /// The table names of `decided` to follow, or `None` when its decision
    /// cannot get stricter through them (refused already, or no rule that
    /// denies or holds names tables or functions, or no table named, or
    /// only function rules and every name known to stand for no view).
    pub(super) fn names_to_follow(&self, decided: &Decided) -> Option<Vec<String>> {
        let refused = decided.refusal.is_some() && decided.awaits_approval().is_none();
        if refused || !self.enforcer.follows_names() {
            return None;
        }
        let names = decided.sql.table_names();
        if names.is_empty() {
            return None;
        }
        // Under function rules alone, names this session found to be no
        // views reach no function: decided as they are, without a future.
        let no_views = || {
            self.catalog
                .try_lock()
                .is_ok_and(|catalog| catalog.names_without_views(&names))
        };
        if !self.enforcer.has_restrictive_table_rules() && no_views() {
            return None;
        }
        Some(names)
    }
}

/// What a refusal says when the names could not be followed.
const UNKNOWN: &str = "statement refused: the policy has table or function rules, and Sluice could not look up what its names stand for (views, partitions, the functions views call)";
