//! HTTP plumbing: TLS accept loop, authentication, routing, and responses.

use super::error::ApiError;
use super::registry::Special;
use super::request::{Body, Req, Target};
use super::{Inner, UserInfo, ops, table, tokens, watch};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

/// Largest request body accepted; bigger ones are refused, not buffered.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// kube-apiserver's default `--max-requests-inflight`.
pub const MAX_READS_IN_FLIGHT: usize = 400;
/// kube-apiserver's default `--max-mutating-requests-inflight`.
pub const MAX_MUTATING_IN_FLIGHT: usize = 200;

/// The requests the server is answering, and those it has answered per user.
///
/// As kube-apiserver's max-in-flight filter (k8s.io/apiserver
/// pkg/server/filters/maxinflight.go): at most `read` non-mutating and
/// `mutating` mutating requests at once; long-running ones (watches, logs,
/// exec, proxy) are not counted; a request beyond the limit is answered 429
/// `TooManyRequests` with `Retry-After: 1` at once, before its body is read.
pub(crate) struct Traffic {
    read: tokio::sync::Semaphore,
    mutating: tokio::sync::Semaphore,
    by_user: std::sync::Mutex<HashMap<String, u64>>,
    /// Requests by (user, method, path).
    by_path: std::sync::Mutex<HashMap<(String, String, String), u64>>,
}

impl Traffic {
    pub(crate) fn new(read: usize, mutating: usize) -> Traffic {
        Traffic {
            read: tokio::sync::Semaphore::new(read),
            mutating: tokio::sync::Semaphore::new(mutating),
            by_user: std::sync::Mutex::default(),
            by_path: std::sync::Mutex::default(),
        }
    }

    /// Requests `user` sent with `method` to `path` so far (answered or
    /// refused, after authentication; the path without its query).
    pub(crate) fn requests_to(&self, user: &str, method: &str, path: &str) -> u64 {
        self.by_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(user.to_string(), method.to_string(), path.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests `user` sent so far (answered or refused, after authentication).
    pub(crate) fn requests_of(&self, user: &str) -> u64 {
        self.by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, user: &str, method: &Method, path: &str) {
        *self
            .by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user.to_string())
            .or_default() += 1;
        *self
            .by_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((user.to_string(), method.to_string(), path.to_string()))
            .or_default() += 1;
    }

    /// A slot for a request, `None` when the server is at its limit;
    /// `Some(None)` for a long-running request, which takes none.
    fn admit(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
    ) -> Option<Option<tokio::sync::SemaphorePermit<'_>>> {
        if long_running(path, query) {
            return Some(None);
        }
        let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let pool = if mutating { &self.mutating } else { &self.read };
        pool.try_acquire().ok().map(Some)
    }
}

/// kube-apiserver's default `--long-running-request-regexp`
/// (`(/|^)((watch|proxy)(/|$)|(logs?|portforward|exec|attach)/?$)`) and `?watch=true`.
fn long_running(path: &str, query: &HashMap<String, String>) -> bool {
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return true;
    }
    let segments: Vec<&str> = path.split('/').collect();
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    segments.iter().any(|s| *s == "watch" || *s == "proxy")
        || matches!(last, "log" | "logs" | "portforward" | "exec" | "attach")
}

fn too_many_requests() -> Response<Body> {
    let mut err = ApiError::custom(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.".to_string(),
    );
    err.details = Some(json!({"retryAfterSeconds": 1}));
    let mut response = error_response(&err);
    response
        .headers_mut()
        .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    response
}

pub(super) async fn serve(
    inner: Arc<Inner>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(handle(inner, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

pub(super) fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn error_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status())
}

async fn handle(inner: Arc<Inner>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let auth = header("authorization");
    let user = auth
        .strip_prefix("Bearer ")
        .and_then(|t| tokens::authenticate(&inner, t.trim()));
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    tracing::debug!(method = %parts.method, %path, query = ?query, user = ?user.as_ref().map(|u| &u.username), "request");
    let Some(user) = user else {
        // Health and OIDC discovery are public in kube-apiserver too.
        if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
            return text("ok");
        }
        return error_response(&ApiError::unauthorized());
    };
    inner.traffic.count(&user.username, &parts.method, &path);
    let Some(_slot) = inner.traffic.admit(&parts.method, &path, &query) else {
        return too_many_requests();
    };
    let user = match impersonate(&inner, user, &parts.headers) {
        Ok(user) => user,
        Err(err) => return error_response(&err),
    };
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_response(&ApiError::custom(
                413,
                "RequestEntityTooLarge",
                format!("the request body is larger than {MAX_BODY} bytes"),
            ));
        }
    };
    let req = Req {
        method: parts.method.clone(),
        path,
        query,
        accept: header("accept"),
        content_type: header("content-type"),
        body,
        user,
        user_agent: header("user-agent"),
        warnings: std::sync::Mutex::default(),
    };
    let mut resp = match route(&inner, &req).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(error = %err, "request failed");
            error_response(&err)
        }
    };
    let warnings = std::mem::take(&mut *req.warnings.lock().unwrap_or_else(|p| p.into_inner()));
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        let text = format!("299 - \"{escaped}\"");
        if let Ok(v) = hyper::header::HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// Impersonation (`kubectl --as`, `--as-group`, `--as-uid`; `Impersonate-*` headers), as
