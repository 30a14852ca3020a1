//! Puts the operator together against one API server: certificates and keys
//! from their Secrets, the watched catalog, the HTTPS server, leader election,
//! and — on the leader — the controllers, webhook registration and renewals.
//! `main.rs` and the tests call [`start`] the same way.

mod lead;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceRequirements};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::approvals::events::ApprovalSettings;
use crate::approvals::notify::{Notifier, Route};
use crate::catalog::Catalog;
use crate::gateway::audit_intake::AuditIntake;
use crate::gateway::serve::serve_tls;
use crate::gateway::{Gateway, GatewaySettings, router};
use crate::identity::certs::{CertSource, CertsError, ServingCerts};
use crate::identity::keys::{GatewayKeys, KeysError};
use crate::identity::pki::{PkiError, SubjectNames};
use crate::identity::webhook_config::WebhookEndpoint;
use crate::injection::inject::{InjectConfig, default_sidecar_resources};
use crate::injection::native_sidecars::NativeSidecars;
use crate::injection::token_holder::repository;
use crate::leader::LeaseTimings;
use crate::metrics::Metrics;

/// Where the API server reaches the webhooks (and sidecars the gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A fixed base URL (`--webhook-url`), e.g. when running on a laptop.
    Url(String),
    /// The operator's Service in its namespace (in a cluster).
    Service {
        /// Service name.
        name: String,
        /// Its HTTPS port.
        port: u16,
    },
    /// `https://` + the address actually bound (tests listening on port 0).
    Listener,
}

/// Everything [`start`] needs besides the client.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the webhook configuration points.
    pub webhook: WebhookTarget,
    /// URL sidecars use for the gateway; the webhook's base URL when `None`.
    pub gateway_url: Option<String>,
    /// Namespace of the operator's Secrets and Lease (created when missing).
    pub namespace: String,
    /// Sidecar image injected into pods.
    pub sidecar_image: String,
    /// `imagePullPolicy` of the injected sidecar; the cluster's default when `None`.
    pub sidecar_image_pull_policy: Option<String>,
    /// Resources of the injected sidecar.
    pub sidecar_resources: ResourceRequirements,
    /// More environment of the injected sidecar (its optional settings).
    pub sidecar_env: Vec<(String, String)>,
    /// The injected sidecar's shutdown grace, in seconds (`SLUICE_SHUTDOWN_GRACE`).
    pub sidecar_shutdown_grace_seconds: u64,
    /// What pods may set by annotation, and the sidecar's `securityContext`.
    pub sidecar_options: crate::injection::inject::SidecarOptions,
    /// Where the serving certificate comes from.
    pub cert_source: CertSource,
    /// How often a `--cert-dir` is re-read for a renewed certificate.
    pub cert_reload_every: Duration,
    /// More image repositories whose sidecars may exchange tokens (the
    /// injected image's repository always may).
    pub extra_sidecar_repositories: Vec<String>,
    /// Native sidecars: `None` decides from the API server's version.
    pub native_sidecars: Option<bool>,
    /// Namespace label that opts namespaces into injection.
    pub namespace_label: (String, String),
    /// Lifetime of gateway tokens.
    pub token_ttl: Duration,
    /// Lifetime of bundles.
    pub bundle_ttl: Duration,
    /// How often audit counters are written to status.
    pub audit_flush_every: Duration,
    /// How often keys and certificates are re-read (and renewed by the leader).
    pub maintenance_every: Duration,
    /// Lease timings.
    pub lease: LeaseTimings,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
    /// Register the pod webhook with its CEL `matchConditions` (see
    /// [`WebhookSettings::match_conditions`]).
    pub webhook_match_conditions: bool,
    /// Where to POST Slack-compatible notifications of approval requests and
    /// decisions (`--notify-url`); none when `None`.
    pub notify_url: Option<String>,
    /// The body sent to `notify_url`.
    pub notify_format: crate::approvals::notify::Format,
    /// Receivers for some namespaces or rules, tried before `notify_url`.
    pub notify_routes: Vec<crate::approvals::notify::Route>,
    /// The webhook configurations are installed by the chart
    /// (`--adopt-webhook-configurations`): only change existing ones, never
    /// create one (see [`crate::identity::webhook_config::write_configuration`]).
    pub adopt_webhook_configurations: bool,
    /// How long a drain (SIGTERM) may take to finish the requests in flight
    /// and write the last audit counters; keep it below the pod's
    /// `terminationGracePeriodSeconds`.
    pub drain_grace: Duration,
    /// How long the operator keeps serving after SIGTERM, `/readyz` failing,
    /// before the drain starts: the Service may still route webhook calls and
    /// sidecars to this pod until the endpoints catch up, and the webhooks fail
    /// closed. Zero here (the binary's `--drain-delay-seconds` defaults to
    /// [`DEFAULT_DRAIN_DELAY`]); delay + grace must stay below the pod's
    /// `terminationGracePeriodSeconds`.
    pub drain_delay: Duration,
    /// How long settled AccessRequests are kept before they are deleted.
    pub access_request_retention: Duration,
    /// Gateway requests doing work at once before it answers 429 (see
    /// [`crate::gateway::overload`]).
    pub gateway_max_in_flight: usize,
    /// API-server calls the gateway makes at once.
    pub gateway_max_api_calls: usize,
}

