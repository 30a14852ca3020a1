//! Unit tests of policy compilation and decisions.

use std::sync::Arc;

use sluice_crds::{AccessPolicy, Action, MaxRowsAction};

use crate::http::HttpRequest;
use crate::sql::SqlDialect;

use super::compile::{CompiledPolicy, NoSecrets};
use super::set::PolicySet;
use super::{CompileError, Identity};

fn policy(yaml: &str) -> Arc<CompiledPolicy> {
    let ap: AccessPolicy = serde_saphyr::from_str(yaml).unwrap();
    Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).unwrap())
}

fn compile_err(yaml: &str) -> CompileError {
    let ap: AccessPolicy = serde_saphyr::from_str(yaml).unwrap();
    CompiledPolicy::compile(&ap, &NoSecrets).unwrap_err()
}

const BASE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: shop}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
"#;

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn set(policies: &[Arc<CompiledPolicy>]) -> PolicySet {
    PolicySet::select(
        policies,
        &Identity::service_account("shop", "app"),
        "db",
        None,
    )
    .unwrap()
}

fn action(ps: &PolicySet, sql: &str) -> (Action, Option<String>) {
    let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
    (d.action, d.rule)
}

#[test]
fn binding_needs_subject_and_connection() {
    let p = policy(&with(""));
    let app = Identity::service_account("shop", "app");
    assert!(PolicySet::select(std::slice::from_ref(&p), &app, "db", None).is_some());
    assert!(PolicySet::select(std::slice::from_ref(&p), &app, "other", None).is_none());
    let other_ns = Identity::service_account("dev", "app");
    assert!(PolicySet::select(std::slice::from_ref(&p), &other_ns, "db", None).is_none());
    let g = policy(
        "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: g, namespace: shop}\n\
             spec: {subjects: [{group: 'system:serviceaccounts:ci'}], connections: [db]}\n",
    );
    let ci = Identity::service_account("ci", "deployer");
    assert!(PolicySet::select(std::slice::from_ref(&g), &ci, "db", None).is_some());
    assert!(PolicySet::select(&[g], &app, "db", None).is_none());
    let cross = policy(
        "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: x, namespace: shop}\n\
             spec: {subjects: [{serviceAccount: app, namespace: dev}], connections: [db]}\n",
    );
    assert!(PolicySet::select(std::slice::from_ref(&cross), &other_ns, "db", None).is_some());
    assert!(PolicySet::select(&[cross], &app, "db", None).is_none());
}

#[test]
fn first_matching_rule_then_default() {
    let ps = set(&[policy(&with(
        r#"  defaultAction: deny
  rules:
    - {name: reads, match: {statements: [select]}, action: allow}
    - {name: no-select-secrets, match: {tables: [secrets]}, action: deny}
    - {name: writes, match: {statements: [insert, update]}, action: allow}
"#,
    ))]);
    // First match wins, even when a later rule would deny.
    assert_eq!(
        action(&ps, "SELECT * FROM secrets"),
        (Action::Allow, Some("reads".into()))
    );
    assert_eq!(
        action(&ps, "INSERT INTO t VALUES (1)"),
        (Action::Allow, Some("writes".into()))
    );
    assert_eq!(
        action(&ps, "DELETE FROM t WHERE id = 1"),
        (Action::Deny, None)
    );
    // An allow rule grants only the kinds it names: a write that reads
    // (a subquery) is not a read, nor a write alone.
    assert_eq!(
        action(&ps, "DELETE FROM t WHERE id IN (SELECT id FROM s)"),
        (Action::Deny, None)
    );
    assert_eq!(
        action(&ps, "UPDATE t SET x = (SELECT 1) WHERE id = 1"),
        (Action::Deny, None)
    );
    // Tables and functions alike: an allow rule naming some of them does
    // not allow the others.
    let only = set(&[policy(&with(
        r#"  defaultAction: deny
  rules:
    - {name: customers, match: {statements: [select], tables: [customers]}, action: allow}
    - {name: md5, match: {functions: [md5]}, action: allow}
"#,
    ))]);
    assert_eq!(
        action(
            &only,
            "SELECT * FROM customers c JOIN orders o ON o.c = c.id"
        ),
        (Action::Deny, None)
    );
    assert_eq!(
        action(&only, "SELECT name FROM customers"),
        (Action::Allow, Some("customers".into()))
    );
    assert_eq!(action(&only, "SELECT 1"), (Action::Deny, None));
    assert_eq!(
        action(&only, "SELECT md5('a'), pg_read_file('x')"),
        (Action::Deny, None)
    );
    assert_eq!(
        action(&only, "SELECT md5('a')"),
        (Action::Allow, Some("md5".into()))
    );
}

