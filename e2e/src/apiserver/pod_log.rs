//! `pods/log`: `GET /api/v1/namespaces/NS/pods/NAME/log?container=C&follow=true`,
//! as kube-apiserver serves it (pkg/registry/core/pod/rest/log.go `LogREST`,
//! pkg/registry/core/pod/strategy.go `LogLocation`): authorized as `get` on
//! `pods/log`; a missing pod is 404; without `container` the pod must have
//! exactly one container, and an unknown container is 400, in kube's words.
//!
//! The kubelet serves a container's log from `/var/log/pods/NS_NAME_UID/C/0.log`;
//! the test control plane has no kubelet, so it reads the same layout under
//! its own directory ([`log_path`]; `TestCluster::pod_log_path`), which a test
//! writes to as the container would (one raw line per write, without the CRI
//! timestamp prefix). With `follow=true` the answer streams lines appended
//! later, until the client goes away, the pod is deleted, or the file is
//! removed or replaced (a container restart: the kubelet ends the stream).
//! `tailLines` is honoured; other parameters of `PodLogOptions` are ignored.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Response};
use serde_json::Value;

use super::Inner;
use super::error::ApiError;
use super::request::{Body, Req};

/// How often a followed log is checked for new lines (the kubelet uses
/// inotify; a poll keeps this portable).
const POLL: Duration = Duration::from_millis(50);
/// Largest chunk read from the file at once.
const CHUNK: usize = 64 * 1024;
/// Largest answer without `follow` (a test log is small; bound it anyway).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Where the log of `container` of pod `ns/name` (uid `uid`) lives under `root`,
/// in the kubelet's layout.
pub fn log_path(root: &Path, ns: &str, name: &str, uid: &str, container: &str) -> PathBuf {
    root.join(format!("{ns}_{name}_{uid}"))
        .join(container)
        .join("0.log")
}

/// Serves `pods/{name}/log`.
pub(super) async fn log(
    inner: &Arc<Inner>,
    req: &Req,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    if req.method != Method::GET {
        return Err(ApiError::method_not_allowed("pods/log serves GET only"));
    }
    inner.authorize(
        &req.user,
        &super::rbac::Attributes {
            verb: "get".into(),
            group: String::new(),
            resource: "pods".into(),
            subresource: "log".into(),
            namespace: ns.into(),
            name: name.into(),
        },
    )?;
    let pod = find_pod(inner, ns, name)?;
    let container = pick_container(&pod, name, req.q("container"))?;
    let follow = parse_bool(req.q("follow"), "follow")?;
    let tail = match req.q("tailLines") {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "PodLogOptions \"{name}\" is invalid: tailLines: Invalid value: {t:?}: must be greater than or equal to 0"
            ))
        })?),
    };
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let root = inner.pod_log_root.get().cloned().ok_or_else(|| {
        ApiError::internal("the test control plane was started without a pod log directory")
    })?;
    let path = log_path(&root, ns, name, &uid, &container);
    let mut file = std::fs::File::open(&path).map_err(|_| {
        // The kubelet's words for a container with no log yet.
        ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        ))
    })?;
    let start = match tail {
        Some(n) => tail_offset(&mut file, n)
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?,
        None => 0,
    };
    if !follow {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len.saturating_sub(start) > MAX_ANSWER {
            return Err(ApiError::bad_request(format!(
                "the log of container {container:?} is larger than {MAX_ANSWER} bytes; pass tailLines"
            )));
        }
        let mut body = Vec::new();
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_to_end(&mut body))
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?;
        return Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)).boxed())
            .map_err(|e| ApiError::internal(format!("could not build the log response: {e}")));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let inner = inner.clone();
    let (ns, name) = (ns.to_string(), name.to_string());
    tokio::spawn(async move {
        let _ = follow_file(&inner, file, start, &path, &ns, &name, &uid, &tx).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .header("content-type", "text/plain")
        .header("transfer-encoding", "chunked")
        .body(StreamBody::new(stream).boxed())
        .map_err(|e| ApiError::internal(format!("could not build the log response: {e}")))
}

fn find_pod(inner: &Inner, ns: &str, name: &str) -> Result<Value, ApiError> {
    let st = inner.lock();
    let rt = st
        .registry
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    st.store
        .get(&rt.storage, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&rt, name))
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The container whose log is asked for (kube's `LogLocation`, messages included).
fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    match asked {
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
        Some(c)
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c) =>
        {
            Ok(c.to_string())
        }
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
    }
}

fn parse_bool(v: Option<&str>, field: &str) -> Result<bool, ApiError> {
    match v {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{field}: invalid boolean value {other:?}"
        ))),
    }
}

/// The offset at which the last `n` lines of the file begin.
fn tail_offset(file: &mut std::fs::File, n: u64) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // A final newline ends the last line; it does not start another.
    let mut skip_last = true;
    while pos > 0 {
        let step = (pos as usize).min(CHUNK) as u64;
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let chunk = &mut buf[..step as usize];
        file.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b != b'\n' {
                skip_last = false;
                continue;
            }
            if skip_last {
                skip_last = false;
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(pos + i as u64 + 1);
            }
        }
    }
    Ok(0)
}

/// Streams complete lines from `start` on, then lines appended later.
#[allow(clippy::too_many_arguments)]
async fn follow_file(
    inner: &Inner,
    mut file: std::fs::File,
    start: u64,
    path: &Path,
    ns: &str,
    name: &str,
    uid: &str,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let ino = file.metadata()?.ino();
    file.seek(SeekFrom::Start(start))?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            // Whole lines only, as the kubelet sends them.
            if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                let lines: Vec<u8> = pending.drain(..=end).collect();
                if tx.send(Bytes::from(lines)).await.is_err() {
                    return Ok(());
                }
            }
            continue;
        }
        if tx.is_closed() {
            return Ok(());
        }
        let same_file = std::fs::metadata(path).is_ok_and(|m| m.ino() == ino);
        let same_pod =
            find_pod(inner, ns, name).is_ok_and(|p| p["metadata"]["uid"].as_str() == Some(uid));
        if !same_file || !same_pod {
            // The container's log is done: send what is left and end.
            if !pending.is_empty() {
                let _ = tx.send(Bytes::from(std::mem::take(&mut pending))).await;
            }
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_offset_counts_lines_from_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&mut f, 0).unwrap(), 9);
        assert_eq!(tail_offset(&mut f, 1).unwrap(), 5);
        assert_eq!(tail_offset(&mut f, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut f, 3).unwrap(), 0);
        assert_eq!(tail_offset(&mut f, 9).unwrap(), 0);
    }

    #[test]
    fn containers_are_picked_like_kube() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "app"}, {"name": "sluice-sidecar"}],
            "initContainers": [{"name": "init"}]}});
        assert_eq!(
            pick_container(&pod, "p", Some("init")).unwrap(),
            "init".to_string()
        );
        let e = pick_container(&pod, "p", Some("nope")).unwrap_err();
        assert_eq!(
            e.to_status()["message"],
            "container nope is not valid for pod p"
        );
        let e = pick_container(&pod, "p", None).unwrap_err();
        assert_eq!(
            e.to_status()["message"],
            "a container name must be specified for pod p, choose one of: [app sluice-sidecar] or one of the init containers: [init]"
        );
    }
}
