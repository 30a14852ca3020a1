//! Static cost estimation of a CRD's `x-kubernetes-validations` rules, as
//! kube-apiserver does when a CustomResourceDefinition is written.
//!
//! A port of the parts of upstream the test control plane needs:
//! - limits and messages: k8s.io/apiextensions-apiserver
//!   pkg/apis/apiextensions/validation/validation.go (`StaticEstimatedCostLimit = 10000000`,
//!   `StaticEstimatedCRDCostLimit = 100000000`, `getExpressionCost`, `getCostErrorMessage`,
//!   the "contributed to estimated rule cost total ..." errors);
//! - cardinality: the same package's cel_validation.go (`CELSchemaContext.MaxCardinality`, the
//!   product of the enclosing lists' `maxItems` / maps' `maxProperties`, `extractMaxElements`,
//!   `TotalCost.ObserveExpressionCost` keeping the four most expensive rules over 1% of the limit)
//!   and, for unbounded ones, pkg/apiserver/schema/cel/compilation.go `maxCardinality`
//!   (3 MiB request / (minimum serialized size + 1));
//! - sizes: pkg/apiserver/schema/cel/model/schemas.go `SchemaDeclType` (strings `maxLength * 4`,
//!   unbounded strings `3 MiB - 2`, lists `maxItems` or `(3 MiB - 2) / (min item size + 1)`,
//!   maps `maxProperties` or `(3 MiB - 2) / (min value size + 6)`, minimum serialized sizes of
//!   objects from their required properties without defaults; the resource root also exposes
//!   `apiVersion`, `kind`, `metadata.name`, `metadata.generateName`);
//! - expression costs: github.com/google/cel-go checker/cost.go (`coster`: idents and selects 1,
//!   constants 0, comprehensions `range * (step + condition)`, list creation 10, map creation 30,
//!   string traversal factor 0.1, regex factor 0.25, `in` linear in the list, equality by the
//!   smaller size) and k8s.io/apiserver pkg/cel/library/cost.go (`EstimateCallCost`).
//!
//! Only maximum costs are tracked (upstream compares `CostEstimate.Max`). No type checker runs
//! here: kinds are taken from the schema along field paths and from the functions' result types;
//! where a kind is unknown the estimate errs towards upstream's "unknown size" (the largest).

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

use kube_cel::cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

/// `celconfig.MaxRequestSizeBytes` (k8s.io/apiserver pkg/apis/cel/config.go).
pub const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;
/// Per-rule limit (validation.go `StaticEstimatedCostLimit`).
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// Per-CRD-schema limit (validation.go `StaticEstimatedCRDCostLimit`).
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;

const STRING_TRAVERSAL: f64 = 0.1;
const REGEX_LENGTH: f64 = 0.25;
const LIST_CREATE: u64 = 10;
const MAP_CREATE: u64 = 30;
const UNKNOWN: u64 = u64::MAX;

/// A cost violation: the field path (kube syntax) and the message after `Forbidden: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field path, as kube prints it.
    pub field: String,
    /// The message after `Forbidden: `.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Map,
    List,
    String,
    Bytes,
    Int,
    Double,
    Bool,
    Timestamp,
    Duration,
    Dyn,
}

impl Kind {
    fn scalar(self) -> bool {
        matches!(
            self,
            Kind::Int | Kind::Double | Kind::Bool | Kind::Timestamp | Kind::Duration
        )
    }
}

/// The parts of upstream's `DeclType` the estimate uses.
#[derive(Debug, Clone)]
struct Decl {
    kind: Kind,
    max_elements: u64,
    min_size: u64,
    fields: BTreeMap<String, Decl>,
    elem: Option<Box<Decl>>,
}

impl Decl {
    fn simple(kind: Kind, min_size: u64, max_elements: u64) -> Self {
        Decl {
            kind,
            max_elements,
            min_size,
            fields: BTreeMap::new(),
            elem: None,
        }
    }
}

