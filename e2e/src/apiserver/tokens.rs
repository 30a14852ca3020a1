//! Bearer-token authentication, TokenRequest (`serviceaccounts/token`) and TokenReview.

use super::error::{ApiError, Cause};
use super::request::Target;
use super::store::now;
use super::{API_AUDIENCE, Inner, UserInfo};
use serde_json::{Value, json};

/// Authenticates a bearer token: a kubeconfig user or a service-account token for the API audience.
pub(super) fn authenticate(inner: &Inner, token: &str) -> Option<UserInfo> {
    if let Some(user) = inner.tokens.get(token) {
        return Some(user.clone());
    }
    review_jwt(inner, token, &[API_AUDIENCE.to_string()])
        .ok()
        .map(|(u, _)| u)
}

/// Checks a service-account JWT: signature, time, audience, and that the
/// service account and any bound object still exist with the same uid.
fn review_jwt(
    inner: &Inner,
    token: &str,
    audiences: &[String],
) -> Result<(UserInfo, Vec<String>), String> {
    let claims = inner.signer.verify(token).ok_or("invalid bearer token")?;
    let now = chrono::Utc::now().timestamp();
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Err("invalid bearer token, service account token has expired".into());
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 60) {
        return Err("invalid bearer token, service account token is not valid yet".into());
    }
    let token_aud: Vec<String> = claims["aud"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let matched: Vec<String> = audiences
        .iter()
        .filter(|a| token_aud.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return Err(
            "invalid bearer token, token audiences don't match the requested audiences".into(),
        );
    }
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str().unwrap_or_default();
    let sa_name = k["serviceaccount"]["name"].as_str().unwrap_or_default();
    let sa = inner
        .stored("/serviceaccounts", ns, sa_name)
        .ok_or_else(|| format!("service account {ns}/{sa_name} has been deleted"))?;
    if sa["metadata"]["uid"].as_str() != k["serviceaccount"]["uid"].as_str() {
        return Err(format!(
            "service account UID ({}) does not match claim",
            sa["metadata"]["uid"].as_str().unwrap_or_default()
        ));
    }
    let mut user = UserInfo {
        username: format!("system:serviceaccount:{ns}:{sa_name}"),
        uid: k["serviceaccount"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra: Default::default(),
    };
    // The real server's words (k8s.io/kubernetes pkg/serviceaccount/claims.go podValidate:
    // a missing or deleted pod is "service account token has been invalidated", a recreated
    // one "pod UID (%s) does not match service account pod ref claim (%s)"), as TokenReview
    // reports them: aggregated behind the bearer-token authenticator's "invalid bearer token".
    if let Some(pod_name) = k["pod"]["name"].as_str() {
        let pod = inner.stored("/pods", ns, pod_name).ok_or_else(|| {
            "[invalid bearer token, service account token has been invalidated]".to_string()
        })?;
        if pod["metadata"]["uid"].as_str() != k["pod"]["uid"].as_str() {
            return Err(format!(
                "[invalid bearer token, pod UID ({}) does not match service account pod ref claim ({})]",
                pod["metadata"]["uid"].as_str().unwrap_or_default(),
                k["pod"]["uid"].as_str().unwrap_or_default()
            ));
        }
        user.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![pod_name.to_string()],
        );
        user.extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![k["pod"]["uid"].as_str().unwrap_or_default().to_string()],
        );
    }
    if let Some(secret_name) = k["secret"]["name"].as_str() {
        // claims.go Validate: the same words for a bound Secret.
        let secret = inner.stored("/secrets", ns, secret_name).ok_or_else(|| {
            "[invalid bearer token, service account token has been invalidated]".to_string()
        })?;
        if secret["metadata"]["uid"].as_str() != k["secret"]["uid"].as_str() {
            return Err(format!(
                "[invalid bearer token, secret UID ({}) does not match service account secret ref claim ({})]",
                secret["metadata"]["uid"].as_str().unwrap_or_default(),
                k["secret"]["uid"].as_str().unwrap_or_default()
            ));
        }
    }
    if let Some(jti) = claims["jti"].as_str() {
        user.extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={jti}")],
        );
    }
    Ok((user, matched))
}

/// POST `serviceaccounts/{name}/token`.
pub(super) fn token_request(inner: &Inner, t: &Target, body: Value) -> Result<Value, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let sa = inner
        .stored("/serviceaccounts", &t.ns, &name)
        .ok_or_else(|| ApiError::not_found(&t.rt, &name))?;
    let spec = &body["spec"];
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![API_AUDIENCE.to_string()],
    };
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let invalid = |field: &str, message: String| {
        let rt = super::registry::builtins()
            .into_iter()
            .find(|r| r.plural == "tokenreviews");
        match rt {
            Some(mut rt) => {
                rt.kind = "TokenRequest".into();
                ApiError::invalid(
                    &rt,
                    &name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field: field.into(),
                        message,
                    }],
                )
            }
            None => ApiError::bad_request(message),
        }
    };
    if expiration < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let now_s = chrono::Utc::now().timestamp();
    let mut k8s =
        json!({"namespace": t.ns, "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}});
    let bound = &spec["boundObjectRef"];
    if let Some(kind) = bound["kind"].as_str() {
        let bound_name = bound["name"].as_str().unwrap_or_default();
        let (storage, field) = match kind {
            "Pod" => ("/pods", "pod"),
            "Secret" => ("/secrets", "secret"),
            other => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    format!("Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""),
                ));
            }
        };
        let obj = inner.stored(storage, &t.ns, bound_name).ok_or_else(|| {
            ApiError::custom(
                404,
                "NotFound",
                format!("{}s \"{bound_name}\" not found", field),
            )
        })?;
        // k8s.io/kubernetes pkg/registry/core/serviceaccount/storage/token.go `Create`: a
        // token for service account A cannot be bound to a pod that runs as B.
        if kind == "Pod" && obj["spec"]["serviceAccountName"].as_str() != Some(name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
            )));
        }
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::custom(
                409,
                "Conflict",
                format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        k8s[field] = json!({"name": bound_name, "uid": uid});
    }
    let jti = uuid::Uuid::new_v4().to_string();
    let claims = json!({
        "aud": audiences, "exp": now_s + expiration, "iat": now_s, "nbf": now_s, "iss": inner.issuer, "jti": jti,
        "sub": format!("system:serviceaccount:{}:{name}", t.ns), "kubernetes.io": k8s,
    });
    let token = inner
        .signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = chrono::DateTime::from_timestamp(now_s + expiration, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if !bound.is_null() {
        out_spec["boundObjectRef"] = bound.clone();
    }
    Ok(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": t.ns, "creationTimestamp": now()},
        "spec": out_spec, "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// POST `tokenreviews`.
pub(super) fn token_review(inner: &Inner, body: Value) -> Result<Value, ApiError> {
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::custom(
            422,
            "Invalid",
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value: token must not be empty",
        ));
    }
    let audiences: Vec<String> = match body["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![API_AUDIENCE.to_string()],
    };
    let result = match inner.tokens.get(token) {
        Some(user) if audiences.iter().any(|a| a == API_AUDIENCE) => {
            Ok((user.clone(), vec![API_AUDIENCE.to_string()]))
        }
        Some(_) => Err("token audiences don't match the requested audiences".to_string()),
        None => review_jwt(inner, token, &audiences),
    };
    let status = match result {
        Ok((user, aud)) => json!({"authenticated": true, "user": user.to_json(), "audiences": aud}),
        Err(e) => json!({"authenticated": false, "user": {}, "error": e}),
    };
    Ok(json!({
        "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status,
    }))
}
