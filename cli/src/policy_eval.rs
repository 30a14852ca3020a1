//! `kubectl sluice policy eval`: decide a statement or request from manifests on disk.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use sluice_crds::manifests::ManifestSet;
use sluice_crds::{Action, Detector, MaskStrategy, Protocol};
use sluice_policy::engine::{CompiledPolicy, Decision, Identity, PolicySet, SecretSource};
use sluice_policy::http::{
    HttpRequest, Inspection, RequestPath, body_refusal, decide_in_every_reading, parse_body,
    path_refusal,
};
use sluice_policy::mask_plan::{ColumnMask, MaskReason, Preview, PreviewItem};
use sluice_policy::sql::SqlDialect;

/// Arguments of `policy eval`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  # How would the sidecar decide this statement for shop/report-job on orders-db?
  kubectl sluice policy eval -f examples/quickstart --as shop/report-job --connection orders-db \\
    --sql 'DROP TABLE orders'

  # In CI: fail (exit 1) unless the policy denies it
  kubectl sluice policy eval -f policies/ --as shop/report-job --connection orders-db \\
    --sql 'DROP TABLE orders' --expect deny

  # A file of statements, one per line (e.g. a day of pg logs): JSON Lines out,
  # exit 1 when any is not allowed
  kubectl sluice policy eval -f policies/ --as shop/report-job --connection orders-db \\
    --sql-file statements.sql --expect allow

  # An HTTP request with a JSON body
  kubectl sluice policy eval -f examples/http-api --as shop/billing --connection stripe-api \\
    --http 'POST /v1/refunds' --body '{\"amount\": 100}'

  # Which result columns would be masked, by which policy's masking rule and strategy
  kubectl sluice policy eval -f policies/ --as shop/report-job --connection orders-db \\
    --sql 'SELECT id, lower(email) FROM customers' | jq '.statements[].masks'

Masks: each SQL statement's `masks` lists the parts of its result in order
(a column, or `table.*` for a star) with `masked`, the `strategy`, the `policy`
and its `maskingRule` index, and why; `detectors` run on every text value.
Without a server the plan is made from the statement alone: for `*` the
sidecar masks the table's columns that the masking rules name. An HTTP
decision's `masks` lists the JSONPaths and detectors of its response.")]
pub struct EvalArgs {
    /// A YAML file or a folder of YAML files (Namespace, Secret, Connection, AccessPolicy).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// The workload identity, as NAMESPACE/SERVICEACCOUNT.
    #[arg(long = "as")]
    identity: String,
    /// Extra groups of the identity (besides the service-account groups), comma-separated.
    #[arg(long = "as-group", value_delimiter = ',')]
    groups: Vec<String>,
    /// The Connection the statement or request is sent on.
    #[arg(long)]
    connection: String,
    /// Namespace of the Connection and its policies; the identity's namespace by default.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// A SQL string (several statements allowed) for a postgres or mysql Connection.
    #[arg(long, conflicts_with_all = ["http", "sql_file"], required_unless_present_any = ["http", "sql_file"])]
    sql: Option<String>,
    /// A file of SQL inputs, one per line (`-`: stdin); blank lines and lines
    /// starting with `--` are skipped. Prints one JSON object per input, with
    /// its `line`.
    #[arg(long, value_name = "FILE", conflicts_with = "http")]
    sql_file: Option<PathBuf>,
    /// Exit 1 (after printing the decisions) unless every decision's action
    /// is this one; for CI.
    #[arg(long, value_enum, value_name = "ACTION")]
    expect: Option<Expected>,
    /// An HTTP request line for an http Connection, e.g. "POST /v1/refunds?mode=full".
    #[arg(long)]
    http: Option<String>,
    /// The body of the HTTP request (JSON). Read as the sidecar reads it: where an
    /// enforced rule inspects this request's body, it must be strict JSON (UTF-8,
    /// no byte-order mark, depth ≤ 64, numbers within ±2^53, no duplicate keys),
    /// else the request is refused with the sidecar's `error`, `limit` and reason.
    #[arg(long, requires = "http")]
    body: Option<String>,
}

/// The action `--expect` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "camelCase")]
pub enum Expected {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
    /// `requireApproval`.
    RequireApproval,
}

