//! Which of the relations a statement names are views, asked of the server
//! right before the statement runs (the server reports a view's columns
//! with the view as their origin, so they are masked whole: see
//! [`results::mask_views`]).
//!
//! The lookup names each relation exactly, as the server will resolve it.
//! For a statement that only reads, up to [`MAX_SHOWS`] relations are
//! asked with one `SHOW CREATE VIEW
//! `<schema>`.`<name>`` each: the server answers a base table (or a
//! sequence) with ER_WRONG_OBJECT ("… is not of type 'VIEW'") from the
//! table's definition alone, and a view with its definition; any other
//! answer (no such relation, no SHOW VIEW privilege, a syntax the session's
//! settings refuse) counts the name as a view. Measured on MariaDB 10.11
//! (server CPU per lookup, on top of a point query's): ~45 µs, of which
//! ~35 µs is any command's own cost (`DO 1`), against ~150 µs for the
//! information_schema lookup below and ~125 µs for `SHOW FULL TABLES …
//! LIKE` (`sidecar/bench/mysql_lookup_cost.py`). A temporary table shadows
//! a view of its name for the statement but not for `SHOW CREATE VIEW`:
//! such a name counts as a view (masked more, never less).
//! `SHOW CREATE VIEW` needs a SELECT privilege on the relation (a
//! column's is enough), which a read has and a write may not: a write's
//! relations are asked below (information_schema shows a table on any
//! privilege).
//!
//! More relations, or a write: one `information_schema.TABLES WHERE TABLE_SCHEMA =
//! <schema> AND TABLE_NAME = <name> AND TABLE_TYPE = 'VIEW'` per candidate,
//! joined with `UNION ALL`. With both names constant, MariaDB (and MySQL)
//! read only that relation's definition file instead of scanning every
//! database (`information_schema.VIEWS WHERE LOWER(TABLE_NAME) IN (…)`
//! did, on every statement); TABLES does less per relation than VIEWS
//! (server CPU measured on MariaDB 10.11: ~115 µs of server CPU per lookup
//! against ~245 µs for VIEWS with the same equalities and ~570 µs for the
//! old query; a point query is ~80 µs). One `=` per name: MariaDB's
//! information_schema lookup with `TABLE_NAME IN ('a', 'b')` used only one
//! of the values.
//!
//! - The schema: the one a name is qualified with, else the statement's
//!   database: the session's current one for a text query, the one current
//!   at COM_STMT_PREPARE for a prepared statement (the server runs it
//!   there). No database and an unqualified name: counted as a view.
//! - The name's case: with `lower_case_table_names` 0 the server resolves
//!   names as written (case sensitive), and Sluice's parser lower-cases
//!   them, so every spelling of the name found in the text is asked for;
//!   otherwise the lower-cased name.
//! - Whatever cannot be asked precisely (no spelling of a name found in
//!   the text, more than [`MAX_CANDIDATES`] candidates or names, more than
//!   [`MAX_SCAN_BYTES`] of text to search, a name of three parts) counts
//!   as a view: its columns are masked whole, never less.
//! - The session's `sql_select_limit` does not apply (an explicit LIMIT),
//!   and a server that answers the lookup with an error has every name
//!   counted as a view.
//!
//! Nothing is cached: another session can replace a table by a view of
//! the same name at any time, a result's column definitions do not tell a
//! view from a table, and nothing the server offers a session changes
//! with another session's DDL before the DDL is done (the global `Com_*`
//! counters are counted as a statement starts, and reading them is a
//! command of its own, which costs most of what `SHOW CREATE VIEW` does).
//! For a statement that only reads, the lookup is written to the server
//! right before the statement, without waiting for its answer (the server
//! answers in order): no round trip is added.

use super::*;

/// The most relations one lookup asks about; past it, every name counts
/// as a view.
pub(super) const MAX_CANDIDATES: usize = 64;

/// The most relations asked about with one `SHOW CREATE VIEW` each (a
/// command costs the server ~45 µs, the information_schema lookup ~150 µs
/// whatever it asks: see the module docs).
pub(super) const MAX_SHOWS: usize = 2;

/// ER_WRONG_OBJECT: `SHOW CREATE VIEW`'s answer for a relation that is not
/// a view.
const WRONG_OBJECT: u16 = 1347;

