//! Admission webhooks: mutating then validating, called over HTTPS with the
//! configuration's caBundle, AdmissionReview v1.

use super::error::{ApiError, reason_from_str};
use super::registry::{ResourceType, Special};
use super::selectors::LabelSelector;
use super::{Inner, UserInfo};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// What is being admitted.
pub(crate) struct Attrs<'a> {
    pub rt: &'a ResourceType,
    pub sub: Option<&'a str>,
    pub op: &'static str,
    pub ns: &'a str,
    pub name: &'a str,
    pub user: &'a UserInfo,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    /// Where webhook `warnings` go (to the client's Warning headers).
    pub warnings: &'a std::sync::Mutex<Vec<String>>,
}

fn forward_warnings(a: &Attrs<'_>, response: &Value) {
    let mut sink = a.warnings.lock().unwrap_or_else(|p| p.into_inner());
    for w in response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        sink.push(w.to_string());
    }
}

const MUTATING: &str = "admissionregistration.k8s.io/mutatingwebhookconfigurations";
const VALIDATING: &str = "admissionregistration.k8s.io/validatingwebhookconfigurations";

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn rule_matches(rule: &Value, a: &Attrs<'_>) -> bool {
    let any = |list: Vec<&str>, want: &str| list.iter().any(|x| *x == "*" || *x == want);
    if !any(strings(&rule["operations"]), a.op)
        || !any(strings(&rule["apiGroups"]), &a.rt.group)
        || !any(strings(&rule["apiVersions"]), &a.rt.version)
    {
        return false;
    }
    let resource_ok = strings(&rule["resources"]).iter().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        let res_ok = res == "*" || res == a.rt.plural;
        let sub_ok = match a.sub {
            None => sub.is_empty() || *r == "*/*",
            Some(s) => sub == "*" || sub == s,
        };
        res_ok && sub_ok
    });
    let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
        "Namespaced" => a.rt.namespaced,
        "Cluster" => !a.rt.namespaced,
        _ => true,
    };
    resource_ok && scope_ok
}

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if sel.is_null() || sel.as_object().is_some_and(|m| m.is_empty()) {
        return true;
    }
    LabelSelector::from_object(sel).is_ok_and(|s| s.matches(labels))
}

/// Evaluates `matchConditions` (CEL); `Err` when one cannot be evaluated.
///
/// The variables are plain maps, as kube's unstructured objects are: map keys
/// such as annotation names are not escaped (`'a.b/c' in object.metadata.annotations`).
fn conditions_match(wh: &Value, a: &Attrs<'_>, obj: Option<&Value>) -> Result<bool, String> {
    use kube_cel::KubeCelExt as _;
    use kube_cel::cel::{Context, Program, Value as Cel};
    let Some(conds) = wh["matchConditions"].as_array().filter(|c| !c.is_empty()) else {
        return Ok(true);
    };
    let mut request = json!({
        "operation": a.op, "name": a.name, "namespace": a.ns, "dryRun": a.dry_run,
        "kind": {"group": a.rt.group, "version": a.rt.version, "kind": a.rt.kind},
        "resource": {"group": a.rt.group, "version": a.rt.version, "resource": a.rt.plural},
        "userInfo": a.user.to_json(),
    });
    request["requestKind"] = request["kind"].clone();
    request["requestResource"] = request["resource"].clone();
    if let Some(sub) = a.sub {
        request["subResource"] = json!(sub);
    }
    let to_cel =
        |v: &Value| kube_cel::cel::to_value(v).map_err(|e| format!("cannot convert to CEL: {e}"));
    let mut ctx = Context::default();
    ctx.register_all();
    ctx.add_variable_from_value("object", to_cel(obj.unwrap_or(&Value::Null))?);
    ctx.add_variable_from_value("oldObject", to_cel(a.old.unwrap_or(&Value::Null))?);
    ctx.add_variable_from_value("request", to_cel(&request)?);
    for cond in conds {
        let name = cond["name"].as_str().unwrap_or_default();
        let expression = cond["expression"].as_str().unwrap_or("false");
        let program = Program::compile(expression)
            .map_err(|e| format!("matchCondition {name:?} does not compile: {e}"))?;
        match program.execute(&ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => return Ok(false),
            Ok(other) => {
                return Err(format!(
                    "matchCondition {name:?} must evaluate to bool, got {other:?}"
                ));
            }
            Err(e) => return Err(format!("matchCondition {name:?}: evaluation error: {e}")),
        }
    }
    Ok(true)
}

