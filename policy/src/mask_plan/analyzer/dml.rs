//! Statements: queries, `INSERT`/`UPDATE`/`DELETE`/`MERGE ... RETURNING` and what they write.

use sqlparser::ast::{
    Assignment, Insert, OnConflictAction, OnInsert, OutputClause, SelectItem, Statement,
    TableFactor, TableObject,
};

use super::{Analyzer, assignment_columns};
use crate::mask_plan::lineage::{
    Rel, Scope, Shape, Slot, Source, TableRef, Tainted, join_into, name_parts, norm, schema_table,
};

impl<'m> Analyzer<'m> {
    // --- statements ---

    pub(in crate::mask_plan) fn statement(&mut self, stmt: &Statement) -> Shape {
        match stmt {
            Statement::Query(q) => Shape::Rows(self.query(q)),
            Statement::Insert(ins) => self.insert(ins),
            Statement::Update(up) => {
                self.scopes.push(Scope::default());
                self.table_with_joins(&up.table);
                if let Some(from) = &up.from {
                    let (sqlparser::ast::UpdateTableFromKind::BeforeSet(v)
                    | sqlparser::ast::UpdateTableFromKind::AfterSet(v)) = from;
                    for twj in v {
                        self.table_with_joins(twj);
                    }
                }
                self.record_assignments(up.assignments.iter());
                self.scan_effects(&up.selection);
                let shape = self.returning_in_scope(up.returning.as_deref(), up.output.as_ref());
                self.scopes.pop();
                shape
            }
            Statement::Delete(del) => {
                self.scopes.push(Scope::default());
                let (sqlparser::ast::FromTable::WithFromKeyword(from)
                | sqlparser::ast::FromTable::WithoutKeyword(from)) = &del.from;
                for twj in from {
                    self.table_with_joins(twj);
                }
                if let Some(using) = &del.using {
                    for twj in using {
                        self.table_with_joins(twj);
                    }
                }
                self.scan_effects(&del.selection);
                let shape = self.returning_in_scope(del.returning.as_deref(), del.output.as_ref());
                self.scopes.pop();
                shape
            }
            Statement::Merge(m) => {
                self.scopes.push(Scope::default());
                self.table_factor(&m.table);
                self.table_factor(&m.source);
                let t = self.taint_of(&m.clauses);
                self.scan_effects(&m.on);
                let (_, table) = match &m.table {
                    TableFactor::Table { name, .. } => schema_table(name),
                    _ => (None, String::new()),
                };
                self.note_write(&format!("MERGE INTO {table} writes"), &t);
                if let Some(Source {
                    rel: Rel::Table(target),
                    ..
                }) = self.scopes.last_mut().and_then(|s| s.sources.first_mut())
                {
                    join_into(&mut target.written_all, t);
                }
                let shape = self.returning_in_scope(None, m.output.as_ref());
                self.scopes.pop();
                shape
            }
            // Custom settings (names with a dot) can carry values set from
            // masked columns by code Sluice does not see (a function's
            // `set_config`), as `current_setting` of them can; `SHOW ALL`
            // lists them too.
            Statement::ShowVariable { variable } if shows_custom_setting(variable) => {
                Shape::External(
                    "SHOW of a custom setting, which can carry values set from masked columns",
                )
            }
            Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCreate { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowObjects(_)
            | Statement::ShowCatalogs { .. } => Shape::Metadata,
            Statement::Fetch { .. } => {
                Shape::External("FETCH returns rows of a cursor declared by an earlier statement")
            }
            Statement::Execute { .. } => Shape::External(
                "EXECUTE runs a statement prepared earlier, whose text is not known here",
            ),
            Statement::Call(_) => {
                Shape::External("CALL may return rows of queries inside a procedure")
            }
            _ => Shape::Unknown,
        }
    }

    /// `INSERT`: what the source writes into which columns of the target, then
    /// `ON CONFLICT`/`ON DUPLICATE KEY` assignments and `RETURNING`.
    fn insert(&mut self, ins: &Insert) -> Shape {
        let TableObject::TableName(name) = &ins.table else {
            return Shape::Unknown;
        };
        let (schema, table) = schema_table(name);
        let mut target = TableRef::new(schema.clone(), table.clone());
        if let Some(source) = &ins.source {
            let slots = self.query(source);
            let cols: Vec<String> = ins
                .columns
                .iter()
                .filter_map(|c| name_parts(c).pop())
                .collect();
            let placed: Option<Vec<Tainted>> = slots
                .iter()
                .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                .map(|s| match s {
                    Slot::Col { taint, .. } => Some(taint.clone()),
                    _ => None,
                })
                .collect();
            match placed {
                Some(taints) if !cols.is_empty() && taints.len() == cols.len() => {
                    for (col, t) in cols.into_iter().zip(taints) {
                        if let Some(t) = t {
                            self.note_column_write(&target, &col, &t);
                            target.written.push((col, t));
                        }
                    }
                }
                _ => {
                    target.written_all = self.slots_whole(&slots);
                    let all = target.written_all.clone();
                    self.note_write(&format!("INSERT INTO {} writes", target.display()), &all);
                }
            }
        }
        let ref_name = ins
            .table_alias
            .as_ref()
            .map(|a| norm(&a.alias))
            .unwrap_or(table);
        self.scopes.push(Scope::default());
        self.push_source(Source {
            name: ref_name,
            schema: if ins.table_alias.is_some() {
                None
            } else {
                schema
            },
            rel: Rel::Table(target.clone()),
            in_star: true,
        });
        // ON CONFLICT's `excluded` is the proposed row.
        self.push_source(Source {
            name: "excluded".to_owned(),
            schema: None,
            rel: Rel::Table(target),
            in_star: false,
        });
        let on_update = match &ins.on {
            Some(OnInsert::DuplicateKeyUpdate(a)) => a.as_slice(),
            Some(OnInsert::OnConflict(c)) => match &c.action {
                OnConflictAction::DoUpdate(u) => u.assignments.as_slice(),
                OnConflictAction::DoNothing => &[],
            },
            _ => &[],
        };
        self.record_assignments(ins.assignments.iter().chain(on_update));
        let shape = self.returning_in_scope(ins.returning.as_deref(), ins.output.as_ref());
        self.scopes.pop();
        shape
    }

    /// Records what `SET col = value` writes into the statement's target, the first
    /// FROM item of the current scope (values are read before any is written).
    fn record_assignments<'a>(&mut self, assignments: impl Iterator<Item = &'a Assignment>) {
        let mut written = Vec::new();
        for a in assignments {
            let t = self.taint_of(&a.value);
            if let Some(t) = t {
                for col in assignment_columns(&a.target) {
                    written.push((col, t.clone()));
                }
            }
        }
        if self.effects
            && let Some(Source {
                rel: Rel::Table(target),
                ..
            }) = self.scopes.last().and_then(|s| s.sources.first()).cloned()
        {
            for (col, t) in &written {
                self.note_column_write(&target, col, t);
            }
        }
        if let Some(Source {
            rel: Rel::Table(target),
            ..
        }) = self.scopes.last_mut().and_then(|s| s.sources.first_mut())
        {
            target.written.extend(written);
        }
    }