/// The most bytes of statement text searched for the spellings of the
/// names of one statement (its text's length times its names).
const MAX_SCAN_BYTES: usize = 64 << 20;

/// How the server is asked which relations are views.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// One `SHOW CREATE VIEW` per relation: the command (a COM_QUERY
    /// payload) and the index in [`ViewQuery::names`] of the name it asks
    /// about.
    Shows(Vec<(Vec<u8>, usize)>),
    /// One information_schema lookup (a COM_QUERY payload) whose rows are
    /// the views' names (lower case).
    Union(Vec<u8>),
}

impl Ask {
    /// The commands to send, in order.
    pub fn commands(&self) -> Vec<&[u8]> {
        match self {
            Ask::Shows(shows) => shows.iter().map(|(c, _)| c.as_slice()).collect(),
            Ask::Union(q) => vec![q.as_slice()],
        }
    }
}

/// A COM_QUERY payload for `sql`.
pub(super) fn com_query(sql: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(sql.len() + 1);
    q.push(COM_QUERY);
    q.extend_from_slice(sql.as_bytes());
    q
}

/// An identifier in backticks (which mean the same under every sql_mode).
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// What the server is asked about the relations a statement names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ViewQuery {
    /// The lookup, when anything is asked.
    pub ask: Option<Ask>,
    /// Names (lower case, unqualified) counted as views without asking.
    pub assumed: Vec<String>,
    /// Every name the statement reads (lower case, unqualified): all of
    /// them count as views when the server answers the lookup with an
    /// error.
    pub names: Vec<String>,
}

/// The last part of a normalised relation name (lower case).
pub(super) fn unqualified(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches('`')
        .to_lowercase()
}

/// The relations a lookup asks about: `(schema, name as the server
/// resolves it, index in `tables`)`, sorted and deduplicated; and the
/// indexes of the names that cannot be asked precisely. `None`: too many
/// names, candidates or bytes of text to search (see the module docs).
pub(super) type Candidates = (Vec<(String, String, usize)>, Vec<usize>);

/// The candidates for the relations `tables` (as Sluice's parser reports
/// them: lower case, qualified as written) of a statement whose texts are
/// `texts`, run in `database`; `lower_case` as the server's
/// `lower_case_table_names` says (see the module docs).
pub(super) fn candidates(
    tables: &[&str],
    texts: &[&str],
    database: Option<&str>,
    lower_case: bool,
) -> Option<Candidates> {
    // Bounded work: past this many names, or this much text to search for
    // them, nothing is asked.
    let text_bytes: usize = texts.iter().map(|t| t.len()).sum();
    if tables.len() > MAX_CANDIDATES || text_bytes.saturating_mul(tables.len()) > MAX_SCAN_BYTES {
        return None;
    }
    let mut assumed = Vec::new();
    let mut candidates: Vec<(String, String, usize)> = Vec::new();
    let spellings = |part: &str| -> Vec<String> {
        let found = spellings(texts, part);
        if lower_case {
            let mut lower: Vec<String> = found.iter().map(|s| s.to_lowercase()).collect();
            lower.sort();
            lower.dedup();
            lower
        } else {
            found
        }
    };
    for (i, table) in tables.iter().enumerate() {
        let parts: Vec<&str> = table.split('.').collect();
        let mut found = Vec::new();
        match parts.as_slice() {
            [t] => {
                if let Some(db) = database {
                    for t in spellings(t) {
                        found.push((db.to_string(), t, i));
                    }
                }
            }
            [schema, t] => {
                // The whole name as one identifier (`a.b` in backticks) in
                // the statement's database.
                if let Some(db) = database {
                    for quoted in spellings(&format!("`{table}`")) {
                        found.push((db.to_string(), quoted.trim_matches('`').to_string(), i));
                    }
                }
                for s in spellings(schema) {
                    for t in spellings(t) {
                        found.push((s.clone(), t, i));
                    }
                }
            }
            _ => {
                assumed.push(i);
                continue;
            }
        }
        if found.is_empty() {
            assumed.push(i);
        }
        candidates.extend(found);
    }
    candidates.sort();
    candidates.dedup();
    (candidates.len() <= MAX_CANDIDATES).then_some((candidates, assumed))
}

