//! Table-driven soundness cases for `sluice_policy::mask_plan`.
//!
//! Each case gives a statement, the columns the server would describe (name and,
//! where PostgreSQL/MySQL would report one, the origin `schema.table.column`), and
//! the expected decision per column:
//! `C` clear, `O<rule>` masked by origin, `D<rule>` masked because the expression
//! reads a masked column (or whole row), `U<rule>` masked because it cannot be told.
//!
//! Schema used by the cases (PostgreSQL schema `public` unless stated):
//! customers(id, name, email, ssn), users(id, login, password_hash),
//! orders(id, customer_id, total, note), billing.cards(id, number, holder).

// Test helpers outside `#[test]` functions panic on bad fixtures on purpose.
#![allow(clippy::expect_used)]

use sluice_policy::mask_plan::{
    ColumnMask, ColumnMatcher, ColumnOrigin, CopyPlan, MaskPlan, MaskReason, OutputColumn,
    laundering, plan_copy, plan_rows,
};
use sqlparser::ast::Statement;
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

#[derive(Clone, Copy, Debug)]
enum Dialect {
    Pg,
    My,
}

#[derive(Clone, Copy, Debug)]
enum Rules {
    /// 0: customers.ssn, 1: users.password_hash, 2: billing.cards.number
    Std,
    /// 0: *.password_hash, 1: customers.ssn
    Wide,
}

struct Case {
    name: &'static str,
    dialect: Dialect,
    rules: Rules,
    sql: &'static str,
    /// (column name, origin as `schema.table.column`, or "" for none)
    output: &'static [(&'static str, &'static str)],
    expect: &'static str,
}

const fn pg(
    name: &'static str,
    sql: &'static str,
    output: &'static [(&'static str, &'static str)],
    expect: &'static str,
) -> Case {
    Case {
        name,
        dialect: Dialect::Pg,
        rules: Rules::Std,
        sql,
        output,
        expect,
    }
}

const fn my(
    name: &'static str,
    sql: &'static str,
    output: &'static [(&'static str, &'static str)],
    expect: &'static str,
) -> Case {
    Case {
        name,
        dialect: Dialect::My,
        rules: Rules::Std,
        sql,
        output,
        expect,
    }
}

const fn wide(
    name: &'static str,
    sql: &'static str,
    output: &'static [(&'static str, &'static str)],
    expect: &'static str,
) -> Case {
    Case {
        name,
        dialect: Dialect::Pg,
        rules: Rules::Wide,
        sql,
        output,
        expect,
    }
}

const CUSTOMERS_STAR: &[(&str, &str)] = &[
    ("id", "public.customers.id"),
    ("name", "public.customers.name"),
    ("email", "public.customers.email"),
    ("ssn", "public.customers.ssn"),
];