#[test]
fn rule_fields_are_anded_lists_ored() {
    let ps = set(&[policy(&with(
        r#"  rules:
    - {name: r, match: {statements: [delete, update], tables: ["public.accounts", "ledger_*"]}, action: deny}
    - {name: ww, match: {withoutWhere: true}, action: requireApproval, approval: {approvers: {users: [a]}}}
    - {name: tp, match: {textPattern: "(?i)sleep\\s*\\("}, action: deny}
    - {name: fn, match: {functions: ["dblink*", "pg_catalog.lo_*"]}, action: deny}
"#,
    ))]);
    let r = |s: &str| action(&ps, s).1;
    assert_eq!(r("DELETE FROM accounts WHERE id = 1"), Some("r".into()));
    assert_eq!(
        r("DELETE FROM public.accounts WHERE id = 1"),
        Some("r".into())
    );
    assert_eq!(r("DELETE FROM other.accounts WHERE id = 1"), None);
    assert_eq!(
        r("UPDATE ledger_2024 SET x = 1 WHERE id = 1"),
        Some("r".into())
    );
    assert_eq!(r("SELECT * FROM ledger_2024"), None);
    assert_eq!(r("DELETE FROM orders"), Some("ww".into()));
    assert_eq!(r("SELECT pg_sleep(1), SLEEP (2)"), Some("tp".into()));
    assert_eq!(
        r("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)"),
        Some("fn".into())
    );
    assert_eq!(r("SELECT lo_import('/etc/passwd')"), Some("fn".into()));
    assert_eq!(
        r("SELECT pg_catalog.lo_import('/etc/passwd')"),
        Some("fn".into())
    );
}

#[test]
fn most_restrictive_across_policies() {
    let a = policy(
        &with("  rules: [{name: ok, match: {}, action: allow}]\n").replace("name: p,", "name: a,"),
    );
    let b = policy(
            &with("  rules: [{name: hold, match: {statements: [delete]}, action: requireApproval, approval: {approvers: {groups: [dba]}}}]\n")
                .replace("name: p,", "name: b,"),
        );
    let c = policy(
        &with("  rules: [{name: no, match: {tables: [t]}, action: deny}]\n")
            .replace("name: p,", "name: c,"),
    );
    let ps = set(&[a, b, c]);
    let d = ps
        .decide_sql("DELETE FROM t WHERE id = 1", SqlDialect::Postgres)
        .decision;
    assert_eq!(
        (d.action, d.policy.as_deref(), d.rule.as_deref()),
        (Action::Deny, Some("c"), Some("no"))
    );
    let d = ps
        .decide_sql("DELETE FROM u WHERE id = 1", SqlDialect::Postgres)
        .decision;
    assert_eq!(
        (d.action, d.policy.as_deref()),
        (Action::RequireApproval, Some("b"))
    );
    assert!(d.approval.is_some());
    let d = ps.decide_sql("SELECT 1", SqlDialect::Postgres).decision;
    assert_eq!(d.action, Action::Allow);
}