/// The plane's one lookup shape: for each `(schema, name)`, `SELECT
/// <column> FROM information_schema.TABLES WHERE TABLE_SCHEMA = <schema>
/// AND TABLE_NAME = <name> <filter>`, joined with `UNION ALL`, with an
/// explicit LIMIT. `column` is given the candidate's index in the list.
pub(super) fn lookup<'a>(
    candidates: impl Iterator<Item = (&'a str, &'a str)>,
    column: impl Fn(usize) -> String,
    filter: &str,
) -> Option<String> {
    let selects: Vec<String> = candidates
        .enumerate()
        .map(|(i, (s, t))| {
            format!(
                "SELECT {} FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}{filter}",
                column(i),
                literal(s),
                literal(t)
            )
        })
        .collect();
    (!selects.is_empty()).then(|| {
        format!(
            "{} LIMIT {}",
            selects.join(" UNION ALL "),
            MAX_CANDIDATES + 1
        )
    })
}

/// The views lookup for the relations `tables` of a statement whose texts
/// are `texts`, run in `database` (see [`candidates`]).
#[cfg(test)]
pub(super) fn view_query(
    tables: &[&str],
    texts: &[&str],
    database: Option<&str>,
    lower_case: bool,
) -> ViewQuery {
    view_query_with(tables, texts, database, lower_case, MAX_SHOWS)
}

/// [`view_query`] with at most `max_shows` relations asked with `SHOW
/// CREATE VIEW` (0: always the information_schema lookup).
fn view_query_with(
    tables: &[&str],
    texts: &[&str],
    database: Option<&str>,
    lower_case: bool,
    max_shows: usize,
) -> ViewQuery {
    let names: Vec<String> = tables.iter().map(|t| unqualified(t)).collect();
    let Some((candidates, assumed)) = candidates(tables, texts, database, lower_case) else {
        return ViewQuery {
            ask: None,
            assumed: names.clone(),
            names,
        };
    };
    let mut assumed: Vec<String> = assumed.into_iter().map(|i| names[i].clone()).collect();
    assumed.sort();
    assumed.dedup();
    if candidates.len() <= max_shows {
        let shows = candidates
            .iter()
            .map(|(s, t, i)| {
                let sql = format!("SHOW CREATE VIEW {}.{}", quoted(s), quoted(t));
                (com_query(&sql), *i)
            })
            .collect::<Vec<_>>();
        return ViewQuery {
            ask: (!shows.is_empty()).then_some(Ask::Shows(shows)),
            assumed,
            names,
        };
    }
    let mut pairs: Vec<(&str, &str)> = candidates
        .iter()
        .map(|(s, t, _)| (s.as_str(), t.as_str()))
        .collect();
    pairs.dedup();
    let sql = lookup(
        pairs.into_iter(),
        |_| "LOWER(TABLE_NAME)".into(),
        " AND TABLE_TYPE = 'VIEW'",
    );
    ViewQuery {
        ask: sql.map(|q| Ask::Union(com_query(&q))),
        assumed,
        names,
    }
}

/// A string literal for `value` that reads the same under every sql_mode
/// and character set: its UTF-8 bytes in hex, introduced as utf8mb3 (the
/// character set of information_schema's names).
pub(super) fn literal(value: &str) -> String {
    format!("_utf8mb3 X'{}'", hex::encode(value.as_bytes()))
}

