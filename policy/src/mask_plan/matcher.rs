//! Masking globs compiled into a [`ColumnMatcher`]: which table columns hold masked values.

use globset::{GlobBuilder, GlobMatcher};

use super::MaskPlanError;

// === impl ColumnMatcher ===

/// One compiled `[schema.]table.column` glob.
#[derive(Debug, Clone)]
struct ColumnGlob {
    schema: Option<GlobMatcher>,
    table: GlobMatcher,
    column: GlobMatcher,
    rule: usize,
}

/// Compiled `table.column` globs, each tagged with the index of the masking rule it came from.
///
/// Matching ignores case, for quoted and unquoted names alike: a glob can then only
/// match more columns than a case-sensitive reading would, never fewer.
#[derive(Debug, Clone, Default)]
pub struct ColumnMatcher {
    globs: Vec<ColumnGlob>,
    /// Functions whose results may hold any table's data (user-defined
    /// functions the catalog found), lower-cased unqualified names.
    opaque_functions: Vec<String>,
    /// Whether the database's casts or operators run user-defined functions
    /// (see [`ColumnMatcher::with_implicit_code`]).
    implicit_code: bool,
}

impl ColumnMatcher {
    /// `globs`: (pattern, rule index). Patterns: `table.column`, `schema.table.column`, `*` globs
    /// per segment; a segment in double quotes is taken literally (it may contain dots).
    /// Errors on an invalid pattern, naming the pattern.
    pub fn new(globs: &[(String, usize)]) -> Result<Self, MaskPlanError> {
        let mut compiled = Vec::with_capacity(globs.len());
        for (pattern, rule) in globs {
            let segments = split_pattern(pattern)?;
            if !(2..=3).contains(&segments.len()) {
                return Err(MaskPlanError::PatternShape {
                    pattern: pattern.clone(),
                    problem: "it needs two or three dot-separated parts",
                });
            }
            let matchers = segments
                .iter()
                .map(|s| compile_segment(pattern, s))
                .collect::<Result<Vec<_>, _>>()?;
            let mut it = matchers.into_iter();
            let glob = match (it.next(), it.next(), it.next()) {
                (Some(table), Some(column), None) => ColumnGlob {
                    schema: None,
                    table,
                    column,
                    rule: *rule,
                },
                (Some(schema), Some(table), Some(column)) => ColumnGlob {
                    schema: Some(schema),
                    table,
                    column,
                    rule: *rule,
                },
                _ => {
                    return Err(MaskPlanError::PatternShape {
                        pattern: pattern.clone(),
                        problem: "it needs two or three dot-separated parts",
                    });
                }
            };
            compiled.push(glob);
        }
        Ok(Self {
            globs: compiled,
            opaque_functions: Vec::new(),
            implicit_code: false,
        })
    }

    /// Whether there are no globs at all (then nothing is ever masked by column).
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// Lowest rule index whose glob matches this column (a `table.column` glob matches any
    /// schema; a `schema.table.column` glob matches when `schema` is unknown, since the
    /// column might live in that schema).
    pub fn match_column(&self, schema: Option<&str>, table: &str, column: &str) -> Option<usize> {
        self.globs
            .iter()
            .filter(|g| {
                schema_matches(g, schema) && g.table.is_match(table) && g.column.is_match(column)
            })
            .map(|g| g.rule)
            .min()
    }

    /// Whether some glob could match some column of this table (used for whole-row references
    /// like row_to_json(c), `SELECT c FROM customers c`, and `*` of unknown width).
    pub fn table_may_have_masked(&self, schema: Option<&str>, table: &str) -> Option<usize> {
        self.globs
            .iter()
            .filter(|g| schema_matches(g, schema) && g.table.is_match(table))
            .map(|g| g.rule)
            .min()
    }

    /// The strongest rule of a `schema.table.column` glob whose schema part
    /// matches `from` but not `to`: renaming schema `from` to `to` would take
    /// the columns it masks out of its sight. `None` when every glob that
    /// names `from` names `to` as well (or none names `from`).
    pub fn schema_rename_unmasks(&self, from: &str, to: &str) -> Option<usize> {
        self.globs
            .iter()
            .filter(|g| {
                g.schema
                    .as_ref()
                    .is_some_and(|s| s.is_match(from) && !s.is_match(to))
            })
            .map(|g| g.rule)
            .min()
    }

