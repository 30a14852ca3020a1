//! The enforcer's decision cache against PostgreSQL's grammar.

use std::sync::Arc;

use sluice_crds::AccessPolicy;
use sluice_policy::engine::{CompiledPolicy, Identity, NoSecrets};
use sluice_policy::pg_grammar::parses_on_this_thread;

use super::{Binding, Enforcer};

fn enforcer() -> Enforcer {
    let ap: AccessPolicy = serde_saphyr::from_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: shop}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
  defaultAction: allow
  rules:
  - {name: no-drop, action: deny, match: {statements: [drop]}}
"#,
    )
    .expect("policy yaml");
    let policy = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).expect("compiles"));
    Binding::new(
        &[policy],
        Identity::service_account("shop", "app"),
        "db",
        None,
        false,
    )
    .enforcer()
    .expect("bound")
}

/// The decision cache's hits never run PostgreSQL's parser: counted,
/// not timed. Misses run it once.
#[test]
fn cache_hits_never_parse_with_postgres_grammar() {
    let mut e = enforcer();
    for (text, parses) in [
        ("SELECT abalance FROM a WHERE aid = 1", 1),
        ("SELECT abalance FROM a WHERE aid = 1", 0),
        // Same shape, other literal: a hit on the shape key.
        ("SELECT abalance FROM a WHERE aid = 2", 0),
        ("SELECT E'x' FROM a WHERE aid = 3", 1),
        ("SELECT E'x' FROM a WHERE aid = 4", 0),
        ("SELECT 1; DROP TABLE a", 1),
        ("SELECT 1; DROP TABLE a", 0),
        // A plain string continuing an E'' string is read with escapes
        // by PostgreSQL: not folded, so this shape's second text (which
        // hides a DROP from sqlparser) is read again and refused.
        ("SELECT E'a'\n'zz'; SELECT 1 AS x, '; DROP TABLE a; --'", 1),
        ("SELECT E'a'\n'b\\'; SELECT 1 AS x, '; DROP TABLE a; --'", 1),
    ] {
        let before = parses_on_this_thread();
        let d = e.decide(text);
        assert_eq!(parses_on_this_thread() - before, parses, "{text}");
        let hides_drop = text.contains("'b\\'");
        let visible_drop = text.contains("DROP") && !text.contains("E'a'");
        assert_eq!(d.refusal.is_some(), visible_drop || hides_drop, "{text}");
    }
}
