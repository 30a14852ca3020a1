//! WATCH: a chunked stream of JSON watch events replayed from the change log.

use super::Inner;
use super::error::ApiError;
use super::ops::{matches, partial, present, selectors};
use super::registry::ResourceType;
use super::request::{Body, Req, Target};
use super::selectors::{FieldSelector, LabelSelector};
use super::store::Change;
use super::table::table_with;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// Watches end after this long unless the client asked for less (kube: 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    rt: Arc<ResourceType>,
    /// `Some(includeObject)` when the client asked for Table events.
    table: Option<String>,
    headers_sent: bool,
    /// The client asked for PartialObjectMetadata events.
    meta_only: bool,
    ns: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok =
            self.ns.is_empty() || obj["metadata"]["namespace"].as_str() == Some(self.ns.as_str());
        ns_ok && matches(&self.rt, obj, &self.labels, &self.fields)
    }

    /// The event a change becomes for this watch, if any.
    fn render(&mut self, kind: &str, obj: &Value) -> Value {
        let object = present(&self.rt, obj);
        if self.meta_only {
            return json!({"type": kind, "object": partial(&object)});
        }
        let Some(include) = &self.table else {
            return json!({"type": kind, "object": object});
        };
        let list = json!({"metadata": {"resourceVersion": object["metadata"]["resourceVersion"]}, "items": [object]});
        let t = table_with(&self.rt, &list, include, !self.headers_sent);
        self.headers_sent = true;
        json!({"type": kind, "object": t})
    }

    fn event(&mut self, change: &Change) -> Option<Value> {
        let now = self.matches(&change.object);
        let before = change.prev.as_ref().is_some_and(|p| self.matches(p));
        let kind = match (change.kind, now, before) {
            ("MODIFIED", true, true) => "MODIFIED",
            ("MODIFIED", true, false) => "ADDED",
            ("MODIFIED", false, true) => "DELETED",
            ("ADDED", true, _) => "ADDED",
            ("DELETED", true, _) => "DELETED",
            _ => return None,
        };
        Some(self.render(kind, &change.object))
    }
}

fn line(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// What a watch asked for besides its filter.
struct WatchOptions {
    /// `resourceVersion`: follow from there (none or 0: from the current state).
    start: Option<u64>,
    /// `allowWatchBookmarks=true`.
    bookmarks: bool,
    /// `sendInitialEvents=true`: the current objects, then a bookmark.
    initial_events: bool,
    timeout: Duration,
}

impl WatchOptions {
    fn of(req: &Req) -> Self {
        WatchOptions {
            start: req
                .q("resourceVersion")
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0),
            bookmarks: req.q("allowWatchBookmarks") == Some("true"),
            initial_events: req.q("sendInitialEvents") == Some("true"),
            timeout: req
                .q("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

impl Filter {
    /// The objects and the event form a watch request asks for.
    fn of(req: &Req, t: &Target) -> Result<Self, ApiError> {
        let (labels, mut fields) = selectors(req, &t.rt)?;
        // A watch on a named object (`.../foos/name?watch=1`) is not routed here; kubectl uses a field selector.
        if let Some(name) = &t.name {
            fields = FieldSelector::parse(&format!("metadata.name={name}"), &[], &t.rt.kind)?;
        }
        let table = req
            .accept
            .contains("as=Table")
            .then(|| req.q("includeObject").unwrap_or("Metadata").to_string());
        Ok(Filter {
            rt: t.rt.clone(),
            table,
            headers_sent: false,
            meta_only: req.accept.contains("as=PartialObjectMetadata"),
            ns: t.ns.clone(),
            labels,
            fields,
        })
    }
}

/// Starts a watch and returns the streaming response.
pub(super) fn watch(inner: Arc<Inner>, req: &Req, t: &Target) -> Result<Response<Body>, ApiError> {
    let filter = Filter::of(req, t)?;
    let options = WatchOptions::of(req);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let changed = inner.changed.subscribe();
    tokio::spawn(stream_events(inner, filter, options, tx, changed));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(StreamBody::new(stream).boxed())
        .map_err(|e| ApiError::internal(format!("could not build the watch response: {e}")))
}

/// Sends a watch's events until the client leaves, the watch times out, or
/// the history it needs is gone (an ERROR event: relist).
async fn stream_events(
    inner: Arc<Inner>,
    mut filter: Filter,
    options: WatchOptions,
    tx: mpsc::Sender<Bytes>,
    mut changed: tokio::sync::watch::Receiver<u64>,
) {
    let deadline = tokio::time::Instant::now() + options.timeout;
    let Some(mut cursor) = send_initial(&inner, &mut filter, &options, &tx).await else {
        return;
    };
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    loop {
        let (events, rv, oldest) = {
            let st = inner.lock();
            (
                st.store.changes_since(&filter.rt.storage, cursor),
                st.store.rv,
                st.store.oldest,
            )
        };
        if cursor < oldest {
            // The history this watch still needed was dropped: tell it to relist.
            let status = ApiError::gone(cursor, oldest).to_status();
            let _ = tx
                .send(line(&json!({"type": "ERROR", "object": status})))
                .await;
            return;
        }
        for change in &events {
            if let Some(ev) = filter.event(change)
                && tx.send(line(&ev)).await.is_err()
            {
                return;
            }
        }
        cursor = cursor.max(rv);
        tokio::select! {
            _ = changed.changed() => {}
            _ = ticker.tick() => {
                if options.bookmarks && tx.send(line(&bookmark(&filter.rt, cursor, false))).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
        }
    }
}

/// The start of a watch: an ERROR when its resourceVersion is gone;
/// otherwise the current objects as ADDED events (unless it follows from a
/// resourceVersion) and, when asked, the bookmark that ends them. Returns
/// the resourceVersion to follow from, or `None` when the watch is over.
async fn send_initial(
    inner: &Inner,
    filter: &mut Filter,
    options: &WatchOptions,
    tx: &mpsc::Sender<Bytes>,
) -> Option<u64> {
    let mut first = Vec::new();
    let (cursor, gone) = {
        let st = inner.lock();
        match options.start {
            Some(rv) if rv < st.store.oldest => {
                (0, Some(ApiError::gone(rv, st.store.oldest).to_status()))
            }
            Some(rv) if !options.initial_events => (rv, None),
            _ => {
                let objs: Vec<Value> = st
                    .store
                    .list(&filter.rt.storage, None)
                    .into_iter()
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect();
                for obj in objs {
                    first.push(filter.render("ADDED", &obj));
                }
                (st.store.rv, None)
            }
        }
    };
    if let Some(status) = gone {
        let _ = tx
            .send(line(&json!({"type": "ERROR", "object": status})))
            .await;
        return None;
    }
    for ev in &first {
        if tx.send(line(ev)).await.is_err() {
            return None;
        }
    }
    if options.initial_events {
        let bm = bookmark(&filter.rt, cursor, true);
        if tx.send(line(&bm)).await.is_err() {
            return None;
        }
    }
    Some(cursor)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}})
}