#[test]
fn approval_requirements_never_tie() {
    // Issue 18: the requirement covering the others decides, in either
    // order; requirements none of which covers the others are refused.
    let rule = |name: &str, table: &str, approvers: &str, min: u32| {
        format!(
            "    - {{name: {name}, match: {{tables: [{table}]}}, action: requireApproval, approval: {{approvers: {approvers}, minApprovals: {min}}}}}\n"
        )
    };
    let ps = set(&[policy(&with(&format!(
        "  rules:\n{}{}{}",
        rule("one", "a", "{groups: [dba]}", 1),
        rule("two", "b", "{groups: [dba]}", 2),
        rule("sec", "c", "{groups: [security]}", 1)
    )))]);
    for sql in [
        "UPDATE a SET v = 1; UPDATE b SET v = 1",
        "UPDATE b SET v = 1; UPDATE a SET v = 1",
    ] {
        let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
        assert_eq!(
            (d.enforced, d.enforced_rule.as_deref()),
            (Action::RequireApproval, Some("two")),
            "{sql}"
        );
        assert_eq!(d.approval.unwrap().min_approvals, 2, "{sql}");
    }
    for sql in [
        "UPDATE a SET v = 1; UPDATE c SET v = 1",
        "UPDATE c SET v = 1; UPDATE a SET v = 1",
    ] {
        let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
        assert_eq!(d.enforced, Action::Deny, "{sql}");
        assert!(
            d.reason.contains("rule \"one\"") && d.reason.contains("rule \"sec\""),
            "{}",
            d.reason
        );
    }

    // Across policies: a laxer policy (fewer approvals, more approvers)
    // does not override a two-person rule, whichever sorts first.
    let named = |name: &str, rules: String| {
        policy(&with(&format!("  rules:\n{rules}")).replace("name: p,", &format!("name: {name},")))
    };
    let strict = |name: &str| named(name, rule("two", "b", "{groups: [dba]}", 2));
    let lax = |name: &str| named(name, rule("lax", "b", "{groups: [dba, ops]}", 1));
    for (policies, strict_name) in [
        ([lax("a"), strict("b")], "b"),
        ([strict("a"), lax("b")], "a"),
    ] {
        let d = set(&policies)
            .decide_sql("UPDATE b SET v = 2", SqlDialect::Postgres)
            .decision;
        assert_eq!(
            (
                d.enforced,
                d.enforced_policy.as_deref(),
                d.enforced_rule.as_deref()
            ),
            (Action::RequireApproval, Some(strict_name), Some("two"))
        );
        assert_eq!(d.approval.unwrap().min_approvals, 2);
    }
    // Approvers the other rule does not accept: no request can satisfy both.
    let other = |name: &str| named(name, rule("bob", "b", "{users: [bob]}", 2));
    for policies in [[other("a"), strict("b")], [strict("a"), other("b")]] {
        let d = set(&policies)
            .decide_sql("UPDATE b SET v = 2", SqlDialect::Postgres)
            .decision;
        assert_eq!(d.enforced, Action::Deny, "{}", d.reason);
        assert!(d.reason.contains("none of these covers"), "{}", d.reason);
    }
}

#[test]
fn dry_run_records_but_does_not_block() {
    let enforce = policy(&with(
        "  rules: [{name: hold, match: {statements: [update]}, action: requireApproval, approval: {approvers: {users: [x]}}}]\n",
    ));
    let dry = policy(
            &with("  mode: dryRun\n  rules: [{name: no-drop, match: {statements: [drop, update]}, action: deny}]\n")
                .replace("name: p,", "name: q,"),
        );
    let ps = set(&[enforce, dry.clone()]);
    let d = ps.decide_sql("DROP TABLE t", SqlDialect::Postgres).decision;
    assert_eq!(
        (d.action, d.enforced, d.dry_run),
        (Action::Deny, Action::Allow, true)
    );
    assert!(d.reason.contains("dryRun"), "{}", d.reason);
    let d = ps
        .decide_sql("UPDATE t SET a = 1 WHERE b = 2", SqlDialect::Postgres)
        .decision;
    assert_eq!(
        (d.action, d.enforced),
        (Action::Deny, Action::RequireApproval)
    );
    assert_eq!(d.enforced_rule.as_deref(), Some("hold"));
    assert!(d.approval.is_some());
    // Only dry-run policies: everything runs.
    let only = set(&[dry]);
    let d = only
        .decide_sql("DROP TABLE t", SqlDialect::Postgres)
        .decision;
    assert_eq!((d.action, d.enforced), (Action::Deny, Action::Allow));
}