fn applies(inner: &Inner, wh: &Value, a: &Attrs<'_>, obj: Option<&Value>) -> bool {
    if !wh["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| rule_matches(r, a))
    {
        return false;
    }
    let ns_labels = if a.rt.special == Special::Namespace {
        obj.or(a.old)
            .map(|o| o["metadata"]["labels"].clone())
            .unwrap_or(Value::Null)
    } else if a.rt.namespaced {
        inner
            .stored("/namespaces", "", a.ns)
            .map(|n| n["metadata"]["labels"].clone())
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if (a.rt.namespaced || a.rt.special == Special::Namespace)
        && !selector_matches(&wh["namespaceSelector"], &ns_labels)
    {
        return false;
    }
    let object_ok = [obj, a.old]
        .into_iter()
        .flatten()
        .any(|o| selector_matches(&wh["objectSelector"], &o["metadata"]["labels"]));
    object_ok
        || wh["objectSelector"]
            .as_object()
            .is_none_or(|m| m.is_empty())
}

fn review(a: &Attrs<'_>, obj: Option<&Value>, uid: &str) -> Value {
    let options_kind = match a.op {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    let gvk = json!({"group": a.rt.group, "version": a.rt.version, "kind": a.rt.kind});
    let gvr = json!({"group": a.rt.group, "version": a.rt.version, "resource": a.rt.plural});
    let mut req = json!({
        "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": a.name, "operation": a.op, "userInfo": a.user.to_json(),
        "object": obj.cloned().unwrap_or(Value::Null), "oldObject": a.old.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run, "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
    });
    if !a.ns.is_empty() {
        req["namespace"] = json!(a.ns);
    }
    if let Some(s) = a.sub {
        req["subResource"] = json!(s);
        req["requestSubResource"] = json!(s);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

/// Why a webhook call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(
        "webhook clientConfig has no url; service references cannot be reached from the test control plane, set clientConfig.url"
    )]
    NoUrl,
    #[error("the webhook url {0:?} is not an https://host:port/path URL")]
    BadUrl(String),
    #[error("the webhook caBundle is not usable: {0}")]
    Ca(String),
    #[error("failed to call webhook: Post {url:?}: {why}")]
    Io { url: String, why: String },
    #[error("failed to call webhook: Post {0:?}: context deadline exceeded")]
    Timeout(String),
    #[error("received invalid webhook response: {0}")]
    BadResponse(String),
}

async fn call(wh: &Value, body: &Value, uid: &str) -> Result<Value, CallError> {
    let url = wh["clientConfig"]["url"]
        .as_str()
        .ok_or(CallError::NoUrl)?
        .to_string();
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| CallError::BadUrl(url.clone()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']),
            p.parse::<u16>()
                .map_err(|_| CallError::BadUrl(url.clone()))?,
        ),
        None => (authority, 443),
    };
    let ca = wh["clientConfig"]["caBundle"].as_str().unwrap_or_default();
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .map_err(|e| CallError::Ca(e.to_string()))?;
    let tls = crate::pki::client_config(&String::from_utf8_lossy(&ca_pem))
        .map_err(|e| CallError::Ca(e.to_string()))?;
    let timeout = Duration::from_secs(wh["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
    let io = |why: String| CallError::Io {
        url: url.clone(),
        why,
    };
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| io(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| io(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| io(e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| io(e.to_string()))?;
        tokio::spawn(conn);
        let request = hyper::Request::post(path)
            .header("host", authority)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(body).unwrap_or_default(),
            )))
            .map_err(|e| io(e.to_string()))?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| io(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| io(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(CallError::BadResponse(format!(
                "the server responded with HTTP {status}"
            )));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| CallError::BadResponse(e.to_string()))
    };
    let out = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CallError::Timeout(url.clone()))??;
    let response = out
        .get("response")
        .cloned()
        .ok_or_else(|| CallError::BadResponse("response is missing".into()))?;
    if response["uid"].as_str() != Some(uid) {
        return Err(CallError::BadResponse(format!(
            "expected response.uid={uid:?}, got {:?}",
            response["uid"].as_str().unwrap_or_default()
        )));
    }
    Ok(response)
}

fn denial(name: &str, response: &Value) -> ApiError {
    let status = &response["status"];
    let code = status["code"]
        .as_u64()
        .filter(|c| (400..600).contains(c))
        .unwrap_or(403) as u16;
    let message = match status["message"].as_str().filter(|m| !m.is_empty()) {
        Some(m) => format!("admission webhook \"{name}\" denied the request: {m}"),
        None => format!("admission webhook \"{name}\" denied the request without explanation"),
    };
    ApiError::custom(
        code,
        reason_from_str(status["reason"].as_str().unwrap_or_default()),
        message,
    )
}

/// matchConditions with failurePolicy applied to evaluation errors.
fn matched(wh: &Value, name: &str, a: &Attrs<'_>, obj: Option<&Value>) -> Result<bool, ApiError> {
    match conditions_match(wh, a, obj) {
        Ok(m) => Ok(m),
        Err(_) if wh["failurePolicy"].as_str() == Some("Ignore") => Ok(false),
        Err(e) => Err(ApiError::internal(format!(
            "failed calling webhook \"{name}\": {e}"
        ))),
    }
}

/// kube refuses dry-run requests that would reach a webhook with side effects.
fn check_dry_run(wh: &Value, name: &str, a: &Attrs<'_>) -> Result<(), ApiError> {
    let safe = matches!(wh["sideEffects"].as_str(), Some("None" | "NoneOnDryRun"));
    if a.dry_run && !safe {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{name}\" does not support dry run"
        )));
    }
    Ok(())
}

