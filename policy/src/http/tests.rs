//! Unit tests of HTTP matching, the request grammar, JSONPath and JSON masking.

use serde_json::Value;
use sluice_crds::RuleMatch;

use crate::detectors::DetectorSet;
use crate::masker::Masker;

use super::grammar::{MAX_BODY_DEPTH, MAX_QUERY_LEN, check_query, parse_body};
use super::inspection::Inspection;
use super::matcher::HttpMatcher;
use super::path::{forward_path, normalize_path};
use super::{HttpRequest, PathError, RequestPath, applies};
use crate::json_mask::mask_json;
use crate::json_path::{JsonPath, PathSegment};

use serde_json::json;
use sluice_crds::{Detector, MaskStrategy, StatementKind};

fn rule(m: serde_json::Value) -> HttpMatcher {
    let m: RuleMatch = serde_json::from_value(m).expect("valid RuleMatch");
    HttpMatcher::compile(&m).expect("compiles")
}

fn req<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a str,
    body: Option<&'a Value>,
) -> HttpRequest<'a> {
    HttpRequest {
        method,
        path,
        query,
        body,
    }
}

#[test]
fn normalisation() {
    let cases = [
        ("/admin", "/admin"),
        ("/v1/../admin", "/admin"),
        ("//admin", "/admin"),
        ("/admin/", "/admin"),
        ("/v1/%2E%2E/admin", "/admin"),
        ("/v1/%2e/admin", "/v1/admin"),
        ("/caf%C3%A9", "/café"),
        ("", "/"),
        ("/", "/"),
        ("/./", "/"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    }
    assert_eq!(
        normalize_path("/%252e%252e/admin"),
        Err(PathError::DoubleEncoded)
    );
    assert_eq!(normalize_path("/a%zz"), Err(PathError::MalformedEscape));
    assert_eq!(normalize_path("/a%2"), Err(PathError::MalformedEscape));
    assert_eq!(normalize_path("/a%00b"), Err(PathError::ForbiddenCharacter));
    assert_eq!(
        normalize_path("/a%5c..%5cadmin"),
        Err(PathError::EncodedSeparator)
    );
    assert_eq!(normalize_path("/a%ff"), Err(PathError::InvalidUtf8));
    // Formerly clamped at the root or dropped; now refused (issue 16).
    for raw in [
        "/%2e%2e/admin",
        "/../../admin",
        "/v1/../../admin",
        "/.%2e/x",
    ] {
        assert_eq!(normalize_path(raw), Err(PathError::AboveRoot), "{raw}");
    }
    for raw in ["/v1%2fadmin", "/v1%2Fadmin", "/a%5Cb", "/a%3bb"] {
        assert_eq!(
            normalize_path(raw),
            Err(PathError::EncodedSeparator),
            "{raw}"
        );
    }
    for raw in ["/admin;jsessionid=1", "/public/..;/admin", "/a;"] {
        assert_eq!(normalize_path(raw), Err(PathError::PathParameter), "{raw}");
    }
    // Padding some servers drop (Spring's trimTokens, .NET, Windows).
    for raw in [
        "/export%20/x",
        "/%20export",
        "/export.",
        "/export%2E/x",
        "/a/...",
        "/export%C2%A0",
        "/export%E3%80%80/x",
    ] {
        assert_eq!(normalize_path(raw), Err(PathError::PaddedSegment), "{raw}");
    }
    for raw in ["/a%20b", "/.well-known/x", "/v1.2/x", "/a/./b/../c"] {
        assert!(normalize_path(raw).is_ok(), "{raw}");
    }
    // What is forwarded: the decided path, encoded again, trailing slash kept.
    for (raw, want) in [
        ("/v1/../entries/1", "/entries/1"),
        ("//entries/./1/", "/entries/1/"),
        ("/%65ntries/caf%c3%a9", "/entries/caf%C3%A9"),
        ("/a%20b/%25zz/x+y", "/a%20b/%25zz/x+y"),
        ("/a%3Fb%23c", "/a%3Fb%23c"),
        ("", "/"),
        ("/", "/"),
    ] {
        assert_eq!(forward_path(raw).as_deref(), Ok(want), "{raw}");
        let again = forward_path(want).expect("forwarded paths are valid");
        assert_eq!(again, want, "{raw}: forwarding is stable");
        assert_eq!(normalize_path(want), normalize_path(raw), "{raw}");
    }
}

#[test]
fn deny_rules_cannot_be_bypassed_by_encoding() {
    let deny = rule(json!({"paths": ["/admin/**"]}));
    for path in [
        "/admin",
        "/admin/",
        "/admin/users",
        "//admin/users",
        "/v1/../admin/users",
        "/%61dmin/users",
        "/%2e%2e/admin",
        "/public/%2e%2e/admin/x",
        "/admin;x=1/users",
        "/./admin",
        "/%252e%252e/admin", // ambiguous: matches every path glob
    ] {
        assert!(
            deny.matches(&req("GET", path, "", None)),
            "{path} must match"
        );
    }
    for path in ["/administrator", "/public/admin", "/", "/adminx/users"] {
        assert!(
            !deny.matches(&req("GET", path, "", None)),
            "{path} must not match"
        );
    }
}

#[test]
fn globs_are_segment_aware() {
    let one = rule(json!({"paths": ["/v1/*/items"]}));
    assert!(one.matches(&req("GET", "/v1/a/items", "", None)));
    assert!(!one.matches(&req("GET", "/v1/a/b/items", "", None)));
    let many = rule(json!({"paths": ["/v1/**/items"]}));
    assert!(many.matches(&req("GET", "/v1/items", "", None)));
    assert!(many.matches(&req("GET", "/v1/a/b/items", "", None)));
    let trailing = rule(json!({"paths": ["/v1/users/"]}));
    assert!(trailing.matches(&req("GET", "/v1/users", "", None)));
    let root = rule(json!({"paths": ["/**"]}));
    assert!(root.matches(&req("GET", "/", "", None)));
    assert!(root.matches(&req("GET", "/a/b", "", None)));
    let several = rule(json!({"paths": ["/a", "/b/*"]}));
    assert!(several.matches(&req("GET", "/b/x", "", None)));
    assert!(!several.matches(&req("GET", "/c", "", None)));
}

#[test]
fn methods_any_case_and_empty_means_any() {
    let m = rule(json!({"methods": ["post", "DELETE"]}));
    assert!(m.matches(&req("POST", "/x", "", None)));
    assert!(m.matches(&req("delete", "/x", "", None)));
    assert!(!m.matches(&req("GET", "/x", "", None)));
    let any = rule(json!({}));
    assert!(any.matches(&req("PATCH", "/anything", "a=b", None)));
}

#[test]
fn query_params() {
    let m = rule(json!({"query": {"force": "true", "scope": "*"}}));
    assert!(m.matches(&req("GET", "/x", "force=true&scope=all", None)));
    assert!(m.matches(&req("GET", "/x", "scope=&force=%74rue", None)));
    assert!(m.matches(&req("GET", "/x", "force=false&force=true&scope=a", None)));
    assert!(!m.matches(&req("GET", "/x", "force=false&scope=all", None)));
    assert!(!m.matches(&req("GET", "/x", "force=true", None)));
    let spaced = rule(json!({"query": {"q": "a b*"}}));
    assert!(spaced.matches(&req("GET", "/x", "q=a+b+c", None)));
    let slashes = rule(json!({"query": {"redirect": "https://*"}}));
    assert!(slashes.matches(&req("GET", "/x", "redirect=https%3A%2F%2Fe.com%2Fa", None)));
}

#[test]
fn json_body_predicates() {
    let big_refund = rule(json!({
        "methods": ["POST"],
        "jsonBody": [
            {"path": "$.amount", "greaterThan": 1000},
            {"path": "$.currency", "oneOf": ["EUR", "USD"]},
            {"path": "$.note", "exists": false}
        ]
    }));
    let ok = json!({"amount": 5000, "currency": "EUR"});
    let small = json!({"amount": 10, "currency": "EUR"});
    let other = json!({"amount": 5000, "currency": "GBP"});
    let noted = json!({"amount": 5000, "currency": "EUR", "note": null});
    let text = json!("not an object");
    assert!(big_refund.matches(&req("POST", "/r", "", Some(&ok))));
    assert!(!big_refund.matches(&req("POST", "/r", "", Some(&small))));
    assert!(!big_refund.matches(&req("POST", "/r", "", Some(&other))));
    assert!(!big_refund.matches(&req("POST", "/r", "", Some(&noted))));
    assert!(!big_refund.matches(&req("POST", "/r", "", Some(&text))));
    assert!(!big_refund.matches(&req("POST", "/r", "", None)));

    let any_item = rule(json!({"jsonBody": [
        {"path": "$.items[*].sku", "matches": "^GIFT-"},
        {"path": "$.version", "equals": 2}
    ]}));
    let b = json!({"version": 2.0, "items": [{"sku": "A-1"}, {"sku": "GIFT-9"}]});
    assert!(any_item.matches(&req("POST", "/o", "", Some(&b))));
    let b = json!({"version": 2, "items": [{"sku": "A-1"}]});
    assert!(!any_item.matches(&req("POST", "/o", "", Some(&b))));

    // Both bounds must hold for the same value.
    let range = rule(json!({"jsonBody": [{"path": "$..n", "greaterThan": 10, "lessThan": 20}]}));
    let split = json!({"a": {"n": 5}, "b": {"n": 25}});
    let inside = json!({"a": {"n": 5}, "b": {"n": 15}});
    assert!(!range.matches(&req("POST", "/", "", Some(&split))));
    assert!(range.matches(&req("POST", "/", "", Some(&inside))));

    // exists:false holds without a body; value predicates do not.
    let absent = rule(json!({"jsonBody": [{"path": "$.x", "exists": false}]}));
    assert!(absent.matches(&req("GET", "/", "", None)));
    let present = rule(json!({"jsonBody": [{"path": "$.x", "exists": true}]}));
    assert!(!present.matches(&req("GET", "/", "", None)));
}

#[test]
fn numeric_strings_meet_number_predicates() {
    let big = rule(json!({"jsonBody": [{"path": "$.amount", "greaterThan": 1000}]}));
    for amount in [
        json!("100000"),
        json!(" 1e5 "),
        json!("100_000"),
        json!("1e400"),
        json!("Infinity"),
        json!(100000),
    ] {
        let body = json!({ "amount": amount });
        assert!(big.matches(&req("POST", "/", "", Some(&body))), "{amount}");
    }
    for amount in [
        json!("10"),
        json!("abc"),
        json!("NaN"),
        json!(null),
        json!([100000]),
    ] {
        let body = json!({ "amount": amount });
        assert!(!big.matches(&req("POST", "/", "", Some(&body))), "{amount}");
    }
}

#[test]
fn strict_body_grammar() {
    let ok = |b: &[u8]| parse_body(b).expect("accepted");
    assert_eq!(ok(b""), None);
    assert_eq!(
        ok(br#"{"a": [1, 2.5, -3e2], "b": "\ud83d\ude00"}"#),
        Some(json!({"a": [1, 2.5, -300.0], "b": "\u{1F600}"}))
    );
    assert_eq!(ok(b"9007199254740992"), Some(json!(9007199254740992u64)));
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse_body(nested(MAX_BODY_DEPTH).as_bytes()).is_ok());
    let refused = |b: &[u8]| parse_body(b).expect_err("refused").limit();
    assert_eq!(refused(nested(MAX_BODY_DEPTH + 1).as_bytes()), "depth");
    assert_eq!(refused(b"9007199254740993"), "number");
    assert_eq!(refused(b"-1e16"), "number");
    assert_eq!(refused(b"[NaN]"), "number");
    assert_eq!(refused(b"[1, -Infinity]"), "number");
    assert_eq!(refused(b"1e400"), "number");
    assert_eq!(refused(b"\xef\xbb\xbf{}"), "encoding");
    assert_eq!(refused(b"{\0}\0"), "encoding");
    assert_eq!(refused(br#"["\ud800"]"#), "encoding");
    assert_eq!(refused(br#"["\udc00"]"#), "encoding");
    assert_eq!(refused(b"[\"\xff\"]"), "encoding");
    assert_eq!(refused(br#"{"a": 1, "a": 1}"#), "duplicateKey");
    assert_eq!(refused(br#"{"a": 1} x"#), "syntax");
    assert_eq!(refused(b"   "), "syntax");
}

#[test]
fn strict_query_grammar() {
    let names = vec!["debug".to_string()];
    assert!(check_query("", &names).is_ok());
    assert!(check_query("a=1&a=2&debug=x&b", &names).is_ok());
    assert!(check_query("q=%C3%A9&x=a+b", &names).is_ok());
    let refused = |q: &str| check_query(q, &names).expect_err("refused").limit();
    assert_eq!(refused("a=1;debug=1"), "separator");
    assert_eq!(refused("a=%zz"), "encoding");
    assert_eq!(refused("a=%ff"), "encoding");
    assert_eq!(refused("a=%0a"), "encoding");
    assert_eq!(refused("debug=1&%64ebug=2"), "repeatedParameter");
    assert_eq!(refused("debug[x]=1"), "repeatedParameter");
    assert_eq!(refused(&"a".repeat(MAX_QUERY_LEN + 1)), "size");
}

#[test]
fn inspection_reads_bodies_only_where_a_body_rule_may_apply() {
    let m = |v: serde_json::Value| -> RuleMatch { serde_json::from_value(v).expect("match") };
    let refunds = m(
        json!({"methods": ["POST"], "paths": ["/v1/refunds"], "jsonBody": [{"path": "$.amount", "greaterThan": 1}]}),
    );
    let trial = m(json!({"jsonBody": [{"path": "$.x", "exists": true}]}));
    let query = m(json!({"query": {"debug": "*"}}));
    let i = Inspection::new([(true, &refunds), (false, &trial), (true, &query)]);
    assert!(i.buffers_body());
    assert!(i.strict_body(&req("POST", "/v1/refunds", "", None)));
    assert!(i.strict_body(&req("POST", "/v1/x/../refunds/", "", None)));
    assert!(!i.strict_body(&req("POST", "/v1/uploads", "", None)));
    assert!(!i.strict_body(&req("GET", "/v1/refunds", "", None)));
    assert_eq!(i.query_names(), ["debug".to_string()]);
    let dry = Inspection::new([(false, &trial)]);
    assert!(dry.buffers_body() && !dry.strict_body(&req("POST", "/", "", None)));
    assert!(!Inspection::new([(true, &query)]).buffers_body());
    // Query parameters that merge into the body fields the rule judges.
    let field = |q: &str| i.body_field_in_query(&req("POST", "/v1/refunds", q, None));
    for q in [
        "amount=1",
        "x=1&AMOUNT=1",
        "amount[]=1",
        "+amount=1",
        "amount.x=1",
    ] {
        assert!(field(q).is_some(), "{q}");
    }
    for q in ["", "page=1", "amounts=1", "x[amount]=1"] {
        assert_eq!(field(q), None, "{q}");
    }
    assert_eq!(
        i.body_field_in_query(&req("POST", "/v1/uploads", "amount=1", None)),
        None
    );
    let deep = m(json!({"jsonBody": [{"path": "$..amount", "greaterThan": 1}]}));
    let any = m(json!({"jsonBody": [{"path": "$.*", "exists": true}]}));
    let i = Inspection::new([(true, &deep)]);
    assert!(
        i.body_field_in_query(&req("POST", "/", "x[amount]=1", None))
            .is_some()
    );
    assert_eq!(i.body_field_in_query(&req("POST", "/", "x=1", None)), None);
    let i = Inspection::new([(true, &any)]);
    assert!(
        i.body_field_in_query(&req("POST", "/", "x=1", None))
            .is_some()
    );
}

#[test]
fn globs_with_capitals_match_any_case_readings() {
    let admin = rule(json!({"paths": ["/v1/Admin/**"]}));
    let exact = RequestPath::parse("/v1/admin/x").expect("path");
    let r = req("GET", "/v1/admin/x", "", None);
    assert!(!admin.matches_at(&r, &exact));
    assert!(admin.matches_at(&r, &exact.any_case()));
    let upper = RequestPath::parse("/V1/ADMIN").expect("path").any_case();
    assert_eq!(upper.decided(), "/v1/admin");
    assert!(admin.matches_at(&req("GET", "/V1/ADMIN", "", None), &upper));
    let capitals: RuleMatch =
        serde_json::from_value(json!({"paths": ["/v1/Admin/**"]})).expect("valid RuleMatch");
    let lower: RuleMatch =
        serde_json::from_value(json!({"paths": ["/v1/admin/**"]})).expect("valid RuleMatch");
    assert!(Inspection::new([(true, &capitals)]).globs_with_capitals());
    assert!(!Inspection::new([(true, &lower), (false, &capitals)]).globs_with_capitals());
}

#[test]
fn sql_fields_never_match_http() {
    let m = RuleMatch {
        statements: vec![StatementKind::Drop],
        paths: vec!["/**".into()],
        ..RuleMatch::default()
    };
    assert!(!applies(&m));
    let compiled = HttpMatcher::compile(&m).expect("compiles");
    assert!(!compiled.matches(&req("GET", "/x", "", None)));
    assert!(applies(&RuleMatch::default()));
}

#[test]
fn compile_errors_name_the_field() {
    let err = |m: serde_json::Value| {
        let m: RuleMatch = serde_json::from_value(m).expect("valid RuleMatch");
        HttpMatcher::compile(&m).expect_err("must fail").to_string()
    };
    let e = err(json!({"paths": ["/ok", "/bad/[z-a]"]}));
    assert!(e.starts_with("paths[1]: invalid glob"), "{e}");
    let e = err(json!({"paths": ["v1/x"]}));
    assert!(e.starts_with("paths[0]: path glob"), "{e}");
    let e = err(json!({"methods": ["GET", "PO ST"]}));
    assert!(e.starts_with("methods[1]:"), "{e}");
    let e = err(
        json!({"jsonBody": [{"path": "$.a", "exists": true}, {"path": "$.b", "matches": "("}]}),
    );
    assert!(
        e.starts_with("jsonBody[1].matches: invalid regular expression"),
        "{e}"
    );
    let e = err(json!({"jsonBody": [{"path": "$.a[?(@.x)]", "exists": true}]}));
    assert!(e.starts_with("jsonBody[0].path: invalid JSONPath"), "{e}");
    assert!(e.contains("filters are not supported"), "{e}");
    let e = err(json!({"jsonBody": [{"path": "$.a"}]}));
    assert!(
        e.starts_with("jsonBody[0]: a jsonBody predicate needs"),
        "{e}"
    );
    let e = err(json!({"query": {"q": "[z-a]"}}));
    assert!(e.starts_with("query.q: invalid glob"), "{e}");
}

#[test]
fn json_path_parse_and_select() {
    let doc = json!({
        "a": {"b": 1, "c d": 2},
        "items": [{"card": "4111", "email": "x@e.com"}, {"card": "5500", "nested": {"email": "y@e.com"}}],
        "email": "top@e.com"
    });
    let sel = |p: &str| -> Vec<Value> {
        JsonPath::parse(p)
            .expect("parses")
            .select(&doc)
            .into_iter()
            .cloned()
            .collect()
    };
    assert_eq!(sel("$.a.b"), vec![json!(1)]);
    assert_eq!(sel("$['a']['c d']"), vec![json!(2)]);
    assert_eq!(sel("$[\"a\"].b"), vec![json!(1)]);
    assert_eq!(sel("$.items[0].card"), vec![json!("4111")]);
    assert_eq!(sel("$.items[*].card"), vec![json!("4111"), json!("5500")]);
    assert_eq!(sel("$.items[5].card"), Vec::<Value>::new());
    assert_eq!(sel("$.missing.x"), Vec::<Value>::new());
    let mut emails = sel("$..email");
    emails.sort_by_key(|v| v.to_string());
    assert_eq!(
        emails,
        vec![json!("top@e.com"), json!("x@e.com"), json!("y@e.com")]
    );
    assert_eq!(sel("$.a.*").len(), 2);
    assert_eq!(sel("$.*").len(), 3);
    assert_eq!(sel("$"), vec![doc.clone()]);
    assert_eq!(sel("$..[1].card"), vec![json!("5500")]);
    for bad in [
        "a.b",
        "$.",
        "$..",
        "$[",
        "$['a'",
        "$[-1]",
        "$[0:2]",
        "$['a','b']",
        "$.a b",
        "$[?(@)]",
    ] {
        assert!(JsonPath::parse(bad).is_err(), "{bad} must not parse");
    }
    let e = JsonPath::parse("$.a[-1]").expect_err("negative");
    assert!(e.to_string().contains("at character 4"), "{e}");
}

#[test]
fn locations_match_like_select() {
    let p = JsonPath::parse("$.items[*].card").expect("parses");
    use PathSegment::{Index, Key};
    assert!(p.matches_location(&[Key("items"), Index(3), Key("card")]));
    assert!(!p.matches_location(&[Key("items"), Index(3)]));
    // `[*]` selects object members too, as in `select`.
    assert!(p.matches_location(&[Key("items"), Key("x"), Key("card")]));
    assert!(!p.matches_location(&[Key("other"), Index(0), Key("card")]));
    assert!(p.covers_location(&[Key("items"), Index(0), Key("card"), Key("number")]));
    assert!(!p.covers_location(&[Key("items"), Index(0), Key("cvv")]));
    let d = JsonPath::parse("$..email").expect("parses");
    assert!(d.matches_location(&[Key("email")]));
    assert!(d.matches_location(&[Key("a"), Index(2), Key("email")]));
    assert!(!d.matches_location(&[Key("a"), Key("emails")]));
    let root = JsonPath::parse("$").expect("parses");
    assert!(root.matches_location(&[]));
    assert!(root.covers_location(&[Key("anything")]));
    let dead = p.advance(p.start(), Key("other"));
    assert!(dead.is_dead());
}

fn masker(s: MaskStrategy) -> Masker {
    Masker::new(s, None, None, Some(b"0123456789abcdef".to_vec())).expect("masker")
}

#[test]
fn mask_json_by_path_and_detector() {
    let mut doc = json!({
        "customer": {"email": "alice@example.com", "name": "Alice", "age": 41, "vip": true, "note": null},
        "cards": [{"number": "4111111111111111", "exp": "12/29"}, {"number": 5500000000000004u64}],
        "secret": {"inner": ["a", {"b": "c"}, 7]},
        "comment": "call +14155552671 or mail bob@example.com",
        "pan": 4111111111111111u64,
        "count": 12
    });
    let paths = vec![
        (JsonPath::parse("$.customer.email").expect("p"), 0),
        (JsonPath::parse("$.customer.age").expect("p"), 0),
        (JsonPath::parse("$.customer.vip").expect("p"), 0),
        (JsonPath::parse("$.customer.note").expect("p"), 0),
        (JsonPath::parse("$.cards[*].number").expect("p"), 1),
        (JsonPath::parse("$.secret").expect("p"), 0),
    ];
    let maskers = vec![masker(MaskStrategy::Redact), masker(MaskStrategy::Partial)];
    let set = DetectorSet::new(&[Detector::Email, Detector::Phone, Detector::CreditCard]);
    let n = mask_json(&mut doc, &paths, &maskers, Some((&set, 0)));
    assert_eq!(
        doc,
        json!({
            "customer": {"email": "[redacted]", "name": "Alice", "age": "[redacted]", "vip": "[redacted]", "note": null},
            "cards": [{"number": "************1111", "exp": "12/29"}, {"number": "************0004"}],
            "secret": {"inner": ["[redacted]", {"b": "[redacted]"}, "[redacted]"]},
            "comment": "call [redacted] or mail [redacted]",
            "pan": "[redacted]",
            "count": 12
        })
    );
    // email, age, vip, 2 card numbers, 3 leaves of secret, comment, pan.
    assert_eq!(n, 10);
}

#[test]
fn mask_json_masks_sensitive_keys_without_losing_entries() {
    let mut doc = json!({
        "byEmail": {
            "alice@example.com": {"email": "alice@example.com", "n": 1},
            "bob@example.com": {"n": 2},
            "[redacted]": {"n": 3},
            "plain": {"n": 4}
        }
    });
    let paths = vec![(
        JsonPath::parse("$.byEmail['alice@example.com'].n").expect("p"),
        0,
    )];
    let maskers = vec![masker(MaskStrategy::Redact)];
    let set = DetectorSet::new(&[Detector::Email]);
    let n = mask_json(&mut doc, &paths, &maskers, Some((&set, 0)));
    let text = doc.to_string();
    assert!(!text.contains("alice@") && !text.contains("bob@"), "{text}");
    let by_email = doc["byEmail"].as_object().expect("object");
    assert_eq!(by_email.len(), 4, "{text}");
    assert_eq!(by_email["plain"], json!({"n": 4}));
    assert_eq!(by_email["[redacted]"], json!({"n": 3}));
    // The path matched the original key before it was masked.
    let alice = by_email
        .values()
        .find(|v| v.get("email").is_some())
        .expect("alice's entry");
    assert_eq!(alice, &json!({"email": "[redacted]", "n": "[redacted]"}));
    // 2 keys, alice's email value, alice's n.
    assert_eq!(n, 4);
}

#[test]
fn mask_json_first_path_wins_and_bad_index_redacts() {
    let mut doc = json!({"a": "value-one", "b": "value-two"});
    let paths = vec![
        (JsonPath::parse("$.a").expect("p"), 1),
        (JsonPath::parse("$.*").expect("p"), 0),
        (JsonPath::parse("$.b").expect("p"), 1),
    ];
    let maskers = vec![masker(MaskStrategy::Redact), masker(MaskStrategy::Hash)];
    assert_eq!(mask_json(&mut doc, &paths, &maskers, None), 2);
    assert!(doc["a"].as_str().is_some_and(|s| s.starts_with("hmac:")));
    assert_eq!(doc["b"], json!("[redacted]"));
    let mut doc = json!({"a": "x"});
    let paths = vec![(JsonPath::parse("$.a").expect("p"), 9)];
    assert_eq!(mask_json(&mut doc, &paths, &maskers, None), 1);
    assert_eq!(doc, json!({"a": "[redacted]"}));
    // Nothing configured: nothing changes.
    let mut doc = json!({"mail": "a@example.com"});
    assert_eq!(mask_json(&mut doc, &[], &maskers, None), 0);
    assert_eq!(doc, json!({"mail": "a@example.com"}));
}

// === properties ===

use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u32..100).prop_map(|n| json!(n)),
        "[a-c]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_path() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        "\\.[a-c]",
        Just(".*".to_string()),
        Just("[*]".to_string()),
        "\\[[0-2]\\]",
        "\\.\\.[a-c]",
        Just("..*".to_string()),
        "\\['[a-c]'\\]",
    ];
    prop::collection::vec(step, 0..4).prop_map(|s| format!("${}", s.concat()))
}

fn locations<'v>(
    v: &'v Value,
    here: &mut Vec<PathSegment<'v>>,
    out: &mut Vec<(Vec<PathSegment<'v>>, &'v Value)>,
) {
    out.push((here.clone(), v));
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(PathSegment::Key(k));
                locations(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(PathSegment::Index(i));
                locations(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

proptest! {
    /// The location matcher (used for masking, and later streaming) agrees
    /// with `select` on which values a path picks.
    #[test]
    fn matches_location_agrees_with_select(doc in json_value(), path in json_path()) {
        let p = JsonPath::parse(&path).expect("generated paths parse");
        let mut selected: Vec<*const Value> = p.select(&doc).into_iter().map(|v| v as *const Value).collect();
        selected.sort();
        selected.dedup();
        let mut all = Vec::new();
        locations(&doc, &mut Vec::new(), &mut all);
        let mut by_location: Vec<*const Value> = all
            .into_iter()
            .filter(|(loc, _)| p.matches_location(loc))
            .map(|(_, v)| v as *const Value)
            .collect();
        by_location.sort();
        prop_assert_eq!(selected, by_location, "path {}", path);
    }

    /// Normalisation is idempotent, always absolute, and free of `.`/`..`/empty segments.
    #[test]
    fn normalised_paths_are_canonical(raw in "(/|%2[eEfF]|\\.|\\.\\.|[a-c]|;|%41){0,12}") {
        if let Ok(n) = normalize_path(&raw) {
            prop_assert!(n.starts_with('/'));
            prop_assert_eq!(normalize_path(&n), Ok(n.clone()));
            prop_assert!(n == "/" || !n.ends_with('/'));
            prop_assert!(n == "/" || !n.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == ".."), "{}", n);
        }
    }

    /// The one-pass form is the two paths, or the same refusal.
    #[test]
    fn decided_and_forwarded_is_both_paths(raw in "(/|%2[eEfF5]|%[0-9a-fA-F]{2}|%|\\.|\\.\\.|[a-c]|;| |\\?|~){0,12}") {
        let both = normalize_path(&raw).and_then(|n| Ok((n, forward_path(&raw)?)));
        prop_assert_eq!(super::path::decided_and_forwarded(&raw), both);
    }

    /// A rule matches a request at its path decoded once
    /// ([`HttpMatcher::matches_at`], what the sidecar decides with) exactly
    /// when it matches the raw request (which decodes the path itself).
    #[test]
    fn matching_at_the_decoded_path_is_matching(raw in "(/|%2[eEfF5]|%[0-9a-fA-F]{2}|%|\\.|\\.\\.|[a-c]|admin|;|~){0,10}") {
        let rules = [
            rule(json!({"paths": ["/admin/**"]})),
            rule(json!({"paths": ["/a/*", "/b"], "methods": ["GET"]})),
            rule(json!({"methods": ["GET"]})),
        ];
        if let Ok(path) = super::RequestPath::parse(&raw) {
            let r = req("GET", &raw, "", None);
            for m in &rules {
                prop_assert_eq!(m.matches_at(&r, &path), m.matches(&r), "{}", raw);
            }
        }
    }
}
