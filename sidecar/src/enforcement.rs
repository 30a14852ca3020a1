//! SQL enforcement: what the PostgreSQL plane needs of the policy engine.
//!
//! It turns the engine's decisions on SQL texts into what the protocol layer
//! needs: a cached [`Decided`] per statement text ([`Enforcer`]), a
//! [`Refusal`] to send when a statement may not run, the row and COPY masks
//! of a result ([`masks`]), and the audit records of statements
//! ([`record`]). The PostgreSQL protocol modules know nothing of policies;
//! the engine knows nothing of sockets. (The HTTP plane asks the engine
//! itself, in `crate::http`; both planes share [`crate::standing`].)

mod decided;
mod key;
pub mod masks;
pub mod record;
mod refusal;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use sluice_policy::engine::{PolicySet, Reach};
use sluice_policy::sql::SqlDialect;

pub use crate::masking::{Masking, ResultLimits};
pub use crate::standing::{Binding, SqlParts, Standing};
pub use decided::{CopyTarget, Decided, DecisionSummary, StatementPieces};
use key::{literal_free_key, plain_literal_free_key};
pub use refusal::Refusal;

/// How many distinct statement texts a session keeps decisions for. Past
/// this the cache starts over: an application with unbounded distinct texts
/// (literals inlined) pays a parse per statement, nothing more. Small on
/// purpose: a decision holds the statement's syntax tree (kilobytes), and
/// the sidecar must stay small in memory with many sessions.
const DECISION_CACHE_ENTRIES: usize = 64;

/// Texts longer than this are decided every time, never cached.
const DECISION_CACHE_MAX_TEXT: usize = 4096;

// === impl Binding ===

impl Binding {
    /// A new session's enforcer; `None` when the identity is not bound (or,
    /// in run mode, when no valid policies are at hand).
    pub fn enforcer(&self) -> Option<Enforcer> {
        let mut standing = self.standing.clone();
        let Standing::Bound {
            set,
            plane:
                SqlParts {
                    literal_sensitive,
                    masking_key,
                },
        } = standing.borrow_and_update().clone()
        else {
            return None;
        };
        Some(Enforcer {
            masking: Arc::new(Masking::new(set.clone())),
            set,
            cache: HashMap::default(),
            literal_sensitive,
            standing: self.is_live().then_some(standing),
            revoked: None,
            masking_key,
            generation: 0,
        })
    }
}

// === impl Enforcer ===

/// Decides a session's statements, with a decision cache.
///
/// The cache key is the statement's token stream with number and
/// single-quoted string literals replaced by a marker of their type, made
/// with the same SQL tokenizer the engine parses with: two texts with one key
/// differ only in the values of those literals, so the engine sees the same
/// statement shape, tables, functions and WHERE clauses in both. The engine's
/// decision and mask plans depend on literal values only where
/// [`SqlDecision::literal_dependent`] says so (COPY and EXPLAIN options,
/// settings, arguments of functions that take names or SQL text, casts to
/// object identifiers, and texts that do not parse) and through a rule's
/// `textPattern`: such texts are cached under their exact text only, so a
/// text of the same shape with other values is decided on its own. (The
/// engine's own fingerprint is not used as the key: it also ignores the
/// length of literal lists and is computed only after the full parse this
/// cache exists to avoid.) Texts the tokenizer rejects are keyed exactly.
///
/// A live enforcer (run mode) checks its binding's standing before each
/// decision: new policies apply from the next statement on (the cache
/// starts over); once the standing is withdrawn every statement is refused.
pub struct Enforcer {
    set: Arc<PolicySet>,
    masking: Arc<Masking>,
    /// Keyed by client-sent text: foldhash, seeded at random per process
    /// (no client can aim at its buckets), faster than SipHash on the
    /// every-statement lookups; and bounded ([`DECISION_CACHE_ENTRIES`]).
    cache: HashMap<Box<str>, Arc<Decided>, foldhash::fast::RandomState>,
    literal_sensitive: bool,
    standing: Option<tokio::sync::watch::Receiver<Standing>>,
    /// Set while the standing is withdrawn: why statements are refused.
    revoked: Option<String>,
    /// The masking rules the session's masks were built from.
    masking_key: Arc<str>,
    /// Bumped whenever a new standing is picked up: decisions taken under an
    /// older generation (prepared statements, bound portals) are taken again.
    generation: u64,
}

impl Enforcer {
    /// Picks up a changed standing, if any (run mode). A session calls it
    /// before each statement or group of extended-protocol messages, then
    /// compares [`Enforcer::masking`] with the masking it uses.
    pub fn refresh(&mut self) {
        self.follow();
    }

