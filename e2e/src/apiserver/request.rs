//! What a request is once parsed, shared by the handlers (`http` routes,
//! `ops`, `watch`, `table`, `tokens` serve): the request, the resource it
//! points at, and the response body type. Kept apart from `http` so the
//! handlers do not import the router that calls them.

use super::UserInfo;
use super::error::ApiError;
use super::registry::ResourceType;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

/// Response body: a full JSON document or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// A parsed request.
pub(super) struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub accept: String,
    pub content_type: String,
    pub body: Bytes,
    pub user: UserInfo,
    pub user_agent: String,
    /// Warnings for the client, sent as `Warning: 299 - "..."` headers.
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Req {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object",
            ));
        }
        if self
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            return super::protobuf::decode(&self.body).map_err(ApiError::unsupported_media_type);
        }
        serde_json::from_slice(&self.body)
            .or_else(|_| serde_saphyr::from_slice::<Value>(&self.body))
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }

    /// The field manager: the query parameter, else the user agent's program
    /// name (what kube-apiserver does).
    pub fn manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) => m.to_string(),
            None => match self.user_agent.split('/').next() {
                Some(ua) if !ua.is_empty() => ua.to_string(),
                _ => "unknown".to_string(),
            },
        }
    }

    /// Queues a warning for the client.
    pub fn warn(&self, message: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }

    pub fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// Where a resource request points.
pub(super) struct Target {
    pub rt: Arc<ResourceType>,
    pub ns: String,
    pub name: Option<String>,
    pub sub: Option<String>,
}