fn exempt(a: &Attrs<'_>) -> bool {
    // kube never sends webhook configurations themselves through webhooks.
    a.rt.special == Special::Webhook
        || matches!(
            a.rt.special,
            Special::TokenReview | Special::SelfSubjectReview
        )
}

/// Runs the mutating webhooks in name order and returns the patched object.
pub(crate) async fn mutate(
    inner: &Arc<Inner>,
    a: &Attrs<'_>,
    mut obj: Value,
) -> Result<Value, ApiError> {
    if exempt(a) {
        return Ok(obj);
    }
    for cfg in inner.stored_all(MUTATING) {
        for wh in cfg["webhooks"].as_array().into_iter().flatten() {
            if !applies(inner, wh, a, Some(&obj)) {
                continue;
            }
            let name = wh["name"].as_str().unwrap_or_default();
            if !matched(wh, name, a, Some(&obj))? {
                continue;
            }
            check_dry_run(wh, name, a)?;
            let uid = uuid::Uuid::new_v4().to_string();
            let response = match call(wh, &review(a, Some(&obj), &uid), &uid).await {
                Ok(r) => r,
                Err(e) if wh["failurePolicy"].as_str() == Some("Ignore") => {
                    tracing::warn!(webhook = name, error = %e, "ignoring failed webhook");
                    continue;
                }
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{name}\": {e}"
                    )));
                }
            };
            forward_warnings(a, &response);
            if response["allowed"].as_bool() != Some(true) {
                return Err(denial(name, &response));
            }
            // Go decodes a []byte from a base64 string or from an array of
            // numbers (what kube-rs sends); accept both like kube-apiserver.
            let raw = match &response["patch"] {
                Value::String(p) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(p)
                        .map_err(|e| {
                            ApiError::internal(format!(
                                "webhook \"{name}\" returned a patch that is not base64: {e}"
                            ))
                        })?,
                ),
                Value::Array(bytes) => Some(
                    bytes
                        .iter()
                        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| {
                            ApiError::internal(format!(
                                "webhook \"{name}\" returned a patch array that is not bytes"
                            ))
                        })?,
                ),
                _ => None,
            };
            if let Some(raw) = raw {
                let patch: json_patch::Patch = serde_json::from_slice(&raw).map_err(|e| {
                    ApiError::internal(format!(
                        "webhook \"{name}\" returned an invalid JSONPatch: {e}"
                    ))
                })?;
                json_patch::patch(&mut obj, &patch).map_err(|e| {
                    ApiError::internal(format!(
                        "webhook \"{name}\" returned a JSONPatch that does not apply: {e}"
                    ))
                })?;
            }
        }
    }
    Ok(obj)
}

/// Runs the validating webhooks; the first denial wins.
pub(crate) async fn validate(
    inner: &Arc<Inner>,
    a: &Attrs<'_>,
    obj: Option<&Value>,
) -> Result<(), ApiError> {
    if exempt(a) {
        return Ok(());
    }
    for cfg in inner.stored_all(VALIDATING) {
        for wh in cfg["webhooks"].as_array().into_iter().flatten() {
            if !applies(inner, wh, a, obj) {
                continue;
            }
            let name = wh["name"].as_str().unwrap_or_default();
            if !matched(wh, name, a, obj)? {
                continue;
            }
            check_dry_run(wh, name, a)?;
            let uid = uuid::Uuid::new_v4().to_string();
            match call(wh, &review(a, obj, &uid), &uid).await {
                Ok(r) if r["allowed"].as_bool() == Some(true) => forward_warnings(a, &r),
                Ok(r) => return Err(denial(name, &r)),
                Err(e) if wh["failurePolicy"].as_str() == Some("Ignore") => {
                    tracing::warn!(webhook = name, error = %e, "ignoring failed webhook");
                }
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{name}\": {e}"
                    )));
                }
            }
        }
    }
    Ok(())
}