const CASES: &[Case] = &[
    // --- 1. origin ---
    pg(
        "origin: masked column",
        "SELECT ssn FROM customers",
        &[("ssn", "public.customers.ssn")],
        "O0",
    ),
    pg(
        "origin: plain unmasked column",
        "SELECT name FROM customers",
        &[("name", "public.customers.name")],
        "C",
    ),
    pg(
        "no over-masking: other column and expression over unmasked column",
        "SELECT name, lower(email) FROM customers",
        &[("name", "public.customers.name"), ("lower", "")],
        "C C",
    ),
    pg(
        "origin: schema-qualified glob",
        "SELECT number, holder FROM billing.cards",
        &[
            ("number", "billing.cards.number"),
            ("holder", "billing.cards.holder"),
        ],
        "O2 C",
    ),
    pg(
        "origin: schema-qualified glob does not match another schema",
        "SELECT number FROM archive.cards",
        &[("number", "archive.cards.number")],
        "C",
    ),
    pg(
        "origin decides even when the statement text hides the table (view origin)",
        "SELECT v.a FROM some_view v",
        &[("a", "public.customers.ssn")],
        "O0",
    ),
    // --- 2. aliases and expressions ---
    pg(
        "alias with origin",
        "SELECT ssn AS x FROM customers",
        &[("x", "public.customers.ssn")],
        "O0",
    ),
    pg(
        "alias without origin (AST alone)",
        "SELECT ssn AS x FROM customers",
        &[("x", "")],
        "D0",
    ),
    pg(
        "lower()",
        "SELECT lower(ssn) FROM customers",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "concatenation",
        "SELECT ssn || '' FROM customers",
        &[("?column?", "")],
        "D0",
    ),
    pg(
        "reverse and translate",
        "SELECT reverse(ssn), translate(ssn, '0123456789', 'abcdefghij') FROM customers",
        &[("reverse", ""), ("translate", "")],
        "D0 D0",
    ),
    pg(
        "encode of a cast",
        "SELECT encode(ssn::bytea, 'base64') FROM customers",
        &[("encode", "")],
        "D0",
    ),
    pg(
        "casts",
        "SELECT ssn::text, CAST(ssn AS int) FROM customers",
        &[("ssn", ""), ("ssn", "")],
        "D0 D0",
    ),
    pg(
        "CASE",
        "SELECT CASE WHEN ssn IS NULL THEN 'none' ELSE ssn END FROM customers",
        &[("ssn", "")],
        "D0",
    ),
    pg(
        "COALESCE",
        "SELECT COALESCE(ssn, name) FROM customers",
        &[("coalesce", "")],
        "D0",
    ),
    pg(
        "substr and SUBSTRING FROM",
        "SELECT substr(ssn, 1, 3), SUBSTRING(ssn FROM 8) FROM customers",
        &[("substr", ""), ("substring", "")],
        "D0 D0",
    ),
    pg(
        "arithmetic",
        "SELECT length(ssn) * 2 + 1 FROM customers",
        &[("?column?", "")],
        "D0",
    ),
    pg(
        "concat_ws",
        "SELECT concat_ws('-', name, ssn) FROM customers",
        &[("concat_ws", "")],
        "D0",
    ),
    pg(
        "string_agg and array_agg",
        "SELECT string_agg(ssn, ','), array_agg(ssn) FROM customers",
        &[("string_agg", ""), ("array_agg", "")],
        "D0 D0",
    ),
    pg(
        "json_agg and jsonb_agg",
        "SELECT json_agg(ssn), jsonb_agg(ssn ORDER BY id) FROM customers",
        &[("json_agg", ""), ("jsonb_agg", "")],
        "D0 D0",
    ),
    pg(
        "json object builders",
        "SELECT json_build_object('s', ssn), jsonb_build_object('s', c.ssn) FROM customers c",
        &[("json_build_object", ""), ("jsonb_build_object", "")],
        "D0 D0",
    ),
    pg(
        "ROW and ARRAY constructors",
        "SELECT ROW(ssn), ARRAY[name, ssn] FROM customers",
        &[("row", ""), ("array", "")],
        "D0 D0",
    ),
    pg(
        "to_json and to_jsonb of a column",
        "SELECT to_json(ssn), to_jsonb(ssn) FROM customers",
        &[("to_json", ""), ("to_jsonb", "")],
        "D0 D0",
    ),
    pg(
        "scalar subquery without FROM in outer query",
        "SELECT (SELECT ssn FROM customers LIMIT 1)",
        &[("ssn", "")],
        "D0",
    ),
    pg(
        "correlated scalar subquery next to a clear column",
        "SELECT name, (SELECT c2.ssn FROM customers c2 WHERE c2.id = c.id) FROM customers c",
        &[("name", "public.customers.name"), ("ssn", "")],
        "C D0",
    ),
    pg(
        "ARRAY(subquery)",
        "SELECT ARRAY(SELECT ssn FROM customers)",
        &[("array", "")],
        "D0",
    ),
    pg(
        "window functions",
        "SELECT first_value(ssn) OVER (ORDER BY id), lag(ssn) OVER w FROM customers WINDOW w AS (ORDER BY id)",
        &[("first_value", ""), ("lag", "")],
        "D0 D0",
    ),
    pg(
        "window partitioning, FILTER and count() carry no value of what they read",
        "SELECT row_number() OVER (PARTITION BY ssn), count(*) FILTER (WHERE ssn IS NULL), count(DISTINCT ssn), lag(name) OVER (ORDER BY ssn) FROM customers",
        &[
            ("row_number", ""),
            ("count", ""),
            ("count", ""),
            ("lag", ""),
        ],
        "C C C C",
    ),
    pg(
        "ordered-set aggregates return what WITHIN GROUP orders",
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn), mode() WITHIN GROUP (ORDER BY ssn) FILTER (WHERE id > 0) FROM customers",
        &[("percentile_disc", ""), ("mode", "")],
        "D0 D0",
    ),
    pg(
        "a window function's argument still counts",
        "SELECT sum(length(ssn)) OVER (PARTITION BY name), max((SELECT password_hash FROM users LIMIT 1)) FILTER (WHERE true) OVER () FROM customers",
        &[("sum", ""), ("max", "")],
        "D0 D1",
    ),
    pg(
        "format()",
        "SELECT format('%s', ssn) FROM customers",
        &[("format", "")],
        "D0",
    ),
    pg(
        "aggregate reads masked, count(*) does not",
        "SELECT max(ssn), count(*) FROM customers",
        &[("max", ""), ("count", "")],
        "D0 C",
    ),
    pg(
        "schema-qualified column reference",
        "SELECT public.customers.ssn || '' FROM public.customers",
        &[("?column?", "")],
        "D0",
    ),
    pg(
        "md5 of password hash",
        "SELECT md5(password_hash) FROM users",
        &[("md5", "")],
        "D1",
    ),
    pg(
        "schema-qualified table matches schema-qualified glob",
        "SELECT lower(number) FROM billing.cards",
        &[("lower", "")],
        "D2",
    ),
    pg(
        "unqualified table may be in the glob's schema",
        "SELECT lower(number) FROM cards",
        &[("lower", "")],
        "D2",
    ),
    pg(
        "another schema does not match",
        "SELECT lower(number) FROM archive.cards",
        &[("lower", "")],
        "C",
    ),
    pg(
        "lowest rule wins when an expression reads two masked columns",
        "SELECT u.password_hash || c.ssn FROM users u, customers c",
        &[("?column?", "")],
        "D0",
    ),
    // --- 3. whole-row references ---
    pg(
        "whole row by alias",
        "SELECT c FROM customers c",
        &[("c", "")],
        "D0",
    ),
    pg(
        "row_to_json(alias)",
        "SELECT row_to_json(c) FROM customers c",
        &[("row_to_json", "")],
        "D0",
    ),
    pg(
        "to_jsonb(table.*)",
        "SELECT to_jsonb(customers.*) FROM customers",
        &[("to_jsonb", "")],
        "D0",
    ),
    pg(
        "whole row by table name",
        "SELECT customers FROM customers",
        &[("customers", "")],
        "D0",
    ),
    pg(
        "json_agg(alias)",
        "SELECT json_agg(c) FROM customers c",
        &[("json_agg", "")],
        "D0",
    ),
    pg(
        "whole row of a table without masked columns stays clear",
        "SELECT row_to_json(o) FROM orders o",
        &[("row_to_json", "")],
        "C",
    ),
    pg(
        "whole row of a derived table holding a masked column",
        "SELECT row_to_json(s) FROM (SELECT id, ssn FROM customers) s",
        &[("row_to_json", "")],
        "D0",
    ),
    pg(
        "whole row of a derived table without masked columns",
        "SELECT row_to_json(s) FROM (SELECT id, name FROM customers) s",
        &[("row_to_json", "")],
        "C",
    ),
    pg(
        "whole row reported by the server as attnum 0",
        "SELECT c FROM customers c",
        &[("c", "public.customers.")],
        "D0",
    ),
    // --- 4. set operations ---
    pg(
        "UNION: masked in second branch",
        "SELECT name FROM customers UNION SELECT ssn FROM customers",
        &[("name", "")],
        "D0",
    ),
    pg(
        "INTERSECT: masked in first branch",
        "SELECT ssn FROM customers INTERSECT SELECT name FROM customers",
        &[("ssn", "")],
        "D0",
    ),
    pg(
        "EXCEPT without masked columns",
        "SELECT name FROM customers EXCEPT SELECT login FROM users",
        &[("name", "")],
        "C",
    ),
    pg(
        "UNION ALL per position",
        "SELECT id, name FROM customers UNION ALL SELECT id, ssn FROM customers",
        &[("id", ""), ("name", "")],
        "C D0",
    ),
    pg(
        "UNION of stars: positions unknown",
        "SELECT * FROM customers UNION SELECT * FROM customers",
        &[("id", ""), ("name", ""), ("email", ""), ("ssn", "")],
        "U0 U0 U0 U0",
    ),
    pg(
        "set operation inside a derived table",
        "SELECT x FROM (SELECT name AS x FROM customers UNION ALL SELECT password_hash FROM users) s",
        &[("x", "")],
        "D1",
    ),
    pg(
        "set operation under a star of a derived table",
        "SELECT * FROM (SELECT id, name FROM customers UNION SELECT id, ssn FROM customers) u",
        &[("id", ""), ("name", "")],
        "C D0",
    ),
    // --- 5. subqueries, CTEs, LATERAL, joins ---
    pg(
        "CTE alias chain",
        "WITH x AS (SELECT ssn AS a FROM customers) SELECT upper(a) FROM x",
        &[("upper", "")],
        "D0",
    ),
    pg(
        "CTE plain reference with origin",
        "WITH x AS (SELECT ssn AS a FROM customers) SELECT a FROM x",
        &[("a", "public.customers.ssn")],
        "O0",
    ),
    pg(
        "CTE: other column stays clear",
        "WITH x AS (SELECT ssn AS a, name FROM customers) SELECT upper(name) FROM x",
        &[("upper", "")],
        "C",
    ),
    pg(
        "CTE column alias list",
        "WITH x(a, b) AS (SELECT name, ssn FROM customers) SELECT lower(b), lower(a) FROM x",
        &[("lower", ""), ("lower", "")],
        "D0 C",
    ),
    pg(
        "recursive CTE: masked value from the recursive branch",
        "WITH RECURSIVE r(n, s) AS (SELECT 1, ''::text UNION ALL SELECT n + 1, (SELECT ssn FROM customers LIMIT 1) FROM r WHERE n < 3) SELECT n, s FROM r",
        &[("n", ""), ("s", "")],
        "C D0",
    ),
    pg(
        "recursive CTE: taint moves between columns across iterations",
        "WITH RECURSIVE r(a, b) AS (SELECT ssn, '' FROM customers UNION ALL SELECT '', a FROM r) SELECT b FROM r",
        &[("b", "")],
        "D0",
    ),
    pg(
        "WITH RECURSIVE: a CTE may read a later one",
        "WITH RECURSIVE a AS (SELECT lower(ssn) AS x FROM b), b AS (SELECT ssn FROM customers) SELECT x, 1 FROM a",
        &[("x", ""), ("?column?", "")],
        "D0 C",
    ),
    pg(
        "derived table alias chain",
        "SELECT s.l FROM (SELECT lower(ssn) AS l FROM customers) s",
        &[("l", "")],
        "D0",
    ),
    pg(
        "derived table with an unaliased expression",
        "SELECT lower FROM (SELECT lower(ssn) FROM customers) s",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "LATERAL subquery",
        "SELECT l FROM customers c, LATERAL (SELECT lower(c.ssn) AS l) x",
        &[("l", "")],
        "D0",
    ),
    pg(
        "join of plain columns",
        "SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
        &[
            ("name", "public.customers.name"),
            ("total", "public.orders.total"),
        ],
        "C C",
    ),
    pg(
        "unqualified masked name with several tables in scope",
        "SELECT upper(ssn) FROM customers c JOIN orders o ON o.customer_id = c.id",
        &[("upper", "")],
        "D0",
    ),
    pg(
        "unqualified unmasked name with several tables in scope",
        "SELECT upper(note) FROM customers c JOIN orders o ON o.customer_id = c.id",
        &[("upper", "")],
        "C",
    ),
    pg(
        "qualified reference picks the masked derived table",
        "SELECT lower(a.x) FROM (SELECT ssn AS x FROM customers) a JOIN (SELECT name AS x FROM customers) b ON true",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "qualified reference picks the clear derived table",
        "SELECT lower(b.x) FROM (SELECT ssn AS x FROM customers) a JOIN (SELECT name AS x FROM customers) b ON true",
        &[("lower", "")],
        "C",
    ),
    pg(
        "nested join with alias",
        "SELECT j.ssn || '' FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j",
        &[("?column?", "")],
        "D0",
    ),
    pg(
        "predicates do not mask: WHERE",
        "SELECT name FROM customers WHERE ssn = '123-45-6789'",
        &[("name", "public.customers.name")],
        "C",
    ),
    pg(
        "predicates do not mask: GROUP BY / ORDER BY",
        "SELECT count(*) FROM customers GROUP BY ssn ORDER BY ssn",
        &[("count", "")],
        "C",
    ),
    pg(
        "predicates do not mask: EXISTS",
        "SELECT EXISTS (SELECT 1 FROM customers WHERE ssn LIKE '1%')",
        &[("exists", "")],
        "C",
    ),
    // --- 6. star ---
    pg(
        "star over a table",
        "SELECT * FROM customers",
        CUSTOMERS_STAR,
        "C C C O0",
    ),
    pg(
        "qualified star and a column",
        "SELECT c.*, o.total FROM customers c JOIN orders o ON true",
        &[
            ("id", "public.customers.id"),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("total", "public.orders.total"),
        ],
        "C C C O0 C",
    ),
    pg(
        "star over a derived table with an expression",
        "SELECT * FROM (SELECT id, lower(ssn) AS l FROM customers) s",
        &[("id", "public.customers.id"), ("l", "")],
        "C D0",
    ),
    pg(
        "star over a CTE that has a star and an expression",
        "WITH x AS (SELECT *, lower(ssn) AS l FROM customers) SELECT * FROM x",
        &[
            ("id", "public.customers.id"),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("l", ""),
        ],
        "C C C O0 D0",
    ),
    pg(
        "star then an expression",
        "SELECT *, upper(name) FROM customers",
        &[
            ("id", "public.customers.id"),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("upper", ""),
        ],
        "C C C O0 C",
    ),
    pg(
        "star over a table and a LATERAL derived table",
        "SELECT * FROM orders o, LATERAL (SELECT md5(c.ssn) AS h FROM customers c WHERE c.id = o.customer_id) x",
        &[
            ("id", "public.orders.id"),
            ("customer_id", "public.orders.customer_id"),
            ("total", "public.orders.total"),
            ("note", "public.orders.note"),
            ("h", ""),
        ],
        "C C C C D0",
    ),
    pg(
        "two stars around an expression: origins decide, the origin-less column is masked",
        "SELECT s.*, o.* FROM (SELECT *, lower(ssn) AS l FROM customers) s JOIN orders o ON true",
        &[
            ("id", "public.customers.id"),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("l", ""),
            ("id", "public.orders.id"),
            ("customer_id", "public.orders.customer_id"),
            ("total", "public.orders.total"),
            ("note", "public.orders.note"),
        ],
        "C C C O0 D0 C C C C",
    ),
    pg(
        "star with a known set-returning function over a whole row",
        "SELECT * FROM customers c, jsonb_each(to_jsonb(c)) j",
        &[
            ("id", "public.customers.id"),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("key", ""),
            ("value", ""),
        ],
        "C C C O0 D0 D0",
    ),
    pg(
        "star over a clear set-returning function",
        "SELECT * FROM generate_series(1, 3)",
        &[("generate_series", "")],
        "C",
    ),
    pg(
        "USING join: merged column without origin is decided by name",
        "SELECT * FROM customers JOIN orders USING (id)",
        &[
            ("id", ""),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("customer_id", "public.orders.customer_id"),
            ("total", "public.orders.total"),
            ("note", "public.orders.note"),
        ],
        "C C C O0 C C C",
    ),
    pg(
        "a non-LATERAL derived table does not see the FROM items before it",
        "SELECT * FROM (SELECT lower(ssn) FROM customers) s, (SELECT name FROM customers) t",
        &[("lower", ""), ("name", "public.customers.name")],
        "D0 C",
    ),
    pg(
        "NATURAL join with a derived table: origins decide, the expression is masked",
        "SELECT * FROM customers NATURAL JOIN (SELECT id, lower(ssn) AS l FROM customers) s",
        &[
            ("id", "public.customers.id"),
            ("name", "public.customers.name"),
            ("email", "public.customers.email"),
            ("ssn", "public.customers.ssn"),
            ("l", ""),
        ],
        "C C C O0 D0",
    ),
    pg(
        "function in FROM with a column alias list keeps its lineage (ordinality too, conservatively)",
        "SELECT lower(x), n FROM customers c, unnest(ARRAY[c.ssn]) WITH ORDINALITY AS u(x, n)",
        &[("lower", ""), ("n", "")],
        "D0 D0",
    ),
    pg(
        "clear function in FROM with a column alias list",
        "SELECT c.name, g.x FROM customers c, generate_series(1, 3) AS g(x)",
        &[("name", "public.customers.name"), ("x", "")],
        "C C",
    ),
    pg(
        "table alias column list hides which column is which",
        "SELECT upper(a) FROM customers AS c(a, b)",
        &[("upper", "")],
        "U0",
    ),
    // --- 7. uncertain ---
    pg(
        "unknown set-returning function next to a masked table",
        "SELECT c.name, f.* FROM customers c, my_func(c.id) f",
        &[("name", "public.customers.name"), ("a", ""), ("b", "")],
        "C U0 U0",
    ),
    pg(
        "unknown set-returning function alone",
        "SELECT * FROM my_func()",
        &[("a", ""), ("b", "")],
        "C C",
    ),
    pg(
        "SQL given as text",
        "SELECT query_to_xml('select ssn from customers', true, false, '')",
        &[("query_to_xml", "")],
        "U0",
    ),
    pg(
        "more columns than the statement selects",
        "SELECT name, ssn FROM customers",
        &[
            ("name", "public.customers.name"),
            ("ssn", "public.customers.ssn"),
            ("extra", ""),
        ],
        "U0 O0 U0",
    ),
    pg(
        "count mismatch on a statement without masked tables",
        "SELECT total FROM orders",
        &[("total", "public.orders.total"), ("extra", "")],
        "C C",
    ),
    pg(
        "FETCH from a cursor",
        "FETCH 10 FROM cur",
        &[("name", "public.customers.name"), ("x", "")],
        "C U0",
    ),
    pg(
        "EXECUTE a prepared statement",
        "EXECUTE p(1)",
        &[("x", "")],
        "U0",
    ),
    pg(
        "EXPLAIN returns no table data",
        "EXPLAIN ANALYZE SELECT ssn FROM customers",
        &[("QUERY PLAN", "")],
        "C",
    ),
    pg("SHOW", "SHOW search_path", &[("search_path", "")], "C"),
    pg(
        "star over a table without origins falls back to names",
        "SELECT * FROM customers",
        &[("id", ""), ("name", ""), ("email", ""), ("ssn", "")],
        "C C C D0",
    ),
    pg(
        "FROM ONLY table",
        "SELECT lower(ssn) FROM ONLY customers",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "FROM ONLY (table)",
        "SELECT lower(ssn) FROM ONLY (customers)",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "planner statistics hold sample values",
        "SELECT attname, most_common_vals FROM pg_stats WHERE tablename = 'customers'",
        &[
            ("attname", "pg_catalog.pg_stats.attname"),
            ("most_common_vals", "pg_catalog.pg_stats.most_common_vals"),
        ],
        "C U0",
    ),
    pg(
        "custom setting may carry a masked value",
        "SELECT current_setting('my.ssn'), current_setting('server_version_num')",
        &[("current_setting", ""), ("current_setting", "")],
        "U0 C",
    ),
    // --- DML ... RETURNING ---
    pg(
        "INSERT RETURNING columns",
        "INSERT INTO customers (name, ssn) VALUES ('a', '1') RETURNING id, ssn",
        &[
            ("id", "public.customers.id"),
            ("ssn", "public.customers.ssn"),
        ],
        "C O0",
    ),
    pg(
        "INSERT RETURNING expression",
        "INSERT INTO customers (name, ssn) VALUES ('a', '1') RETURNING lower(ssn)",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "UPDATE writes a masked value into a clear column",
        "UPDATE customers SET name = ssn RETURNING name",
        &[("name", "public.customers.name")],
        "D0",
    ),
    pg(
        "DELETE RETURNING *",
        "DELETE FROM customers WHERE id = 1 RETURNING *",
        CUSTOMERS_STAR,
        "C C C O0",
    ),
    pg(
        "DELETE FROM ONLY RETURNING expression",
        "DELETE FROM ONLY customers WHERE id = 1 RETURNING lower(ssn)",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "DELETE RETURNING whole row",
        "DELETE FROM customers RETURNING row_to_json(customers)",
        &[("row_to_json", "")],
        "D0",
    ),
    pg(
        "INSERT ... SELECT copies a masked value",
        "INSERT INTO orders (note) SELECT ssn FROM customers RETURNING note, total",
        &[
            ("note", "public.orders.note"),
            ("total", "public.orders.total"),
        ],
        "D0 C",
    ),
    pg(
        "UPDATE ... FROM RETURNING",
        "UPDATE orders o SET note = 'x' FROM customers c WHERE c.id = o.customer_id RETURNING o.note, c.ssn || ''",
        &[("note", "public.orders.note"), ("?column?", "")],
        "C D0",
    ),
    pg(
        "data-modifying CTE",
        "WITH d AS (DELETE FROM customers RETURNING ssn) SELECT lower(ssn) FROM d",
        &[("lower", "")],
        "D0",
    ),
    pg(
        "ON CONFLICT DO UPDATE writes a masked value",
        "INSERT INTO orders (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = (SELECT ssn FROM customers LIMIT 1) RETURNING note",
        &[("note", "public.orders.note")],
        "D0",
    ),
    pg(
        "INSERT without RETURNING returns nothing",
        "INSERT INTO customers (ssn) VALUES ('1')",
        &[],
        "",
    ),
    // --- wildcard globs ---
    wide(
        "wildcard table glob masks every table's column",
        "SELECT upper(password_hash), login FROM accounts",
        &[("upper", ""), ("login", "public.accounts.login")],
        "D0 C",
    ),
    wide(
        "wildcard glob: whole row of any table may hold it",
        "SELECT row_to_json(a) FROM accounts a",
        &[("row_to_json", "")],
        "D0",
    ),
    wide(
        "wildcard glob: unknown function next to any table is uncertain",
        "SELECT f.x FROM accounts a, my_func(a.id) f",
        &[("x", "")],
        "U0",
    ),
    // --- MySQL ---
    my(
        "mysql: origin",
        "SELECT ssn FROM customers",
        &[("ssn", "shop.customers.ssn")],
        "O0",
    ),
    my(
        "mysql: CONCAT alias",
        "SELECT CONCAT(ssn, '') AS x FROM customers",
        &[("x", "")],
        "D0",
    ),
    my(
        "mysql: derived table alias reported as org_table",
        "SELECT x FROM (SELECT ssn AS x FROM customers) s",
        &[("x", "shop.s.x")],
        "D0",
    ),
    my(
        "mysql: UNION",
        "SELECT name FROM customers UNION SELECT ssn FROM customers",
        &[("name", "")],
        "D0",
    ),
    my(
        "mysql: backquoted names",
        "SELECT `SSN` FROM `Customers`",
        &[("SSN", "")],
        "D0",
    ),
    my(
        "mysql: star",
        "SELECT * FROM customers",
        &[
            ("id", "shop.customers.id"),
            ("name", "shop.customers.name"),
            ("email", "shop.customers.email"),
            ("ssn", "shop.customers.ssn"),
        ],
        "C C C O0",
    ),
    my(
        "mysql: plain columns and functions over them",
        "SELECT name, UPPER(email) FROM customers",
        &[("name", "shop.customers.name"), ("UPPER(email)", "")],
        "C C",
    ),
    my(
        "mysql: user variables may carry masked values, system variables do not",
        "SELECT @x, @@version",
        &[("@x", ""), ("@@version", "")],
        "U0 C",
    ),
    my(
        "mysql: ON DUPLICATE KEY UPDATE with no rows",
        "INSERT INTO orders (id, note) VALUES (1, 'x') ON DUPLICATE KEY UPDATE note = VALUES(note)",
        &[],
        "",
    ),
];

