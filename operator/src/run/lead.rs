//! Leader election and what the leader alone does: the controllers, webhook
//! registration, key rotation and certificate renewal; every replica re-reads
//! the keys and certificates.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::Settings;
use crate::approvals::events::ApprovalSettings;
use crate::approvals::notify::Notifier;
use crate::catalog::Catalog;
use crate::controllers;
use crate::gateway::audit_intake::AuditIntake;
use crate::identity::certs::ServingCerts;
use crate::identity::keys::GatewayKeys;
use crate::identity::webhook_config::{WebhookEndpoint, WebhookSettings, Written};
use crate::leader::campaign;
use crate::metrics::Metrics;

/// What the leader's work is made from.
pub(super) struct Leadership<'a> {
    pub client: Client,
    pub catalog: Catalog,
    pub metrics: Arc<Metrics>,
    pub approvals: &'a ApprovalSettings,
    pub notifier: Option<Notifier>,
    pub certs: ServingCerts,
    pub keys: GatewayKeys,
    pub endpoint: WebhookEndpoint,
    /// Where the AccessRequest controller adds up approval counters.
    pub counters: Arc<AuditIntake>,
}

/// Campaigns for the leader Lease and runs [`lead`] in `tasks`; the receiver
/// says whether this replica leads, and [`Controllers`] stops the leader's
/// controllers for the drain.
pub(super) fn spawn(
    tasks: &mut JoinSet<()>,
    parts: Leadership<'_>,
    settings: &Settings,
) -> (watch::Receiver<bool>, Controllers) {
    let Leadership {
        client,
        catalog,
        metrics,
        approvals,
        notifier,
        certs,
        keys,
        endpoint,
        counters,
    } = parts;
    let (leading_tx, leading) = watch::channel(false);
    tasks.spawn(campaign(
        client.clone(),
        settings.namespace.clone(),
        settings.identity.clone(),
        settings.lease,
        leading_tx,
    ));

    let webhook_settings = WebhookSettings {
        endpoint,
        ca_bundle_pem: certs.ca_bundle_pem(),
        namespace_label: settings.namespace_label.clone(),
        operator_namespace: settings.namespace.clone(),
        match_conditions: settings.webhook_match_conditions,
        ca_injection_from: certs.ca_injection_from(),
    };
    let ctx = Arc::new(controllers::Context::new(
        client.clone(),
        catalog,
        Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".to_string(),
                instance: Some(settings.identity.clone()),
            },
        ),
        metrics,
    ));
    let approval_ctx = Arc::new(crate::approvals::controller::ApprovalContext {
        client,
        recorder: approvals.recorder.clone(),
        notifier,
        attempts: Default::default(),
        retention: settings.access_request_retention,
        metrics: ctx.metrics.clone(),
        counters,
    });
    let controllers = Controllers::default();
    tasks.spawn(lead(
        leading.clone(),
        ctx,
        approval_ctx,
        controllers.clone(),
        certs,
        keys,
        Upkeep {
            webhook: webhook_settings,
            every: settings.maintenance_every,
            adopt: settings.adopt_webhook_configurations,
        },
    ));
    (leading, controllers)
}

/// The leader's controllers while they run: started and stopped with
/// leadership, and stopped for good by the drain ([`Controllers::stop`]).
/// Aborted when the last handle is dropped.
#[derive(Clone, Default)]
pub(super) struct Controllers(Arc<Mutex<State>>);

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Started(Vec<JoinHandle<()>>),
    /// Stopped by the drain: never started again.
    Stopped,
}

impl Controllers {
    /// Starts them with `start` unless they run or the drain stopped them.
    fn start(&self, start: impl FnOnce() -> Vec<JoinHandle<()>>) {
        let mut running = self.lock();
        if matches!(*running, State::Idle) {
            *running = State::Started(start());
        }
    }

    /// Leadership ended: aborts them (started again when it comes back).
    fn halt(&self) {
        let mut running = self.lock();
        if matches!(*running, State::Started(_)) {
            tracing::info!("no longer leading: stopping the controllers");
            // Dropping them aborts them.
            *running = State::Idle;
        }
    }

