//! Function rules through user-defined functions: `SELECT f()`, where `f`
//! is `CREATE FUNCTION f() … AS $$ SELECT pg_read_file(…) $$`, runs
//! `pg_read_file`. When a rule that denies or holds names functions, the
//! bodies of the user-defined functions a statement calls (and the views it
//! reads call) are read (`pg_get_functiondef`), and every word in them
//! counts as a function they may call: a rule naming `pg_read_file` (or
//! `lo_*`) matches a function whose body mentions it anywhere (in SQL, in a
//! string, in a comment): more is refused, never less. Words that are
//! themselves user-defined functions are followed in turn.
//!
//! What cannot be told refuses the statement (fail closed): a body in
//! another language than `sql` or `plpgsql` (C, Python, Perl: what it
//! calls is not in its text), a `plpgsql` body that runs SQL built at run
//! time (`EXECUTE`), a body that mentions a built-in running SQL given as
//! text (`query_to_xml`, …: the text may be built), a body spelling names
//! with Unicode escapes (`U&"…"`: no word shows the name), an aggregate or window
//! function (its support functions are not followed), bodies nested
//! deeper than [`MAX_FUNCTION_DEPTH`] or too large.
//!
//! Names that are no user-defined function (built-ins, an extension's) are
//! kept for the session; the bodies of user-defined ones are read again on
//! every statement that calls them (any session can replace one).

use std::collections::{HashMap, HashSet};

use sluice_policy::engine::{Reach, code_words};

use super::{Catalog, CatalogError, user_defined_function, values_list};

/// How deep user-defined functions calling user-defined functions are
/// followed; deeper refuses the statement.
const MAX_FUNCTION_DEPTH: usize = 8;

/// The most words of one function's definitions; more refuses the
/// statement.
const MAX_WORDS: usize = 10_000;

/// What the user-defined functions of one name (every overload) may call.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// No user-defined function has the name (a built-in, an extension's,
    /// or none).
    NotUser,
    /// The words of their definitions, lower case: each a name they may
    /// call.
    Words(Vec<String>),
    /// Why what they call cannot be told.
    Opaque(String),
}

/// The unqualified name of a function as the SQL classifier gives it, lower
/// case (the key of [`Catalog::bodies`], and how the sessions compare
/// function names).
pub fn function_key(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches('"')
        .to_lowercase()
}

/// What one definition (`lanname`, `prokind`, `pg_get_functiondef`) may
/// call.
fn body(kind: &str, language: &str, definition: Option<&str>) -> Body {
    let Some(definition) = definition.filter(|_| matches!(kind, "f" | "p")) else {
        return Body::Opaque("is an aggregate or window function".into());
    };
    if !matches!(language, "sql" | "plpgsql") {
        return Body::Opaque(format!("is written in {language}"));
    }
    // `pg_get_functiondef`'s own header is no statement the body runs.
    let definition = ["CREATE OR REPLACE FUNCTION", "CREATE OR REPLACE PROCEDURE"]
        .iter()
        .find_map(|header| definition.trim_start().strip_prefix(header))
        .unwrap_or(definition);
    let words = code_words(definition);
    if words.len() > MAX_WORDS {
        return Body::Opaque("has too large a definition".into());
    }
    // `U&"\0070g_read_file"` names a function no word shows.
    if definition.to_ascii_lowercase().contains("u&") {
        return Body::Opaque("spells names with Unicode escapes (U&)".into());
    }
    if language == "plpgsql" && words.iter().any(|w| w == "execute") {
        return Body::Opaque("runs SQL built at run time (EXECUTE)".into());
    }
    if let Some(f) = words.iter().find(|w| {
        sluice_policy::sql::SQL_TEXT_FUNCTIONS
            .iter()
            .any(|t| t.name == *w)
    }) {
        return Body::Opaque(format!("calls {f}, which runs SQL given as text"));
    }
    Body::Words(words)
}

impl Catalog {
    /// What each of `functions` (names as the SQL classifier gives them)
    /// may call through user-defined functions ([`Reach::functions`]:
    /// (user-defined function, word of its definition)), keyed by the name
    /// as given; names of no user-defined function reach nothing. `Err`
    /// when what one calls cannot be told (see the module docs).
    pub async fn called_through_functions(
        &mut self,
        functions: &[String],
    ) -> Result<HashMap<String, Reach>, CatalogError> {
        let mut wanted: Vec<String> = functions.iter().map(|f| function_key(f)).collect();
        let mut seen: HashSet<String> = HashSet::new();
        let mut depth = 0;
        while !wanted.is_empty() {
            wanted.retain(|k| seen.insert(k.clone()));
            if wanted.is_empty() {
                break;
            }
            if depth > MAX_FUNCTION_DEPTH {
                return Err(CatalogError::Unknowable(format!(
                    "functions {} call: user-defined functions are nested more than {MAX_FUNCTION_DEPTH} deep",
                    functions.join(", ")
                )));
            }
            // A user-defined function's body can be replaced at any time.
            for key in &wanted {
                if !matches!(self.bodies.get(key), Some(Body::NotUser)) {
                    self.revised();
                    self.bodies.remove(key);
                }
            }
            self.read_bodies(&wanted).await?;
            wanted = wanted
                .iter()
                .filter_map(|k| match self.bodies.get(k) {
                    Some(Body::Words(w)) => Some(w),
                    _ => None,
                })
                .flatten()
                .filter(|w| !seen.contains(*w))
                .cloned()
                .collect();
            wanted.sort();
            wanted.dedup();
            depth += 1;
        }
        self.called_cached(functions).unwrap_or_else(|| {
            Err(CatalogError::Unknowable(format!(
                "{} call: user-defined functions are nested too deep",
                functions.join(", ")
            )))
        })
    }

