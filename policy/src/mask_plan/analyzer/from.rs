//! `FROM`: tables, joins, derived tables, table functions, and `*` expansion.

use sqlparser::ast::{
    JoinConstraint, SelectItem, SelectItemQualifiedWildcardKind, TableAlias, TableFactor,
    TableWithJoins, WildcardAdditionalOptions,
};

use super::Analyzer;
use crate::mask_plan::lineage::{
    KNOWN_SET_FUNCTIONS, Rel, Scope, Slot, Source, TableRef, Tainted, alias_names, apply_aliases,
    as_uncertain, certain_name, function_name, is_dynamic_sql, is_passthrough, join, norm,
    only_table, schema_table, wildcard_modified,
};

impl<'m> Analyzer<'m> {
    pub(super) fn push_source(&mut self, src: Source) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.sources.push(src);
        }
    }

    pub(super) fn table_with_joins(&mut self, twj: &TableWithJoins) {
        self.table_factor(&twj.relation);
        for join in &twj.joins {
            let constraint = super::query::join_constraint(&join.join_operator);
            if matches!(
                constraint,
                Some(JoinConstraint::Using(_) | JoinConstraint::Natural)
            ) && let Some(scope) = self.scopes.last_mut()
            {
                scope.merged_join = true;
            }
            self.table_factor(&join.relation);
        }
    }

    fn derived_source(&mut self, name: String, alias: Option<&TableAlias>, slots: Vec<Slot>) {
        if !name.is_empty() {
            self.derived_names.insert(name.clone());
        }
        let slots = apply_aliases(slots, &alias_names(alias), |s| self.slots_whole(s));
        self.push_source(Source {
            name,
            schema: None,
            rel: Rel::Derived(slots),
            in_star: true,
        });
    }

    fn function_source(&mut self, fname: &str, arg_taint: Tainted, alias: Option<&TableAlias>) {
        let taint = if is_dynamic_sql(fname) {
            join(arg_taint, self.dynamic(&format!("{fname}()")))
        } else if self.matcher.is_opaque_function(fname) {
            join(
                arg_taint,
                self.dynamic(&format!("user-defined function {fname}()")),
            )
        } else if KNOWN_SET_FUNCTIONS.contains(&fname) {
            arg_taint
        } else {
            join(
                arg_taint,
                self.uncertain(&format!(
                    "the rows of function {fname}() come from an unknown source"
                )),
            )
        };
        // Without an alias PostgreSQL names a function's FROM item after the function.
        let name = alias
            .map(|a| norm(&a.name))
            .unwrap_or_else(|| fname.to_owned());
        let slots = vec![Slot::Opaque {
            taint,
            may_have_origin: false,
        }];
        self.derived_source(name, alias, slots);
    }

    /// A table in `FROM`, known by its alias when it has one.
    fn table_source(&mut self, schema: Option<String>, table: String, alias: Option<&TableAlias>) {
        let mut t = TableRef::new(schema.clone(), table.clone());
        t.renamed = alias_names(alias);
        let (name, schema) = match alias {
            Some(a) => (norm(&a.name), None),
            None => (table, schema),
        };
        self.push_source(Source {
            name,
            schema,
            rel: Rel::Table(t),
            in_star: true,
        });
    }

    pub(super) fn table_factor(&mut self, tf: &TableFactor) {
        if let Some((schema, table, alias)) = only_table(tf) {
            self.table_source(schema, table, alias);
            return;
        }
        match tf {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let (schema, table) = schema_table(name);
                if let Some(slots) = self.lookup_cte(schema.as_deref(), &table) {
                    let alias_name = alias.as_ref().map(|a| norm(&a.name)).unwrap_or(table);
                    let slots =
                        apply_aliases(slots, &alias_names(alias.as_ref()), |s| self.slots_whole(s));
                    self.push_source(Source {
                        name: alias_name,
                        schema: None,
                        rel: Rel::Derived(slots),
                        in_star: true,
                    });
                    return;
                }
                self.table_source(schema, table, alias.as_ref());
            }
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                ..
            } => {
                let fname = function_name(name);
                let t = self.function_args_taint(&fname, &args.args);
                self.function_source(&fname, t, alias.as_ref());
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                let fname = function_name(name);
                let t = self.function_args_taint(&fname, args);
                self.function_source(&fname, t, alias.as_ref());
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                // Without LATERAL a subquery cannot see the FROM items before it.
                let siblings = if *lateral {
                    Vec::new()
                } else {
                    self.scopes
                        .last_mut()
                        .map(|s| std::mem::take(&mut s.sources))
                        .unwrap_or_default()
                };
                let slots = self.query(subquery);
                if let Some(scope) = self.scopes.last_mut()
                    && !*lateral
                {
                    scope.sources = siblings;
                }
                let name = alias.as_ref().map(|a| norm(&a.name)).unwrap_or_default();
                self.derived_source(name, alias.as_ref(), slots);
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                let t = self.taint_of(array_exprs);
                self.function_source("unnest", t, alias.as_ref());
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                self.scopes.push(Scope::default());
                self.table_with_joins(table_with_joins);
                let inner = self.scopes.pop().unwrap_or_default();
                match alias {
                    None => {
                        if let Some(scope) = self.scopes.last_mut() {
                            scope.merged_join |= inner.merged_join;
                            scope.sources.extend(inner.sources);
                        }
                    }
                    Some(a) => {
                        let slots = Self::expand_all(
                            inner.sources.iter().filter(|s| s.in_star).map(|s| &s.rel),
                            inner.merged_join,
                        );
                        self.derived_source(norm(&a.name), Some(a), slots);
                    }
                }
            }
            other => {
                // JSON_TABLE, XMLTABLE, PIVOT, ...: read what they read, and stay uncertain.
                let t = join(
                    self.taint_of(other),
                    self.uncertain("an unsupported FROM item (table function or pivot)"),
                );
                let alias = match other {
                    TableFactor::TableFunction { alias, .. }
                    | TableFactor::JsonTable { alias, .. }
                    | TableFactor::OpenJsonTable { alias, .. }
                    | TableFactor::Pivot { alias, .. }
                    | TableFactor::Unpivot { alias, .. }
                    | TableFactor::MatchRecognize { alias, .. }
                    | TableFactor::XmlTable { alias, .. }
                    | TableFactor::SemanticView { alias, .. } => alias.as_ref(),
                    _ => None,
                };
                let name = alias.map(|a| norm(&a.name)).unwrap_or_default();
                self.derived_source(
                    name,
                    alias,
                    vec![Slot::Opaque {
                        taint: t,
                        may_have_origin: true,
                    }],
                );
            }
        }
    }

    /// The slots `rel.*` expands to.
    fn expand(rel: &Rel) -> Vec<Slot> {
        match rel {
            Rel::Table(t) => vec![Slot::Table(t.clone())],
            Rel::Derived(slots) => slots
                .iter()
                .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                .cloned()
                .collect(),
        }
    }

    /// The slots `*` over these relations expands to. A USING/NATURAL join moves the
    /// merged columns first, so then the positions inside are marked unknown: empty
    /// unknown-width slots around them make every column inside ambiguous.
    fn expand_all<'r>(rels: impl Iterator<Item = &'r Rel>, merged_join: bool) -> Vec<Slot> {
        let marker = || Slot::Opaque {
            taint: None,
            may_have_origin: false,
        };
        let mut slots = Vec::new();
        if merged_join {
            slots.push(marker());
        }
        for rel in rels {
            slots.extend(Self::expand(rel));
        }
        if merged_join {
            slots.push(marker());
        }
        slots
    }

    pub(super) fn select_item(&mut self, item: &SelectItem, out: &mut Vec<Slot>) {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let taint = self.taint_of(e);
                out.push(Slot::Col {
                    name: certain_name(e),
                    taint,
                    passthrough: is_passthrough(e),
                });
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let taint = self.taint_of(expr);
                out.push(Slot::Col {
                    name: Some(norm(alias)),
                    taint,
                    passthrough: is_passthrough(expr),
                });
            }
            SelectItem::ExprWithAliases { expr, aliases } => {
                let taint = self.taint_of(expr);
                for alias in aliases {
                    out.push(Slot::Col {
                        name: Some(norm(alias)),
                        taint: taint.clone(),
                        passthrough: false,
                    });
                }
            }
            SelectItem::Wildcard(opts) => {
                let Some(scope) = self.scopes.last() else {
                    return;
                };
                let merged = scope.merged_join;
                let rels: Vec<Rel> = scope
                    .sources
                    .iter()
                    .filter(|s| s.in_star)
                    .map(|s| s.rel.clone())
                    .collect();
                if rels.is_empty() {
                    out.push(Slot::Opaque {
                        taint: self.uncertain("* with no FROM item"),
                        may_have_origin: true,
                    });
                    return;
                }
                let slots = Self::expand_all(rels.iter(), merged);
                out.extend(self.modified_wildcard(opts, slots));
            }
            SelectItem::QualifiedWildcard(kind, opts) => {
                let slots = match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        let (schema, table) = schema_table(name);
                        let rels: Vec<Rel> = self
                            .find_sources(schema.as_deref(), &table)
                            .map(|s| s.rel.clone())
                            .collect();
                        match rels.as_slice() {
                            [rel] => Self::expand(rel),
                            _ => vec![Slot::Opaque {
                                taint: join(
                                    self.resolve_whole_row(name),
                                    self.uncertain(&format!(
                                        "{table}.* does not name exactly one FROM item"
                                    )),
                                ),
                                may_have_origin: true,
                            }],
                        }
                    }
                    SelectItemQualifiedWildcardKind::Expr(e) => vec![Slot::Opaque {
                        taint: self.taint_of(e),
                        may_have_origin: false,
                    }],
                };
                out.extend(self.modified_wildcard(opts, slots));
            }
        }
    }

    /// `* EXCLUDE (...)` and friends change which columns appear: keep only the taint.
    fn modified_wildcard(&self, opts: &WildcardAdditionalOptions, slots: Vec<Slot>) -> Vec<Slot> {
        if !wildcard_modified(opts) {
            return slots;
        }
        vec![Slot::Opaque {
            taint: as_uncertain(
                self.slots_whole(&slots),
                "* with EXCLUDE/EXCEPT/REPLACE/RENAME",
            ),
            may_have_origin: true,
        }]
    }
}