/// k8s.io/apiserver pkg/endpoints/filters/impersonation.go does it: every requested user,
/// service account, group, uid and extra needs the `impersonate` verb on `users`,
/// `serviceaccounts` (in its namespace), `groups`, `uids` or `userextras/<key>`; groups or
/// extras without a user are a bad request; the impersonated user gets
/// `system:authenticated` (and the service-account groups) like an authenticated one.
fn impersonate(
    inner: &Inner,
    user: UserInfo,
    headers: &hyper::HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let as_user = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let extras: Vec<(String, Vec<String>)> = headers
        .keys()
        .filter_map(|k| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            let key = form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| key.to_string());
            Some((key, values(k.as_str())))
        })
        .collect();
    let Some(name) = as_user else {
        if groups.is_empty() && uid.is_none() && extras.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, uid or extra without impersonating a user"
                .to_string(),
        ));
    };
    let check = |group: &str, resource: &str, subresource: &str, namespace: &str, name: &str| {
        let attrs = super::rbac::Attributes {
            verb: "impersonate".into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        inner.authorize(&user, &attrs)
    };
    let mut out_groups = Vec::new();
    if let Some(rest) = name.strip_prefix("system:serviceaccount:") {
        let (ns, sa) = rest.split_once(':').unwrap_or((rest, ""));
        check("", "serviceaccounts", "", ns, sa)?;
        out_groups.push("system:serviceaccounts".to_string());
        out_groups.push(format!("system:serviceaccounts:{ns}"));
    } else {
        check("", "users", "", "", &name)?;
    }
    for g in &groups {
        check("", "groups", "", "", g)?;
        out_groups.push(g.clone());
    }
    if let Some(uid) = &uid {
        check("authentication.k8s.io", "uids", "", "", uid)?;
    }
    let mut extra = std::collections::BTreeMap::new();
    for (key, vals) in extras {
        for v in &vals {
            check("authentication.k8s.io", "userextras", &key, "", v)?;
        }
        extra.insert(key, vals);
    }
    if name != "system:anonymous" && !out_groups.iter().any(|g| g == "system:authenticated") {
        out_groups.push("system:authenticated".to_string());
    }
    Ok(UserInfo {
        username: name,
        uid: uid.unwrap_or_default(),
        groups: out_groups,
        extra,
    })
}

fn text(s: &str) -> Response<Body> {
    Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(s.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

async fn route(inner: &Arc<Inner>, req: &Req) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let registry = inner.lock().registry.clone();
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz"] => return Ok(text("ok")),
        ["version"] => {
            return Ok(json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-sluice-testcluster", "gitCommit": "",
                    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust",
                    "compiler": "rustc", "platform": "linux/amd64"}),
            ));
        }
        ["api" | "apis"]
            if req.accept.contains("as=APIGroupDiscoveryList") && req.accept.contains("v=v2;") =>
        {
            let doc = registry.aggregated(segs[0] == "api");
            let body = serde_json::to_vec(&doc).unwrap_or_default();
            return Response::builder()
                .header(
                    "content-type",
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                )
                .body(Full::new(Bytes::from(body)).boxed())
                .map_err(|e| {
                    ApiError::internal(format!("could not build the discovery response: {e}"))
                });
        }
        ["api"] => {
            return Ok(json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ));
        }
        ["apis"] => return Ok(json_response(200, &registry.api_group_list())),
        ["api", "v1"] => return found(registry.api_resource_list("", "v1"), &req.path),
        ["apis", group] => return found(registry.api_group(group), &req.path),
        ["apis", group, version] => {
            return found(registry.api_resource_list(group, version), &req.path);
        }
        [".well-known", "openid-configuration"] => {
            return Ok(json_response(
                200,
                &json!({"issuer": inner.issuer, "jwks_uri": format!("{}/openid/v1/jwks", inner.issuer),
                    "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"]}),
            ));
        }
        ["openid", "v1", "jwks"] => return Ok(json_response(200, &inner.signer.jwks())),
        ["openapi", "v3"] => return Ok(json_response(200, &super::openapi::root(&registry))),
        ["openapi", "v3", "api", version] => {
            return found(super::openapi::document(&registry, "", version), &req.path);
        }
        ["openapi", "v3", "apis", group, version] => {
            return found(
                super::openapi::document(&registry, group, version),
                &req.path,
            );
        }
        ["openapi", ..] => return Err(ApiError::no_route(&req.path)),
        _ => {}
    }
    if let [
        "api",
        "v1",
        "namespaces",
        ns,
        "pods",
        id,
        "proxy",
        rest @ ..,
    ] = segs.as_slice()
    {
        return super::pod_proxy::proxy(inner, req, ns, id, rest).await;
    }
    if let ["api", "v1", "namespaces", ns, "pods", name, "log"] = segs.as_slice() {
        return super::pod_log::log(inner, req, ns, name).await;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(&req.path)),
    };
    let target =
        resolve(&registry, group, version, rest).ok_or_else(|| ApiError::no_route(&req.path))?;
    dispatch(inner, req, target).await
}