#[test]
fn parse_errors_follow_on_parse_error() {
    let deny = set(&[policy(&with(""))]);
    let d = deny.decide_sql("SELEKT 1 FROM", SqlDialect::Postgres);
    assert_eq!(d.decision.action, Action::Deny);
    assert!(d.parse_error.is_some());
    assert!(
        d.decision.reason.contains("onParseError"),
        "{}",
        d.decision.reason
    );
    let allow = set(&[policy(&with("  onParseError: allow\n"))]);
    assert_eq!(
        allow
            .decide_sql("SELEKT 1 FROM", SqlDialect::Postgres)
            .decision
            .action,
        Action::Allow
    );
    // The redacted text of an unparseable statement keeps no literal.
    let d = deny.decide_sql("SELEKT 'secret-value' FROM", SqlDialect::Postgres);
    assert!(!d.redacted.contains("secret-value"), "{}", d.redacted);
}

/// Under SQL masking (column rules or detectors, in any policy of the set)
/// an unparsed text is refused whatever onParseError says, on both
/// dialects; JSONPath masking (HTTP only) leaves onParseError in charge.
#[test]
fn parse_errors_under_sql_masking_are_refused() {
    let lenient = with("  onParseError: allow\n");
    let columns = "  masking:\n    - columns: [\"customers.ssn\"]\n      strategy: redact\n";
    let detectors = "  masking:\n    - detectors: [ssn]\n      strategy: redact\n";
    let paths = "  masking:\n    - jsonPaths: [\"$.ssn\"]\n      strategy: redact\n";
    for (masking, refused) in [(columns, true), (detectors, true), (paths, false)] {
        let masked = set(&[policy(&format!("{lenient}{masking}"))]);
        for dialect in [SqlDialect::Postgres, SqlDialect::Mysql] {
            let d = masked.decide_sql("SELEKT 1 FROM", dialect);
            assert!(d.parse_error.is_some());
            assert_eq!(
                d.decision.action == Action::Deny,
                refused,
                "{masking} {dialect:?}: {}",
                d.decision.reason
            );
            assert_eq!(
                d.decision.enforced == Action::Deny,
                refused,
                "{masking} {dialect:?}"
            );
            if refused {
                assert!(
                    d.decision.reason.contains("cannot parse the statement"),
                    "{}",
                    d.decision.reason
                );
                assert!(
                    !d.decision
                        .reason
                        .contains("handled by the policy's onParseError"),
                    "{}",
                    d.decision.reason
                );
            }
        }
    }
    // A text the policies deny already stays their decision.
    let strict = set(&[policy(&with(columns))]);
    let d = strict
        .decide_sql("SELEKT 1 FROM", SqlDialect::Postgres)
        .decision;
    assert_eq!(
        (d.enforced, d.policy.as_deref()),
        (Action::Deny, Some("p")),
        "{}",
        d.reason
    );
    // Masking in another policy of the set is enough.
    let two = set(&[
        policy(&lenient),
        policy(&format!("{lenient}{columns}").replace("name: p", "name: q")),
    ]);
    assert_eq!(
        two.decide_sql("SELEKT 1 FROM", SqlDialect::Postgres)
            .decision
            .enforced,
        Action::Deny
    );
}