impl Expected {
    fn action(self) -> Action {
        match self {
            Expected::Allow => Action::Allow,
            Expected::Deny => Action::Deny,
            Expected::RequireApproval => Action::RequireApproval,
        }
    }
}

/// Why the evaluation could not be made (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading the manifests failed.
    #[error(transparent)]
    Manifests(#[from] sluice_crds::manifests::ManifestError),
    /// `--as` is not NAMESPACE/SERVICEACCOUNT.
    #[error("--as {0:?}: expected NAMESPACE/SERVICEACCOUNT, e.g. shop/report-job")]
    Identity(String),
    /// The Connection is not in the manifests.
    #[error("Connection {name:?} not found in namespace {namespace:?} of the given manifests")]
    UnknownConnection {
        /// Namespace searched.
        namespace: String,
        /// Connection name.
        name: String,
    },
    /// The input does not fit the Connection's protocol.
    #[error("Connection {name:?} speaks {protocol}: use {flag}")]
    WrongProtocol {
        /// Connection name.
        name: String,
        /// Its protocol.
        protocol: &'static str,
        /// The flag to use instead.
        flag: &'static str,
    },
    /// A policy does not compile.
    #[error("AccessPolicy {policy:?}: {source}")]
    Policy {
        /// The policy.
        policy: String,
        /// Why.
        #[source]
        source: sluice_policy::engine::CompileError,
    },
    /// `--sql-file` could not be read.
    #[error("cannot read --sql-file {path}: {source}")]
    SqlFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--http` is not `METHOD PATH`.
    #[error("--http {0:?}: expected \"METHOD /path[?query]\", e.g. \"POST /v1/refunds\"")]
    RequestLine(String),
}

/// The printed decision.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    /// The input's line in `--sql-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    action: Action,
    policy: Option<String>,
    rule: Option<String>,
    dry_run: bool,
    /// What actually happens (differs from `action` only in dry run).
    enforced: Action,
    reason: String,
    /// Set when the sidecar refuses the request (400) before any rule
    /// decides it: the refusal's `error` (e.g. `bodyRefused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// The strict-grammar limit the request broke (e.g. `number`, `depth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statements: Option<Vec<StatementOutput>>,
    /// HTTP: what the response would get masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    masks: Option<HttpMasks>,
}

/// What masks a statement's result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SqlMasks {
    /// The parts of the result, in output order.
    columns: Vec<ColumnMaskOutput>,
    /// Detectors run on every text value of the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    detectors: Option<DetectorsOutput>,
    /// Rows of a query not in the statement (FETCH, EXECUTE) or output without
    /// table data (EXPLAIN, SHOW): what happens to their columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// What masks an HTTP response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpMasks {
    json_paths: Vec<JsonPathMask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detectors: Option<DetectorsOutput>,
}

/// Which masking rule applies, and where it is written.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct RuleRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<MaskStrategy>,
    /// The AccessPolicy holding the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    /// The rule's index in that policy's `spec.masking`.
    #[serde(skip_serializing_if = "Option::is_none")]
    masking_rule: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ColumnMaskOutput {
    /// The column's name, `table.*` for a star, `?column?` when the statement
    /// does not name it, `(columns of a function or subquery)` when unknown.
    column: String,
    masked: bool,
    #[serde(flatten)]
    rule: RuleRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetectorsOutput {
    detectors: Vec<Detector>,
    #[serde(flatten)]
    rule: RuleRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPathMask {
    path: String,
    #[serde(flatten)]
    rule: RuleRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatementOutput {
    kind: sluice_crds::StatementKind,
    tables: Vec<String>,
    functions: Vec<String>,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    redacted: String,
    /// What masks this statement's result, when policies apply.
    masks: SqlMasks,
}

struct ManifestSecrets<'a> {
    set: &'a ManifestSet,
    namespace: &'a str,
}

impl SecretSource for ManifestSecrets<'_> {
    fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        self.set
            .secret_key(self.namespace, name, key)
            .map(<[u8]>::to_vec)
    }
}

