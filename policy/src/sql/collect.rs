//! The [`Collector`]: kinds, tables and functions referenced anywhere in a statement.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sluice_crds::StatementKind;
use sqlparser::ast::{
    self, CommentObject, CopySource, CreateTableLikeKind, Expr, FromTable, GrantObjects, Ident,
    ObjectName, ObjectNamePart, ObjectType, Query, Select, SetExpr, ShowCreateObject, TableFactor,
    TableWithJoins, Visitor,
};

use super::embedded::{
    MAX_EMBEDDING_DEPTH, SqlTextArgument, is_boolean_keyword, is_number_literal, relation_name,
    sql_text_function, string_literal,
};
use super::kind::{creates_table, statement_kind};
use super::parse::parse_with;
use super::text::{normalize_ident, normalize_name};
use super::write_scope::{WriteScope, relations_of};
use super::{SqlDialect, Statement};

// === Collector ===

/// The CTEs a query declares, and how many of them are visible right now (a
/// non-recursive CTE body sees only the CTEs declared before it).
struct CteScope {
    names: Vec<String>,
    /// The CTE bodies, to recognise them when the visitor enters them. The
    /// pointers only identify nodes of the tree being visited: they are
    /// compared, never dereferenced.
    bodies: Vec<*const Query>,
    recursive: bool,
    visible: usize,
}

/// Walks a statement with sqlparser's visitor and collects kinds, tables,
/// functions and missing WHERE clauses.
pub(super) struct Collector {
    dialect: SqlDialect,
    pub(super) kinds: BTreeSet<StatementKind>,
    pub(super) tables: BTreeSet<String>,
    pub(super) functions: BTreeSet<String>,
    pub(super) without_where: bool,
    scopes: Vec<CteScope>,
    /// Names the visitor reports as relations that are not tables: table
    /// functions (`FROM f(…)`) and the database of `SHOW TABLES FROM db`.
    non_table_relations: Vec<*const ObjectName>,
    /// Current and deepest nesting of statements, queries, expressions and
    /// table factors (see [`MAX_NESTING_DEPTH`]).
    depth: usize,
    pub(super) max_depth: usize,
    /// How many SQL-text arguments deep the statement is.
    embedding: usize,
    /// Statements found in SQL-text arguments.
    pub(super) embedded: Vec<Statement>,
    /// Why the statement is refused whatever the policies say.
    pub(super) refused: Option<String>,
}

impl Collector {
    pub(super) fn new(dialect: SqlDialect, embedding: usize) -> Self {
        Self {
            embedding,
            embedded: Vec::new(),
            refused: None,
            dialect,
            kinds: BTreeSet::new(),
            tables: BTreeSet::new(),
            functions: BTreeSet::new(),
            without_where: false,
            scopes: Vec::new(),
            non_table_relations: Vec::new(),
            depth: 0,
            max_depth: 0,
        }
    }

    fn enter(&mut self) {
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    pub(super) fn name(&self, name: &ObjectName) -> String {
        normalize_name(name, self.dialect.folds_quoted_identifiers())
    }

    fn ident(&self, ident: &Ident) -> String {
        normalize_ident(ident, self.dialect.folds_quoted_identifiers())
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return false;
        };
        let wanted = self.ident(ident);
        self.scopes
            .iter()
            .any(|s| s.names.iter().take(s.visible).any(|n| *n == wanted))
    }

    fn add_table(&mut self, name: &ObjectName) {
        if !self.is_cte(name) {
            let name = self.name(name);
            self.tables.insert(name);
        }
    }

    /// A table that is written to: never a CTE reference.
    fn add_target(&mut self, name: &ObjectName) {
        let name = self.name(name);
        self.tables.insert(name);
    }

    fn add_target_factor(&mut self, factor: &TableFactor) {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        {
            match alias {
                Some(alias) if self.dialect == SqlDialect::Postgres && is_bare_only(name) => {
                    self.add_target(&ObjectName::from(vec![alias.name.clone()]));
                }
                _ => self.add_target(name),
            }
        }
    }