fn found(v: Option<Value>, path: &str) -> Result<Response<Body>, ApiError> {
    v.map(|v| json_response(200, &v))
        .ok_or_else(|| ApiError::no_route(path))
}

fn resolve(
    registry: &super::registry::Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Option<Target> {
    let find = |plural: &str| registry.find(group, version, plural);
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|t| t.namespaced) => {
            (ns.to_string(), [&[*plural][..], tail].concat())
        }
        _ => (String::new(), rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let rt = find(plural)?;
    if rt.namespaced && ns.is_empty() && name.is_some() {
        return None;
    }
    if !rt.namespaced && !ns.is_empty() {
        return None;
    }
    Some(Target { rt, ns, name, sub })
}

fn verb(req: &Req, t: &Target) -> &'static str {
    match (&req.method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false)
            if req
                .query
                .get("watch")
                .is_some_and(|v| v == "true" || v == "1") =>
        {
            "watch"
        }
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

async fn dispatch(inner: &Arc<Inner>, req: &Req, t: Target) -> Result<Response<Body>, ApiError> {
    let attrs = super::rbac::Attributes {
        verb: verb(req, &t).to_string(),
        group: t.rt.group.clone(),
        resource: t.rt.plural.clone(),
        subresource: t.sub.clone().unwrap_or_default(),
        namespace: t.ns.clone(),
        name: t.name.clone().unwrap_or_default(),
    };
    inner.authorize(&req.user, &attrs)?;
    if t.rt.namespaced && t.ns.is_empty() && req.method != Method::GET {
        // Only list and watch exist across namespaces.
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    match t.sub.as_deref() {
        None => {}
        Some("status") if t.rt.status => {}
        // k8s.io/kubernetes pkg/registry/core/pod/storage/storage.go
        // `EphemeralContainersREST`: get, update and patch of one pod; what
        // changes is only `spec.ephemeralContainers` (ops::prepare_update).
        Some("ephemeralcontainers")
            if t.rt.special == Special::Pod
                && (t.name.is_none()
                    || ![Method::GET, Method::PUT, Method::PATCH].contains(&req.method)) =>
        {
            return Err(ApiError::method_not_allowed(
                "the ephemeralcontainers subresource supports get, update and patch of one pod",
            ));
        }
        Some("ephemeralcontainers") if t.rt.special == Special::Pod => {}
        Some("token") if t.rt.special == Special::ServiceAccount => {
            if req.method != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "the token subresource only supports create (POST)",
                ));
            }
            let out = tokens::token_request(inner, &t, req.json_body()?)?;
            return Ok(json_response(201, &out));
        }
        Some(other) => return Err(ApiError::no_route(&format!("{}/{other}", t.rt.plural))),
    }
    if matches!(
        t.rt.special,
        Special::TokenReview | Special::SelfSubjectReview | Special::AccessReview
    ) {
        return review(inner, req, &t);
    }
    if let Some(err) = inner.faults.take(req, &t, || {
        inner
            .lock()
            .store
            .get(&t.rt.storage, &t.ns, t.name.as_deref().unwrap_or_default())
            .is_some()
    }) {
        tracing::debug!(error = %err, "answered by an armed fault");
        return Err(err);
    }
    let wants_table = req.accept.contains("as=Table");
    let wants_meta = req.accept.contains("as=PartialObjectMetadata");
    match (&req.method, &t.name) {
        (&Method::GET, None) => {
            if req
                .query
                .get("watch")
                .is_some_and(|v| v == "true" || v == "1")
            {
                return watch::watch(inner.clone(), req, &t);
            }
            list(inner, req, &t, wants_meta, wants_table)
        }
        (&Method::GET, Some(name)) => {
            let obj = ops::get(inner, &t, name)?;
            if wants_meta {
                return Ok(json_response(200, &ops::partial(&obj)));
            }
            if wants_table {
                let list = json!({"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "items": [obj]});
                return Ok(json_response(200, &table::table(&t.rt, &list, req)));
            }
            Ok(json_response(200, &obj))
        }
        (&Method::POST, None) => {
            let obj = ops::create(inner, req, &t).await?;
            Ok(json_response(201, &obj))
        }
        (&Method::PUT, Some(_)) => {
            let obj = ops::update(inner, req, &t).await?;
            Ok(json_response(200, &obj))
        }
        (&Method::PATCH, Some(_)) => {
            let (code, obj) = ops::patch(inner, req, &t).await?;
            Ok(json_response(code, &obj))
        }
        (&Method::DELETE, Some(_)) => {
            let obj = ops::delete(inner, req, &t).await?;
            // 202 while finalizers hold the object, 200 once it is gone (as kube).
            let pending = !obj["metadata"]["deletionTimestamp"].is_null()
                && obj["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
            Ok(json_response(if pending { 202 } else { 200 }, &obj))
        }
        (&Method::DELETE, None) => {
            let list = ops::delete_collection(inner, req, &t).await?;
            Ok(json_response(200, &list))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method, req.path
        ))),
    }
}