/// Every spelling in `texts` of the identifier `lower` (lower case): the
/// words equal to it but for ASCII case, sorted, deduplicated. A word is
/// bounded by characters that cannot be part of an unquoted identifier.
fn spellings(texts: &[&str], lower: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = lower.as_bytes();
    if needle.is_empty() {
        return out;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    for text in texts {
        let b = text.as_bytes();
        let mut i = 0;
        while i + needle.len() <= b.len() {
            let end = i + needle.len();
            if b[i..end].eq_ignore_ascii_case(needle)
                && (i == 0 || !word(b[i - 1]) || !word(needle[0]))
                && (end == b.len() || !word(b[end]) || !word(needle[needle.len() - 1]))
                && let Some(s) = text.get(i..end)
            {
                out.push(s.to_string());
                i = end;
                continue;
            }
            i += 1;
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Session<'_> {
    /// The lookup for the relations `decided` reads, run in `database`;
    /// `SHOW CREATE VIEW` only for a statement that only `reads`: it needs
    /// a SELECT privilege on the relation (a column's is enough), which a
    /// read has and a write may not (an INSERT-only table would count as
    /// a view, and the write be refused as storing what a view reads).
    pub(super) fn view_query(
        &self,
        decided: &SqlDecision,
        database: Option<&str>,
        reads: bool,
    ) -> ViewQuery {
        let tables: Vec<&str> = decided
            .statements
            .iter()
            .flat_map(|(s, _)| s.tables.iter().map(String::as_str))
            .collect();
        let texts: Vec<&str> = decided
            .statements
            .iter()
            .map(|(s, _)| s.text.as_str())
            .collect();
        let shows = if reads { MAX_SHOWS } else { 0 };
        view_query_with(
            &tables,
            &texts,
            database,
            self.settings.lower_case_names,
            shows,
        )
    }

    /// Which of the relations `decided` reads (run in `database`) are
    /// views, asked of the server now (see the module docs).
    pub(super) async fn views(
        &mut self,
        decided: &SqlDecision,
        database: Option<&str>,
    ) -> Result<Vec<String>, SessionError> {
        let query = self.view_query(decided, database, false);
        if let Some(ask) = &query.ask {
            self.up.commands(&ask.commands()).await?;
        }
        self.views_answer(query).await
    }

    /// The answer to a lookup (already sent when it asks anything).
    pub(super) async fn views_answer(
        &mut self,
        query: ViewQuery,
    ) -> Result<Vec<String>, SessionError> {
        let mut views = query.assumed;
        match query.ask {
            None => {}
            Some(Ask::Union(_)) => match self.read_single_column().await? {
                Some(found) => views.extend(found),
                None => views.extend(query.names),
            },
            Some(Ask::Shows(shows)) => {
                for (_, i) in shows {
                    if self.read_shown_view().await? {
                        views.push(query.names[i].clone());
                    }
                }
            }
        }
        views.sort();
        views.dedup();
        Ok(views)
    }

    /// The server's answer to a `SHOW CREATE VIEW`, read whole: `false`
    /// only when it says the relation is not a view (ER_WRONG_OBJECT); a
    /// view's definition, or any other answer, counts as a view.
    async fn read_shown_view(&mut self) -> Result<bool, SessionError> {
        let head = self.up.read().await?;
        match head.payload.first() {
            Some(0xFF) => return Ok(packet::parse_err(&head.payload).0 != WRONG_OBJECT),
            Some(0x00) => {
                let ok = OkPacket::parse(&head.payload)?;
                self.track(&ok)?;
                return Ok(true);
            }
            _ => {}
        }
        // Column definitions, then rows until the OK (or ERR) that ends them.
        let mut pos = 0;
        let columns = packet::lenenc_int(&head.payload, &mut pos)?.unwrap_or(0);
        self.read_rows(columns, |_| Ok(())).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_are_found_as_written() {
        let texts = ["SELECT * FROM Vy JOIN vy ON 1 JOIN `VY` x, avy, vya, db.Vy"];
        assert_eq!(spellings(&texts, "vy"), vec!["VY", "Vy", "vy"]);
        assert!(spellings(&texts, "zz").is_empty());
        assert_eq!(spellings(&["select 1 from `a.B`"], "`a.b`"), vec!["`a.B`"]);
    }

    /// The text of an information_schema lookup.
    fn union(q: &ViewQuery) -> String {
        match &q.ask {
            Some(Ask::Union(sql)) => String::from_utf8(sql[1..].to_vec()).unwrap(),
            other => panic!("not one lookup: {other:?}"),
        }
    }

    /// The texts of `SHOW CREATE VIEW` lookups and the names they ask for.
    fn shows(q: &ViewQuery) -> Vec<(String, &str)> {
        match &q.ask {
            Some(Ask::Shows(shows)) => shows
                .iter()
                .map(|(c, i)| {
                    (
                        String::from_utf8(c[1..].to_vec()).unwrap(),
                        q.names[*i].as_str(),
                    )
                })
                .collect(),
            other => panic!("not SHOW CREATE VIEW: {other:?}"),
        }
    }

    #[test]
    fn a_few_relations_are_each_one_show_create_view() {
        let q = view_query(
            &["other.v", "t"],
            &["SELECT * FROM Other.V, t"],
            Some("Sh`op"),
            false,
        );
        assert_eq!(
            shows(&q),
            vec![
                ("SHOW CREATE VIEW `Other`.`V`".to_string(), "v"),
                ("SHOW CREATE VIEW `Sh``op`.`t`".to_string(), "t"),
            ]
        );
        assert!(q.assumed.is_empty());
        // Every command is a COM_QUERY.
        let Some(ask) = &q.ask else { panic!() };
        assert!(ask.commands().iter().all(|c| c[0] == COM_QUERY));
        // lower_case_table_names: the lower-cased names.
        let q = view_query(&["t"], &["SELECT * FROM T"], Some("shop"), true);
        assert_eq!(shows(&q)[0].0, "SHOW CREATE VIEW `shop`.`t`");
        // Nothing to ask.
        let q = view_query(&[], &["SELECT 1"], Some("shop"), false);
        assert_eq!(q.ask, None);
    }

    #[test]
    fn each_candidate_is_one_equality_with_its_schema() {
        let q = view_query(
            &["other.v", "t"],
            &["SELECT * FROM Other.V, T, t"],
            Some("Shop"),
            false,
        );
        let sql = union(&q);
        let lit = |s: &str| literal(s);
        for (s, t) in [("Other", "V"), ("Shop", "T"), ("Shop", "t")] {
            let one = format!("TABLE_SCHEMA = {} AND TABLE_NAME = {}", lit(s), lit(t));
            assert!(sql.contains(&one), "{s}.{t}: {sql}");
        }
        assert_eq!(sql.matches("UNION ALL").count(), 2, "{sql}");
        assert!(sql.ends_with("LIMIT 65"), "{sql}");
        assert!(!sql.contains(" IN "), "{sql}");
        assert!(q.assumed.is_empty());
        // lower_case_table_names: the lower-cased names.
        let q = view_query(
            &["t", "u", "w"],
            &["SELECT * FROM T, U, W"],
            Some("shop"),
            true,
        );
        assert!(union(&q).contains(&lit("t")));
    }

    #[test]
    fn what_cannot_be_asked_counts_as_a_view() {
        // No database for an unqualified name.
        let q = view_query(&["t"], &["SELECT * FROM t"], None, false);
        assert_eq!((q.ask, q.assumed), (None, vec!["t".to_string()]));
        // No spelling of the name in the text (an escaped backtick).
        let q = view_query(&["a`b"], &["SELECT * FROM `a``b`"], Some("d"), false);
        assert_eq!(q.assumed, vec!["a`b".to_string()]);
        // One identifier holding a dot: asked for as such too.
        let q = view_query(&["a.b"], &["SELECT * FROM `A.b`, a.b"], Some("d"), false);
        let sql = union(&q);
        assert!(
            sql.contains(&literal("A.b")) && sql.contains(&literal("a")),
            "{sql}"
        );
        let q = view_query(&["a.b"], &["SELECT * FROM `a.b`, a.b"], Some("d"), false);
        let asked: Vec<String> = shows(&q).into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            asked,
            vec!["SHOW CREATE VIEW `a`.`b`", "SHOW CREATE VIEW `d`.`a.b`"]
        );
        // Three parts.
        let q = view_query(&["a.b.c"], &["SELECT * FROM a.b.c"], Some("d"), false);
        assert_eq!(q.assumed, vec!["c".to_string()]);
        // Too many candidates.
        let many: Vec<String> = (0..70).map(|i| format!("t{i}")).collect();
        let tables: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = many.join(", ");
        let q = view_query(&tables, &[&text], Some("d"), false);
        assert_eq!(q.ask, None);
        assert_eq!(q.assumed.len(), 70);
        // Too much text to search.
        let long = format!("SELECT * FROM t, u /*{}*/", " ".repeat(40 << 20));
        let q = view_query(&["t", "u"], &[&long], Some("d"), false);
        assert_eq!((q.ask, q.assumed.len()), (None, 2));
    }

    #[test]
    fn literals_hold_any_name() {
        assert_eq!(literal("a'b\\"), "_utf8mb3 X'6127625c'");
    }
}
