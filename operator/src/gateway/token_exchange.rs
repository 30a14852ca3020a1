//! The identity half of `POST /v1/token` (DESIGN §3): the TokenReview the
//! gateway sends for a sidecar's projected service-account token, and what it
//! reads from the answer.
//!
//! The whole exchange is: [`token_review`] → the API server → [`subject_from_review`]
//! → get the pod by name → [`crate::injection::token_holder::check_token_holder`] →
//! [`crate::gateway::token::GatewayClaims::new`] → [`crate::gateway::token::KeySet::sign`].

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};

use crate::gateway::token::Subject;
use crate::injection::inject::TOKEN_AUDIENCE;

/// `extra` key of a bound service-account token's pod name in a TokenReview.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// `extra` key of a bound service-account token's pod UID in a TokenReview.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// Most bytes of subject token the gateway passes on to the API server.
pub const MAX_SUBJECT_TOKEN_LEN: usize = 16 * 1024;

/// Why a subject token was not accepted. The gateway answers 401 with the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExchangeError {
    /// The token is empty or implausibly large.
    #[error(
        "the subject token is empty or longer than {MAX_SUBJECT_TOKEN_LEN} bytes; send the projected service-account token file's content"
    )]
    BadSubjectToken,
    /// The API server did not authenticate the token (expired, forged, deleted
    /// pod or service account, wrong audience).
    #[error("the API server rejected the service-account token: {reason}")]
    NotAuthenticated {
        /// The API server's reason, when it gave one.
        reason: String,
    },
    /// Authenticated, but not for the `sluice.dev` audience.
    #[error(
        "the service-account token is not for audience {TOKEN_AUDIENCE} (it is for: {audiences}); mount a projected token with audience {TOKEN_AUDIENCE}"
    )]
    WrongAudience {
        /// The audiences the API server reported, comma separated.
        audiences: String,
    },
    /// The token belongs to a user, not a service account.
    #[error("the token belongs to {username:?}, not a service account")]
    NotAServiceAccount {
        /// The authenticated user name.
        username: String,
    },
    /// The token is not bound to a pod (e.g. a long-lived Secret token).
    #[error(
        "the service-account token is not bound to a pod; use the projected token the Sluice webhook mounts, not a Secret-based token"
    )]
    NotBoundToPod,
}

/// The TokenReview that checks `token` for the `sluice.dev` audience.
pub fn token_review(token: &str) -> Result<TokenReview, ExchangeError> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_SUBJECT_TOKEN_LEN {
        return Err(ExchangeError::BadSubjectToken);
    }
    Ok(TokenReview {
        spec: TokenReviewSpec {
            audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
            token: Some(token.to_string()),
        },
        ..Default::default()
    })
}

/// Reads who the token speaks for from the API server's answer.
pub fn subject_from_review(status: &TokenReviewStatus) -> Result<Subject, ExchangeError> {
    if status.authenticated != Some(true) {
        return Err(ExchangeError::NotAuthenticated {
            reason: status
                .error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "no reason given".to_string()),
        });
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == TOKEN_AUDIENCE) {
        return Err(ExchangeError::WrongAudience {
            audiences: if audiences.is_empty() {
                "none reported".to_string()
            } else {
                audiences.join(", ")
            },
        });
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| ExchangeError::NotAServiceAccount {
            username: username.clone(),
        })?;
    let extra = user.extra.unwrap_or_default();
    let single = |key: &str| match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    let (Some(pod), Some(pod_uid)) = (single(POD_NAME_EXTRA), single(POD_UID_EXTRA)) else {
        return Err(ExchangeError::NotBoundToPod);
    };
    Ok(Subject {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod,
        pod_uid,
        service_account_uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec!["sluice.dev".into()]),
            error: None,
            user: Some(UserInfo {
                username: Some("system:serviceaccount:shop:report-job".into()),
                uid: Some("sa-uid".into()),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:shop".into(),
                    "system:authenticated".into(),
                ]),
                extra: Some(
                    [
                        (
                            POD_NAME_EXTRA.to_string(),
                            vec!["report-api-x2x7q".to_string()],
                        ),
                        (POD_UID_EXTRA.to_string(), vec!["pod-uid-1".to_string()]),
                    ]
                    .into(),
                ),
            }),
        }
    }

    #[test]
    fn review_asks_for_the_sluice_audience() {
        let review = token_review(" header.payload.sig\n").unwrap();
        assert_eq!(review.spec.audiences, Some(vec!["sluice.dev".to_string()]));
        assert_eq!(review.spec.token.as_deref(), Some("header.payload.sig"));
        assert_eq!(token_review("  "), Err(ExchangeError::BadSubjectToken));
        let huge = "a".repeat(MAX_SUBJECT_TOKEN_LEN + 1);
        assert_eq!(token_review(&huge), Err(ExchangeError::BadSubjectToken));
    }

    #[test]
    fn bound_service_account_token_gives_the_subject() {
        let subject = subject_from_review(&status()).unwrap();
        assert_eq!(subject.namespace, "shop");
        assert_eq!(subject.service_account, "report-job");
        assert_eq!(subject.pod, "report-api-x2x7q");
        assert_eq!(subject.pod_uid, "pod-uid-1");
        assert_eq!(subject.service_account_uid, "sa-uid");
        assert!(
            subject
                .groups
                .contains(&"system:serviceaccounts:shop".to_string())
        );
    }

    #[test]
    fn unauthenticated_tokens_carry_the_api_server_reason() {
        let mut s = status();
        s.authenticated = Some(false);
        s.error = Some("[invalid bearer token, token has been invalidated]".into());
        let error = subject_from_review(&s).unwrap_err();
        assert!(
            error.to_string().contains("token has been invalidated"),
            "{error}"
        );

        s.error = None;
        let error = subject_from_review(&s).unwrap_err();
        assert!(error.to_string().contains("no reason given"), "{error}");
    }

    #[test]
    fn wrong_audience_users_and_unbound_tokens_are_refused() {
        let mut s = status();
        s.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
        let error = subject_from_review(&s).unwrap_err();
        assert!(
            matches!(error, ExchangeError::WrongAudience { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("kubernetes.default.svc"),
            "{error}"
        );

        let mut s = status();
        s.user.as_mut().unwrap().username = Some("alice@example.com".into());
        let error = subject_from_review(&s).unwrap_err();
        assert!(
            matches!(error, ExchangeError::NotAServiceAccount { .. }),
            "{error}"
        );

        let mut s = status();
        s.user.as_mut().unwrap().extra = None;
        assert_eq!(
            subject_from_review(&s).unwrap_err(),
            ExchangeError::NotBoundToPod
        );
    }
}