    /// This matcher plus exact entries for columns found elsewhere to carry
    /// masked values: a view's columns (see [`plan_view`](super::plan_view)). Each entry is
    /// `(schema, table, column, rule)` and matches that column by name, as
    /// written (case ignored, like globs); glob characters in it are literal. An
    /// empty column matches every column of that table.
    pub fn with_columns(&self, extra: &[(String, String, String, usize)]) -> Self {
        let mut globs = self.globs.clone();
        for (schema, table, column, rule) in extra {
            // A quoted pattern segment: the name taken literally, case ignored.
            let exact = |text: &str| {
                compile_segment(
                    text,
                    &Segment {
                        text: text.to_owned(),
                        quoted: true,
                    },
                )
            };
            // An escaped name always compiles; should it not, the entry
            // becomes a glob for every column of every table of the
            // schema (masking more, never less).
            let any = || {
                compile_segment(
                    "*",
                    &Segment {
                        text: "*".to_owned(),
                        quoted: false,
                    },
                )
            };
            let (Ok(schema_m), Ok(table_m), Ok(column_m)) = (
                exact(schema).or_else(|_| any()),
                exact(table).or_else(|_| any()),
                if column.is_empty() {
                    any()
                } else {
                    exact(column).or_else(|_| any())
                },
            ) else {
                continue;
            };
            globs.push(ColumnGlob {
                schema: Some(schema_m),
                table: table_m,
                column: column_m,
                rule: *rule,
            });
        }
        Self {
            globs,
            opaque_functions: self.opaque_functions.clone(),
            implicit_code: self.implicit_code,
        }
    }

    /// This matcher plus functions whose results may hold data of any table
    /// (user-defined functions: their bodies read what they like, out of the
    /// statement's sight). A value computed by one, or the rows of one in
    /// `FROM`, is masked whole, like `query_to_xml`'s. Names are matched
    /// unqualified, ignoring case, so every function of that name counts.
    pub fn with_functions(&self, names: &[String]) -> Self {
        let mut opaque = self.opaque_functions.clone();
        opaque.extend(names.iter().map(|n| n.to_lowercase()));
        opaque.sort();
        opaque.dedup();
        Self {
            globs: self.globs.clone(),
            opaque_functions: opaque,
            implicit_code: self.implicit_code,
        }
    }

    /// This matcher for a database whose casts or operators run
    /// user-defined functions: any expression but a column, a constant or
    /// a parameter may run one (an implicit cast needs no syntax), whose
    /// body reads what it likes, so every computed value is masked whole,
    /// like a user-defined function's.
    pub fn with_implicit_code(&self) -> Self {
        Self {
            implicit_code: true,
            ..self.clone()
        }
    }

    pub(super) fn implicit_code(&self) -> bool {
        self.implicit_code
    }

    pub(super) fn is_opaque_function(&self, fname: &str) -> bool {
        self.opaque_functions.iter().any(|f| f == fname)
    }

    /// The lowest rule index of all: the rule applied to values whose source cannot be
    /// known at all.
    pub fn strongest_rule(&self) -> Option<usize> {
        self.lowest_rule()
    }

    /// The lowest rule index of all, for values whose source cannot be known at all.
    pub(super) fn lowest_rule(&self) -> Option<usize> {
        self.globs.iter().map(|g| g.rule).min()
    }
}

fn schema_matches(glob: &ColumnGlob, schema: Option<&str>) -> bool {
    match (&glob.schema, schema) {
        (Some(g), Some(s)) => g.is_match(s),
        _ => true,
    }
}

/// A pattern segment: its text and whether it was quoted (then taken literally).
struct Segment {
    text: String,
    quoted: bool,
}

fn split_pattern(pattern: &str) -> Result<Vec<Segment>, MaskPlanError> {
    let shape = |problem| MaskPlanError::PatternShape {
        pattern: pattern.to_owned(),
        problem,
    };
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = pattern.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' if in_quotes => in_quotes = false,
            '"' if current.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => return Err(shape("a quote may only enclose a whole part")),
            '.' if !in_quotes => {
                if current.is_empty() && !quoted {
                    return Err(shape("a part is empty"));
                }
                segments.push(Segment {
                    text: std::mem::take(&mut current),
                    quoted,
                });
                quoted = false;
            }
            _ if quoted && !in_quotes => return Err(shape("text follows a closing quote")),
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(shape("a quote is not closed"));
    }
    if current.is_empty() && !quoted {
        return Err(shape("a part is empty"));
    }
    segments.push(Segment {
        text: current,
        quoted,
    });
    Ok(segments)
}

fn compile_segment(pattern: &str, segment: &Segment) -> Result<GlobMatcher, MaskPlanError> {
    let text = if segment.quoted {
        globset::escape(&segment.text)
    } else {
        segment.text.clone()
    };
    GlobBuilder::new(&text)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| MaskPlanError::PatternGlob {
            pattern: pattern.to_owned(),
            source,
        })
}