fn max_string_len(s: &Value) -> u64 {
    // schemas.go estimateMaxStringLengthPerRequest (MaxDurationSizeJSON 32, JSONDateSize 10,
    // MaxDatetimeSizeJSON 35: k8s.io/apiserver pkg/cel/limits.go).
    match s["format"].as_str() {
        Some("duration") => 32,
        Some("date") => 10,
        Some("date-time") => 35,
        _ => MAX_REQUEST_SIZE_BYTES - 2,
    }
}

/// schemas.go `SchemaDeclType`; `None` for schemas CEL does not see.
fn decl_of(s: &Value, root: bool) -> Option<Decl> {
    if s["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return Some(Decl::simple(Kind::Dyn, 1, MAX_REQUEST_SIZE_BYTES - 2));
    }
    let mut s = s.clone();
    if root {
        // WithTypeAndObjectMeta: apiVersion, kind, metadata.name/generateName are visible.
        let string = serde_json::json!({"type": "string"});
        s["properties"]["apiVersion"] = string.clone();
        s["properties"]["kind"] = string.clone();
        s["properties"]["metadata"] = serde_json::json!({"type": "object",
            "properties": {"name": string.clone(), "generateName": string}});
    }
    let max = |k: &str| s[k].as_i64().map(|v| v.max(0) as u64);
    match s["type"].as_str()? {
        "array" => {
            let items = decl_of(
                &s["items"],
                s["items"]["x-kubernetes-embedded-resource"] == true,
            )?;
            let max_items =
                max("maxItems").unwrap_or((MAX_REQUEST_SIZE_BYTES - 2) / (items.min_size + 1));
            let mut d = Decl::simple(Kind::List, 2, max_items);
            d.elem = Some(Box::new(items));
            Some(d)
        }
        "object" if s["additionalProperties"].is_object() => {
            let ap = &s["additionalProperties"];
            let values = decl_of(ap, ap["x-kubernetes-embedded-resource"] == true)?;
            let max_props = max("maxProperties")
                .unwrap_or((MAX_REQUEST_SIZE_BYTES - 2) / (values.min_size + 6));
            let mut d = Decl::simple(Kind::Map, 2, max_props);
            d.elem = Some(Box::new(values));
            Some(d)
        }
        "object" => {
            let required: Vec<&str> = s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut d = Decl::simple(Kind::Object, 2, 0);
            for (name, prop) in s["properties"].as_object().into_iter().flatten() {
                let Some(field) = decl_of(prop, prop["x-kubernetes-embedded-resource"] == true)
                else {
                    continue;
                };
                if required.contains(&name.as_str()) && prop.get("default").is_none() {
                    d.min_size += name.len() as u64 + field.min_size + 4;
                }
                d.fields.insert(name.clone(), field);
            }
            Some(d)
        }
        "string" => Some(match s["format"].as_str() {
            Some("byte") => Decl::simple(
                Kind::Bytes,
                2,
                max("maxLength").unwrap_or_else(|| max_string_len(&s)),
            ),
            Some("duration") => Decl::simple(Kind::Duration, 4, max_string_len(&s)),
            Some("date") => Decl::simple(Kind::Timestamp, 12, max_string_len(&s)),
            Some("date-time") => Decl::simple(Kind::Timestamp, 22, max_string_len(&s)),
            _ => Decl::simple(
                Kind::String,
                2,
                max("maxLength").map_or_else(|| max_string_len(&s), |m| m.saturating_mul(4)),
            ),
        }),
        "boolean" => Some(Decl::simple(Kind::Bool, 4, 0)),
        "number" => Some(Decl::simple(Kind::Double, 1, 0)),
        "integer" => Some(Decl::simple(Kind::Int, 1, 0)),
        _ => None,
    }
}

fn ceil_factor(x: u64, f: f64) -> u64 {
    let v = (x as f64 * f).ceil();
    if v >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        v as u64
    }
}

/// What the coster knows about one expression.
#[derive(Debug, Clone, Default)]
struct Node {
    cost: u64,
    path: Option<Vec<String>>,
    size: Option<u64>,
    kind: Option<Kind>,
}

