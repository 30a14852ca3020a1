//! Outgoing notifications of approval requests and decisions (issue 23 item 9).
//!
//! The AccessRequest is the queue: the leader's AccessRequest controller
//! works out which notifications a request is due ([`due`]: `requested` while
//! it is Pending, then its decision), sends each to the route its namespace
//! and rule select ([`Notifier::route_for`]), and records what was delivered
//! in the request's [`NOTIFIED_ANNOTATION`]. A failed delivery is retried by
//! requeueing the request with exponential backoff; an operator restart or a
//! change of leader loses nothing, since what is not recorded is sent again.
//! Delivery is therefore at least once: a receiver may see a notification
//! twice when the operator stops between sending and recording.
//!
//! A decision is due for [`DELIVERY_WINDOW`] after it was made; after that
//! it is dropped (and logged), so a receiver that is down for long, or an
//! upgrade onto a cluster full of old requests, sends no stale news.
//!
//! Two formats: [`Format::Json`], the structured payload of [`payload`], and
//! [`Format::Slack`], `{"text": ...}` for Slack-compatible incoming webhooks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;
use sluice_crds::{AccessRequest, RequestPhase};

/// Records, on the AccessRequest, the notifications delivered: a
/// comma-separated list of [`NotifyEvent::word`]s, written by the leader.
pub const NOTIFIED_ANNOTATION: &str = "sluice.dev/notified";
/// How long after a decision its notification is still sent.
pub const DELIVERY_WINDOW: Duration = Duration::from_secs(3600);
/// The longest wait between two delivery attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the notifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL is not an http(s) URL.
    // The value is not shown: webhook URLs usually carry a token.
    #[error(
        "the notification URL (--notify-url, or notifications.webhook or notifications.routes in the settings file) is not an http:// or https:// URL; its value is not shown since it usually carries a token"
    )]
    BadUrl {
        /// The URL given.
        url: String,
    },
    /// No system trust roots for https receivers.
    #[error("no system trust roots for https notification receivers")]
    Roots(#[source] std::io::Error),
}

/// What happened to a request that a receiver is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotifyEvent {
    /// The request was filed and waits for approvers.
    Requested,
    /// Approvers approved it.
    Approved,
    /// An approver denied it.
    Denied,
    /// It expired undecided.
    Expired,
}

impl NotifyEvent {
    /// The event's name in payloads and in [`NOTIFIED_ANNOTATION`].
    pub fn word(self) -> &'static str {
        match self {
            NotifyEvent::Requested => "requested",
            NotifyEvent::Approved => "approved",
            NotifyEvent::Denied => "denied",
            NotifyEvent::Expired => "expired",
        }
    }
}

/// The body a route sends.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// `{"text": ...}`: Slack-compatible incoming webhooks.
    #[default]
    Slack,
    /// The structured payload ([`payload`]).
    Json,
}

/// Where the notifications of some requests go.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    /// Only requests in this namespace (any when `None`).
    pub namespace: Option<String>,
    /// Only requests under a rule of this name (any when `None`).
    pub rule: Option<String>,
    /// The receiver.
    pub url: String,
    /// The body it takes.
    pub format: Format,
}

impl std::fmt::Debug for Route {
    // The URL is not shown: it usually carries a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("namespace", &self.namespace)
            .field("rule", &self.rule)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// A route for every request.
    pub fn catch_all(url: &str, format: Format) -> Route {
        Route {
            namespace: None,
            rule: None,
            url: url.to_string(),
            format,
        }
    }

    fn selects(&self, namespace: &str, rule: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.rule.as_deref().is_none_or(|r| r == rule)
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Sends notifications along routes; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    routes: Arc<Vec<(Route, hyper::Uri)>>,
    client: HttpClient<Https, Full<Bytes>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// One Slack-compatible route for every request (`--notify-url`).
    pub fn start(url: &str) -> Result<Notifier, NotifyError> {
        Notifier::with_routes(vec![Route::catch_all(url, Format::Slack)])
    }

    /// Routes tried in order; the first that selects a request is its only one.
    pub fn with_routes(routes: Vec<Route>) -> Result<Notifier, NotifyError> {
        let mut parsed = Vec::with_capacity(routes.len());
        for route in routes {
            let bad = || NotifyError::BadUrl {
                url: route.url.clone(),
            };
            let uri: hyper::Uri = route.url.parse().map_err(|_| bad())?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(bad());
            }
            parsed.push((route, uri));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(NotifyError::Roots)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Notifier {
            routes: Arc::new(parsed),
            client: HttpClient::builder(TokioExecutor::new()).build(https),
        })
    }

