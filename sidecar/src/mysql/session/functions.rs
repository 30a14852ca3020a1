//! What a statement reads out of the lineage analysis' sight: views (the
//! server reports their columns with the view as origin) and stored
//! functions (their bodies read any table, change session settings and
//! raise errors carrying what they read).
//!
//! A call is a built-in only when its name is one of
//! [`sluice_policy::sql::MYSQL_BUILTINS`], unqualified, written where the
//! server runs the built-in ([`gate::spaced_builtin_call`]), and no stored
//! function of that name shows in `information_schema.ROUTINES` (which
//! guards against a name the list holds by mistake; asked once per name
//! and session, again after a statement that may create one). Every other
//! call may run a stored (or loadable) function: a value computed by one is
//! masked with the strongest rule (the lineage analysis marks it, as the
//! PostgreSQL plane does for user-defined functions), the statement's error
//! texts are scrubbed, a write of such a value is refused as laundering,
//! and the session's settings are read again after it ran. No answer from
//! ROUTINES is trusted to clear a call: a name missing there is still not
//! a built-in (a loadable function, one created by another session since).

use sluice_policy::mask_plan::ColumnMatcher;
use sluice_policy::sql::mysql_builtin;

use super::*;

/// Built-in names whose ROUTINES answer a session keeps at most.
const MAX_ROUTINE_NAMES: usize = 4096;

/// What a statement reads out of the lineage analysis' sight.
#[derive(Default)]
pub(super) struct Unseen {
    /// Which of the tables it reads are views (lower case).
    pub views: Vec<String>,
    /// The functions it calls that may be stored functions, lower case, as
    /// written and unqualified.
    pub functions: Vec<String>,
    /// A call the lineage analysis cannot place (a built-in's name written
    /// where a stored function runs, a stored function named `count`):
    /// every column of its results is masked.
    pub whole: bool,
    /// The masking rules' matcher extended with `functions` (when any).
    pub matcher: Option<ColumnMatcher>,
    /// It may read values that have no origin to mask by (see
    /// [`reads_user_variables`], [`reads_server_variables`],
    /// [`reads_optimizer_trace`]): every column of its results is masked,
    /// and it may not store what it reads.
    pub variables: bool,
}

impl Unseen {
    /// Whether the statement may call a stored function (itself, or in the
    /// definition of a view it reads).
    pub fn calls_stored(&self) -> bool {
        !self.functions.is_empty() || self.whole || !self.views.is_empty()
    }
}

