//! The cluster e2e scenarios run against: the one in `KUBECONFIG` when given
//! (kind, k3d, a real cluster), otherwise a fresh [`TestCluster`].

use crate::{ClusterError, Options, TestCluster};
use std::path::PathBuf;

/// A cluster for a scenario.
pub enum ClusterUnderTest {
    /// An external cluster from `KUBECONFIG` (its current context).
    External {
        /// The kubeconfig file.
        kubeconfig: PathBuf,
    },
    /// A test control plane started for this scenario.
    Local(Box<TestCluster>),
}

impl ClusterUnderTest {
    /// Uses `KUBECONFIG` when it names a file, else starts a [`TestCluster`] with `opts`.
    pub async fn from_env(opts: Options) -> Result<Self, ClusterError> {
        match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(path) => Ok(Self::External {
                kubeconfig: PathBuf::from(path),
            }),
            None => Ok(Self::Local(Box::new(TestCluster::start(opts).await?))),
        }
    }

    /// The kubeconfig to hand to kubectl or a process under test.
    pub fn kubeconfig_path(&self) -> PathBuf {
        match self {
            Self::External { kubeconfig } => kubeconfig.clone(),
            Self::Local(c) => c.kubeconfig_path(),
        }
    }

    /// A client for the kubeconfig's current context.
    pub async fn client(&self) -> Result<kube::Client, ClusterError> {
        match self {
            Self::Local(c) => c.client().await,
            Self::External { kubeconfig } => {
                let wrap = |e: Box<dyn std::error::Error + Send + Sync>| ClusterError::Client {
                    context: "current".into(),
                    source: e,
                };
                let config = kube::config::Kubeconfig::read_from(kubeconfig)
                    .map_err(|e| wrap(Box::new(e)))?;
                let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                    .await
                    .map_err(|e| wrap(Box::new(e)))?;
                kube::Client::try_from(config).map_err(|e| wrap(Box::new(e)))
            }
        }
    }

    /// The test control plane, when the scenario runs on one.
    pub fn local(&self) -> Option<&TestCluster> {
        match self {
            Self::Local(c) => Some(c),
            Self::External { .. } => None,
        }
    }
}