impl Settings {
    /// Defaults for everything but where to listen and be reached.
    pub fn new(listen: SocketAddr, webhook: WebhookTarget) -> Settings {
        Settings {
            listen,
            webhook,
            gateway_url: None,
            namespace: "sluice-system".to_string(),
            sidecar_image: "sluice-sidecar:latest".to_string(),
            sidecar_image_pull_policy: None,
            sidecar_resources: default_sidecar_resources(),
            sidecar_env: Vec::new(),
            sidecar_shutdown_grace_seconds:
                crate::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
            sidecar_options: Default::default(),
            cert_source: CertSource::SelfManaged,
            cert_reload_every: Duration::from_secs(10),
            extra_sidecar_repositories: Vec::new(),
            native_sidecars: None,
            namespace_label: ("sluice.dev/injection".to_string(), "enabled".to_string()),
            token_ttl: Duration::from_secs(15 * 60),
            bundle_ttl: Duration::from_secs(15 * 60),
            audit_flush_every: Duration::from_secs(10),
            maintenance_every: Duration::from_secs(60),
            lease: LeaseTimings::default(),
            identity: format!("sluice-operator-{}", std::process::id()),
            webhook_match_conditions: true,
            notify_url: None,
            notify_format: Default::default(),
            notify_routes: Vec::new(),
            adopt_webhook_configurations: false,
            drain_grace: Duration::from_secs(20),
            drain_delay: Duration::ZERO,
            access_request_retention: crate::approvals::controller::DEFAULT_RETENTION,
            gateway_max_in_flight: crate::gateway::overload::DEFAULT_MAX_IN_FLIGHT,
            gateway_max_api_calls: crate::gateway::overload::DEFAULT_MAX_API_CALLS,
        }
    }
}

