//! Leader election with a coordination.k8s.io Lease (DESIGN §8): only the
//! leader runs the controllers and writes the webhook configuration and
//! renewed certificates; every replica serves webhooks and the gateway API.
//!
//! The protocol of client-go's leaderelection (k8s.io/client-go
//! tools/leaderelection/leaderelection.go): the holder renews the Lease every
//! `renew_every`; a candidate takes it over when the record has not changed for
//! `leaseDurationSeconds` *as this replica observed it* (its own monotonic
//! clock, never the holder's `renewTime`, so clock skew between nodes does not
//! matter); the leader steps down when a renewal has not succeeded within the
//! renew deadline (two thirds of the lease, client-go's 10 s of 15 s), even if
//! the request hangs. Every write carries the resourceVersion read, so two
//! candidates cannot both win: one gets a conflict.

use std::time::Duration;
use tokio::time::Instant;

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

impl LeaseTimings {
    /// How long the leader keeps leading without a successful renewal: two
    /// thirds of the lease (client-go's RenewDeadline 10 s of LeaseDuration 15 s),
    /// so it stops before another replica may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// The Lease record as this replica last saw it, and when (its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    record: (Option<String>, Option<String>, Option<i32>, Option<i32>),
    at: Instant,
}

impl Observed {
    /// Notes the record read at `now`; returns whether it has stayed unchanged
    /// for longer than its lease duration (`isLeaseValid` in client-go).
    fn expired(slot: &mut Option<Observed>, spec: &LeaseSpec, now: Instant) -> bool {
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
            spec.lease_duration_seconds,
            spec.lease_transitions,
        );
        let at = match slot {
            Some(o) if o.record == record => o.at,
            _ => {
                *slot = Some(Observed { record, at: now });
                now
            }
        };
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        at + duration < now
    }
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
    let mut observed: Option<Observed> = None;
    loop {
        // One attempt may not outlive the renew deadline (a hung request on a
        // half-open connection would otherwise keep this replica leading).
        let attempt = try_acquire(&api, &identity, timings, &mut observed);
        let now_leading = match tokio::time::timeout(timings.renew_deadline(), attempt).await {
            Ok(Ok(held)) => held,
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::error_chain(&error), "leader election: could not read or write the Lease");
                // Without a successful renewal we cannot know we still lead.
                false
            }
            Err(_) => {
                tracing::warn!(
                    deadline = ?timings.renew_deadline(),
                    "leader election: the Lease could not be renewed within the renew deadline; not leading"
                );
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
    observed: &mut Option<Observed>,
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
    let expired = Observed::expired(observed, spec, Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_is_judged_by_local_observation_not_the_holders_clock() {
        let t0 = Instant::now();
        let mut seen = None;
        // A renewTime an hour old (the holder's clock lags): first seen now, so valid.
        let old = spec("a", "2020-01-01T00:00:00Z");
        assert!(!Observed::expired(&mut seen, &old, t0));
        assert!(!Observed::expired(
            &mut seen,
            &old,
            t0 + Duration::from_secs(15)
        ));
        // Unchanged for longer than the lease, by our clock: expired.
        assert!(Observed::expired(
            &mut seen,
            &old,
            t0 + Duration::from_secs(16)
        ));
        // A renewal (any change of the record) restarts the clock, even when the
        // holder's clock runs far ahead.
        let renewed = spec("a", "2099-01-01T00:00:00Z");
        assert!(!Observed::expired(
            &mut seen,
            &renewed,
            t0 + Duration::from_secs(20)
        ));
        assert!(Observed::expired(
            &mut seen,
            &renewed,
            t0 + Duration::from_secs(36)
        ));
    }

    #[test]
    fn the_renew_deadline_is_two_thirds_of_the_lease() {
        assert_eq!(
            LeaseTimings::default().renew_deadline(),
            Duration::from_secs(10)
        );
    }

    /// A leader whose renewal hangs (half-open connection: the API server
    /// accepts and never answers) steps down by the renew deadline.
    #[tokio::test]
    async fn a_hung_renewal_steps_down() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let (tx, mut rx) = watch::channel(true);
        let timings = LeaseTimings {
            duration: Duration::from_millis(600),
            renew_every: Duration::from_millis(100),
        };
        let task = tokio::spawn(campaign(client, "ns".into(), "me".into(), timings, tx));
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|l| !*l))
            .await
            .expect("stepped down")
            .expect("sender alive");
        task.abort();
        hold.abort();
    }
}