fn matcher(rules: Rules) -> ColumnMatcher {
    let globs: Vec<(String, usize)> = match rules {
        Rules::Std => vec![
            ("customers.ssn".into(), 0),
            ("users.password_hash".into(), 1),
            ("billing.cards.number".into(), 2),
        ],
        Rules::Wide => vec![("*.password_hash".into(), 0), ("customers.ssn".into(), 1)],
    };
    ColumnMatcher::new(&globs).expect("test globs compile")
}

fn parse(dialect: Dialect, sql: &str) -> Statement {
    let parsed = match dialect {
        Dialect::Pg => Parser::parse_sql(&PostgreSqlDialect {}, sql),
        Dialect::My => Parser::parse_sql(&MySqlDialect {}, sql),
    };
    let mut stmts = parsed.unwrap_or_else(|e| panic!("parse {sql}: {e}"));
    assert_eq!(stmts.len(), 1, "one statement in {sql}");
    stmts.remove(0)
}

fn origin(spec: &str) -> Option<ColumnOrigin> {
    if spec.is_empty() {
        return None;
    }
    let parts: Vec<&str> = spec.split('.').collect();
    let (schema, table, column) = match parts.as_slice() {
        [s, t, c] => (Some((*s).to_owned()), *t, *c),
        [t, c] => (None, *t, *c),
        _ => panic!("bad origin spec {spec}"),
    };
    Some(ColumnOrigin {
        schema,
        table: table.to_owned(),
        column: column.to_owned(),
    })
}