    /// RETURNING evaluated in the current scope; PostgreSQL 18's `old` and `new`
    /// name the target (the first FROM item).
    fn returning_in_scope(
        &mut self,
        returning: Option<&[SelectItem]>,
        output: Option<&OutputClause>,
    ) -> Shape {
        let items = match (returning, output) {
            (Some(items), _) => items,
            (
                None,
                Some(
                    OutputClause::Returning { select_items, .. }
                    | OutputClause::Output { select_items, .. },
                ),
            ) => select_items.as_slice(),
            (None, None) => return Shape::Rows(Vec::new()),
        };
        if let Some(target) = self.scopes.last().and_then(|s| s.sources.first()).cloned() {
            for name in ["old", "new"] {
                self.push_source(Source {
                    name: name.to_owned(),
                    schema: None,
                    rel: target.rel.clone(),
                    in_star: false,
                });
            }
        }
        let mut out = Vec::new();
        for item in items {
            self.select_item(item, &mut out);
        }
        Shape::Rows(out)
    }
}

/// Whether `SHOW <variable>` shows a custom setting (a name with a dot:
/// the parser gives `my.x` as two words) or all settings; PostgreSQL's
/// multi-word built-in forms are not custom.
fn shows_custom_setting(variable: &[sqlparser::ast::Ident]) -> bool {
    let words: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let builtin = matches!(
        words.as_slice(),
        [_] | ["transaction", "isolation", "level"]
            | ["time", "zone"]
            | ["session", "authorization"]
    );
    !builtin || words.iter().any(|w| w.contains('.') || *w == "all")
}