    /// [`Catalog::called_through_functions`] from what this session read
    /// already, without a lookup: `None` when a body is not in the cache.
    pub fn called_cached(
        &self,
        functions: &[String],
    ) -> Option<Result<HashMap<String, Reach>, CatalogError>> {
        let mut out = HashMap::new();
        for name in functions {
            let mut reach = Reach::default();
            let mut todo = vec![function_key(name)];
            let mut done: HashSet<String> = HashSet::new();
            while let Some(key) = todo.pop() {
                if !done.insert(key.clone()) {
                    continue;
                }
                match self.bodies.get(&key)? {
                    Body::NotUser => {}
                    Body::Words(words) => {
                        for w in words {
                            reach.functions.push((key.clone(), w.clone()));
                            todo.push(w.clone());
                        }
                    }
                    Body::Opaque(why) => {
                        return Some(Err(CatalogError::Unknowable(format!(
                            "{name} calls: the user-defined function {key} {why}"
                        ))));
                    }
                }
            }
            if !reach.functions.is_empty() {
                out.insert(name.clone(), reach);
            }
        }
        Some(Ok(out))
    }

    /// Whether every one of `functions` was found, in this session, to be
    /// no user-defined function: then they reach nothing, and nothing need
    /// be looked up.
    pub fn no_user_functions(&self, functions: &[String]) -> bool {
        functions
            .iter()
            .all(|f| matches!(self.bodies.get(&function_key(f)), Some(Body::NotUser)))
    }

    /// Reads the definitions of the user-defined functions of the names
    /// `keys` not in the cache (one query).
    async fn read_bodies(&mut self, keys: &[String]) -> Result<(), CatalogError> {
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !self.bodies.contains_key(*k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.revised();
        let values = values_list(missing.iter().map(|n| vec![n.as_str()]));
        // As `Catalog::user_functions`: outside the system schemas and no
        // extension's; names compared ignoring case (more, never fewer).
        let sql = format!(
            "SELECT q.name, p.prokind::text, l.lanname::text, \
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid) END \
             FROM (VALUES {values}) AS q(name) \
             JOIN pg_catalog.pg_proc p ON pg_catalog.lower(p.proname) = pg_catalog.lower(q.name) \
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
             WHERE {user}",
            user = user_defined_function("p", "n"),
        );
        let rows = self.query(&sql).await?;
        for key in &missing {
            self.bodies.insert((*key).clone(), Body::NotUser);
        }
        for row in rows {
            let [Some(name), Some(kind), Some(language), definition] =
                <[Option<String>; 4]>::try_from(row).unwrap_or_default()
            else {
                continue;
            };
            let found = body(&kind, &language, definition.as_deref());
            let merged = match (self.bodies.remove(&name), found) {
                (Some(Body::Opaque(why)), _) | (_, Body::Opaque(why)) => Body::Opaque(why),
                (Some(Body::Words(mut a)), Body::Words(b)) => {
                    a.extend(b);
                    a.sort();
                    a.dedup();
                    Body::Words(a)
                }
                (_, found) => found,
            };
            self.bodies.insert(name, merged);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_give_their_words_or_why_not() {
        let Body::Words(w) = body(
            "f",
            "sql",
            Some("CREATE FUNCTION public.f() RETURNS text AS $$ SELECT pg_read_file('x') $$"),
        ) else {
            panic!("an SQL body is read");
        };
        assert!(w.contains(&"pg_read_file".to_string()), "{w:?}");
        // The word a dollar quote's tag touches is a word of its own.
        let Body::Words(w) = body(
            "f",
            "sql",
            Some(
                "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $function$DELETE FROM t RETURNING 1$function$",
            ),
        ) else {
            panic!("an SQL body is read");
        };
        assert!(w.contains(&"delete".to_string()), "{w:?}");
        for (kind, language, definition) in [
            ("f", "plpythonu", Some("plpy.execute('select 1')")),
            ("a", "internal", None),
            ("f", "plpgsql", Some("BEGIN EXECUTE 'select ' || x; END")),
            (
                "f",
                "sql",
                Some("SELECT query_to_xml('select 1', true, true, '')"),
            ),
            ("f", "sql", Some(r#"SELECT U&"\0070g_read_file"('x')"#)),
        ] {
            assert!(
                matches!(body(kind, language, definition), Body::Opaque(_)),
                "{kind} {language} {definition:?}"
            );
        }
        assert_eq!(function_key("Public.\"F\""), "f");
    }
}
