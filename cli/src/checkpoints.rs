//! `kubectl sluice audit checkpoints` and `audit jwks`: the operator's durable
//! checkpoint history and its published checkpoint keys, fetched from the
//! cluster in the form `audit verify` reads (`--checkpoints`, `--jwks`).
//!
//! The operator keeps them in ConfigMaps of its own namespace
//! (operator/src/checkpoint_history.rs): one per Connection,
//! `sluice-checkpoints.NAMESPACE.CONNECTION` (a hashed name when that is too
//! long), with the signed checkpoints as JSON lines, oldest first; and
//! `sluice-checkpoint-keys` with every public key that signed one (keys
//! rotated out of the gateway's JWKS stay there, so old checkpoints still
//! verify). Reading them needs `get configmaps` in the operator's namespace.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use sha2::{Digest, Sha256};

use crate::approvals::ClusterArgs;

/// Where the chart installs the operator.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "sluice-system";
/// The ConfigMap of published checkpoint keys (as the operator names it).
pub const KEYS_CONFIG_MAP: &str = "sluice-checkpoint-keys";
/// Its key holding the JWKS.
pub const KEYS_DATA_KEY: &str = "jwks.json";
/// The history ConfigMaps' key holding the checkpoints.
pub const HISTORY_DATA_KEY: &str = "checkpoints.jsonl";
/// Longest ConfigMap name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// The name of Connection `namespace/connection`'s history ConfigMap; the
/// operator's `checkpoint_history::history_name` (a test checks they agree).
pub fn history_name(namespace: &str, connection: &str) -> String {
    let name = format!("sluice-checkpoints.{namespace}.{connection}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(format!("{namespace}/{connection}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sluice-checkpoints.{hex}")
}

/// `kubectl sluice audit checkpoints CONNECTION`.
#[derive(clap::Args)]
pub struct CheckpointsArgs {
    /// The Connection whose checkpoint history to print.
    connection: String,
    /// Output format: `jsonl` (one checkpoint a line, what `audit verify
    /// --checkpoints` reads) or `json` (one array).
    #[arg(short = 'o', long, default_value = "jsonl", value_parser = ["jsonl", "json"])]
    output: String,
    /// The operator's namespace, where it keeps the history.
    #[arg(long, default_value = DEFAULT_OPERATOR_NAMESPACE)]
    operator_namespace: String,
    /// Cluster flags (`-n` is the Connection's namespace).
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `kubectl sluice audit jwks`.
#[derive(clap::Args)]
pub struct JwksArgs {
    /// The operator's namespace, where it publishes the keys.
    #[arg(long, default_value = DEFAULT_OPERATOR_NAMESPACE)]
    operator_namespace: String,
    /// Cluster flags.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Why the history or the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointsError {
    /// The cluster could not be reached or refused.
    #[error(transparent)]
    Cluster(#[from] crate::approvals::ApprovalsError),
    /// The ConfigMap does not exist.
    #[error(
        "no ConfigMap {name} in namespace {namespace}: {what}; is the operator installed there (--operator-namespace)?"
    )]
    Missing {
        /// Its name.
        name: String,
        /// The namespace looked in.
        namespace: String,
        /// What it would hold, and when it is written.
        what: String,
    },
    /// The ConfigMap holds no (valid) data.
    #[error("ConfigMap {namespace}/{name}: {what}")]
    Invalid {
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// What is wrong.
        what: String,
    },
}

async fn config_map(
    cluster: &ClusterArgs,
    namespace: &str,
    name: &str,
    what: &str,
) -> Result<ConfigMap, CheckpointsError> {
    let (client, _) = crate::approvals::connect(cluster).await?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    match api.get_opt(name).await {
        Ok(Some(cm)) => Ok(cm),
        Ok(None) => Err(CheckpointsError::Missing {
            name: name.to_string(),
            namespace: namespace.to_string(),
            what: what.to_string(),
        }),
        Err(e) => Err(crate::approvals::ApprovalsError::Api(e).into()),
    }
}

fn data(cm: &ConfigMap, namespace: &str, key: &str) -> Result<String, CheckpointsError> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .ok_or_else(|| CheckpointsError::Invalid {
            name: cm.metadata.name.clone().unwrap_or_default(),
            namespace: namespace.to_string(),
            what: format!("no data key {key}"),
        })
}

/// The operator's published checkpoint keys, from the cluster.
pub fn cluster_jwks(
    cluster: &ClusterArgs,
    operator_namespace: &str,
) -> Result<jsonwebtoken::jwk::JwkSet, CheckpointsError> {
    let text = crate::approvals::runtime()?.block_on(async {
        let cm = config_map(
            cluster,
            operator_namespace,
            KEYS_CONFIG_MAP,
            "it holds the public keys of the operator's checkpoints and is written when the first checkpoint is signed",
        )
        .await?;
        data(&cm, operator_namespace, KEYS_DATA_KEY)
    })?;
    serde_json::from_str(&text).map_err(|e| CheckpointsError::Invalid {
        name: KEYS_CONFIG_MAP.to_string(),
        namespace: operator_namespace.to_string(),
        what: format!("{KEYS_DATA_KEY} is not a JSON Web Key Set ({e})"),
    })
}

/// Prints the operator's published checkpoint keys (a JWKS, for `audit verify --jwks`).
pub fn jwks(args: &JwksArgs) -> Result<ExitCode, CheckpointsError> {
    let set = cluster_jwks(&args.cluster, &args.operator_namespace)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&set).map_err(|e| CheckpointsError::Invalid {
            name: KEYS_CONFIG_MAP.to_string(),
            namespace: args.operator_namespace.clone(),
            what: e.to_string(),
        })?
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints a Connection's checkpoint history.
pub fn checkpoints(args: &CheckpointsArgs) -> Result<ExitCode, CheckpointsError> {
    let (namespace, text) = crate::approvals::runtime()?.block_on(async {
        let (_, namespace) = crate::approvals::connect(&args.cluster).await?;
        let name = history_name(&namespace, &args.connection);
        let cm = config_map(
            &args.cluster,
            &args.operator_namespace,
            &name,
            &format!(
                "it holds the signed checkpoints of Connection {namespace}/{} and is written when the operator signs the first one",
                args.connection
            ),
        )
        .await?;
        Ok::<_, CheckpointsError>((namespace, data(&cm, &args.operator_namespace, HISTORY_DATA_KEY)?))
    })?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| CheckpointsError::Invalid {
                name: history_name(&namespace, &args.connection),
                namespace: args.operator_namespace.clone(),
                what: format!("line {} of {HISTORY_DATA_KEY} is not JSON ({e})", i + 1),
            })?;
        lines.push(value);
    }
    if args.output == "json" {
        println!("{}", serde_json::Value::Array(lines));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