#[test]
fn multi_statement_strings_are_as_strict_as_their_strictest_part() {
    let ps = set(&[policy(&with(
        "  rules: [{name: no-drop, match: {statements: [drop]}, action: deny}]\n",
    ))]);
    let d = ps.decide_sql("SELECT 1; DROP TABLE t; SELECT 2", SqlDialect::Postgres);
    assert_eq!(d.statements.len(), 3);
    assert_eq!(d.decision.action, Action::Deny);
    assert_eq!(d.statements[0].1.action, Action::Allow);
    assert_eq!(d.statements[1].1.action, Action::Deny);
}

#[test]
fn sql_rules_do_not_match_http_and_back() {
    let ps = set(&[policy(&with(
        r#"  rules:
    - {name: sql-only, match: {statements: [select]}, action: deny}
    - {name: http-only, match: {methods: [DELETE]}, action: deny}
"#,
    ))]);
    let get = HttpRequest {
        method: "GET",
        path: "/x",
        query: "",
        body: None,
    };
    assert_eq!(ps.decide_http(&get).action, Action::Allow);
    let del = HttpRequest {
        method: "DELETE",
        path: "/x",
        query: "",
        body: None,
    };
    assert_eq!(ps.decide_http(&del).rule.as_deref(), Some("http-only"));
    assert_eq!(
        action(&ps, "DELETE FROM t WHERE a = 1"),
        (Action::Allow, None)
    );
}

#[test]
fn compile_errors_name_the_field() {
    let e = compile_err(&with(
        "  rules: [{name: r, match: {tables: ['a[']}, action: deny}]\n",
    ));
    assert_eq!(e.reason(), "InvalidPattern");
    assert!(
        e.to_string().contains("spec.rules[0].match.tables[0]"),
        "{e}"
    );
    let e = compile_err(&with(
        "  rules: [{name: r, match: {textPattern: '('}, action: deny}]\n",
    ));
    assert!(e.to_string().contains("textPattern"), "{e}");
    let e = compile_err(&with(
        "  rules: [{name: r, match: {statements: [select], methods: [GET]}, action: deny}]\n",
    ));
    assert_eq!(e.reason(), "InvalidRule");
    let e = compile_err(&with(
        "  rules: [{name: r, match: {}, action: requireApproval}]\n",
    ));
    assert!(e.to_string().contains("approval"), "{e}");
    let e = compile_err(&with("  masking: [{columns: [ssn]}]\n"));
    assert!(e.to_string().contains("spec.masking[0].columns[0]"), "{e}");
    let e = compile_err(&with(
        "  masking: [{columns: [t.c], strategy: hash, keySecretRef: {name: k, key: key}}]\n",
    ));
    assert_eq!(e.reason(), "SecretNotFound");
}

#[test]
fn limits_take_the_strictest() {
    let a = policy(&with("  limits: {maxRows: 100, statementsPerSecond: 50}\n"));
    let b = policy(
        &with("  limits: {maxRows: 10, onMaxRows: refuse}\n").replace("name: p,", "name: b,"),
    );
    let l = set(&[a, b]).limits();
    assert_eq!(l.max_rows, Some(10));
    assert_eq!(l.statements_per_second, Some(50));
    assert_eq!(l.on_max_rows, MaxRowsAction::Refuse);
}

#[test]
fn max_rows_affected_takes_the_smallest_and_names_its_policy() {
    let a = policy(&with("  limits: {maxRowsAffected: 100}\n"));
    let b = policy(
        &with("  limits: {maxRowsAffected: 5, maxRows: 10}\n").replace("name: p,", "name: b,"),
    );
    let c = policy(&with("  limits: {maxRows: 1}\n").replace("name: p,", "name: c,"));
    let s = set(&[a.clone(), b, c.clone()]);
    assert_eq!(s.limits().max_rows_affected, Some(5));
    assert_eq!(s.max_rows_affected_policy(), Some("b"));
    let s = set(&[c.clone(), a]);
    assert_eq!(s.limits().max_rows_affected, Some(100));
    assert_eq!(s.max_rows_affected_policy(), Some("p"));
    assert_eq!(set(&[c]).max_rows_affected_policy(), None);
}

