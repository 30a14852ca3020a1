//! The lookup that follows relation names ([`super::Catalog::lookup`]):
//! views and their definitions, inheritance relatives, the code of tables
//! and views, and foreign tables as views of what they stand for.

use super::{MAX_INHERITANCE_DEPTH, MAX_RELATIVES, user_code};

/// The lookup of [`super::Catalog::lookup`] for the names in `values` (`(schema,
/// name)` rows): one row per view or materialized view of such a name
/// (`v`, name as written, the view, its definition, its columns) and per
/// inheritance relative of a table of such a name (`i`, name as written,
/// the table, the relative, its columns), at most [`MAX_RELATIVES`] + 1 of
/// those per name, per view of such a name its code (`c`: `INSTEAD OF`
/// triggers and rules, as a table's), and per other relation of such a name (`t`: it exists;
/// a name of no relation is looked up again, see `Catalog::absent`).
/// Case is ignored and an unqualified name matches in every schema:
/// more relations match, never fewer.
pub(super) fn lookup_sql(values: &str) -> String {
    let columns_of = |rel: &str| {
        format!(
            "(SELECT pg_catalog.json_agg(a.attname ORDER BY a.attnum) FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped)::text"
        )
    };
    let columns = columns_of("c.oid");
    format!(
        "WITH RECURSIVE q(schema, name) AS (VALUES {values}), \
         tables AS (SELECT q.schema AS qs, q.name AS qn, n.nspname AS ts, c.relname AS tn, c.oid \
           FROM q JOIN pg_catalog.pg_class c ON pg_catalog.lower(c.relname) = pg_catalog.lower(q.name) \
             AND c.relkind IN ('r', 'p', 'f') \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             AND (q.schema = '' OR pg_catalog.lower(n.nspname) = pg_catalog.lower(q.schema))), \
         up(qs, qn, ts, tn, oid, depth) AS (SELECT qs, qn, ts, tn, oid, 0 FROM tables \
           UNION ALL SELECT u.qs, u.qn, u.ts, u.tn, i.inhparent, u.depth + 1 FROM up u \
           JOIN pg_catalog.pg_inherits i ON i.inhrelid = u.oid WHERE u.depth < {depth}), \
         down(qs, qn, ts, tn, oid, depth) AS (SELECT qs, qn, ts, tn, oid, 0 FROM tables \
           UNION ALL SELECT d.qs, d.qn, d.ts, d.tn, i.inhrelid, d.depth + 1 FROM down d \
           JOIN pg_catalog.pg_inherits i ON i.inhparent = d.oid WHERE d.depth < {depth}), \
         related AS (SELECT qs, qn, ts, tn, oid FROM up WHERE depth > 0 \
           UNION SELECT qs, qn, ts, tn, oid FROM down WHERE depth > 0), \
         counted AS (SELECT r.*, pg_catalog.row_number() OVER (PARTITION BY r.qs, r.qn ORDER BY r.oid) AS k \
           FROM related r) \
         SELECT 't', q.schema, q.name, n.nspname::text, c.relname::text, {user_code}, {code_functions}, {rules}, {cascades} \
           FROM q JOIN pg_catalog.pg_class c ON pg_catalog.lower(c.relname) = pg_catalog.lower(q.name) \
             AND c.relkind NOT IN ('v', 'm') \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             AND (q.schema = '' OR pg_catalog.lower(n.nspname) = pg_catalog.lower(q.schema)) \
         UNION ALL \
         SELECT 'i', r.qs, r.qn, r.ts, r.tn, NULL::text, n.nspname::text, c.relname::text, {columns} \
           FROM counted r JOIN pg_catalog.pg_class c ON c.oid = r.oid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE r.k <= {limit} \
         UNION ALL \
         SELECT 'c', q.schema, q.name, n.nspname::text, c.relname::text, {user_code}, {code_functions}, {rules}, {cascades} \
           FROM q JOIN pg_catalog.pg_class c ON pg_catalog.lower(c.relname) = pg_catalog.lower(q.name) \
             AND c.relkind IN ('v', 'm') \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             AND (q.schema = '' OR pg_catalog.lower(n.nspname) = pg_catalog.lower(q.schema)) \
         UNION ALL \
         SELECT 'v', q.schema, q.name, n.nspname::text, c.relname::text, {foreign_definition}, NULL, NULL, {columns} \
           FROM q JOIN pg_catalog.pg_class c ON pg_catalog.lower(c.relname) = pg_catalog.lower(q.name) \
             AND c.relkind = 'f' \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             AND (q.schema = '' OR pg_catalog.lower(n.nspname) = pg_catalog.lower(q.schema)) \
           JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = c.oid \
           JOIN pg_catalog.pg_foreign_server fs ON fs.oid = ft.ftserver \
           JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = fs.srvfdw \
           WHERE w.fdwname = 'postgres_fdw' OR {option}(ft.ftoptions) o WHERE o.option_name = 'table_name') IS NOT NULL \
         UNION ALL \
         SELECT 'v', q.schema, q.name, n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid), NULL, NULL, {columns} \
         FROM q JOIN pg_catalog.pg_class c ON pg_catalog.lower(c.relname) = pg_catalog.lower(q.name) \
           AND c.relkind IN ('v', 'm') \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           AND (q.schema = '' OR pg_catalog.lower(n.nspname) = pg_catalog.lower(q.schema))",
        depth = MAX_INHERITANCE_DEPTH,
        limit = MAX_RELATIVES + 1,
        foreign_definition = foreign_definition("c", "n", "ft"),
        option = OPTION,
        user_code = user_code::user_code_flags("c"),
        code_functions = user_code::user_code_functions("c"),
        rules = user_code::rule_definitions("c"),
        cascades = user_code::foreign_key_actions("c"),
    )
}

/// The value of an FDW option (`name`, options array) or NULL, as SQL.
const OPTION: &str = "(SELECT o.option_value FROM pg_catalog.pg_options_to_table";

/// A foreign table (`c` in namespace `n`, `ft` its `pg_foreign_table` row)
/// as the definition of a view of the table it stands for: `SELECT remote
/// AS local, … FROM schema.table`, from its `schema_name`, `table_name` and
/// columns' `column_name` options (`postgres_fdw`'s; its own schema and
/// names when absent). A foreign table of `postgres_fdw` may be this very
/// database's `customers` under another name (a loopback server, as
/// `dblink` can be): its rows are read and written as that table's, so
/// the rules on the table and the masking of its columns follow it as
/// they follow a view. More refused and masked, never less: the server
/// may be another database with a table of that name.
fn foreign_definition(c: &str, n: &str, ft: &str) -> String {
    let option = |name: &str, of: &str| format!("{OPTION}({of}) o WHERE o.option_name = '{name}')");
    format!(
        "'SELECT ' || (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(\
           COALESCE({column}, a.attname::text)) || ' AS ' || pg_catalog.quote_ident(a.attname), \
           ', ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a \
           WHERE a.attrelid = {c}.oid AND a.attnum > 0 AND NOT a.attisdropped) \
         || ' FROM ' || pg_catalog.quote_ident(COALESCE({schema}, {n}.nspname::text)) \
         || '.' || pg_catalog.quote_ident(COALESCE({table}, {c}.relname::text))",
        column = option("column_name", "a.attfdwoptions"),
        schema = option("schema_name", &format!("{ft}.ftoptions")),
        table = option("table_name", &format!("{ft}.ftoptions")),
    )
}