    /// Foreign keys reference another table, outside the visitor's reach.
    fn note_column(&mut self, column: &ast::ColumnDef) {
        for option in &column.options {
            if let ast::ColumnOption::ForeignKey(fk) = &option.option {
                self.add_table(&fk.foreign_table);
            }
        }
    }

    fn note_constraint(&mut self, constraint: &ast::TableConstraint) {
        if let ast::TableConstraint::ForeignKey(fk) = constraint {
            self.add_table(&fk.foreign_table);
        }
    }

    fn add_tables<'a>(&mut self, names: impl IntoIterator<Item = &'a ObjectName>) {
        for name in names {
            self.add_table(name);
        }
    }

    fn add_function(&mut self, name: &ObjectName) {
        // Function names are case-insensitive unless quoted in Postgres, and
        // never case-sensitive in MySQL.
        let name = self.name(name);
        self.functions.insert(name);
    }

    /// Refuses the statement (the first reason is kept).
    fn refuse(&mut self, why: String) {
        self.refused.get_or_insert(why);
    }

    /// A call of `name` with `args`: when it is one of [`SQL_TEXT_FUNCTIONS`],
    /// the SQL (or table) it is given is classified as part of this statement,
    /// or the statement is refused.
    fn note_sql_text_call(&mut self, name: &ObjectName, args: &[ast::FunctionArg]) {
        let Some(function) = sql_text_function(name) else {
            return;
        };
        let shown = self.name(name);
        let mut exprs = Vec::with_capacity(args.len());
        for arg in args {
            match arg {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => exprs.push(e),
                _ => {
                    return self.refuse(format!(
                        "{shown}() runs SQL given as text; Sluice decides that SQL only when the \
                         arguments are given by position, not by name or as a wildcard"
                    ));
                }
            }
        }
        let texts: Vec<&Expr> = match function.argument {
            SqlTextArgument::Refused(why) => {
                return self.refuse(format!("{shown}() {why}; Sluice refuses it"));
            }
            SqlTextArgument::At { position, arity } => {
                if arity.is_some_and(|a| a != exprs.len()) {
                    return;
                }
                exprs.get(position).copied().into_iter().collect()
            }
            SqlTextArgument::Last => {
                let mut rest = exprs.as_slice();
                if let [head @ .., last] = rest
                    && is_boolean_keyword(last)
                {
                    rest = head;
                }
                rest.last().copied().into_iter().collect()
            }
            SqlTextArgument::EveryText => exprs
                .iter()
                .copied()
                .filter(|e| !is_number_literal(e))
                .collect(),
            SqlTextArgument::Relation(position) => {
                let Some(arg) = exprs.get(position) else {
                    return;
                };
                match string_literal(arg).and_then(|text| relation_name(text, self.dialect)) {
                    Some(table) => self.add_table(&table),
                    None => self.refuse(format!(
                        "{shown}() reads the table named by its argument {}, which is not a \
                         string literal holding a table name; Sluice decides it only when it \
                         is (write it as '{shown}(''schema.table'', …)')",
                        position + 1
                    )),
                }
                return;
            }
        };
        for text in texts {
            let Some(sql) = string_literal(text) else {
                return self.refuse(format!(
                    "{shown}() runs SQL given as text, and here that text is computed (a \
                     parameter, column or expression); Sluice decides such SQL only when it \
                     is a string literal, so write the query into the call"
                ));
            };
            if self.embedding >= MAX_EMBEDDING_DEPTH {
                return self.refuse(format!(
                    "{shown}() runs SQL given as text nested more than {MAX_EMBEDDING_DEPTH} \
                     levels deep in other SQL text"
                ));
            }
            let parsed = self
                .dialect
                .with_parser_dialect(|d| parse_with(sql, self.dialect, d, self.embedding + 1));
            match parsed {
                Ok(statements) if statements.is_empty() => {}
                Ok(statements) => self.embedded.extend(statements),
                Err(e) => {
                    return self.refuse(format!(
                        "{shown}() runs SQL given as text, and Sluice could not classify that \
                         SQL: {e}"
                    ));
                }
            }
        }
    }

    /// Merges what the embedded statements do into this statement.
    pub(super) fn absorb_embedded(&mut self) {
        for inner in &self.embedded {
            self.kinds.extend(inner.kinds.iter().copied());
            self.tables.extend(inner.tables.iter().cloned());
            self.functions.extend(inner.functions.iter().cloned());
            self.without_where |= inner.without_where;
            if let Some(why) = &inner.refused {
                self.refused.get_or_insert_with(|| why.clone());
            }
        }
    }

    fn note_where(&mut self, selection: Option<&Expr>, scope: &WriteScope) {
        if !selection.is_some_and(|e| scope.restricts(e)) {
            self.without_where = true;
        }
    }

    /// `MERGE … WHEN MATCHED THEN UPDATE/DELETE` writes the target rows the
    /// `ON` condition (and the clause's own `AND`) matches: without a
    /// restricting one, every row. `WHEN NOT MATCHED BY SOURCE THEN
    /// UPDATE/DELETE` writes the rows that match nothing: always bulk.
    fn note_merge(&mut self, merge: &ast::Merge) {
        let scope = WriteScope::new(
            std::iter::once(&merge.table),
            std::iter::once(&merge.source),
        );
        let on_restricts = scope.restricts(&merge.on);
        for clause in &merge.clauses {
            // Each action is the write it does (the server asks for its
            // privilege): rules naming `insert`, `update` or `delete` hold.
            match clause.action {
                ast::MergeAction::Insert(_) => self.kinds.insert(StatementKind::Insert),
                ast::MergeAction::Update(_) => self.kinds.insert(StatementKind::Update),
                ast::MergeAction::Delete { .. } => self.kinds.insert(StatementKind::Delete),
                ast::MergeAction::DoNothing { .. } => false,
            };
            if !matches!(
                clause.action,
                ast::MergeAction::Update(_) | ast::MergeAction::Delete { .. }
            ) {
                continue;
            }
            let bulk = match clause.clause_kind {
                ast::MergeClauseKind::Matched => {
                    !on_restricts
                        && !clause
                            .predicate
                            .as_ref()
                            .is_some_and(|p| scope.restricts(p))
                }
                _ => true,
            };
            if bulk {
                self.without_where = true;
            }
        }
    }

    /// A query starts: if it is the body of a CTE of the enclosing query, the
    /// CTEs visible inside it change; then its own CTEs open a scope.
    fn enter_query(&mut self, query: &Query) {
        if let Some(scope) = self.scopes.last_mut()
            && let Some(i) = scope.bodies.iter().position(|b| std::ptr::eq(*b, query))
        {
            scope.visible = if scope.recursive {
                scope.names.len()
            } else {
                i
            };
        }
        let (names, bodies, recursive) = match &query.with {
            Some(with) => (
                with.cte_tables
                    .iter()
                    .map(|c| self.ident(&c.alias.name))
                    .collect(),
                with.cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                with.recursive,
            ),
            None => (Vec::new(), Vec::new(), false),
        };
        self.scopes.push(CteScope {
            names,
            bodies,
            recursive,
            visible: 0,
        });
        self.note_table_exprs(&query.body);
        // Set operations nest without a visitor hook of their own.
        let chain = set_operation_depth(&query.body);
        self.max_depth = self.max_depth.max(self.depth + chain);
    }

    fn leave_query(&mut self, query: &Query) {
        self.scopes.pop();
        // After a CTE body, the rest of the enclosing query sees all its CTEs.
        if let Some(scope) = self.scopes.last_mut()
            && scope.bodies.iter().any(|b| std::ptr::eq(*b, query))
        {
            scope.visible = scope.names.len();
        }
    }

    /// `TABLE t` inside a set operation is not visited as a relation.
    ///
    /// Iterative: a chain of set operations is as deep as it is long (up
    /// to [`MAX_OPERATORS_PER_STATEMENT`] before the depth check refuses
    /// it), and recursing over 4,000 `UNION`s overflowed a 2 MiB stack
    /// (found by tests/fuzz_sql.rs).
    fn note_table_exprs(&mut self, body: &SetExpr) {
        let mut pending = vec![body];
        while let Some(body) = pending.pop() {
            match body {
                SetExpr::Table(table) => {
                    if let Some(name) = &table.table_name {
                        let ident = |v: &str| Ident::new(v);
                        let mut parts = Vec::new();
                        if let Some(schema) = &table.schema_name {
                            parts.push(ObjectNamePart::Identifier(ident(schema)));
                        }
                        parts.push(ObjectNamePart::Identifier(ident(name)));
                        self.add_table(&ObjectName(parts));
                    }
                    self.kinds.insert(StatementKind::Select);
                }
                SetExpr::SetOperation { left, right, .. } => {
                    // Right first onto the stack: left is noted first, as before.
                    pending.push(right);
                    pending.push(left);
                }
                _ => {}
            }
        }
    }

    /// `UPDATE`: its targets (joined tables included) and whether its WHERE restricts them.
    fn note_update(&mut self, update: &ast::Update) {
        let targets = std::iter::once(&update.table.relation)
            .chain(update.table.joins.iter().map(|j| &j.relation));
        let from = match &update.from {
            Some(
                ast::UpdateTableFromKind::BeforeSet(v) | ast::UpdateTableFromKind::AfterSet(v),
            ) => v.as_slice(),
            None => &[],
        };
        let scope = WriteScope::new(targets, from.iter().flat_map(relations_of));
        self.note_where(update.selection.as_ref(), &scope);
        self.add_target_factor(&update.table.relation);
        for join in &update.table.joins {
            self.add_target_factor(&join.relation);
        }
    }

    /// `DELETE`: its targets (MySQL's multi-table list, aliases resolved) and
    /// whether its WHERE restricts them.
    fn note_delete(&mut self, delete: &ast::Delete) {
        let from = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t.as_slice(),
        };
        let scope = WriteScope::new(
            from.iter().flat_map(relations_of),
            delete.using.iter().flatten().flat_map(relations_of),
        );
        self.note_where(delete.selection.as_ref(), &scope);
        if delete.tables.is_empty() {
            for t in from {
                self.add_target_factor(&t.relation);
            }
        }
        // MySQL multi-table DELETE names its targets, often by alias;
        // an alias is not a table (its table is in FROM anyway).
        let aliases = table_aliases(from.iter().chain(delete.using.iter().flatten()));
        for name in &delete.tables {
            let is_alias = match name.0.as_slice() {
                [ObjectNamePart::Identifier(id)] => aliases.contains(&self.ident(id)),
                _ => false,
            };
            if !is_alias {
                self.add_target(name);
            }
        }
    }

    /// `CREATE TABLE`: the table, the tables it copies, inherits, references or
    /// partitions.
    fn note_create_table(&mut self, ct: &ast::CreateTable) {
        self.add_table(&ct.name);
        if let Some(CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like)) =
            &ct.like
        {
            self.add_table(&like.name);
        }
        self.add_tables(&ct.clone);
        for column in &ct.columns {
            self.note_column(column);
        }
        for constraint in &ct.constraints {
            self.note_constraint(constraint);
        }
        self.add_tables(ct.inherits.iter().flatten());
        self.add_tables(&ct.partition_of);
    }

    /// Tables a statement names outside of the places sqlparser's visitor
    /// reports as relations, plus WHERE checks and procedure calls.
    fn note_statement(&mut self, stmt: &ast::Statement) {
        use ast::Statement as S;
        match stmt {
            // The target of INSERT, UPDATE, DELETE and MERGE is always a real
            // table, even when a CTE has the same name
            // (`WITH t AS (…) DELETE FROM t` deletes from table t).
            // An upsert updates the rows it meets and MySQL's REPLACE
            // deletes them (the server asks for those privileges too):
            // rules naming `update` or `delete` hold for them.
            S::Insert(insert) => {
                if let ast::TableObject::TableName(name) = &insert.table {
                    self.add_target(name);
                }
                if insert.replace_into {
                    self.kinds.insert(StatementKind::Delete);
                }
                if let Some(
                    ast::OnInsert::DuplicateKeyUpdate(_)
                    | ast::OnInsert::OnConflict(ast::OnConflict {
                        action: ast::OnConflictAction::DoUpdate(_),
                        ..
                    }),
                ) = &insert.on
                {
                    self.kinds.insert(StatementKind::Update);
                }
            }
            S::Merge(merge) => {
                self.add_target_factor(&merge.table);
                self.note_merge(merge);
            }
            S::Update(update) => self.note_update(update),
            S::Delete(delete) => self.note_delete(delete),
            // COPY moves a table's rows as a read or an insert does (the
            // server asks for the same privileges): rules naming `select` or
            // `insert` hold for it, not only rules naming `copy`.
            S::Copy {
                source: CopySource::Table { table_name, .. },
                to,
                ..
            } => {
                self.kinds.insert(if *to {
                    StatementKind::Select
                } else {
                    StatementKind::Insert
                });
                self.add_table(table_name);
            }
            S::LockTables { tables } => {
                for t in tables {
                    self.add_table(&ObjectName::from(vec![t.table.clone()]));
                }
            }
            S::Drop {
                object_type,
                names,
                table,
                ..
            } => {
                if matches!(
                    object_type,
                    ObjectType::Table | ObjectType::View | ObjectType::MaterializedView
                ) {
                    self.add_tables(names);
                }
                self.add_tables(table);
            }
            S::CreateTable(ct) => self.note_create_table(ct),
            S::CreateView(view) => self.add_table(&view.name),
            S::AlterTable(alter) => {
                for operation in &alter.operations {
                    match operation {
                        ast::AlterTableOperation::AddConstraint { constraint, .. } => {
                            self.note_constraint(constraint);
                        }
                        ast::AlterTableOperation::AddColumn { column_def, .. } => {
                            self.note_column(column_def);
                        }
                        _ => {}
                    }
                }
            }
            S::RenameTable(renames) => {
                for r in renames {
                    self.add_table(&r.old_name);
                    self.add_table(&r.new_name);
                }
            }
            S::Grant(ast::Grant {
                objects: Some(objects),
                ..
            })
            | S::Revoke(ast::Revoke {
                objects: Some(objects),
                ..
            }) => {
                if let GrantObjects::Tables(names) | GrantObjects::Views(names) = objects {
                    self.add_tables(names);
                }
            }
            S::Comment {
                object_type,
                object_name,
                ..
            } => match object_type {
                CommentObject::Table | CommentObject::View | CommentObject::MaterializedView => {
                    self.add_table(object_name);
                }
                CommentObject::Column => {
                    if let Some((_, table)) = object_name.0.split_last()
                        && !table.is_empty()
                    {
                        self.add_table(&ObjectName(table.to_vec()));
                    }
                }
                _ => {}
            },
            S::ShowCreate {
                obj_type: ShowCreateObject::Table | ShowCreateObject::View,
                obj_name,
            } => self.add_table(obj_name),
            S::LoadData { table_name, .. } => self.add_table(table_name),
            S::Vacuum(v) => self.add_tables(&v.table_name),
            S::Flush { tables, .. } => self.add_tables(tables),
            S::OptimizeTable { name, .. } => self.add_table(name),
            S::Call(function) => self.add_function(&function.name),
            // `SHOW TABLES FROM shop` names a database or schema, which the
            // visitor would report as a relation; only SHOW COLUMNS names a table.
            S::ShowTables { show_options, .. }
            | S::ShowViews { show_options, .. }
            | S::ShowSchemas { show_options, .. }
            | S::ShowDatabases { show_options, .. }
            | S::ShowCatalogs { show_options, .. }
            | S::ShowObjects(ast::ShowObjects { show_options, .. }) => {
                if let Some(ast::ShowStatementIn {
                    parent_name: Some(parent),
                    ..
                }) = &show_options.show_in
                {
                    self.non_table_relations.push(parent);
                }
            }
            S::CreateTrigger(trigger) => {
                if let Some(body) = &trigger.exec_body {
                    self.add_function(&body.func_desc.name);
                }
                self.add_table(&trigger.table_name);
                self.add_tables(&trigger.referenced_table_name);
            }
            _ => {}
        }
    }
}