#[test]
fn read_only_most_restrictive_wins_in_enforce_mode() {
    let plain = policy(&with(""));
    let ro = policy(&with("  readOnly: true\n").replace("name: p,", "name: b,"));
    let dry = policy(&with("  readOnly: true\n  mode: dryRun\n").replace("name: p,", "name: c,"));
    assert_eq!(set(std::slice::from_ref(&plain)).read_only(), None);
    assert_eq!(set(&[plain.clone(), ro]).read_only(), Some("b"));
    assert_eq!(set(&[plain, dry]).read_only(), None);
}

#[test]
fn masking_rules_combine_strongest_first() {
    let ps = set(&[policy(&with(
        r#"  masking:
    - {columns: ["customers.email"], strategy: partial}
    - {columns: ["customers.*"], strategy: redact}
    - {detectors: [creditCard], strategy: partial}
"#,
    ))]);
    assert!(ps.has_masking());
    let rule = ps
        .column_matcher()
        .match_column(None, "customers", "email")
        .unwrap();
    // redact is stronger than partial, and both match.
    assert_eq!(ps.masker(rule).mask("bob@example.com"), "[redacted]");
    let (detectors, masker) = ps.detectors().unwrap();
    let text = "card 4111 1111 1111 1111 on file";
    let found = detectors.find(text);
    assert_eq!(found.len(), 1);
    assert!(
        !masker
            .mask_findings(text, &found)
            .contains("4111 1111 1111 1111")
    );
}

#[test]
fn function_rules_hold_through_the_views_a_statement_reads() {
    use super::Reach;
    use std::collections::HashMap;
    let ps = set(&[policy(&with(
        r#"  defaultAction: deny
  rules:
    - {name: no-server-files, match: {functions: ["pg_read_file", "lo_*"]}, action: deny}
    - name: hold-setval
      match: {functions: [setval]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: hold, minApprovals: 1}
    - {name: reads, match: {statements: [select]}, action: allow}
    - {name: allow-md5, match: {functions: [md5]}, action: allow}
"#,
    ))]);
    assert!(ps.has_restrictive_function_rules() && ps.follows_names());
    assert!(!ps.has_restrictive_table_rules());
    let reach = |pairs: &[(&str, &str, &str)]| -> HashMap<String, Reach> {
        let mut out: HashMap<String, Reach> = HashMap::new();
        for (name, view, f) in pairs {
            out.entry((*name).to_string())
                .or_default()
                .functions
                .push(((*view).to_string(), (*f).to_string()));
        }
        out
    };
    let decided = ps.decide_sql("SELECT * FROM v", SqlDialect::Postgres);
    assert_eq!(decided.decision.action, Action::Allow);
    // A view whose definition calls a denied function: denied, naming it.
    let d = ps
        .through_relations(
            &decided,
            &reach(&[("v", "public.v", "pg_read_file")]),
            &HashMap::new(),
        )
        .unwrap()
        .decision;
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("no-server-files"))
    );
    assert!(d.reason.contains("v calls pg_read_file"), "{}", d.reason);
    // Through a view over it, and a glob.
    let d = ps
        .through_relations(
            &decided,
            &reach(&[("v", "public.inner", "lo_create")]),
            &HashMap::new(),
        )
        .unwrap()
        .decision;
    assert_eq!(d.action, Action::Deny);
    assert!(
        d.reason
            .contains("v reaches public.inner, which calls lo_create"),
        "{}",
        d.reason
    );
    // A hold the same way.
    let d = ps
        .through_relations(
            &decided,
            &reach(&[("v", "public.v", "setval")]),
            &HashMap::new(),
        )
        .unwrap()
        .decision;
    assert_eq!(d.action, Action::RequireApproval);
    assert!(d.reason.contains("v calls setval"), "{}", d.reason);
    // Functions no restrictive rule names, or only an allow rule: unchanged.
    assert!(
        ps.through_relations(
            &decided,
            &reach(&[("v", "public.v", "upper")]),
            &HashMap::new()
        )
        .is_none()
    );
    // A user-defined function whose body calls a denied one, directly or
    // through a view.
    let udf = reach(&[("f", "f", "pg_read_file")]);
    let called = ps.decide_sql("SELECT f()", SqlDialect::Postgres);
    assert_eq!(called.decision.action, Action::Allow);
    let d = ps
        .through_relations(&called, &HashMap::new(), &udf)
        .unwrap()
        .decision;
    assert_eq!(d.action, Action::Deny);
    assert!(d.reason.contains("f calls pg_read_file"), "{}", d.reason);
    let d = ps
        .through_relations(&decided, &reach(&[("v", "public.v", "f")]), &udf)
        .unwrap()
        .decision;
    assert!(d.reason.contains("f calls pg_read_file"), "{}", d.reason);
    // A name the statement does not give reaches nothing.
    assert!(
        ps.through_relations(
            &decided,
            &reach(&[("w", "public.w", "pg_read_file")]),
            &HashMap::new()
        )
        .is_none()
    );
}

