//! Leader election with a coordination.k8s.io Lease (DESIGN §8): only the
//! leader runs the controllers and writes the webhook configuration and
//! renewed certificates; every replica serves webhooks and the gateway API.
//!
//! The usual protocol: the holder renews the Lease every `renew_every`; a
//! candidate takes it over when `renewTime + leaseDurationSeconds` has passed.
//! Every write carries the resourceVersion read, so two candidates cannot both
//! win: one gets a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Name of the Lease.
pub const LEASE_NAME: &str = "sluice-operator-leader";

/// Lease timings.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimings {
    /// How long a Lease is valid after its last renewal.
    pub duration: Duration,
    /// How often the holder renews and candidates retry.
    pub renew_every: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// Campaigns for the Lease forever, publishing whether this replica leads.
pub async fn campaign(
    client: Client,
    namespace: String,
    identity: String,
    timings: LeaseTimings,
    leading: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        let now_leading = match try_acquire(&api, &identity, timings).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "leader election: could not read or write the Lease");
                // Without a successful renewal we cannot know we still lead.
                false
            }
        };
        leading.send_if_modified(|l| {
            let changed = *l != now_leading;
            if changed {
                tracing::info!(leading = now_leading, identity, "leadership changed");
            }
            *l = now_leading;
            changed
        });
        tokio::time::sleep(timings.renew_every).await;
    }
}

async fn try_acquire(
    api: &Api<Lease>,
    identity: &str,
    timings: LeaseTimings,
) -> Result<bool, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let seconds = i32::try_from(timings.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_string()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(d)) => {
            let valid_until = renewed.0 + Duration::from_secs(u64::try_from(d).unwrap_or(0));
            valid_until < now
        }
        _ => true,
    };
    if holder == identity {
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
    } else if expired || holder.is_empty() {
        spec.holder_identity = Some(identity.to_string());
        spec.acquire_time = Some(MicroTime(now));
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    } else {
        return Ok(false);
    }
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up when `identity` holds it, so another replica takes
/// over at once instead of after the Lease lapses (on a graceful stop).
pub async fn release(client: Client, namespace: &str, identity: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    api.replace(LEASE_NAME, &PostParams::default(), &lease)
        .await?;
    Ok(())
}
