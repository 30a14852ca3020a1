//! The operator's gauges that describe state rather than count events:
//! AccessRequests by phase, whether this replica leads, and when its
//! certificates expire and its signing key was made. Every replica keeps
//! them (alerts take the `max` over replicas).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sluice_crds::AccessRequest;
use tokio::sync::watch;

use crate::identity::certs::ServingCerts;
use crate::identity::keys::GatewayKeys;
use crate::metrics::{Metrics, PHASES};

/// How often the certificate and key gauges are read again (they change at
/// renewal and rotation, hours apart).
const REREAD_EVERY: Duration = Duration::from_secs(30);

/// Keeps the gauges current, forever.
pub async fn run(
    client: Client,
    mut leading: watch::Receiver<bool>,
    certs: ServingCerts,
    keys: GatewayKeys,
    metrics: Arc<Metrics>,
) {
    let resource = ApiResource::erase::<AccessRequest>(&());
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let requests = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::pin!(requests);
    let mut tick = tokio::time::interval(REREAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = requests.next() => match event {
                Some(Ok(_)) => count_requests(&store, &metrics),
                Some(Err(error)) => {
                    tracing::debug!(error = %crate::error_chain(&error), "watching AccessRequests for the metrics");
                }
                None => return,
            },
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                metrics.leading(*leading.borrow_and_update());
            }
            _ = tick.tick() => {
                metrics.leading(*leading.borrow());
                metrics.certificate_expires("serving", not_after(&certs.resolver().current().cert));
                metrics.certificate_expires("ca", ca_not_after(&certs.ca_bundle_pem()));
                metrics.signing_key_created(keys.get().current().map(|k| k.created()));
                // A deletion is no touched object: count again here too.
                count_requests(&store, &metrics);
            }
        }
    }
}

fn count_requests(store: &Store<DynamicObject>, metrics: &Metrics) {
    let mut by_phase: Vec<(&'static str, i64)> = PHASES.iter().map(|p| (*p, 0)).collect();
    let mut oldest: Option<i64> = None;
    for ar in store.state() {
        // No phase yet: the controller has not seen it, it is pending.
        let phase = ar.data["status"]["phase"].as_str().unwrap_or("Pending");
        if let Some(slot) = by_phase.iter_mut().find(|(p, _)| *p == phase) {
            slot.1 += 1;
        }
        if phase == "Pending"
            && let Some(created) = &ar.meta().creation_timestamp
        {
            let at = created.0.as_second();
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    metrics.access_requests(&by_phase, oldest);
}

/// When the first certificate of a chain expires, Unix seconds.
fn not_after(chain: &[CertificateDer<'static>]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// When the newest CA of a PEM bundle expires, Unix seconds.
fn ca_not_after(pem: &str) -> Option<i64> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| not_after(std::slice::from_ref(&der)))
        .max()
}