#[test]
fn function_rules_alone_follow_names_and_allow_rules_do_not() {
    let only_allow = set(&[policy(&with(
        r#"  defaultAction: deny
  rules:
    - {name: md5, match: {functions: [md5]}, action: allow}
"#,
    ))]);
    assert!(!only_allow.follows_names());
    let tables = set(&[policy(&with(
        r#"  defaultAction: allow
  rules:
    - {name: t, match: {tables: [customers]}, action: deny}
"#,
    ))]);
    assert!(tables.follows_names() && !tables.has_restrictive_function_rules());
}

#[test]
fn table_and_kind_rules_hold_through_user_defined_function_bodies() {
    use super::Reach;
    use std::collections::HashMap;
    let ps = set(&[policy(&with(
        r#"  defaultAction: allow
  rules:
    - {name: protect-customers, match: {statements: [delete, update, truncate], tables: [customers]}, action: deny}
    - {name: no-drops, match: {statements: [drop]}, action: deny}
    - {name: whole-table, match: {withoutWhere: true, tables: [orders]}, action: deny}
"#,
    ))]);
    assert!(ps.follows_names());
    // The words of a body, as the sidecar's catalog gives them.
    let body = |f: &str, text: &str| -> HashMap<String, Reach> {
        let mut reach = Reach::default();
        for w in text.split_whitespace() {
            reach.functions.push((f.to_string(), w.to_lowercase()));
        }
        HashMap::from([(f.to_string(), reach)])
    };
    let called = ps.decide_sql("SELECT f1()", SqlDialect::Postgres);
    assert_eq!(called.decision.action, Action::Allow);
    let deny = |text: &str| {
        ps.through_relations(&called, &HashMap::new(), &body("f1", text))
            .map(|d| (d.decision.action, d.decision.rule, d.decision.reason))
    };
    let (action, rule, reason) = deny("create function f1 returns int language sql as delete from customers where id 2 returning 1").unwrap();
    assert_eq!(
        (action, rule.as_deref()),
        (Action::Deny, Some("protect-customers"))
    );
    assert!(reason.contains("f1's body names customers"), "{reason}");
    // A kind-only rule: the body's kind is enough.
    let (_, rule, reason) = deny("begin drop table t end").unwrap();
    assert_eq!(rule.as_deref(), Some("no-drops"));
    assert!(reason.contains("f1's body may run drop"), "{reason}");
    // An UPDATE in a body may have no WHERE.
    let (_, rule, _) = deny("update orders set total 0").unwrap();
    assert_eq!(rule.as_deref(), Some("whole-table"));
    // Reads of customers, or deletes elsewhere: unchanged. (A body's
    // WHERE cannot be told from its words: a write of `orders` counts as
    // one without it.)
    assert!(deny("select name from customers").is_none());
    assert!(deny("delete from invoices where id 1").is_none());
    assert!(deny("delete from orders where id 1").is_some());
    // Through a view that calls it.
    let reads_view = ps.decide_sql("SELECT * FROM v", SqlDialect::Postgres);
    let mut view = Reach::default();
    view.functions.push(("public.v".into(), "f1".into()));
    let d = ps
        .through_relations(
            &reads_view,
            &HashMap::from([("v".to_string(), view)]),
            &body("f1", "delete from customers"),
        )
        .unwrap();
    assert_eq!(d.decision.action, Action::Deny);
}

