//! `pods/proxy`: `/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`, as
//! kube-apiserver serves it (pkg/registry/core/pod/rest/subresources.go
//! `ProxyREST`, pkg/registry/core/pod/strategy.go `ResourceLocation`):
//! authorized as the request's verb on `pods/proxy`; the id is `NAME`,
//! `NAME:PORT` or `SCHEME:NAME:PORT`; without a port, the first port of the
//! first container that declares one (none: port 80); the pod must have an IP.
//!
//! One difference, on purpose: kube-apiserver refuses loopback pod IPs
//! (`proxyutil.IsProxyableIP`), but the test control plane has no pod network,
//! so its "pods" are processes on 127.0.0.0/8 and a test sets `status.podIP`
//! to where the process listens. Only plain HTTP is proxied (no `https:` ids).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response};
use serde_json::Value;

use super::Inner;
use super::error::ApiError;
use super::request::{Body, Req};

/// Largest answer relayed from a pod.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// How long the pod may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `pods/{id}/proxy/{rest}`.
pub(super) async fn proxy(
    inner: &Inner,
    req: &Req,
    ns: &str,
    id: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let (scheme, name, port) = split_id(id)?;
    let verb = match req.method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => {
            return Err(ApiError::method_not_allowed(
                "pods/proxy does not serve this method",
            ));
        }
    };
    inner.authorize(
        &req.user,
        &super::rbac::Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: "pods".into(),
            subresource: "proxy".into(),
            namespace: ns.into(),
            name: name.into(),
        },
    )?;
    if scheme == "https" {
        return Err(ApiError::bad_request(
            "the test control plane proxies plain HTTP to pods only",
        ));
    }
    let pod: Value = {
        let st = inner.lock();
        let rt = st
            .registry
            .find("", "v1", "pods")
            .ok_or_else(|| ApiError::internal("pods are not registered"))?;
        st.store
            .get(&rt.storage, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt, name))?
    };
    let port = match port {
        Some(p) => p,
        None => first_container_port(&pod).unwrap_or(80),
    };
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    let ip: std::net::IpAddr = ip.parse().map_err(|_| {
        ApiError::bad_request(format!("pod {ns}/{name} has no IP address (status.podIP)"))
    })?;
    let mut path = format!("/{}", rest.join("/"));
    let query: Vec<String> = req
        .query
        .iter()
        .map(|(k, v)| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish()
        })
        .collect();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let answer = tokio::time::timeout(TIMEOUT, forward(req, ip, port, &path))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", TIMEOUT.as_secs())));
    answer.map_err(|e| {
        // kube-apiserver's words for a pod it cannot reach.
        ApiError::custom(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        )
    })
}

/// `NAME`, `NAME:PORT` or `SCHEME:NAME:PORT` (k8s.io/apimachinery/pkg/util/net `SplitSchemeNamePort`).
fn split_id(id: &str) -> Result<(&str, &str, Option<u16>), ApiError> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] if matches!(*scheme, "http" | "https") => (*scheme, *name, *port),
        _ => return Err(ApiError::bad_request(format!("invalid request {id:?}"))),
    };
    if name.is_empty() {
        return Err(ApiError::bad_request(format!("invalid request {id:?}")));
    }
    let port = if port.is_empty() {
        None
    } else {
        Some(
            port.parse::<u16>()
                .map_err(|_| ApiError::bad_request(format!("invalid port {port:?} in {id:?}")))?,
        )
    };
    Ok((scheme, name, port))
}

fn first_container_port(pod: &Value) -> Option<u16> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find_map(|c| c["ports"].as_array()?.first()?["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

async fn forward(
    req: &Req,
    ip: std::net::IpAddr,
    port: u16,
    path: &str,
) -> Result<Response<Body>, String> {
    let stream = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("dial tcp {ip}:{port}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(req.method.clone())
        .uri(path)
        .header("host", format!("{ip}:{port}"));
    if !req.content_type.is_empty() {
        builder = builder.header("content-type", &req.content_type);
    }
    if !req.accept.is_empty() {
        builder = builder.header("accept", &req.accept);
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = answer.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let mut out = Response::builder().status(parts.status);
    if let Some(ct) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        out = out.header(hyper::header::CONTENT_TYPE, ct);
    }
    out.body(Full::new(body).boxed()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_like_kube_apiserver() {
        assert_eq!(split_id("p").unwrap(), ("", "p", None));
        assert_eq!(split_id("p:15020").unwrap(), ("", "p", Some(15020)));
        assert_eq!(
            split_id("https:p:8443").unwrap(),
            ("https", "p", Some(8443))
        );
        assert!(split_id("p:admin").is_err());
        assert!(split_id(":80").is_err());
        assert!(split_id("a:b:c:d").is_err());
    }
}