    /// The route of requests in `namespace` under rule `rule`, if any.
    pub fn route_for(&self, namespace: &str, rule: &str) -> Option<&Route> {
        self.routes
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.selects(namespace, rule))
    }

    /// Sends `event` of `ar` to its route. `Ok(false)`: no route selects it.
    /// The error says why the receiver did not take it (never the URL).
    pub async fn deliver(&self, ar: &AccessRequest, event: NotifyEvent) -> Result<bool, String> {
        let namespace = ar.metadata.namespace.as_deref().unwrap_or_default();
        let Some((route, uri)) = self
            .routes
            .iter()
            .find(|(r, _)| r.selects(namespace, &ar.spec.rule))
        else {
            return Ok(false);
        };
        let body = match route.format {
            Format::Json => payload(ar, event),
            Format::Slack => json!({ "text": slack_text(ar, event) }),
        };
        let request = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?
            .map_err(|e| crate::error_chain(&e))?;
        if response.status().is_success() {
            Ok(true)
        } else {
            Err(format!("the receiver answered {}", response.status()))
        }
    }
}

/// The notifications recorded as delivered on `ar`.
pub fn delivered(ar: &AccessRequest) -> BTreeSet<String> {
    ar.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NOTIFIED_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The notifications `ar` is due at `now` and has not had, in order:
/// `requested` while it is Pending and unexpired; its decision (`approved`,
/// also once it ran or did not, `denied`, `expired`) for [`DELIVERY_WINDOW`]
/// after the phase last changed.
pub fn due(ar: &AccessRequest, now: Timestamp) -> Vec<NotifyEvent> {
    let done = delivered(ar);
    let status = ar.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let mut due = Vec::new();
    match phase {
        None | Some(RequestPhase::Pending) => {
            if ar.spec.expires_at.0 > now {
                due.push(NotifyEvent::Requested);
            }
        }
        Some(phase) => {
            let event = match phase {
                RequestPhase::Approved | RequestPhase::Executed | RequestPhase::NotRun => {
                    NotifyEvent::Approved
                }
                RequestPhase::Denied => NotifyEvent::Denied,
                RequestPhase::Expired | RequestPhase::Pending => NotifyEvent::Expired,
            };
            let changed = status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.last_transition_time.0);
            let recent = changed.is_some_and(|t| {
                now.duration_since(t)
                    .try_into()
                    .is_ok_and(|age: Duration| age <= DELIVERY_WINDOW)
            });
            if recent {
                due.push(event);
            }
        }
    }
    due.retain(|e| !done.contains(e.word()));
    due
}

/// [`NOTIFIED_ANNOTATION`]'s value once `event` is delivered too.
pub fn notified_value(ar: &AccessRequest, event: NotifyEvent) -> String {
    let mut done = delivered(ar);
    done.insert(event.word().to_string());
    done.into_iter().collect::<Vec<_>>().join(",")
}

/// The wait before delivery attempt `attempt + 1` (from 1 s, doubling, at
/// most [`MAX_BACKOFF`]).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(MAX_BACKOFF)
}

fn requester(ar: &AccessRequest) -> String {
    crate::approvals::rules::requester_user(&ar.spec.requester)
}

/// The structured payload ([`Format::Json`]).
pub fn payload(ar: &AccessRequest, event: NotifyEvent) -> serde_json::Value {
    let namespace = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let status = ar.status.as_ref();
    json!({
        "event": event.word(),
        "namespace": namespace,
        "request": name,
        "requester": requester(ar),
        "pod": ar.spec.requester.pod,
        "connection": ar.spec.connection,
        "policy": ar.spec.policy,
        "rule": ar.spec.rule,
        "command": {
            "text": ar.spec.command.text,
            "statement": ar.spec.command.statement,
            "truncated": ar.spec.command.truncated,
            "sha256": ar.spec.command.sha256,
        },
        "reason": ar.spec.reason,
        "phase": status.and_then(|s| s.phase).map(|p| format!("{p:?}")),
        "message": ready_message(ar),
        "decisions": status.map(|s| s.decisions.clone()).unwrap_or_default(),
        "expiresAt": ar.spec.expires_at,
        "approve": format!("kubectl sluice approve {name} -n {namespace}"),
        "deny": format!("kubectl sluice deny {name} -n {namespace}"),
    })
}

fn ready_message(ar: &AccessRequest) -> Option<String> {
    ar.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
}

/// The text of the Slack adapter ([`Format::Slack`]).
pub fn slack_text(ar: &AccessRequest, event: NotifyEvent) -> String {
    let namespace = ar.metadata.namespace.as_deref().unwrap_or_default();
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    match event {
        NotifyEvent::Requested => format!(
            "Approval requested: {name} in {namespace}. {}. Approve with `kubectl sluice approve {name} -n {namespace}`, deny with `kubectl sluice deny {name} -n {namespace}`; it expires at {}",
            crate::approvals::rules::requested_note(ar),
            ar.spec.expires_at.0
        ),
        _ => {
            let word = match event {
                NotifyEvent::Approved => "Approved",
                NotifyEvent::Denied => "Denied",
                _ => "Expired",
            };
            format!(
                "AccessRequest {name} in {namespace} is {word}: {}",
                ready_message(ar).unwrap_or_default()
            )
        }
    }
}

/// The JSON body of a Slack notification with `text`.
pub fn body_of(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "text": text })).unwrap_or_default()
}

#[cfg(test)]
mod tests;