/// The binary's `--drain-delay-seconds` default: long enough for the
/// endpoints to drop a terminating pod in most clusters (kube-proxy and the
/// API server's Service resolution follow EndpointSlices within seconds).
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The operator's namespace could not be read or created.
    #[error("could not create the operator namespace {namespace}; create it, or pass --namespace")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The listen address could not be bound.
    #[error("could not listen on {addr}; is another process using it?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Certificates.
    #[error("could not set up the operator certificates")]
    Certs(#[from] CertsError),
    /// Signing keys.
    #[error("could not set up the gateway signing keys")]
    Keys(#[from] KeysError),
    /// TLS configuration.
    #[error("could not configure TLS")]
    Tls(#[from] PkiError),
    /// The API server's version could not be read (for `native_sidecars: None`).
    #[error(
        "could not read the API server's version to decide on native sidecars; pass --native-sidecars always|never"
    )]
    Version(#[source] kube::Error),
    /// The operator's own user could not be read (the approval webhook needs it).
    #[error(
        "could not read the operator's own user with a SelfSubjectReview; the API server must serve authentication.k8s.io/v1"
    )]
    OperatorUser(#[source] kube::Error),
    /// The notification URL is unusable.
    #[error("could not set up approval notifications")]
    Notify(#[from] crate::approvals::notify::NotifyError),
}

/// A running operator. Dropping it stops everything it started.
pub struct Running {
    /// The address the HTTPS server listens on.
    pub addr: SocketAddr,
    /// The gateway URL (also the issuer of gateway tokens).
    pub gateway_url: String,
    /// The webhook base URL registered.
    pub webhook_base_url: Option<String>,
    /// The CA bundle clients trust.
    pub certs: ServingCerts,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// The gateway signing keys this replica uses.
    pub keys: GatewayKeys,
    catalog: Catalog,
    native_sidecars: NativeSidecars,
    tasks: JoinSet<()>,
    client: Client,
    namespace: String,
    identity: String,
    drain: Drain,
}

/// What a drain stops in order: the server, the periodic audit flush, the
/// leader's controllers, then one last flush.
struct Drain {
    /// Kept serving, `/readyz` failing, for this long first.
    delay: Duration,
    /// `/readyz`: cleared when the delay starts.
    ready: Arc<AtomicBool>,
    draining: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    flusher: tokio::task::JoinHandle<()>,
    /// They add approval counters to `audit`: stopped before the last flush.
    controllers: lead::Controllers,
    audit: Arc<AuditIntake>,
    grace: Duration,
}

impl Running {
    /// The PEM clients must trust for the HTTPS server.
    pub fn ca_bundle_pem(&self) -> String {
        self.certs.ca_bundle_pem()
    }

    /// Waits until the caches are filled (what `/readyz` reports).
    pub async fn ready(&self) -> bool {
        self.native_sidecars.decided().await;
        self.catalog.ready().await
    }

    /// Drains, then stops every task and gives up the leader Lease if this
    /// replica holds it. First, for the drain delay, everything is served as
    /// before but `/readyz` fails. Draining then closes the listener, answers waiting bundle
    /// long-polls with 304, lets the requests in flight (audit uploads, token
    /// exchanges) finish, stops the controllers and writes the audit and
    /// approval counters taken in — all within the drain grace; what is
    /// still running after it is cut.
    pub async fn shutdown(mut self) {
        let Drain {
            delay,
            ready,
            draining,
            mut server,
            mut flusher,
            controllers,
            audit,
            grace,
        } = self.drain;
        // The Service may still send webhook calls and sidecars here until the
        // endpoints drop this pod: keep serving them (a preStop sleep would
        // need Kubernetes 1.30 and a shell-less image cannot exec one), and
        // fail /readyz so the endpoints drop it sooner.
        if !delay.is_zero() {
            ready.store(false, Ordering::Relaxed);
            tracing::info!(
                delay_seconds = delay.as_secs_f64(),
                "still serving while the Service stops routing here; then draining"
            );
            tokio::time::sleep(delay).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let _ = draining.send(true);
        if tokio::time::timeout_at(deadline, &mut server)
            .await
            .is_err()
        {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "requests still in flight after the drain grace are cut"
            );
            server.abort();
        }
        // The periodic flush ends between two flushes (a flush is never cut
        // half-way, which would drop what it took).
        if tokio::time::timeout_at(deadline, &mut flusher)
            .await
            .is_err()
        {
            flusher.abort();
        }
        // A reconcile still running could count an approval after the last
        // flush took what was pending.
        controllers.stop(deadline).await;
        // The last flush is tried again until the drain grace ends: a write
        // that loses a race (a status conflict with another writer of the
        // same policy) would otherwise lose its counts with the process; a
        // failed flush keeps what it could not write for the next try.
        let last_flush = async {
            loop {
                match audit.flush(&self.client).await {
                    Ok(()) => return Ok(()),
                    Err(error) if tokio::time::Instant::now() + LAST_FLUSH_PAUSE < deadline => {
                        tracing::warn!(error = %crate::error_chain(&error), "the last audit counters could not be written yet; trying again");
                        tokio::time::sleep(LAST_FLUSH_PAUSE).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        match tokio::time::timeout_at(deadline, last_flush).await {
            Ok(Ok(())) => tracing::info!("drained: audit counters written"),
            Ok(Err(error)) => {
                tracing::error!(error = %crate::error_chain(&error), "drained, but the last audit counters could not be written")
            }
            Err(_) => tracing::error!(
                "drained, but the last audit counters were not written within the drain grace"
            ),
        }
        self.tasks.shutdown().await;
        if let Err(error) =
            crate::leader::release(self.client.clone(), &self.namespace, &self.identity).await
        {
            tracing::warn!(error = %crate::error_chain(&error), "could not release the leader Lease");
        }
    }

    /// Waits until a task ends (they only end on failure), or forever.
    pub async fn wait(&mut self) {
        if self.tasks.join_next().await.is_some() {
            tracing::error!("an operator task ended; stopping");
        }
    }
}

/// The pause between tries of the drain's last audit flush, and the first
/// one after a failed periodic flush.
const LAST_FLUSH_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts every part of the operator against `client`'s API server.
pub async fn start(client: Client, settings: Settings) -> Result<Running, StartError> {
    ensure_namespace(&client, &settings.namespace).await?;
    let (listener, addr) = bind(settings.listen).await?;
    let (endpoint, base_url, names) = endpoint_of(&settings, addr);
    let gateway_url = gateway_url_of(&settings, base_url.clone(), addr);
    let certs = ServingCerts::start(
        client.clone(),
        &settings.namespace,
        names,
        &settings.cert_source,
    )
    .await?;
    let keys = GatewayKeys::load_or_create(client.clone(), &settings.namespace).await?;
    let mut tasks = JoinSet::new();
    let native_sidecars = native_sidecars(&client, &settings, &mut tasks).await?;
    let (catalog, drive) = Catalog::watch(&client);
    tasks.spawn(drive);
    let (holders, drive) = crate::gateway::holders::Holders::watch(&client);
    tasks.spawn(drive);
    let metrics = Arc::new(Metrics::new());
    let ready = spawn_readiness(&catalog, &native_sidecars, &mut tasks);

    let (approvals, notifier) = approval_settings(&client, &settings).await?;

    let (draining, draining_rx) = watch::channel(false);
    let gateway = Gateway {
        client: client.clone(),
        catalog: catalog.clone(),
        keys: keys.clone(),
        certs: certs.clone(),
        settings: Arc::new(gateway_settings(&settings, &gateway_url, &native_sidecars)),
        audit: Arc::new(AuditIntake::with_history(settings.namespace.clone())),
        compiled: Default::default(),
        revisions: Default::default(),
        verified: Default::default(),
        holders,
        limits: crate::gateway::overload::Limits::new(
            settings.gateway_max_in_flight,
            settings.gateway_max_api_calls,
        ),
        metrics: metrics.clone(),
        ready,
        approvals: approvals.clone(),
        draining: draining_rx.clone(),
        native_sidecars: native_sidecars.clone(),
    };
    let tls = certs
        .resolver()
        .server_config(&crate::gateway::serve::ALPN)?;
    if certs.is_dir() {
        tasks.spawn(reload_certs(certs.clone(), settings.cert_reload_every));
    }
    let server = tokio::spawn(serve_tls(
        listener,
        tls,
        router(gateway.clone()),
        draining_rx.clone(),
    ));

    // Audit counters: every replica writes what it took in; the drain writes
    // the last ones after this loop stops.
    let flusher = tokio::spawn(flush_audit(
        gateway.audit.clone(),
        client.clone(),
        settings.audit_flush_every,
        draining_rx.clone(),
    ));

    let (leading, controllers) = lead::spawn(
        &mut tasks,
        lead::Leadership {
            client: client.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            approvals: &approvals,
            notifier,
            certs: certs.clone(),
            keys: keys.clone(),
            endpoint,
            counters: gateway.audit.clone(),
        },
        &settings,
    );
    tasks.spawn(crate::metrics_watch::run(
        client.clone(),
        leading.clone(),
        certs.clone(),
        keys.clone(),
        metrics.clone(),
    ));

    Ok(Running {
        addr,
        gateway_url,
        webhook_base_url: base_url,
        certs,
        leading,
        keys,
        catalog,
        native_sidecars,
        tasks,
        client,
        namespace: settings.namespace.clone(),
        identity: settings.identity.clone(),
        drain: Drain {
            delay: settings.drain_delay,
            ready: gateway.ready.clone(),
            draining,
            server,
            flusher,
            controllers,
            audit: gateway.audit.clone(),
            grace: settings.drain_grace,
        },
    })
}

/// The gateway's listener, bound to `listen`, and its address (the port
/// when `listen` asked for any).
async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// The URL sidecars reach the gateway at: the flag, else the webhook's base
/// URL, else the operator's Service in its namespace.
fn gateway_url_of(settings: &Settings, base_url: Option<String>, addr: SocketAddr) -> String {
    settings
        .gateway_url
        .clone()
        .or(base_url)
        .unwrap_or_else(|| {
            format!(
                "https://sluice-operator.{}.svc:{}",
                settings.namespace,
                addr.port()
            )
        })
}

/// What approvals need: the operator's own user (to tell its writes from
/// approvers'), and the notifier of the configured routes (none without
/// any), which the leader's notifications also use.
async fn approval_settings(
    client: &Client,
    settings: &Settings,
) -> Result<(Arc<ApprovalSettings>, Option<Notifier>), StartError> {
    let operator_user = crate::approvals::events::operator_user(client)
        .await
        .map_err(StartError::OperatorUser)?;
    let mut routes = settings.notify_routes.clone();
    routes.extend(
        settings
            .notify_url
            .iter()
            .map(|url| Route::catch_all(url, settings.notify_format)),
    );
    let notifier = if routes.is_empty() {
        None
    } else {
        Some(Notifier::with_routes(routes)?)
    };
    let approvals = Arc::new(ApprovalSettings::new(
        client.clone(),
        operator_user,
        &settings.identity,
        notifier.clone(),
    ));
    Ok((approvals, notifier))
}

/// Native or classic sidecars: fixed by the flag, or `auto`, decided from the
/// API server's version and then every node's kubelet
/// ([`crate::injection::native_sidecars`]), followed by a task in `tasks`.
async fn native_sidecars(
    client: &Client,
    settings: &Settings,
    tasks: &mut JoinSet<()>,
) -> Result<NativeSidecars, StartError> {
    if let Some(native) = settings.native_sidecars {
        return Ok(NativeSidecars::fixed(native));
    }
    let info = client
        .apiserver_version()
        .await
        .map_err(StartError::Version)?;
    let api_server = crate::injection::native_sidecars::supports_native(&format!(
        "{}.{}",
        info.major, info.minor
    ));
    let (decider, drive) = NativeSidecars::auto(client.clone(), api_server);
    tasks.spawn(drive);
    Ok(decider)
}

/// `/readyz`: set once the native-sidecar decision and the catalog are in
/// (the injector's first pods wait for the first node list).
fn spawn_readiness(
    catalog: &Catalog,
    native_sidecars: &NativeSidecars,
    tasks: &mut JoinSet<()>,
) -> Arc<AtomicBool> {
    let ready = Arc::new(AtomicBool::new(false));
    let catalog = catalog.clone();
    let native_sidecars = native_sidecars.clone();
    let flag = ready.clone();
    tasks.spawn(async move {
        native_sidecars.decided().await;
        if catalog.ready().await {
            flag.store(true, Ordering::Relaxed);
        }
        std::future::pending::<()>().await;
    });
    ready
}

/// What the gateway's behaviour depends on, from the operator's settings.
fn gateway_settings(
    settings: &Settings,
    gateway_url: &str,
    native_sidecars: &NativeSidecars,
) -> GatewaySettings {
    let mut allowed = vec![repository(&settings.sidecar_image).to_string()];
    allowed.extend(settings.extra_sidecar_repositories.iter().cloned());
    GatewaySettings {
        issuer: gateway_url.to_string(),
        token_ttl: settings.token_ttl,
        bundle_ttl: settings.bundle_ttl,
        allowed_sidecar_repositories: allowed,
        inject: InjectConfig {
            sidecar_env: settings.sidecar_env.clone(),
            shutdown_grace_seconds: settings.sidecar_shutdown_grace_seconds,
            revision: env!("CARGO_PKG_VERSION").to_string(),
            image: settings.sidecar_image.clone(),
            image_pull_policy: settings.sidecar_image_pull_policy.clone(),
            gateway_url: gateway_url.to_string(),
            ca_pem: String::new(),
            admin_port: 15020,
            // Decided per pod (`Gateway::native_sidecars`).
            native_sidecars: native_sidecars.current(),
            resources: settings.sidecar_resources.clone(),
            service_account: String::new(),
            connections: Vec::new(),
            options: settings.sidecar_options.clone(),
        },
    }
}

/// Certificates from a directory (cert-manager's Secret, mounted): every
/// replica re-reads them, so a renewal is served within one period.
async fn reload_certs(certs: ServingCerts, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = certs.refresh(false).await {
            tracing::warn!(error = %crate::error_chain(&error), "still serving the previous certificate");
        }
    }
}

/// Audit counters: every replica writes what it took in, every `every`,
/// at once when approval counters come in, and after a failed write again
/// sooner (from [`LAST_FLUSH_PAUSE`], doubling up to `every`); the drain
/// writes the last ones after this loop stops.
async fn flush_audit(
    audit: Arc<AuditIntake>,
    client: Client,
    every: Duration,
    mut draining: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry: Option<Duration> = None;
    loop {
        let again = async move {
            match retry {
                Some(pause) => tokio::time::sleep(pause).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = audit.flush_requested() => {}
            () = again => {}
            () = crate::gateway::serve::drained(&mut draining) => return,
        }
        match audit.flush(&client).await {
            Ok(()) => retry = None,
            Err(error) => {
                let pause = retry.map_or(LAST_FLUSH_PAUSE, |p| p * 2).min(every);
                tracing::warn!(error = %crate::error_chain(&error), retry_seconds = pause.as_secs_f64(), "audit status not written; trying again");
                retry = Some(pause);
            }
        }
    }
}

fn endpoint_of(
    settings: &Settings,
    addr: SocketAddr,
) -> (WebhookEndpoint, Option<String>, SubjectNames) {
    let mut names = SubjectNames::default();
    let url_endpoint = |url: String, names: &mut SubjectNames| {
        let host = host_of(&url);
        match host.parse() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns.push(host),
        }
        (WebhookEndpoint::Url(url.clone()), Some(url))
    };
    let (endpoint, base) = match &settings.webhook {
        WebhookTarget::Url(url) => url_endpoint(url.trim_end_matches('/').to_string(), &mut names),
        WebhookTarget::Listener => {
            let ip = if addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            };
            let url = format!("https://{}", SocketAddr::new(ip, addr.port()));
            url_endpoint(url, &mut names)
        }
        WebhookTarget::Service { name, port } => {
            let ns = &settings.namespace;
            names.dns = vec![
                name.clone(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.cluster.local"),
            ];
            (
                WebhookEndpoint::Service {
                    namespace: ns.clone(),
                    name: name.clone(),
                    port: *port,
                },
                None,
            )
        }
    };
    if let Some(url) = &settings.gateway_url {
        let host = host_of(url);
        match host.parse() {
            Ok(ip) if !names.ips.contains(&ip) => names.ips.push(ip),
            Ok(_) => {}
            Err(_) if !names.dns.contains(&host) => names.dns.push(host),
            Err(_) => {}
        }
    }
    (endpoint, base, names)
}

/// The host of `https://HOST:PORT/...` (brackets removed from IPv6).
fn host_of(url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_string()
}

async fn ensure_namespace(client: &Client, namespace: &str) -> Result<(), StartError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let error = |source| StartError::Namespace {
        namespace: namespace.to_string(),
        source,
    };
    if api.get_opt(namespace).await.map_err(error)?.is_some() {
        return Ok(());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(error(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_what_the_certificate_must_cover() {
        let addr: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let listener = Settings::new(addr, WebhookTarget::Listener);
        let (endpoint, base, names) = endpoint_of(&listener, addr);
        assert_eq!(base.as_deref(), Some("https://127.0.0.1:8443"));
        assert_eq!(
            endpoint,
            WebhookEndpoint::Url("https://127.0.0.1:8443".into())
        );
        assert_eq!(names.ips, vec![std::net::IpAddr::from([127, 0, 0, 1])]);

        let mut url = Settings::new(addr, WebhookTarget::Url("https://op.example:9443/".into()));
        url.gateway_url = Some("https://10.0.0.7:9443".into());
        let (_, base, names) = endpoint_of(&url, addr);
        assert_eq!(base.as_deref(), Some("https://op.example:9443"));
        assert_eq!(names.dns, vec!["op.example".to_string()]);
        assert_eq!(names.ips, vec![std::net::IpAddr::from([10, 0, 0, 7])]);

        let service = Settings::new(
            addr,
            WebhookTarget::Service {
                name: "sluice-operator".into(),
                port: 443,
            },
        );
        let (endpoint, base, names) = endpoint_of(&service, addr);
        assert!(base.is_none());
        assert!(matches!(
            endpoint,
            WebhookEndpoint::Service { port: 443, .. }
        ));
        assert!(
            names
                .dns
                .contains(&"sluice-operator.sluice-system.svc".to_string())
        );
    }

    #[test]
    fn host_of_reads_dns_ipv4_and_ipv6() {
        assert_eq!(host_of("https://op.example:8443/x"), "op.example");
        assert_eq!(host_of("https://127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("https://[::1]:8443"), "::1");
        assert_eq!(host_of("https://op.example"), "op.example");
    }
}