    /// Picks up a changed standing, if any.
    fn follow(&mut self) {
        let Some(rx) = self.standing.as_mut() else {
            return;
        };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        self.generation += 1;
        match rx.borrow_and_update().clone() {
            Standing::Bound {
                set,
                plane:
                    SqlParts {
                        literal_sensitive,
                        masking_key,
                    },
            } => {
                // Same masking rules and limits: the session's masks stay
                // valid, so its Masking (and mask caches) are kept.
                if masking_key != self.masking_key {
                    self.masking = Arc::new(Masking::new(set.clone()));
                    self.masking_key = masking_key;
                }
                self.set = set;
                self.literal_sensitive = literal_sensitive;
                self.cache.clear();
                self.revoked = None;
            }
            Standing::NotBound => {
                self.revoked = Some(
                    "no AccessPolicy binds this identity to the Connection any more".to_string(),
                );
            }
            Standing::Unavailable(why) => self.revoked = Some(why),
        }
    }

    /// The decision on a SQL text (cached).
    pub fn decide(&mut self, sql: &str) -> Arc<Decided> {
        self.follow();
        if let Some(why) = &self.revoked {
            // Decided by the last policies for the record, refused regardless.
            let mut decided = Decided::new(self.set.decide_sql(sql, SqlDialect::Postgres));
            decided.awaits_approval = false;
            decided.refusal = Some(Refusal::plain(&format!(
                "statement refused by Sluice: {why}"
            )));
            return Arc::new(decided);
        }
        if sql.len() > DECISION_CACHE_MAX_TEXT {
            return Arc::new(Decided::new(self.set.decide_sql(sql, SqlDialect::Postgres)));
        }
        if let Some(d) = self.cache.get(sql) {
            return d.clone();
        }
        let key = if self.literal_sensitive {
            None
        } else {
            plain_literal_free_key(sql).or_else(|| literal_free_key(sql))
        };
        if let Some(key) = &key
            && let Some(d) = self.cache.get(key.as_str())
        {
            return d.clone();
        }
        let decided = Arc::new(Decided::new(self.set.decide_sql(sql, SqlDialect::Postgres)));
        if self.cache.len() >= DECISION_CACHE_ENTRIES {
            self.cache.clear();
        }
        // Shape and literal dependence go together (see `Enforcer`): no
        // text of this shape is ever cached under the shape's key.
        let key: Box<str> = match key {
            Some(k) if !decided.sql.literal_dependent() => k.into(),
            _ => sql.into(),
        };
        self.cache.insert(key, decided.clone());
        decided
    }

    /// [`Enforcer::decide`], with a text too large for the cache decided
    /// off the runtime thread when it is large enough ([`crate::parse_pool`]).
    pub async fn decide_async(&mut self, sql: &str) -> Arc<Decided> {
        if self.decides_on_thread(sql) {
            return self.decide(sql);
        }
        self.follow();
        let mut decided = Decided::new(crate::parse_pool::decide_sql(self.set.clone(), sql).await);
        self.follow();
        if let Some(why) = &self.revoked {
            decided.awaits_approval = false;
            decided.refusal = Some(Refusal::plain(&format!(
                "statement refused by Sluice: {why}"
            )));
        }
        Arc::new(decided)
    }

    /// Whether [`Enforcer::decide_async`] decides `sql` on the calling
    /// thread (a text the decision cache takes, or too small to parse off
    /// it): then [`Enforcer::decide`] is the same decision, without a future.
    pub fn decides_on_thread(&self, sql: &str) -> bool {
        sql.len() <= DECISION_CACHE_MAX_TEXT || !crate::parse_pool::off_thread(sql)
    }

    /// Whether a rule that denies or holds names tables: which relations a
    /// statement's names stand for (partitions, `INHERITS`, a view's
    /// tables) then matters to its decision.
    pub fn has_restrictive_table_rules(&self) -> bool {
        self.revoked.is_none() && self.set.has_restrictive_table_rules()
    }

    /// Whether a rule that denies or holds names functions: what the
    /// user-defined functions a statement calls call then matters to its
    /// decision.
    pub fn has_restrictive_function_rules(&self) -> bool {
        self.revoked.is_none() && self.set.has_restrictive_function_rules()
    }

    /// Whether a rule that denies or holds names tables or functions: what
    /// a statement's names stand for (views, partitions) then matters to its
    /// decision.
    pub fn follows_names(&self) -> bool {
        self.revoked.is_none() && self.set.follows_names()
    }

    /// `decided` made stricter by the table and function rules that deny or
    /// hold, matched through what its names reach (`related`: name → its
    /// [`Reach`]; `functions`: function name → what it calls in turn; see
    /// `PolicySet::through_relations`); `None` when nothing gets stricter.
    pub fn through_relations(
        &self,
        decided: &Decided,
        related: &HashMap<String, Reach>,
        functions: &HashMap<String, Reach>,
    ) -> Option<Arc<Decided>> {
        let sql = self
            .set
            .through_relations(&decided.sql, related, functions)?;
        Some(Arc::new(Decided::new(sql)))
    }

    /// Which standing the decisions are taken under: it changes with every
    /// policy change the session picks up (see [`Enforcer::refresh`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The masking in force: a new one (a different `Arc`) after a change
    /// of the masking rules or limits.
    pub fn masking(&self) -> Arc<Masking> {
        self.masking.clone()
    }
}
