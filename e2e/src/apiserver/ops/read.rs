//! GET and LIST, with label and field selectors and continue tokens.

use super::object::{present, rename};
use crate::apiserver::Inner;
use crate::apiserver::error::ApiError;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::registry::Special;
use crate::apiserver::request::Req;
use crate::apiserver::request::Target;
use crate::apiserver::selectors::FieldSelector;
use crate::apiserver::selectors::LabelSelector;
use crate::apiserver::store::key_of;
use base64::Engine as _;
use serde_json::Value;
use serde_json::json;

/// GET of one object.
pub(in crate::apiserver) fn get(inner: &Inner, t: &Target, name: &str) -> Result<Value, ApiError> {
    let st = inner.lock();
    let obj = st
        .store
        .get(&t.rt.storage, &t.ns, name)
        .ok_or_else(|| ApiError::not_found(&t.rt, name))?;
    Ok(present(&t.rt, obj))
}

/// Label and field selectors of a list or watch request.
pub(in crate::apiserver) fn selectors(
    req: &Req,
    rt: &ResourceType,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(
        req.q("fieldSelector").unwrap_or_default(),
        &rt.fields,
        &rt.kind,
    )?;
    Ok((labels, fields))
}

/// Whether a stored object matches the selectors, evaluated on its served form.
pub(in crate::apiserver) fn matches(
    rt: &ResourceType,
    obj: &Value,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> bool {
    if !labels.matches(&obj["metadata"]["labels"]) {
        return false;
    }
    // Field labels of both event APIs are accepted; evaluate on the matching form.
    let core = fields.matches(obj);
    if rt.special == Special::EventsV1 || rt.special == Special::CoreEvent {
        return core || fields.matches(&present_events_v1(obj));
    }
    core
}

fn present_events_v1(obj: &Value) -> Value {
    let mut out = obj.clone();
    rename(&mut out, true);
    out
}

/// LIST.
pub(in crate::apiserver) fn list(inner: &Inner, req: &Req, t: &Target) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(req, &t.rt)?;
    let limit: usize = req
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after: Option<(String, String)> = match req.q("continue") {
        Some(token) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("the continue token is not valid; restart the list")
                })?;
            Some(raw)
        }
        None => None,
    };
    let st = inner.lock();
    let ns = if t.ns.is_empty() {
        None
    } else {
        Some(t.ns.as_str())
    };
    let mut items = Vec::new();
    let mut more = false;
    for obj in st.store.list(&t.rt.storage, ns) {
        if after.as_ref().is_some_and(|a| key_of(obj) <= *a) {
            continue;
        }
        if !matches(&t.rt, obj, &labels, &fields) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(present(&t.rt, obj));
    }
    let mut meta = json!({"resourceVersion": st.store.rv.to_string()});
    if more && let Some(last) = items.last() {
        let token = serde_json::to_vec(&key_of(last)).unwrap_or_default();
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
    }
    Ok(
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": meta, "items": items}),
    )
}