#[derive(Debug, Clone)]
struct Local {
    path: Option<Vec<String>>,
    size: Option<u64>,
    kind: Option<Kind>,
}

struct Coster<'a> {
    root: &'a Decl,
    locals: HashMap<String, Vec<Local>>,
}

impl Coster<'_> {
    fn lookup(&self, path: &[String]) -> Option<&Decl> {
        let mut cur = self.root;
        for name in path.iter().skip(1) {
            cur = match name.as_str() {
                "@items" | "@values" => cur.elem.as_deref()?,
                "@keys" => return None,
                field => cur.fields.get(field)?,
            };
        }
        Some(cur)
    }

    /// `computeSize`: computed size, literal size, the schema's size along the path, scalar 1.
    fn size_of(&self, n: &Node) -> u64 {
        if let Some(s) = n.size {
            return s;
        }
        if let Some(p) = &n.path
            && matches!(p.first().map(String::as_str), Some("self" | "oldSelf"))
            && let Some(d) = self.lookup(p)
        {
            return d.max_elements;
        }
        if n.kind.is_some_and(Kind::scalar) {
            return 1;
        }
        UNKNOWN
    }

    fn kind_at(&self, path: &Option<Vec<String>>) -> Option<Kind> {
        let p = path.as_ref()?;
        if !matches!(p.first().map(String::as_str), Some("self" | "oldSelf")) {
            return None;
        }
        self.lookup(p).map(|d| d.kind)
    }

    fn cost(&mut self, e: &IdedExpr) -> Node {
        match &e.expr {
            Expr::Literal(lit) => {
                let (size, kind) = match lit {
                    LiteralValue::String(s) => (Some(s.chars().count() as u64), Kind::String),
                    LiteralValue::Bytes(b) => (Some(b.len() as u64), Kind::Bytes),
                    LiteralValue::Boolean(_) => (Some(1), Kind::Bool),
                    LiteralValue::Double(_) => (Some(1), Kind::Double),
                    LiteralValue::Int(_) | LiteralValue::UInt(_) => (Some(1), Kind::Int),
                    LiteralValue::Null => (Some(1), Kind::Dyn),
                };
                Node {
                    cost: 0,
                    path: None,
                    size,
                    kind: Some(kind),
                }
            }
            Expr::Ident(name) => {
                if let Some(l) = self.locals.get(name).and_then(|v| v.last()) {
                    return Node {
                        cost: 1,
                        path: l.path.clone(),
                        size: l.size,
                        kind: l.kind,
                    };
                }
                let path = Some(vec![name.clone()]);
                Node {
                    cost: 1,
                    kind: self.kind_at(&path),
                    path,
                    size: None,
                }
            }
            Expr::Select(sel) => {
                let op = self.cost(&sel.operand);
                if sel.test {
                    return Node {
                        cost: op.cost.saturating_add(1),
                        kind: Some(Kind::Bool),
                        ..Node::default()
                    };
                }
                let extra = match op.kind {
                    Some(Kind::Object | Kind::Map) | None => 1,
                    _ => 0,
                };
                let path = op.path.map(|mut p| {
                    p.push(sel.field.clone());
                    p
                });
                Node {
                    cost: op.cost.saturating_add(extra),
                    kind: self.kind_at(&path),
                    path,
                    size: None,
                }
            }
            Expr::List(list) => {
                let mut cost = LIST_CREATE;
                for el in &list.elements {
                    cost = cost.saturating_add(self.cost(el).cost);
                }
                Node {
                    cost,
                    path: None,
                    size: Some(list.elements.len() as u64),
                    kind: Some(Kind::List),
                }
            }
            Expr::Map(map) => {
                let mut cost = MAP_CREATE;
                for entry in &map.entries {
                    if let kube_cel::cel::common::ast::EntryExpr::MapEntry(m) = &entry.expr {
                        cost = cost
                            .saturating_add(self.cost(&m.key).cost)
                            .saturating_add(self.cost(&m.value).cost);
                    }
                }
                Node {
                    cost,
                    path: None,
                    size: Some(map.entries.len() as u64),
                    kind: Some(Kind::Map),
                }
            }
            Expr::Struct(st) => {
                let mut cost: u64 = 40;
                for entry in &st.entries {
                    if let kube_cel::cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                        cost = cost.saturating_add(self.cost(&f.value).cost);
                    }
                }
                Node {
                    cost,
                    ..Node::default()
                }
            }
            Expr::Comprehension(comp) => {
                let range = self.cost(&comp.iter_range);
                let init = self.cost(&comp.accu_init);
                let mut sum = range.cost.saturating_add(init.cost);
                let init_is_container = matches!(comp.accu_init.expr, Expr::List(_) | Expr::Map(_));
                let init_size = self.size_of(&init);
                self.locals
                    .entry(comp.accu_var.clone())
                    .or_default()
                    .push(Local {
                        // newAstNode: paths are not given for accumulator variables
                        path: None,
                        size: Some(init_size),
                        kind: init.kind,
                    });
                let sub = if range.kind == Some(Kind::Map) {
                    "@keys"
                } else {
                    "@items"
                };
                let item_path = range.path.clone().map(|mut p| {
                    p.push(sub.to_string());
                    p
                });
                let item_kind = self.kind_at(&item_path);
                self.locals
                    .entry(comp.iter_var.clone())
                    .or_default()
                    .push(Local {
                        path: item_path,
                        size: None,
                        kind: item_kind,
                    });
                let cond = self.cost(&comp.loop_cond);
                let step = self.cost(&comp.loop_step);
                if let Some(v) = self.locals.get_mut(&comp.iter_var) {
                    v.pop();
                }
                let result = self.cost(&comp.result);
                if let Some(v) = self.locals.get_mut(&comp.accu_var) {
                    v.pop();
                }
                sum = sum.saturating_add(result.cost);
                let count = self.size_of(&range);
                sum = sum.saturating_add(count.saturating_mul(step.cost.saturating_add(cond.cost)));
                Node {
                    cost: sum,
                    path: None,
                    size: if init_is_container {
                        Some(count)
                    } else {
                        Some(1)
                    },
                    kind: result.kind,
                }
            }
            Expr::Call(call) => self.cost_call(call),
            Expr::Unspecified => Node::default(),
        }
    }

    fn cost_call(&mut self, call: &kube_cel::cel::common::ast::CallExpr) -> Node {
        let f = call.func_name.as_str();
        let args: Vec<Node> = call.args.iter().map(|a| self.cost(a)).collect();
        let target = call.target.as_ref().map(|t| self.cost(t));
        let arg_sum = args.iter().fold(0u64, |s, a| s.saturating_add(a.cost));
        let target_cost = target.as_ref().map_or(0, |t| t.cost);
        let bool_node = |cost: u64| Node {
            cost,
            kind: Some(Kind::Bool),
            ..Node::default()
        };
        let size = |n: &Node| self.size_of(n);
        // cel-go functionCost (after k8s' library CostEstimator.EstimateCallCost).
        let node = match (f, args.len(), &target) {
            ("dyn", 1, None) => Node {
                cost: args[0].cost.saturating_add(1),
                ..args[0].clone()
            },
            (operators::LOGICAL_AND | operators::LOGICAL_OR, 2, None) => bool_node(arg_sum),
            (operators::CONDITIONAL, 3, None) => {
                let s = size(&args[1]).max(size(&args[2]));
                Node {
                    cost: args[0].cost.saturating_add(args[1].cost.max(args[2].cost)),
                    path: None,
                    size: (s != UNKNOWN).then_some(s),
                    kind: args[1].kind.or(args[2].kind),
                }
            }
            (operators::ADD, 2, None)
                if matches!(args[0].kind, Some(Kind::String | Kind::Bytes | Kind::List))
                    || matches!(args[1].kind, Some(Kind::String | Kind::Bytes | Kind::List)) =>
            {
                let s = size(&args[0]).saturating_add(size(&args[1]));
                let kind = args[0].kind.or(args[1].kind);
                let own = if kind == Some(Kind::List) {
                    1
                } else {
                    ceil_factor(s, STRING_TRAVERSAL)
                };
                Node {
                    cost: own.saturating_add(arg_sum),
                    path: None,
                    size: Some(s),
                    kind,
                }
            }
            (operators::EQUALS | operators::NOT_EQUALS, 2, None) => {
                let m = size(&args[0]).min(size(&args[1]));
                bool_node(ceil_factor(m, STRING_TRAVERSAL).saturating_add(arg_sum))
            }
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                2,
                None,
            ) if matches!(args[0].kind, Some(Kind::String | Kind::Bytes)) => {
                let m = size(&args[0]).min(size(&args[1]));
                bool_node(ceil_factor(m, STRING_TRAVERSAL).saturating_add(arg_sum))
            }
            (operators::IN, 2, None) => bool_node(size(&args[1]).saturating_add(arg_sum)),
            ("matches", 1, Some(t)) => {
                let str_cost = ceil_factor(size(t).saturating_add(1), STRING_TRAVERSAL);
                let re_cost = ceil_factor(size(&args[0]), REGEX_LENGTH);
                bool_node(str_cost.saturating_mul(re_cost).saturating_add(arg_sum))
            }
            ("matches", 2, None) => {
                let str_cost = ceil_factor(size(&args[0]).saturating_add(1), STRING_TRAVERSAL);
                let re_cost = ceil_factor(size(&args[1]), REGEX_LENGTH);
                bool_node(str_cost.saturating_mul(re_cost).saturating_add(arg_sum))
            }
            ("contains", 1, Some(t)) => {
                let c = ceil_factor(size(t), STRING_TRAVERSAL)
                    .saturating_mul(ceil_factor(size(&args[0]), STRING_TRAVERSAL));
                bool_node(c.saturating_add(arg_sum))
            }
            ("startsWith" | "endsWith", 1, Some(_)) => {
                bool_node(ceil_factor(size(&args[0]), STRING_TRAVERSAL).saturating_add(arg_sum))
            }
            ("url", 1, None) => Node {
                cost: ceil_factor(size(&args[0]), STRING_TRAVERSAL).saturating_add(arg_sum),
                ..Node::default()
            },
            ("lowerAscii" | "upperAscii" | "substring" | "trim", _, Some(t)) => {
                let s = size(t);
                Node {
                    cost: ceil_factor(s, STRING_TRAVERSAL).saturating_add(arg_sum),
                    path: None,
                    size: Some(s),
                    kind: Some(Kind::String),
                }
            }
            ("replace" | "split", _, Some(t)) => Node {
                cost: ceil_factor(size(t), 2.0 * STRING_TRAVERSAL).saturating_add(arg_sum),
                size: Some(size(t)),
                kind: Some(if f == "split" {
                    Kind::List
                } else {
                    Kind::String
                }),
                ..Node::default()
            },
            ("isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf", _, Some(t))
                if t.kind == Some(Kind::List) =>
            {
                let item_path = t.path.clone().map(|mut p| {
                    p.push("@items".into());
                    p
                });
                let item = Node {
                    kind: self.kind_at(&item_path),
                    path: item_path,
                    ..Node::default()
                };
                let mut el = 1u64;
                if matches!(item.kind, Some(Kind::String | Kind::Bytes)) {
                    el = el.saturating_add(ceil_factor(size(&item), STRING_TRAVERSAL));
                }
                Node {
                    cost: size(t).saturating_mul(el).saturating_add(arg_sum),
                    kind: if f == "isSorted" {
                        Some(Kind::Bool)
                    } else {
                        None
                    },
                    ..Node::default()
                }
            }
            (operators::INDEX, 2, None) => {
                let sub = if args[0].kind == Some(Kind::Map) {
                    "@values"
                } else {
                    "@items"
                };
                let path = args[0].path.clone().map(|mut p| {
                    p.push(sub.into());
                    p
                });
                Node {
                    cost: arg_sum.saturating_add(1),
                    kind: self.kind_at(&path),
                    path,
                    size: None,
                }
            }
            _ => Node {
                cost: arg_sum.saturating_add(1),
                path: None,
                size: None,
                kind: result_kind(f),
            },
        };
        Node {
            cost: node.cost.saturating_add(target_cost),
            ..node
        }
    }
}

