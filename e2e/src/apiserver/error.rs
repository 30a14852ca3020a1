//! API errors rendered as `meta.k8s.io/v1` `Status` objects.
//!
//! The reasons, codes and message shapes follow kube-apiserver, because
//! clients (kubectl, kube-rs) branch on them: a conflict must be 409
//! `Conflict`, a missing object 404 `NotFound`, and so on.

use super::registry::ResourceType;
use serde_json::{Value, json};

/// An error answered to an API client as a `Status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details` of the Status, when the reason has any.
    pub details: Option<Value>,
}

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    /// The field path, such as `spec.rules[0].name`.
    pub field: String,
    /// What is wrong, already formatted the way kube-apiserver does.
    pub message: String,
}

/// `resource.group` for messages, or just `resource` for the core group.
pub fn qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

fn kind_qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.kind.clone()
    } else {
        format!("{}.{}", rt.kind, rt.group)
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    /// 404 for a named object.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(rt)),
        )
        .with_details(rt, name)
    }

    /// 404 for a path that serves nothing (the path goes into the details).
    pub fn no_route(path: &str) -> Self {
        let mut err = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        err.details = Some(json!({"causes": [{"reason": "UnexpectedServerResponse",
            "message": format!("404 page not found: {path}")}]}));
        err
    }

    /// 404 for a missing namespace.
    pub fn namespace_not_found(ns: &str) -> Self {
        let mut err = Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        err.details = Some(json!({"name": ns, "kind": "namespaces"}));
        err
    }

    /// 409 when creating an object that exists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(rt)),
        )
        .with_details(rt, name)
    }

    /// 409 when the caller's resourceVersion is stale.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::conflict_msg(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with a specific explanation.
    pub fn conflict_msg(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(rt)
            ),
        )
        .with_details(rt, name)
    }

    /// 422 with field causes.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let list = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {list}", kind_qualified(rt)),
        );
        err.details = Some(json!({
            "name": name, "group": rt.group, "kind": rt.kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        }));
        err
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 410 for a watch that starts before the retained history.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 500 with the message as is (storage errors kube does not wrap).
    pub fn internal_plain(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// An error with a caller-chosen code and reason (used for webhook denials).
    pub fn custom(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(code, reason, message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// Maps a webhook-supplied reason string onto the static set we emit.
pub fn reason_from_str(reason: &str) -> &'static str {
    match reason {
        "NotFound" => "NotFound",
        "AlreadyExists" => "AlreadyExists",
        "Conflict" => "Conflict",
        "Invalid" => "Invalid",
        "BadRequest" => "BadRequest",
        "Unauthorized" => "Unauthorized",
        "Forbidden" => "Forbidden",
        "" => "",
        _ => "Forbidden",
    }
}

impl ApiError {
    /// Adds `details` naming the object.
    pub fn with_name(self, rt: &ResourceType, name: &str) -> Self {
        self.with_details(rt, name)
    }
}