/// Runs `policy eval`: prints the decision as one JSON object; exit 0.
pub fn run(args: &EvalArgs) -> Result<ExitCode, EvalError> {
    let mut identity = Identity::parse(&args.identity)
        .ok_or_else(|| EvalError::Identity(args.identity.clone()))?;
    identity
        .groups
        .extend(args.groups.iter().filter(|g| !g.is_empty()).cloned());
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| identity.namespace.clone());
    let set = ManifestSet::load(&args.file, &ns)?;
    for skipped in &set.skipped {
        eprintln!("note: {skipped} skipped: not a kind Sluice reads");
    }
    let connection =
        set.connection(&ns, &args.connection)
            .ok_or_else(|| EvalError::UnknownConnection {
                namespace: ns.clone(),
                name: args.connection.clone(),
            })?;
    let policies = compile_policies(&set, &ns)?;
    let hash_key = connection
        .spec
        .credentials
        .hash_key_secret_ref
        .as_ref()
        .and_then(|r| set.secret_key(&ns, &r.name, &r.key));
    let protocol = connection.spec.protocol;
    let policy_set = PolicySet::select(&policies, &identity, &args.connection, hash_key);
    let not_bound = || from_decision(Decision::not_bound(&identity, &args.connection), None, None);

    let output = match (protocol, &args.sql, &args.http) {
        (Protocol::Postgres | Protocol::Mysql, Some(_), _)
        | (Protocol::Postgres | Protocol::Mysql, None, None) => {
            let dialect = if protocol == Protocol::Mysql {
                SqlDialect::Mysql
            } else {
                SqlDialect::Postgres
            };
            let decide = |sql: &str| match &policy_set {
                None => not_bound(),
                Some(ps) => sql_decision(ps, sql, dialect),
            };
            match &args.sql {
                Some(sql) => decide(sql),
                None => return eval_sql_file(args, decide),
            }
        }
        (Protocol::Http, _, Some(line)) => {
            let (method, path, query) = request_line(line)?;
            match &policy_set {
                None => not_bound(),
                Some(ps) => {
                    let inspection =
                        Inspection::of_connection(set.policies_in(&ns), &args.connection);
                    http_decision(ps, &inspection, method, path, query, args.body.as_deref())
                }
            }
        }
        (Protocol::Http, _, None) => {
            return Err(EvalError::WrongProtocol {
                name: args.connection.clone(),
                protocol: "http",
                flag: "--http \"METHOD /path\"",
            });
        }
        (p, _, _) => {
            return Err(EvalError::WrongProtocol {
                name: args.connection.clone(),
                protocol: p.as_str(),
                flag: "--sql",
            });
        }
    };
    let matched = matches_expectation(&output, args.expect, None);
    print_output(&output);
    Ok(expectation_exit(usize::from(!matched), args.expect))
}

/// The AccessPolicies of `ns`, compiled with the manifests' Secrets.
fn compile_policies(set: &ManifestSet, ns: &str) -> Result<Vec<Arc<CompiledPolicy>>, EvalError> {
    let secrets = ManifestSecrets { set, namespace: ns };
    set.policies_in(ns)
        .map(|p| {
            CompiledPolicy::compile(p, &secrets)
                .map(Arc::new)
                .map_err(|source| EvalError::Policy {
                    policy: p.metadata.name.clone().unwrap_or_default(),
                    source,
                })
        })
        .collect()
}

/// `--sql-file` (`-`: standard input): one decision printed per statement
/// line (blank lines and `--` comments skipped), each with its line number;
/// the exit code counts the lines that missed `--expect`.
fn eval_sql_file(args: &EvalArgs, decide: impl Fn(&str) -> Output) -> Result<ExitCode, EvalError> {
    let path = args.sql_file.clone().unwrap_or_default();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&path)
    }
    .map_err(|source| EvalError::SqlFile {
        path: path.clone(),
        source,
    })?;
    let mut missed = 0usize;
    for (i, line) in text.lines().enumerate() {
        let input = line.trim();
        if input.is_empty() || input.starts_with("--") {
            continue;
        }
        let mut output = decide(input);
        output.line = Some(i + 1);
        if !matches_expectation(&output, args.expect, Some(i + 1)) {
            missed += 1;
        }
        print_output(&output);
    }
    Ok(expectation_exit(missed, args.expect))
}