/// Result kinds of the functions whose results are compared or sized in rules.
fn result_kind(f: &str) -> Option<Kind> {
    Some(match f {
        "size" | "int" | "uint" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" | "_+_" => Kind::Int,
        "double" => Kind::Double,
        "bool"
        | "!_"
        | "@not_strictly_false"
        | "_<_"
        | "_<=_"
        | "_>_"
        | "_>=_"
        | "isURL"
        | "isQuantity"
        | "isIP"
        | "isCIDR"
        | "has" => Kind::Bool,
        "timestamp" => Kind::Timestamp,
        "duration" => Kind::Duration,
        _ => return None,
    })
}

/// The estimated maximum cost of one rule evaluated on `schema` (`root`: the resource root or an
/// embedded resource). `Err` when the rule does not parse.
pub fn rule_cost(schema: &Value, root: bool, rule: &str) -> Result<u64, String> {
    let decl = decl_of(schema, root).ok_or_else(|| "schema has no CEL type".to_string())?;
    let ast = kube_cel::cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| e.to_string())?;
    let mut c = Coster {
        root: &decl,
        locals: HashMap::new(),
    };
    Ok(c.cost(&ast).cost)
}

/// validation.go `getCostErrorMessage`.
fn cost_message(name: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let shown = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{name} exceeds budget by factor of {shown} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

struct Walk {
    total: u64,
    most_expensive: Vec<(String, u64)>,
    out: Vec<Violation>,
}

impl Walk {
    fn observe(&mut self, path: &str, cost: u64) {
        self.total = self.total.saturating_add(cost);
        if cost < STATIC_ESTIMATED_CRD_COST_LIMIT / 100 {
            return;
        }
        self.most_expensive.push((path.to_string(), cost));
        self.most_expensive.sort_by_key(|e| std::cmp::Reverse(e.1));
        self.most_expensive.truncate(4);
    }

    /// `ValidateCustomResourceDefinitionOpenAPISchema` with its `CELSchemaContext`.
    fn node(&mut self, s: &Value, path: &str, root: bool, cardinality: Option<u64>) {
        let Some(obj) = s.as_object() else { return };
        let rules = obj
            .get("x-kubernetes-validations")
            .and_then(Value::as_array);
        let embedded = s["x-kubernetes-embedded-resource"] == true;
        if let Some(rules) = rules
            && let Some(decl) = decl_of(s, root || embedded)
        {
            for (i, r) in rules.iter().enumerate() {
                let Some(rule) = r["rule"].as_str() else {
                    continue;
                };
                let Ok(cost) = rule_cost(s, root || embedded, rule) else {
                    continue;
                };
                // compilation.go maxCardinality for rules under unbounded lists/maps
                let card = cardinality
                    .unwrap_or(MAX_REQUEST_SIZE_BYTES / (decl.min_size.saturating_add(1)));
                let expression_cost = if cost == 0 {
                    0
                } else {
                    cost.saturating_mul(card)
                };
                let field = format!("{path}.x-kubernetes-validations[{i}].rule");
                if expression_cost > STATIC_ESTIMATED_COST_LIMIT {
                    self.out.push(Violation {
                        field: field.clone(),
                        message: cost_message(
                            "estimated rule cost",
                            expression_cost,
                            STATIC_ESTIMATED_COST_LIMIT,
                        ),
                    });
                }
                self.observe(&field, expression_cost);
            }
        }
        // cel_validation.go extractMaxElements: the factor this node multiplies its children by.
        let factor = match s["type"].as_str() {
            Some("object") if s["additionalProperties"].is_object() => {
                s["maxProperties"].as_i64().map(|v| v.max(0) as u64)
            }
            Some("array") => s["maxItems"].as_i64().map(|v| v.max(0) as u64),
            _ => Some(1),
        };
        let child = match (cardinality, factor) {
            (Some(c), Some(f)) => Some(c.saturating_mul(f)),
            _ => None,
        };
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                self.node(sub, &format!("{path}.properties[{k}]"), false, child);
            }
        }
        if obj
            .get("additionalProperties")
            .is_some_and(Value::is_object)
        {
            self.node(
                &s["additionalProperties"],
                &format!("{path}.additionalProperties"),
                false,
                child,
            );
        }
        if obj.get("items").is_some_and(Value::is_object) {
            self.node(&s["items"], &format!("{path}.items"), false, child);
        }
    }
}