impl Session<'_> {
    /// What `decided` (whose text is `text`) calls out of sight; the
    /// ROUTINES lookup is made only while column masking applies. The views
    /// it reads are asked for right before it runs (see `views`).
    pub(super) async fn unseen(
        &mut self,
        decided: &SqlDecision,
        text: &str,
    ) -> Result<Unseen, SessionError> {
        let mut unseen = Unseen {
            whole: gate::spaced_builtin_call(text),
            ..Default::default()
        };
        let mut builtins = Vec::new();
        for f in decided
            .statements
            .iter()
            .flat_map(|(s, _)| s.functions.iter())
        {
            let f = f.to_lowercase();
            let last = f.rsplit('.').next().unwrap_or(&f).to_string();
            if f.contains('.') || !mysql_builtin(&last) {
                unseen.functions.push(f.clone());
                unseen.functions.push(last);
            } else {
                builtins.push(last);
            }
        }
        if self.masking.has_column_rules() {
            for name in self.routines(&builtins).await? {
                unseen.functions.push(name);
            }
        }
        unseen.functions.sort();
        unseen.functions.dedup();
        // The analysis takes `count(…)` for the aggregate whatever the
        // matcher says: a stored function of that name is masked whole.
        if unseen.functions.iter().any(|f| f == "count") {
            unseen.whole = true;
        }
        if self.masking.has_column_rules() {
            unseen.variables = reads_user_variables(text)
                || reads_optimizer_trace(decided)
                || (self.variables_tainted && reads_server_variables(text));
        }
        if !unseen.functions.is_empty() {
            unseen.matcher = Some(
                self.masking
                    .column_matcher()
                    .with_functions(&unseen.functions),
            );
        }
        Ok(unseen)
    }

    /// Which of `names` (built-in names, lower case) a stored function
    /// shares in `information_schema.ROUTINES`; all of them when the server
    /// cannot tell.
    async fn routines(&mut self, names: &[String]) -> Result<Vec<String>, SessionError> {
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !self.routines.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            if self.routines.len() + missing.len() > MAX_ROUTINE_NAMES {
                self.routines.clear();
            }
            // Built-in names are plain words: nothing to quote.
            let list: Vec<String> = missing.iter().map(|n| format!("'{n}'")).collect();
            let sql = format!(
                "SELECT DISTINCT LOWER(ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_TYPE = 'FUNCTION' AND LOWER(ROUTINE_NAME) IN ({}) LIMIT {}",
                list.join(","),
                MAX_ROUTINE_NAMES + 1
            );
            let found = self.single_column(&sql).await?;
            for n in &missing {
                let stored = found.as_ref().is_none_or(|f| f.contains(*n));
                self.routines.insert((*n).clone(), stored);
            }
        }
        Ok(names
            .iter()
            .filter(|n| self.routines.get(*n).copied().unwrap_or(true))
            .cloned()
            .collect())
    }

    /// Why `decided` must be refused because it writes a value a stored
    /// function computed, or anything read from a view, where the workload
    /// can read it back (see [`sluice_policy::mask_plan::laundering`]), or
    /// sets a server variable to a value that may carry masked data (see
    /// `variables`), when so.
    pub(super) fn laundering_through(
        &self,
        decided: &SqlDecision,
        unseen: &Unseen,
    ) -> Option<String> {
        if !self.masking.has_column_rules() {
            return None;
        }
        if let Some(why) = self.variable_laundering(decided, unseen) {
            return Some(why);
        }
        if unseen.variables && decided.statements.iter().any(|(s, _)| stores(s)) {
            return Some(
                "statement refused by Sluice: it stores what it reads from user or server variables other than as @name (SHOW USER_VARIABLES, information_schema.USER_VARIABLES, or server variables after a procedure or stored function ran in this session) or from the optimizer trace, which may hold masked values that Sluice cannot mask by their origin".to_string(),
            );
        }
        if !unseen.calls_stored() {
            return None;
        }
        decided.statements.iter().find_map(|(s, _)| {
            if !stores(s) {
                return None;
            }
            // A view's columns are masked whole when read: what it
            // stores from one is not seen through its definition.
            if let Some(view) = s
                .tables
                .iter()
                .map(|t| super::views::unqualified(t))
                .find(|t| unseen.views.contains(t))
            {
                return Some(format!(
                    "statement refused by Sluice: it writes or stores values while reading the view {view:?}, whose columns Sluice masks whole when they are read (it does not plan view definitions), so what it stores could be masked values the workload would read back unmasked; write from the base tables, or read the view without storing what it returns"
                ));
            }
            if unseen.whole {
                return Some("statement refused by Sluice: it writes or stores values while calling a built-in's name where the server may run a stored function of that name instead (a space or comment before `(`, or the name in backticks); write the call as name(…)".to_string());
            }
            let matcher = unseen.matcher.as_ref()?;
            sluice_policy::mask_plan::laundering(&s.ast, matcher)
                .map(|why| format!("statement refused by Sluice: {why}"))
        })
    }

    /// The values of a one-column answer to the sidecar's own `sql`;
    /// `None` when the server answered with an error.
    pub(super) async fn single_column(
        &mut self,
        sql: &str,
    ) -> Result<Option<Vec<String>>, SessionError> {
        self.send_own(sql).await?;
        self.read_single_column().await
    }

    /// Sends one of the sidecar's own queries (its answer is read later,
    /// in order).
    pub(super) async fn send_own(&mut self, sql: &str) -> Result<(), SessionError> {
        let mut q = Vec::with_capacity(sql.len() + 1);
        q.push(COM_QUERY);
        q.extend_from_slice(sql.as_bytes());
        self.up.command(&q).await?;
        Ok(())
    }

    /// The values of the one-column answer the server sends next (to the
    /// sidecar's own query); `None` when it is an error.
    pub(super) async fn read_single_column(&mut self) -> Result<Option<Vec<String>>, SessionError> {
        let head = self.up.read().await?;
        match head.payload.first() {
            Some(0xFF) => return Ok(None),
            Some(0x00) => {
                let ok = OkPacket::parse(&head.payload)?;
                self.track(&ok)?;
                return Ok(Some(Vec::new()));
            }
            _ => {}
        }
        let mut values = Vec::new();
        let end = self
            .read_rows(1, |row| {
                let mut pos = 0;
                if let Some(v) = packet::lenenc_bytes(row, &mut pos)? {
                    values.push(String::from_utf8_lossy(v).into_owned());
                }
                Ok(())
            })
            .await?;
        Ok(end.map(|_| values))
    }

    /// The rest of a result set of the sidecar's own: its `columns` column
    /// definitions, then each row (its payload to `row`) until the OK that
    /// ends them (tracked, and returned) or an ERR (`None`).
    pub(super) async fn read_rows(
        &mut self,
        columns: u64,
        mut row: impl FnMut(&[u8]) -> Result<(), SessionError>,
    ) -> Result<Option<OkPacket>, SessionError> {
        for _ in 0..columns {
            self.up.read().await?;
        }
        loop {
            let r = self.up.read().await?;
            match r.payload.first() {
                Some(0xFE) if r.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&r.payload)?;
                    self.track(&ok)?;
                    return Ok(Some(ok));
                }
                Some(0xFF) => return Ok(None),
                _ => row(&r.payload)?,
            }
        }
    }
}