/// `--http "METHOD /path?query"`: the method, the path and the query.
fn request_line(line: &str) -> Result<(&str, &str, &str), EvalError> {
    let (method, target) = line
        .trim()
        .split_once(' ')
        .filter(|(m, t)| !m.is_empty() && t.trim_start().starts_with('/'))
        .ok_or_else(|| EvalError::RequestLine(line.to_string()))?;
    let target = target.trim();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok((method, path, query))
}

fn print_output(output: &Output) {
    // Serialising plain data cannot fail; fall back to a minimal object if it ever does.
    let json = serde_json::to_string(output)
        .unwrap_or_else(|e| format!("{{\"action\":\"deny\",\"reason\":\"internal: {e}\"}}"));
    println!("{json}");
}

/// Whether `output` is what `--expect` asks for; says on stderr when not.
fn matches_expectation(output: &Output, expect: Option<Expected>, line: Option<usize>) -> bool {
    let Some(expect) = expect else {
        return true;
    };
    if output.action == expect.action() {
        return true;
    }
    let by = match (&output.policy, &output.rule) {
        (Some(p), Some(r)) => format!(" by rule {r} of {p}"),
        (Some(p), None) => format!(" by {p}'s default action"),
        _ => String::new(),
    };
    eprintln!(
        "{}expected {}, got {}{by}: {}",
        line.map(|l| format!("line {l}: ")).unwrap_or_default(),
        word(expect.action()),
        word(output.action),
        output.reason
    );
    false
}

/// 0 when nothing missed `--expect`, 1 otherwise.
fn expectation_exit(missed: usize, expect: Option<Expected>) -> ExitCode {
    if missed == 0 {
        return ExitCode::SUCCESS;
    }
    if let Some(expect) = expect {
        eprintln!(
            "{missed} decision{} did not match --expect {}",
            if missed == 1 { "" } else { "s" },
            word(expect.action())
        );
    }
    ExitCode::from(1)
}

/// An action's wire word (`requireApproval`).
fn word(a: Action) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn sql_decision(ps: &PolicySet, sql: &str, dialect: SqlDialect) -> Output {
    let d = ps.decide_sql(sql, dialect);
    let statements = d
        .statements
        .iter()
        .map(|(s, sd)| StatementOutput {
            kind: s.kind,
            tables: s.tables.clone(),
            functions: s.functions.clone(),
            action: sd.action,
            rule: sd.rule.clone(),
            redacted: s.redacted.clone(),
            masks: sql_masks(ps, s),
        })
        .collect();
    from_decision(d.decision, Some(statements), d.parse_error)
}

/// The masking rule `rule` of `ps`: strategy, policy and index in its `spec.masking`.
fn rule_ref(ps: &PolicySet, rule: usize) -> RuleRef {
    let source = ps.mask_rule_source(rule);
    RuleRef {
        strategy: Some(ps.masker(rule).strategy()),
        policy: source.map(|(p, _)| p.to_string()),
        masking_rule: source.map(|(_, i)| i),
    }
}

fn detectors_of(ps: &PolicySet) -> Option<DetectorsOutput> {
    ps.detectors_indexed().map(|(set, rule)| DetectorsOutput {
        detectors: set.detectors().to_vec(),
        rule: rule_ref(ps, rule),
    })
}

fn column_mask(ps: &PolicySet, column: String, mask: &ColumnMask) -> ColumnMaskOutput {
    match mask {
        ColumnMask::Clear => ColumnMaskOutput {
            column,
            masked: false,
            rule: RuleRef::default(),
            reason: None,
        },
        ColumnMask::Mask { rule, reason } => ColumnMaskOutput {
            column,
            masked: true,
            rule: rule_ref(ps, *rule),
            reason: Some(match reason {
                MaskReason::Origin => "a masked column".to_string(),
                MaskReason::DerivedFrom(c) => format!("derived from masked column {c}"),
                MaskReason::Uncertain(why) => format!("masked whole: {why}"),
            }),
        },
    }
}

