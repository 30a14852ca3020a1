//! The gateway's error answers: a status, a reason, a message and, for an
//! answer that asks the caller to come back, `Retry-After`. Below both the
//! authentication (`auth`) and the admission bound (`overload`), which both
//! answer with it.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::wire::ErrorBody;

/// The `Retry-After` of the gateway's 429 and 503 answers. Short: the limits
/// are about bursts (a rollout, a replica restart); the sidecar adds jitter.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error answer.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// `Retry-After`, for an answer that asks the caller to come back later.
    retry_after: Option<Duration>,
}

impl Refusal {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same answer, asking the caller to retry after `after` (whole seconds).
    pub(crate) fn retry_after(mut self, after: Duration) -> Refusal {
        self.retry_after = Some(after);
        self
    }
}

/// A 400 answer: the request body or a parameter cannot be read.
pub(crate) fn bad_request(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            reason: self.reason.to_string(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The answer to a failed API-server call: a 429 when the API server
/// throttles the operator (its own 429), else a 503; both with `Retry-After`.
pub(crate) fn unavailable(what: &str, error: &kube::Error) -> Refusal {
    let retry = RETRY_AFTER;
    if let kube::Error::Api(status) = error
        && status.code == StatusCode::TOO_MANY_REQUESTS.as_u16()
    {
        tracing::debug!(what, "the API server throttles the operator");
        return Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ApiServerThrottled",
            format!(
                "the API server throttles the operator's {what}; retry after the time in Retry-After"
            ),
        )
        .retry_after(retry);
    }
    tracing::warn!(error = %crate::error_chain(error), what, "API server call failed");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ApiServerUnavailable",
        format!("the operator could not complete the {what} with the API server; retry shortly"),
    )
    .retry_after(retry)
}