impl Visitor for Collector {
    type Break = std::convert::Infallible;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Self::Break> {
        self.enter();
        self.enter_query(query);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<Self::Break> {
        self.leave();
        self.leave_query(query);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Self::Break> {
        self.kinds.insert(StatementKind::Select);
        if creates_table(select, self.dialect)
            && let Some(into) = &select.into
        {
            self.kinds.insert(StatementKind::Create);
            for target in &into.targets {
                match target {
                    Expr::Identifier(id) => self.add_target(&ObjectName::from(vec![id.clone()])),
                    Expr::CompoundIdentifier(ids) => {
                        self.add_target(&ObjectName::from(ids.clone()));
                    }
                    _ => {}
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Self::Break> {
        if !self
            .non_table_relations
            .iter()
            .any(|f| std::ptr::eq(*f, relation))
        {
            self.add_table(relation);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<Self::Break> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Self::Break> {
        self.enter();
        match factor {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                self.non_table_relations.push(name);
                self.add_function(name);
                self.note_sql_text_call(name, &args.args);
            }
            // sqlparser 0.63 reads Postgres `FROM ONLY t` / `UPDATE ONLY t` as
            // table `only` aliased `t`. ONLY is reserved in Postgres, so it
            // cannot be a table name there: the alias is the table.
            TableFactor::Table {
                name,
                alias: Some(alias),
                args: None,
                ..
            } if self.dialect == SqlDialect::Postgres && is_bare_only(name) => {
                self.non_table_relations.push(name);
                self.add_table(&ObjectName::from(vec![alias.name.clone()]));
            }
            TableFactor::Function { name, args, .. } => {
                self.add_function(name);
                self.note_sql_text_call(name, args);
            }
            TableFactor::UNNEST { .. } => {
                self.functions.insert("unnest".to_string());
            }
            TableFactor::JsonTable { .. } => {
                self.functions.insert("json_table".to_string());
            }
            TableFactor::OpenJsonTable { .. } => {
                self.functions.insert("openjson".to_string());
            }
            TableFactor::XmlTable { .. } => {
                self.functions.insert("xmltable".to_string());
            }
            // Tables, subqueries, joins, expressions (visited separately) and
            // dialect-specific forms whose names the visitor reports.
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Self::Break> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Self::Break> {
        self.enter();
        if let Expr::Function(function) = expr {
            self.add_function(&function.name);
            match &function.args {
                ast::FunctionArguments::List(list) => {
                    self.note_sql_text_call(&function.name, &list.args);
                }
                ast::FunctionArguments::None => self.note_sql_text_call(&function.name, &[]),
                ast::FunctionArguments::Subquery(_) => {
                    if sql_text_function(&function.name).is_some() {
                        self.refuse(format!(
                            "{}() runs SQL given as text, and here its argument is a subquery; \
                             Sluice decides that SQL only when it is a string literal",
                            self.name(&function.name)
                        ));
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _stmt: &ast::Statement) -> ControlFlow<Self::Break> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, stmt: &ast::Statement) -> ControlFlow<Self::Break> {
        self.enter();
        let kind = statement_kind(stmt, self.dialect);
        self.kinds.insert(kind);
        self.note_statement(stmt);
        ControlFlow::Continue(())
    }
}

/// How deeply set operations nest in a query body (`a UNION b UNION c` is a
/// left-deep chain), without recursion.
fn set_operation_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(body, 0usize)];
    while let Some((expr, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if let SetExpr::SetOperation { left, right, .. } = expr {
            pending.push((left, depth + 1));
            pending.push((right, depth + 1));
        }
    }
    deepest
}

fn is_bare_only(name: &ObjectName) -> bool {
    matches!(
        name.0.as_slice(),
        [ObjectNamePart::Identifier(id)] if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("only")
    )
}

/// Aliases given to tables in FROM/USING lists (and their joins).
fn table_aliases<'a>(tables: impl Iterator<Item = &'a TableWithJoins>) -> BTreeSet<String> {
    let mut aliases = BTreeSet::new();
    for t in tables {
        for factor in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table {
                alias: Some(alias), ..
            } = factor
            {
                // Aliases resolve case-insensitively in MySQL, the only dialect
                // with multi-table DELETE targets.
                aliases.insert(alias.name.value.to_lowercase());
            }
        }
    }
    aliases
}