    /// Stops them for good and waits until they have stopped, until
    /// `deadline`: a reconcile is cut at its next await, and what it
    /// counted before is in the audit intake, for the drain's last flush.
    pub(super) async fn stop(&self, deadline: tokio::time::Instant) {
        let handles = {
            let mut state = self.lock();
            let handles = match &mut *state {
                State::Started(handles) => std::mem::take(handles),
                State::Idle | State::Stopped => Vec::new(),
            };
            *state = State::Stopped;
            handles
        };
        for handle in handles {
            handle.abort();
            let _ = tokio::time::timeout_at(deadline, handle).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if let State::Started(handles) = self {
            handles.iter().for_each(JoinHandle::abort);
        }
    }
}

/// What the maintenance passes keep up.
struct Upkeep {
    /// The webhook configurations' content.
    webhook: WebhookSettings,
    /// How often.
    every: Duration,
    /// `--adopt-webhook-configurations`.
    adopt: bool,
}

/// Runs leader-only work while leading; re-reads keys and certificates on
/// every replica.
async fn lead(
    mut leading: watch::Receiver<bool>,
    ctx: Arc<controllers::Context>,
    approval_ctx: Arc<crate::approvals::controller::ApprovalContext>,
    running: Controllers,
    certs: ServingCerts,
    keys: GatewayKeys,
    upkeep: Upkeep,
) {
    let Upkeep {
        webhook,
        every,
        adopt,
    } = upkeep;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let is_leader = *leading.borrow_and_update();
        if is_leader {
            running.start(|| {
                tracing::info!("leading: starting the controllers");
                vec![
                    tokio::spawn(controllers::run(ctx.clone())),
                    tokio::spawn(crate::approvals::controller::run(approval_ctx.clone())),
                ]
            });
        } else {
            running.halt();
        }
        if is_leader {
            maintain(&ctx.client, &certs, &keys, &webhook, true, adopt).await;
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    running.halt();
                    return;
                }
            }
            _ = tick.tick() => {
                if !is_leader {
                    maintain(&ctx.client, &certs, &keys, &webhook, false, adopt).await;
                }
            }
        }
    }
}

async fn maintain(
    client: &Client,
    certs: &ServingCerts,
    keys: &GatewayKeys,
    webhook: &WebhookSettings,
    leader: bool,
    adopt: bool,
) {
    if let Err(error) = certs.refresh(leader).await {
        tracing::warn!(error = %crate::error_chain(&error), "could not refresh the certificates");
    }
    if let Err(error) = keys.refresh().await {
        tracing::warn!(error = %crate::error_chain(&error), "could not re-read the gateway keys");
    }
    if !leader {
        return;
    }
    match keys.rotate_if_due(SystemTime::now()).await {
        Ok(true) => tracing::info!("rotated the gateway signing key"),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "could not rotate the gateway key")
        }
    }
    let written = certs
        .register_webhooks(client.clone(), webhook, adopt)
        .await
        .map_err(|e| crate::error_chain(&e));
    report_webhooks("MutatingWebhookConfiguration sluice-operator", written);
    let approvals = certs.webhook_settings(webhook);
    let written =
        crate::approvals::controller::register_webhooks(client.clone(), &approvals, adopt).await;
    let (mutating, validating) = match written {
        Ok([m, v]) => (Ok(m), Ok(v)),
        Err(e) => {
            let e = crate::error_chain(&e);
            (Err(e.clone()), Err(e))
        }
    };
    report_webhooks(
        "MutatingWebhookConfiguration sluice-operator-approvals",
        mutating,
    );
    if let Ok(v) = validating {
        report_webhooks(
            "ValidatingWebhookConfiguration sluice-operator-approvals",
            Ok(v),
        );
    }
}

fn report_webhooks(what: &str, written: Result<Written, String>) {
    match written {
        Ok(Written::Written) => {
            tracing::info!(configuration = what, "wrote the webhook configuration")
        }
        Ok(Written::Unchanged) => {}
        Ok(Written::MissingNotCreated) => tracing::warn!(
            configuration = what,
            "the webhook configuration is missing and is not created: the chart installs it (helm upgrade restores it); run without --adopt-webhook-configurations to have the operator create it"
        ),
        Err(error) => {
            tracing::warn!(configuration = what, %error, "could not write the webhook configuration")
        }
    }
}