/// A TokenReview, SelfSubjectReview or SelfSubjectAccessReview: created
/// only, answered at once, never stored.
fn review(inner: &Arc<Inner>, req: &Req, t: &Target) -> Result<Response<Body>, ApiError> {
    if req.method != Method::POST || t.name.is_some() {
        return Err(ApiError::method_not_allowed(format!(
            "{} only supports create",
            t.rt.plural
        )));
    }
    let out = if t.rt.special == Special::TokenReview {
        tokens::token_review(inner, req.json_body()?)?
    } else if t.rt.special == Special::AccessReview {
        // kubectl posts these as protobuf; the answer does not depend on the body.
        access_review(inner, req, t, req.json_body().unwrap_or_else(|_| json!({})))
    } else {
        json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "status": {"userInfo": req.user.to_json()}})
    };
    Ok(json_response(201, &out))
}

/// A LIST, as a list, as `PartialObjectMetadataList` or as a Table.
fn list(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    wants_meta: bool,
    wants_table: bool,
) -> Result<Response<Body>, ApiError> {
    let mut list = ops::list(inner, req, t)?;
    if wants_meta {
        list["kind"] = json!("PartialObjectMetadataList");
        list["apiVersion"] = json!("meta.k8s.io/v1");
        if let Some(items) = list["items"].as_array_mut() {
            for item in items {
                *item = ops::partial(item);
            }
        }
    }
    if wants_table {
        return Ok(json_response(200, &table::table(&t.rt, &list, req)));
    }
    Ok(json_response(200, &list))
}

/// Answers authorization reviews: with RBAC on, by the same authorizer that
/// guards requests; otherwise everything is allowed, and the review says so.
fn access_review(inner: &Inner, req: &Req, t: &Target, mut body: Value) -> Value {
    body["apiVersion"] = json!("authorization.k8s.io/v1");
    body["kind"] = json!(t.rt.kind);
    body["metadata"] = json!({"creationTimestamp": null});
    let spec = &body["spec"];
    let user = if t.rt.kind.starts_with("Self") {
        req.user.clone()
    } else {
        UserInfo {
            username: spec["user"].as_str().unwrap_or_default().to_string(),
            uid: spec["uid"].as_str().unwrap_or_default().to_string(),
            groups: spec["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            extra: Default::default(),
        }
    };
    let ra = &spec["resourceAttributes"];
    let attrs = super::rbac::Attributes {
        verb: ra["verb"].as_str().unwrap_or_default().to_string(),
        group: ra["group"].as_str().unwrap_or_default().to_string(),
        resource: ra["resource"].as_str().unwrap_or_default().to_string(),
        subresource: ra["subresource"].as_str().unwrap_or_default().to_string(),
        namespace: ra["namespace"].as_str().unwrap_or_default().to_string(),
        name: ra["name"].as_str().unwrap_or_default().to_string(),
    };
    body["status"] = if t.rt.kind == "SelfSubjectRulesReview" && inner.rbac_enforced() {
        json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true,
            "evaluationError": "the Sluice test control plane does not compute rules reviews; ask a SelfSubjectAccessReview"})
    } else if t.rt.kind == "SelfSubjectRulesReview" {
        json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
    } else if !inner.rbac_enforced() {
        json!({"allowed": true, "reason": "the Sluice test control plane allows every authenticated request (RBAC is off)"})
    } else if ra.is_object() && inner.authorize(&user, &attrs).is_ok() {
        json!({"allowed": true, "reason": "allowed by RBAC"})
    } else {
        json!({"allowed": false})
    };
    body
}