fn outputs(spec: &[(&str, &str)]) -> Vec<OutputColumn> {
    spec.iter()
        .map(|(name, o)| OutputColumn {
            name: (*name).to_owned(),
            origin: origin(o),
        })
        .collect()
}

fn code(m: &ColumnMask) -> String {
    match m {
        ColumnMask::Clear => "C".to_owned(),
        ColumnMask::Mask { rule, reason } => {
            let k = match reason {
                MaskReason::Origin => 'O',
                MaskReason::DerivedFrom(_) => 'D',
                MaskReason::Uncertain(_) => 'U',
            };
            format!("{k}{rule}")
        }
    }
}

fn describe(plan: &MaskPlan) -> String {
    plan.columns.iter().map(code).collect::<Vec<_>>().join(" ")
}

#[test]
fn mask_plan_cases() {
    let mut failures = Vec::new();
    for case in CASES {
        let stmt = parse(case.dialect, case.sql);
        let plan = plan_rows(&stmt, &outputs(case.output), &matcher(case.rules));
        assert_eq!(
            plan.columns.len(),
            case.output.len(),
            "{}: one decision per column",
            case.name
        );
        let got = describe(&plan);
        if got != case.expect {
            failures.push(format!(
                "{}\n    sql:    {}\n    expect: {}\n    got:    {}\n    plan:   {:?}",
                case.name, case.sql, case.expect, got, plan.columns
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn mask_plan_case_count() {
    assert!(
        CASES.len() >= 60,
        "keep at least 60 cases, have {}",
        CASES.len()
    );
}

#[test]
fn mask_plan_reasons_name_the_source() {
    let stmt = parse(
        Dialect::Pg,
        "SELECT lower(c.ssn), row_to_json(c) FROM customers c",
    );
    let plan = plan_rows(
        &stmt,
        &outputs(&[("lower", ""), ("row_to_json", "")]),
        &matcher(Rules::Std),
    );
    assert_eq!(
        plan.columns,
        vec![
            ColumnMask::Mask {
                rule: 0,
                reason: MaskReason::DerivedFrom("customers.ssn".into())
            },
            ColumnMask::Mask {
                rule: 0,
                reason: MaskReason::DerivedFrom("customers.*".into())
            },
        ]
    );
    assert_eq!(plan.masked_count(), 2);
    assert!(!plan.is_noop());

    let stmt = parse(Dialect::Pg, "SELECT name, ssn FROM customers");
    let plan = plan_rows(
        &stmt,
        &outputs(&[("a", ""), ("b", ""), ("c", "")]),
        &matcher(Rules::Std),
    );
    match &plan.columns[0] {
        ColumnMask::Mask {
            reason: MaskReason::Uncertain(why),
            ..
        } => assert!(why.contains("3 columns"), "reason says why: {why}"),
        other => panic!("expected uncertain, got {other:?}"),
    }
}

#[test]
fn mask_plan_empty_matcher_masks_nothing() {
    let m = ColumnMatcher::new(&[]).expect("empty matcher");
    assert!(m.is_empty());
    for case in CASES {
        let stmt = parse(case.dialect, case.sql);
        let plan = plan_rows(&stmt, &outputs(case.output), &m);
        assert!(plan.is_noop(), "{}: {:?}", case.name, plan);
    }
}

#[test]
fn mask_plan_never_panics_on_odd_outputs() {
    let m = matcher(Rules::Wide);
    let origins = [
        "",
        "public.customers.ssn",
        "public.customers.",
        "public.s.x",
        "x.y",
    ];
    for case in CASES {
        let stmt = parse(case.dialect, case.sql);
        for width in 0..7 {
            let out: Vec<OutputColumn> = (0..width)
                .map(|i| OutputColumn {
                    name: format!("c{i}"),
                    origin: origin(origins[(i + width) % origins.len()]),
                })
                .collect();
            let plan = plan_rows(&stmt, &out, &m);
            assert_eq!(plan.columns.len(), width, "{} width {width}", case.name);
        }
    }
}

#[test]
fn mask_plan_statements_of_other_kinds() {
    let m = matcher(Rules::Std);
    // Unknown kinds fall back to "mask if any referenced table may hold masked columns".
    for (sql, expect) in [
        ("CREATE TABLE t2 AS SELECT ssn FROM customers", "U0"),
        ("CREATE TABLE t3 (a int)", "C"),
    ] {
        let stmt = parse(Dialect::Pg, sql);
        let plan = plan_rows(&stmt, &outputs(&[("a", "")]), &m);
        assert_eq!(describe(&plan), expect, "{sql}");
    }
}

// --- COPY ---

fn copy(sql: &str, cols: Option<&[String]>) -> CopyPlan {
    plan_copy(&parse(Dialect::Pg, sql), &matcher(Rules::Std), cols)
}

#[test]
fn mask_plan_copy_table_without_columns_is_denied_when_unknown() {
    match copy("COPY customers TO STDOUT", None) {
        CopyPlan::Deny(why) => assert!(
            why.contains("customers") && why.contains("list the columns"),
            "{why}"
        ),
        other => panic!("expected deny, got {other:?}"),
    }
}

#[test]
fn mask_plan_copy_table_with_known_columns() {
    let cols: Vec<String> = ["id", "name", "email", "ssn"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match copy("COPY customers TO STDOUT", Some(&cols)) {
        CopyPlan::Columns(p) => assert_eq!(describe(&p), "C C C O0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mask_plan_copy_table_column_list() {
    match copy("COPY customers (id, ssn) TO STDOUT WITH (FORMAT csv)", None) {
        CopyPlan::Columns(p) => assert_eq!(describe(&p), "C O0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mask_plan_copy_query_expressions() {
    match copy(
        "COPY (SELECT id, lower(ssn), name FROM customers) TO STDOUT",
        None,
    ) {
        CopyPlan::Columns(p) => assert_eq!(describe(&p), "C D0 C"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mask_plan_copy_query_star_over_masked_table_is_denied() {
    assert!(matches!(
        copy("COPY (SELECT * FROM customers) TO STDOUT", None),
        CopyPlan::Deny(_)
    ));
}

#[test]
fn mask_plan_copy_query_star_prefix_is_planned() {
    match copy(
        "COPY (SELECT lower(c.ssn), o.* FROM orders o JOIN customers c ON true) TO STDOUT",
        None,
    ) {
        CopyPlan::Columns(p) => assert_eq!(describe(&p), "D0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mask_plan_copy_clear_table_and_copy_in() {
    assert_eq!(
        copy("COPY orders TO STDOUT", None),
        CopyPlan::Columns(MaskPlan::default())
    );
    assert_eq!(
        copy("COPY customers FROM STDIN", None),
        CopyPlan::Columns(MaskPlan::default())
    );
    assert!(matches!(copy("SELECT 1", None), CopyPlan::Deny(_)));
}

/// Writes and side effects that carry masked values are found, naming the
/// masked column; writes of other values, and of masked values into columns
/// masked as strongly, are not.
#[test]
fn laundering_through_writes_and_side_effects() {
    let m = ColumnMatcher::new(&[("customers.ssn".into(), 0), ("customers.email".into(), 1)])
        .expect("globs");
    let laundered = [
        "UPDATE customers SET name = translate(ssn, '-', 'x') WHERE id = 1",
        "UPDATE customers SET (name, email) = (ssn, 'x') WHERE id = 1",
        "UPDATE orders o SET note = c.ssn FROM customers c WHERE c.id = o.customer_id",
        "UPDATE orders SET note = (SELECT ssn FROM customers LIMIT 1)",
        "UPDATE customers SET email = ssn WHERE id = 1",
        "INSERT INTO orders (id, note) SELECT id, lower(ssn) FROM customers",
        "INSERT INTO orders SELECT * FROM customers",
        "INSERT INTO orders (note) VALUES ((SELECT ssn FROM customers LIMIT 1))",
        "INSERT INTO orders (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = (SELECT ssn FROM customers LIMIT 1)",
        "WITH s AS (SELECT ssn FROM customers) INSERT INTO orders (note) SELECT ssn FROM s",
        "WITH u AS (UPDATE orders SET note = (SELECT ssn FROM customers LIMIT 1) RETURNING 1) SELECT * FROM u",
        "CREATE TABLE copy AS SELECT id, ssn FROM customers",
        "CREATE TABLE copy AS SELECT * FROM customers",
        "SELECT ssn INTO copy FROM customers",
        "MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN UPDATE SET note = c.ssn",
        "COPY (SELECT ssn FROM customers) TO '/tmp/x'",
        "COPY customers TO PROGRAM 'cat'",
        "SELECT set_config('my.x', ssn, false) FROM customers",
        "SELECT 1 FROM customers WHERE set_config('application_name', ssn, false) IS NOT NULL",
        "SELECT id FROM customers ORDER BY pg_notify('c', ssn)",
        "SELECT pg_notify('c', (SELECT ssn FROM customers LIMIT 1))",
        "SELECT setval('s', length(ssn)) FROM customers",
        "SELECT pg_advisory_lock(hashtext(ssn)) FROM customers",
        "SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM customers",
        "SELECT 1 WHERE EXISTS (SELECT set_config('x.y', ssn, false) FROM customers)",
        "SELECT o.id FROM orders o JOIN customers c ON pg_notify('c', c.ssn) IS NULL",
        "CALL store(( SELECT ssn FROM customers LIMIT 1))",
        "PREPARE p AS UPDATE orders SET note = (SELECT ssn FROM customers LIMIT 1) RETURNING note",
        "EXPLAIN ANALYZE INSERT INTO orders (note) SELECT ssn FROM customers",
        "SELECT set_config('a.b', row_to_json(c)::text, false) FROM customers c",
    ];
    for sql in laundered {
        let stmt = parse(Dialect::Pg, sql);
        let why = laundering(&stmt, &m).unwrap_or_else(|| panic!("{sql} launders"));
        assert!(
            why.contains("ssn") || why.contains("customers"),
            "{sql}: {why}"
        );
    }
    let clean = [
        "UPDATE customers SET name = upper(name) WHERE id = 1",
        "UPDATE customers SET ssn = upper(ssn) WHERE id = 1",
        "UPDATE orders SET note = 'x' WHERE customer_id IN (SELECT id FROM customers WHERE ssn LIKE '1%')",
        "INSERT INTO orders (id, note) SELECT id, name FROM customers",
        "INSERT INTO customers (id, ssn) SELECT id + 100, ssn FROM customers",
        "CREATE TABLE copy AS SELECT id, name FROM customers",
        "SELECT set_config('application_name', name, false) FROM customers",
        "SELECT pg_advisory_lock(id) FROM customers",
        "SELECT ssn FROM customers",
        "COPY (SELECT ssn FROM customers) TO STDOUT",
        "DELETE FROM customers WHERE ssn = '1'",
    ];
    for sql in clean {
        let stmt = parse(Dialect::Pg, sql);
        assert_eq!(laundering(&stmt, &m), None, "{sql}");
    }
    // A weaker rule's column does not cover a stronger rule's value.
    let stmt = parse(Dialect::Pg, "UPDATE customers SET email = ssn WHERE id = 1");
    assert!(laundering(&stmt, &m).is_some());
    assert!(laundering(&stmt, &ColumnMatcher::default()).is_none());
}

/// DDL that takes masked values out of the rules' sight without a write the
/// lineage can follow: renaming a masked column or a table with masked
/// columns, a generated column computed from a masked one, and code defined
/// on the server (PostgreSQL and MySQL forms).
#[test]
fn renaming_or_deriving_a_masked_column_or_defining_code_launders() {
    let m = ColumnMatcher::new(&[
        ("customers.ssn".into(), 0),
        ("*.password_hash".into(), 1),
        ("fin.acct.ssn".into(), 2),
        ("hr*.*.salary".into(), 3),
    ])
    .expect("globs");
    let laundered = [
        // A schema a `schema.table.column` rule names, renamed out of it.
        (Dialect::Pg, "ALTER SCHEMA fin RENAME TO fin2"),
        (Dialect::Pg, "ALTER SCHEMA FIN RENAME TO other"),
        (Dialect::Pg, "ALTER SCHEMA hr_eu RENAME TO people"),
        (Dialect::Pg, "ALTER TABLE customers RENAME COLUMN ssn TO s2"),
        (Dialect::Pg, "ALTER TABLE public.customers RENAME ssn TO s2"),
        (Dialect::Pg, "ALTER TABLE customers RENAME TO k1"),
        (
            Dialect::Pg,
            "ALTER TABLE users RENAME COLUMN password_hash TO p",
        ),
        (
            Dialect::Pg,
            "ALTER TABLE customers ADD COLUMN leak text GENERATED ALWAYS AS (ssn) STORED",
        ),
        (
            Dialect::Pg,
            "ALTER TABLE customers ADD COLUMN leak text GENERATED ALWAYS AS (upper(customers.ssn)) STORED",
        ),
        (Dialect::My, "ALTER TABLE customers CHANGE ssn s2 text"),
        (Dialect::My, "ALTER TABLE customers RENAME COLUMN ssn TO s2"),
        (Dialect::My, "RENAME TABLE customers TO k1"),
        (
            Dialect::My,
            "ALTER TABLE customers ADD COLUMN leak text AS (concat(ssn, '')) STORED",
        ),
        // Code whose body the sidecar never sees at run time.
        (
            Dialect::Pg,
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'INSERT INTO notes SELECT ssn FROM customers; SELECT 1'",
        ),
        (
            Dialect::Pg,
            "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$",
        ),
        (
            Dialect::Pg,
            "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION g()",
        ),
        // (MySQL's CREATE FUNCTION does not parse: onParseError decides it.)
        (
            Dialect::My,
            "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW BEGIN INSERT INTO notes SELECT ssn FROM customers; END",
        ),
    ];
    for (dialect, sql) in laundered {
        let stmt = parse(dialect, sql);
        let why = laundering(&stmt, &m).unwrap_or_else(|| panic!("{sql} launders"));
        assert!(
            why.contains("masked") || why.contains("code"),
            "{sql}: {why}"
        );
    }
    let clean = [
        (
            Dialect::Pg,
            "ALTER TABLE customers RENAME COLUMN name TO full_name",
        ),
        (Dialect::Pg, "ALTER TABLE orders RENAME TO orders_old"),
        (
            Dialect::Pg,
            "ALTER TABLE customers ADD COLUMN n2 text GENERATED ALWAYS AS (upper(name)) STORED",
        ),
        (Dialect::Pg, "ALTER TABLE customers ADD COLUMN note text"),
        // Schemas no rule names, or renamed to a name the same globs match.
        (Dialect::Pg, "ALTER SCHEMA public RENAME TO pub2"),
        (Dialect::Pg, "ALTER SCHEMA hr_eu RENAME TO hr_europe"),
        (Dialect::Pg, "ALTER SCHEMA fin OWNER TO someone"),
        // Still matched by a glob as strong: `*.password_hash` follows users.
        (Dialect::Pg, "ALTER TABLE users RENAME TO accounts"),
        (
            Dialect::My,
            "ALTER TABLE customers CHANGE ssn ssn varchar(20)",
        ),
    ];
    for (dialect, sql) in clean {
        let stmt = parse(dialect, sql);
        assert_eq!(laundering(&stmt, &m), None, "{sql}");
    }
}
