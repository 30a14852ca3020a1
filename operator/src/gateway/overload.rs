//! Graceful overload (#25): past a bounded number of requests doing work at
//! once, or when the API server throttles the operator, the gateway answers
//! `429 Too Many Requests` with `Retry-After` instead of letting requests
//! queue until the sidecars time out. The sidecar waits at least the time
//! asked (plus jitter) before it asks again.
//!
//! Two bounds, both per replica:
//! - requests doing work at once ([`Limits::enter`]): token exchanges, bundle
//!   builds and audit batches. A waiting bundle long-poll holds none (it only
//!   waits for a change), so thousands may wait while the work stays bounded.
//! - API-server calls the gateway makes at once ([`Limits::api`]): the
//!   TokenReviews and the pod and service-account reads the watches could not
//!   answer. A call waits at most [`API_WAIT`] for a slot, then the request is
//!   answered 429: a replica never opens more than this many connections to
//!   the API server for the gateway, far below kube's default in-flight limits
//!   (400 reads, 200 writes, shared by every client of the cluster).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::gateway::refusal::{Refusal, unavailable};

/// Requests doing work at once, by default (see [`Limits::enter`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// API-server calls the gateway makes at once, by default (see [`Limits::api`]).
pub const DEFAULT_MAX_API_CALLS: usize = 64;

pub use crate::gateway::refusal::RETRY_AFTER;

/// How long a request waits for an API-call slot before it is answered 429.
pub const API_WAIT: Duration = Duration::from_secs(2);

/// The gateway's bounds on concurrent work, shared by every handler.
#[derive(Clone, Debug)]
pub struct Limits {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    api: Arc<Semaphore>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_API_CALLS)
    }
}

impl Limits {
    /// At most `max_in_flight` requests doing work and `max_api_calls` API
    /// calls at once (0 refuses every request: only tests want that).
    pub fn new(max_in_flight: usize, max_api_calls: usize) -> Limits {
        let bounded = |n: usize| n.min(Semaphore::MAX_PERMITS);
        Limits {
            in_flight: Arc::new(Semaphore::new(bounded(max_in_flight))),
            max_in_flight: bounded(max_in_flight),
            api: Arc::new(Semaphore::new(bounded(max_api_calls).max(1))),
        }
    }

    /// A slot for one request's work, held until the returned permit is
    /// dropped; a 429 with `Retry-After` when every slot is taken.
    pub(crate) fn enter(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            overloaded(format!(
                "the operator is answering {} requests already; retry after the time in Retry-After",
                self.max_in_flight
            ))
        })
    }

    /// Runs one API-server call `what` within the API-call bound. A 429 when
    /// no slot frees within [`API_WAIT`]; the API server's own errors as
    /// [`unavailable`] says (its 429 stays a 429).
    ///
    /// The call is boxed: a kube request's future is several KiB, and a
    /// handler that may make one (a bundle long-poll checking its holder)
    /// would otherwise carry that size inline for as long as it lives,
    /// waiting or not (#25: one per sidecar).
    pub(crate) fn api<'a, T: 'a>(
        &'a self,
        what: &'a str,
        call: impl Future<Output = Result<T, kube::Error>> + Send + 'a,
    ) -> impl Future<Output = Result<T, Refusal>> + Send + 'a {
        let call = Box::pin(call);
        async move {
            let slot = tokio::time::timeout(API_WAIT, self.api.acquire()).await;
            let Ok(Ok(_permit)) = slot else {
                return Err(overloaded(format!(
                    "the operator's calls to the API server are all busy; the {what} did not start within {API_WAIT:?}; retry after the time in Retry-After"
                )));
            };
            call.await.map_err(|e| unavailable(what, &e))
        }
    }
}

/// A 429 `Overloaded` asking the caller to come back after [`RETRY_AFTER`].
pub(crate) fn overloaded(message: String) -> Refusal {
    Refusal::new(StatusCode::TOO_MANY_REQUESTS, "Overloaded", message).retry_after(RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn past_its_bound_a_request_gets_429_with_retry_after() {
        let limits = Limits::new(1, 1);
        let held = limits.enter().unwrap();
        let response = limits.enter().unwrap_err().into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
        // The slot is back once the request is done.
        drop(held);
        assert!(limits.enter().is_ok());
    }

    #[tokio::test]
    async fn an_api_server_429_stays_a_429_with_retry_after() {
        let throttled: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests",
            "message": "Too many requests, please try again later."
        }))
        .unwrap();
        let refused = Limits::default()
            .api("TokenReview", async {
                Err::<(), _>(kube::Error::Api(Box::new(throttled)))
            })
            .await
            .unwrap_err();
        assert_eq!(refused.reason, "ApiServerThrottled");
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
    }

    #[tokio::test]
    async fn an_api_call_waits_for_a_slot_only_so_long() {
        let limits = Limits::new(1, 1);
        let busy = limits.api.clone().acquire_owned().await.unwrap();
        let refused = limits
            .api("pod lookup", async { Ok::<_, kube::Error>(()) })
            .await
            .unwrap_err()
            .into_response();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(busy);
        assert!(
            limits
                .api("pod lookup", async { Ok::<_, kube::Error>(()) })
                .await
                .is_ok()
        );
    }
}