/// The cost violations of one openAPIV3Schema at `path` (e.g.
/// `spec.validation.openAPIV3Schema`), in upstream's order: per-rule errors, then, when the
/// total is over the CRD limit, one error per most expensive rule and one for the schema.
pub fn check_schema(schema: &Value, path: &str) -> Vec<Violation> {
    let mut w = Walk {
        total: 0,
        most_expensive: Vec::new(),
        out: Vec::new(),
    };
    w.node(schema, path, true, Some(1));
    if w.total > STATIC_ESTIMATED_CRD_COST_LIMIT {
        for (p, _) in w.most_expensive.clone() {
            w.out.push(Violation {
                field: p,
                message: "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
            });
        }
        w.out.push(Violation {
            field: path.to_string(),
            message: cost_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                w.total,
                STATIC_ESTIMATED_CRD_COST_LIMIT,
            ),
        });
    }
    w.out
}

/// The cost violations of a CRD (`apiextensions.k8s.io/v1` JSON). Versions with identical
/// schemas are reported under `spec.validation`, as the internal form kube validates has them.
pub fn check_crd(crd: &Value) -> Vec<Violation> {
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let schemas: Vec<&Value> = versions
        .iter()
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .collect();
    if schemas.is_empty() {
        return Vec::new();
    }
    if schemas.iter().all(|s| *s == schemas[0]) {
        return check_schema(schemas[0], "spec.validation.openAPIV3Schema");
    }
    let mut out = Vec::new();
    for (i, s) in schemas.iter().enumerate() {
        out.extend(check_schema(
            s,
            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unbounded_list_items_cost_like_upstream() {
        // kubeblocks#7138 / grafana-operator#1729: a rule on the items of an unbounded list of
        // objects is "1.048576x" over: cost 10 * (3 MiB / 3).
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "has(self.a) || has(self.b) || has(self.a) || has(self.b) || has(self.a)"}]}}}}}});
        let v = check_schema(&s, "spec.validation.openAPIV3Schema");
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].field,
            "spec.validation.openAPIV3Schema.properties[spec].properties[items].items.x-kubernetes-validations[0].rule"
        );
        assert!(
            v[0].message.starts_with(
                "estimated rule cost exceeds budget by factor of 1.048576x (try simplifying"
            ),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn bounded_lists_fit() {
        let s = json!({"type": "array", "maxItems": 64, "items": {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 63}}}});
        let cost = rule_cost(
            &s,
            false,
            "self.all(r, self.exists_one(o, o.name == r.name))",
        )
        .expect("parses");
        assert!(cost < STATIC_ESTIMATED_COST_LIMIT, "{cost}");
        let unbounded = json!({"type": "array", "items": s["items"].clone()});
        let cost = rule_cost(
            &unbounded,
            false,
            "self.all(r, self.exists_one(o, o.name == r.name))",
        )
        .expect("parses");
        assert!(cost > 100 * STATIC_ESTIMATED_COST_LIMIT, "{cost}");
    }
}