/// Whether `s` writes or stores what it reads (a write, `CREATE … AS`,
/// `COPY`, `CALL`, `SET`).
fn stores(s: &sluice_policy::sql::Statement) -> bool {
    use sluice_crds::StatementKind as K;
    s.kinds.iter().any(|k| {
        matches!(
            k,
            K::Insert | K::Update | K::Merge | K::Create | K::Copy | K::Call | K::Set
        )
    })
}

/// Whether `text` may read the session's user variables other than as
/// `@name` (which the lineage analysis masks as any table's data): MariaDB's
/// `SHOW USER_VARIABLES` and `information_schema.USER_VARIABLES`, MySQL's
/// `performance_schema.user_variables_by_thread`, whose rows show the
/// values as they are (`SELECT ssn INTO @v …` then `SHOW USER_VARIABLES`
/// gave the SSN). Any spelling of the word counts (more, never less).
pub(super) fn reads_user_variables(text: &str) -> bool {
    gate::contains_ignore_case(text, "user_variables")
}

/// Whether `decided` reads the optimizer trace
/// (`information_schema.OPTIMIZER_TRACE`, under any qualification): while
/// `optimizer_trace` is on, the server writes into it the conditions of
/// the statements it plans with the values it read from const tables
/// (`SELECT t.id FROM t JOIN customers c ON t.q = c.ssn WHERE c.id = 1`
/// put the SSN there), as `EXPLAIN` does, so its rows have no origin to
/// mask by. A text Sluice cannot parse is refused under column masking.
pub(super) fn reads_optimizer_trace(decided: &SqlDecision) -> bool {
    decided.statements.iter().any(|(s, _)| {
        s.tables.iter().any(|t| {
            let last = t.rsplit('.').next().unwrap_or(t);
            last.trim_matches('`')
                .eq_ignore_ascii_case("optimizer_trace")
        })
    })
}

/// Whether `text` may read server (system) variables: `@@name`, `SHOW
/// VARIABLES`, the `…VARIABLES` tables of `information_schema` and
/// `performance_schema`. Asked once a procedure or stored function ran in
/// the session, which may have set one from a masked column.
pub(super) fn reads_server_variables(text: &str) -> bool {
    text.contains("@@") || gate::contains_ignore_case(text, "variables")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_reads_are_found_in_any_spelling() {
        assert!(reads_user_variables("SHOW USER_VARIABLES"));
        assert!(reads_user_variables(
            "select * from INFORMATION_SCHEMA.`User_Variables`"
        ));
        assert!(reads_user_variables(
            "SELECT * FROM performance_schema.user_variables_by_thread"
        ));
        assert!(!reads_user_variables("SELECT @v, user_var FROM t"));
        assert!(reads_server_variables("SELECT @@session.x"));
        assert!(reads_server_variables("show session Variables like 'x%'"));
        assert!(!reads_server_variables("SELECT @v FROM vars"));
        assert!(!gate::contains_ignore_case("abc", "abcd"));
    }
}