#[test]
fn renaming_a_table_a_rule_names_is_refused() {
    let ps = set(&[policy(&with(
        r#"  defaultAction: allow
  rules:
    - {name: protect-customers, match: {statements: [delete], tables: [customers]}, action: deny}
    - {name: no-drops, match: {statements: [drop]}, action: deny}
    - {name: whole-orders, match: {withoutWhere: true, tables: [orders]}, action: deny}
"#,
    ))]);
    for sql in [
        "ALTER TABLE customers RENAME TO c2",
        "ALTER TABLE IF EXISTS public.\"customers\" RENAME TO c2",
        "ALTER TABLE orders RENAME TO orders2",
    ] {
        let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
        assert_eq!(d.action, Action::Deny, "{sql}");
        assert!(d.reason.contains("renames table"), "{sql}: {}", d.reason);
    }
    let d = ps
        .decide_sql("RENAME TABLE customers TO c2", SqlDialect::Mysql)
        .decision;
    assert!(d.reason.contains("renames table customers"), "{}", d.reason);
    // A schema dropped with its tables, while a rule on tables applies to
    // drops (whole-orders names no kinds; no kind-only rule denies drops).
    let tables_only = set(&[policy(&with(
        r#"  defaultAction: allow
  rules:
    - {name: whole-orders, match: {withoutWhere: true, tables: [orders]}, action: deny}
"#,
    ))]);
    let d = tables_only
        .decide_sql("DROP SCHEMA s9 CASCADE", SqlDialect::Postgres)
        .decision;
    assert_eq!(d.action, Action::Deny);
    assert!(d.reason.contains("drops schema s9"), "{}", d.reason);
    let d = tables_only
        .decide_sql("DROP SCHEMA s9", SqlDialect::Postgres)
        .decision;
    assert_eq!(d.action, Action::Allow, "{}", d.reason);
    // Renamed to a name the rule matches as well, a table no rule names.
    for sql in [
        "ALTER TABLE customers RENAME TO customers",
        "ALTER TABLE stamped RENAME TO stamped2",
    ] {
        let d = ps.decide_sql(sql, SqlDialect::Postgres).decision;
        assert_eq!(d.action, Action::Allow, "{sql}: {}", d.reason);
    }
    // A schema renamed takes its tables out of rules that name them with
    // their schema (`public.customers` no longer matches `p2.customers`);
    // rules naming tables without a schema match them in any.
    let qualified = set(&[policy(&with(
        r#"  defaultAction: allow
  rules:
    - {name: protect-customers, match: {statements: [delete], tables: [public.customers]}, action: deny}
"#,
    ))]);
    let d = qualified
        .decide_sql("ALTER SCHEMA public RENAME TO p2", SqlDialect::Postgres)
        .decision;
    assert_eq!(d.action, Action::Deny, "{}", d.reason);
    assert!(d.reason.contains("renames schema public"), "{}", d.reason);
    let d = ps
        .decide_sql("ALTER SCHEMA public RENAME TO p2", SqlDialect::Postgres)
        .decision;
    assert_eq!(d.action, Action::Allow, "{}", d.reason);
    let d = qualified
        .decide_sql("ALTER SCHEMA public OWNER TO someone", SqlDialect::Postgres)
        .decision;
    assert_eq!(d.action, Action::Allow, "{}", d.reason);
}