/// The mask plan of one statement, from the statement alone.
fn sql_masks(ps: &PolicySet, stmt: &sluice_policy::sql::Statement) -> SqlMasks {
    let (columns, note) = match sluice_policy::mask_plan::preview(&stmt.ast, ps.column_matcher()) {
        Preview::Rows(items) => (
            items
                .iter()
                .map(|item| match item {
                    PreviewItem::Column { name, mask } => column_mask(
                        ps,
                        name.clone().unwrap_or_else(|| "?column?".to_string()),
                        mask,
                    ),
                    PreviewItem::TableColumns { table, mask } => {
                        let mut out = column_mask(ps, format!("{table}.*"), mask);
                        if out.masked {
                            out.reason = Some(format!(
                                "a masking rule names columns of {table}: the sidecar masks \
                                 those the server reports (here: the strongest such rule)"
                            ));
                        }
                        out
                    }
                    PreviewItem::Unknown { mask } => {
                        column_mask(ps, "(columns of a function or subquery)".to_string(), mask)
                    }
                })
                .collect(),
            None,
        ),
        Preview::NoTableData => (
            Vec::new(),
            Some("the output holds no table data".to_string()),
        ),
        Preview::Elsewhere { mask } => (
            vec![column_mask(ps, "(every column)".to_string(), &mask)],
            Some(
                "the rows come from a query that is not in the statement: each column is \
                 masked unless the server names its origin"
                    .to_string(),
            ),
        ),
    };
    SqlMasks {
        columns,
        detectors: detectors_of(ps),
        note,
    }
}

fn http_masks(ps: &PolicySet) -> HttpMasks {
    HttpMasks {
        json_paths: ps
            .json_paths()
            .iter()
            .map(|(path, rule)| JsonPathMask {
                path: path.as_str().to_string(),
                rule: rule_ref(ps, *rule),
            })
            .collect(),
        detectors: detectors_of(ps),
    }
}

/// Decides a request as the sidecar does: what it refuses before any rule
/// decides (an ambiguous path; a query or body an enforced rule reads that
/// breaks the strict grammar, a parameter a rule names spelled otherwise, a
/// `_method` override, a parameter standing for a judged body field) is a
/// deny with the sidecar's `error`, `limit` and reason; a body no enforced
/// rule reads is read leniently, as the sidecar does (a body that is not
/// JSON is then decided without it); the rules decide every reading the
/// sidecar decides (HEAD as GET, the path in any case).
fn http_decision(
    ps: &PolicySet,
    inspection: &Inspection,
    method: &str,
    path: &str,
    query: &str,
    body: Option<&str>,
) -> Output {
    let bare = HttpRequest {
        method,
        path,
        query,
        body: None,
    };
    let decoded = match RequestPath::parse(path) {
        Ok(p) => p,
        Err(e) => return refused("ambiguousPath", None, path_refusal(&e)),
    };
    if let Some(u) = inspection.unreadable(&bare) {
        return refused(u.error, Some(u.limit), u.message);
    }
    let bytes = body.unwrap_or_default().as_bytes();
    let json = if inspection.strict_body(&bare) {
        match parse_body(bytes) {
            Ok(json) => json,
            Err(e) => return refused("bodyRefused", Some(e.limit()), body_refusal(&e)),
        }
    } else {
        match serde_json::from_slice(bytes) {
            Ok(json) => Some(json),
            Err(e) => {
                if !bytes.is_empty() {
                    eprintln!(
                        "note: --body is not JSON ({e}); no enforced rule reads this request's body, so the sidecar forwards it and decides without it"
                    );
                }
                None
            }
        }
    };
    let request = HttpRequest {
        body: json.as_ref(),
        ..bare
    };
    let decision =
        decide_in_every_reading(ps, &request, &decoded, inspection.globs_with_capitals());
    let mut output = from_decision(decision, None, None);
    output.masks = Some(http_masks(ps));
    output
}

/// A request the sidecar refuses with 400 before any rule decides it.
fn refused(error: &'static str, limit: Option<&'static str>, reason: String) -> Output {
    Output {
        line: None,
        action: Action::Deny,
        policy: None,
        rule: None,
        dry_run: false,
        enforced: Action::Deny,
        reason,
        error: Some(error),
        limit,
        parse_error: None,
        statements: None,
        masks: None,
    }
}

fn from_decision(
    d: Decision,
    statements: Option<Vec<StatementOutput>>,
    parse_error: Option<String>,
) -> Output {
    Output {
        line: None,
        action: d.action,
        policy: d.policy,
        rule: d.rule,
        dry_run: d.dry_run,
        enforced: d.enforced,
        reason: d.reason,
        error: None,
        limit: None,
        parse_error,
        statements,
        masks: None,
    }
}
