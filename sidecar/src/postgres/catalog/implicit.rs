//! User-defined code that runs without a statement naming it or a table it
//! names: through the type system and the server's own hooks. `SELECT
//! 5::d` runs the functions of the domain `d`'s checks; `SELECT
//! ROW(1)::t::int` the function of a cast; `SELECT 1 ### 2` the function of
//! an operator (and of its selectivity estimators); any DDL the functions of
//! event triggers; an `ORDER BY` or a `GROUP BY` an operator class's support
//! functions; an `INSERT` a domain's default. No word of the statement
//! shows them, and an implicit cast runs with no syntax at all, so the
//! database's every such function is taken as run by every statement but
//! a `SET` or transaction control (`PolicySet::through_relations`,
//! [`IMPLICIT_CODE`]): a body that writes `customers` under a rule that
//! denies it refuses every statement while it is there; and when the
//! functions of casts or operators may compute a result's values, every
//! computed result column is masked whole under column masking
//! (`ColumnMatcher::with_implicit_code`).
//!
//! Read once per session and catalog change, with the other names
//! (`Catalog::forget_names`); their bodies are read again on each
//! statement, as every user-defined function's are.
//!
//! [`IMPLICIT_CODE`]: sluice_policy::engine::IMPLICIT_CODE

use super::{Catalog, CatalogError, user_defined_function};

/// The most functions run this way that are read; more refuses the
/// statements that would run them (they cannot all be followed).
const MAX_IMPLICIT: usize = 1_000;

/// A user-defined function the database runs without a statement naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implicit {
    /// What runs it, as the server describes it (`cast from t to integer`,
    /// `operator ###(integer,integer)`, `constraint d_check on type d`).
    pub what: String,
    /// The function (unqualified, lower case).
    pub function: String,
    /// Whether its result may become a value a statement returns (a cast's
    /// or an operator's function). A domain's default is stored, not
    /// returned; a type's output function is C, a superuser's code.
    pub values: bool,
}

/// The lookup: every user-defined function (as `Catalog::user_functions`
/// counts them) that a cast, an operator, a type (a domain's default, a
/// range's difference, input and output), a domain's check, an event
/// trigger, an operator class or a transform depends on.
fn implicit_sql() -> String {
    let classes = |names: &[&str]| {
        names
            .iter()
            .map(|c| format!("'pg_catalog.{c}'::pg_catalog.regclass"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), \
           pg_catalog.lower(p.proname::text), \
           CASE WHEN d.classid IN ({values}) THEN 'v' ELSE '' END \
         FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_proc p ON d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
           AND p.oid = d.refobjid \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
         WHERE {user} AND (d.classid IN ({values}, {others}) \
           OR (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND EXISTS (SELECT 1 \
             FROM pg_catalog.pg_constraint c WHERE c.oid = d.objid AND c.contypid <> 0))) \
         LIMIT {limit}",
        values = classes(&["pg_cast", "pg_operator"]),
        others = classes(&[
            "pg_type",
            "pg_event_trigger",
            "pg_amproc",
            "pg_amop",
            "pg_transform"
        ]),
        user = user_defined_function("p", "pn"),
        limit = MAX_IMPLICIT + 1,
    )
}

impl Catalog {
    /// The user-defined functions the database runs without a statement
    /// naming them (see the module docs), from this session's cache or
    /// read. `Err` when they cannot be read, or there are too many.
    pub async fn implicit_code(&mut self) -> Result<Vec<Implicit>, CatalogError> {
        if let Some(known) = &self.implicit {
            return Ok(known.clone());
        }
        let rows = self.query(&implicit_sql()).await?;
        if rows.len() > MAX_IMPLICIT {
            return Err(CatalogError::Unknowable(format!(
                "a statement may run: the database has more than {MAX_IMPLICIT} user-defined functions that casts, operators, domains, event triggers or operator classes run"
            )));
        }
        let mut found: Vec<Implicit> = rows
            .into_iter()
            .filter_map(|row| {
                let [Some(what), Some(function), values] =
                    <[Option<String>; 3]>::try_from(row).ok()?
                else {
                    return None;
                };
                Some(Implicit {
                    what,
                    function,
                    values: values.as_deref() == Some("v"),
                })
            })
            .collect();
        found.sort_by(|a, b| (&a.function, &a.what).cmp(&(&b.function, &b.what)));
        self.revised();
        self.implicit = Some(found.clone());
        Ok(found)
    }

    /// [`Catalog::implicit_code`] from the cache only.
    pub fn implicit_cached(&self) -> Option<&[Implicit]> {
        self.implicit.as_deref()
    }

    /// Whether this session found that the database runs no user-defined
    /// function implicitly (`false` when not looked up yet).
    pub fn no_implicit_code(&self) -> bool {
        self.implicit.as_ref().is_some_and(Vec::is_empty)
    }

    /// Whether the functions the database runs implicitly may compute a
    /// value a statement returns (`None`: not looked up yet).
    pub fn implicit_values(&self) -> Option<bool> {
        self.implicit
            .as_ref()
            .map(|found| found.iter().any(|i| i.values))
    }
}
