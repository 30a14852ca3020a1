//! Standalone mode anchors its own audit stream (#21 item 2): signed
//! checkpoints of the audit file's chain heads, by a key of its own.
//!
//! A hash chain cannot show that its newest events were cut or that it was
//! recomputed after an edit; in a cluster the operator signs the chain heads
//! the sidecar uploads. A standalone sidecar has no operator, so with
//! `--checkpoint-key FILE` it signs the heads itself: every
//! `--checkpoint-interval` seconds, and once more at shutdown, it reads what
//! the audit file holds (only lines written since it started: this run's
//! stream) and appends, for each stream whose head moved, a checkpoint line
//! to `AUDIT_FILE.checkpoints.jsonl`:
//!
//! ```text
//! {"stream":…,"sequence":…,"hash":…,"signature":"<ES256 JWS>","keyId":…,"time":…}
//! ```
//!
//! The JWS payload is `{stream, sequence, hash, previous, iat, signer}`
//! (`previous`: the sequence this run signed last for the stream), the format
//! the operator's checkpoints share, so `kubectl sluice audit verify
//! AUDIT_FILE --checkpoints AUDIT_FILE.checkpoints.jsonl --jwks
//! KEY.jwks.json` checks both. The key is a PKCS#8 PEM P-256 key
//! (`--generate-checkpoint-key` creates it, mode 0600); its public JWKS is
//! written beside it as `KEY.jwks.json`. Whoever holds the key can sign
//! anything: keep it out of reach of whoever could rewrite the audit file
//! (a Secret mounted only into the sidecar, or a KMS-held copy), and the
//! checkpoints file somewhere they cannot truncate (e.g. shipped off the
//! host).
//!
//! Reading the file rather than the chain in memory means only events that
//! were written are anchored.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Default seconds between two checkpoints.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Most bytes read from the audit file per pass (the rest waits for the next).
const MAX_READ: u64 = 64 * 1024 * 1024;
/// Longest audit line taken; a longer one is skipped (the sidecar writes none).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Most streams tracked (one run writes one).
const MAX_STREAMS: usize = 64;

/// The flags of standalone mode that turn anchoring on.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AnchorArgs {
    /// Sign checkpoints of the audit file's chain with this PKCS#8 PEM P-256
    /// key (needs --audit-file); they go to AUDIT_FILE.checkpoints.jsonl and
    /// the public key to KEY.jwks.json, for `kubectl sluice audit verify`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint_key: Option<PathBuf>,
    /// Create the --checkpoint-key file (mode 0600) when it does not exist.
    #[arg(long, requires = "checkpoint_key")]
    pub generate_checkpoint_key: bool,
    /// Seconds between two checkpoints (one more is signed at shutdown).
    #[arg(long, default_value_t = DEFAULT_INTERVAL.as_secs_f64(), value_name = "SECONDS")]
    pub checkpoint_interval: f64,
}

/// Why anchoring could not start or a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// No audit file to anchor.
    #[error("--checkpoint-key needs --audit-file: checkpoints anchor the audit file's chain")]
    NoAuditFile,
    /// The interval is out of range.
    #[error("--checkpoint-interval must be more than 0 and at most 86400 seconds")]
    Interval,
    /// The key file does not exist.
    #[error(
        "checkpoint key {0} does not exist; pass --generate-checkpoint-key to create it, or give an existing PKCS#8 PEM P-256 key"
    )]
    NoKey(PathBuf),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The key is not a P-256 key.
    #[error(
        "checkpoint key {path} is not a PKCS#8 PEM P-256 key ({source}); create one with --generate-checkpoint-key"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A key could not be generated.
    #[error("could not generate a checkpoint key: {0}")]
    Generate(String),
    /// A checkpoint could not be signed.
    #[error("could not sign a checkpoint: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The checkpoint file of an audit file.
pub fn checkpoint_file(audit_file: &Path) -> PathBuf {
    beside(audit_file, ".checkpoints.jsonl")
}

/// The public JWKS file of a key file.
pub fn jwks_file(key_file: &Path) -> PathBuf {
    beside(key_file, ".jwks.json")
}

/// The signing key and its public JWK.
struct Key {
    encoding: EncodingKey,
    kid: String,
}

/// Loads (or, when asked, creates) the key and writes its public JWKS beside it.
fn load_key(path: &Path, generate: bool) -> Result<Key, AnchorError> {
    let io = |what, source| AnchorError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        if !generate {
            return Err(AnchorError::NoKey(path.to_path_buf()));
        }
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AnchorError::Generate(e.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| io("cannot create", e))?;
        file.write_all(pair.serialize_pem().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write", e))?;
    }
    let pem = std::fs::read(path).map_err(|e| io("cannot read", e))?;
    let key_error = |source| AnchorError::Key {
        path: path.to_path_buf(),
        source,
    };
    let encoding = EncodingKey::from_ec_pem(&pem).map_err(key_error)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(key_error)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256);
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    let jwks = serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })
        .map_err(|e| io("cannot write", std::io::Error::other(e)))?;
    let public = jwks_file(path);
    std::fs::write(&public, jwks).map_err(|e| AnchorError::Io {
        what: "cannot write",
        path: public,
        source: e,
    })?;
    Ok(Key { encoding, kid })
}

/// What the anchor has read and signed.
struct State {
    key: Key,
    audit_file: PathBuf,
    checkpoints: PathBuf,
    /// Where the next read starts (after the last complete line read).
    offset: u64,
    /// Each stream's head in the file: (seq, hash).
    heads: BTreeMap<String, (u64, String)>,
    /// Each stream's last signed seq.
    signed: BTreeMap<String, u64>,
}

impl State {
    /// Reads the lines written since the last pass and signs each stream
    /// whose head moved. Returns how many checkpoints were written.
    fn pass(&mut self) -> Result<usize, AnchorError> {
        self.read_new()?;
        let mut written = 0;
        let moved: Vec<(String, u64, String)> = self
            .heads
            .iter()
            .filter(|(s, (seq, _))| self.signed.get(*s).is_none_or(|last| seq > last))
            .map(|(s, (seq, hash))| (s.clone(), *seq, hash.clone()))
            .collect();
        for (stream, seq, hash) in moved {
            let now = chrono::Utc::now();
            let payload = json!({
                "stream": stream, "sequence": seq, "hash": hash,
                "previous": self.signed.get(&stream),
                "iat": now.timestamp(),
                "signer": "sluice-sidecar standalone",
            });
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(self.key.kid.clone());
            header.typ = Some("sluice-checkpoint+jwt".to_string());
            let signature = jsonwebtoken::encode(&header, &payload, &self.key.encoding)
                .map_err(AnchorError::Sign)?;
            let line = json!({
                "stream": stream, "sequence": seq, "hash": hash, "signature": signature,
                "keyId": self.key.kid, "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.checkpoints)
                .map_err(|source| AnchorError::Io {
                    what: "cannot open",
                    path: self.checkpoints.clone(),
                    source,
                })?;
            file.write_all(format!("{line}\n").as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|source| AnchorError::Io {
                    what: "cannot write",
                    path: self.checkpoints.clone(),
                    source,
                })?;
            self.signed.insert(stream, seq);
            written += 1;
        }
        Ok(written)
    }

    fn read_new(&mut self) -> Result<(), AnchorError> {
        let io = |source| AnchorError::Io {
            what: "cannot read",
            path: self.audit_file.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&self.audit_file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_READ).read_to_end(&mut bytes).map_err(io)?;
        // Only complete lines; a line being written waits for the next pass.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        for line in bytes[..end].split(|b| *b == b'\n') {
            if line.len() > MAX_LINE {
                continue;
            }
            let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let (Some(stream), Some(seq), Some(hash)) = (
                event.get("stream").and_then(Value::as_str),
                event.get("seq").and_then(Value::as_u64),
                event.get("hash").and_then(Value::as_str),
            ) else {
                continue;
            };
            if !self.heads.contains_key(stream) && self.heads.len() >= MAX_STREAMS {
                continue;
            }
            let head = self
                .heads
                .entry(stream.to_string())
                .or_insert((0, String::new()));
            if seq > head.0 {
                *head = (seq, hash.to_string());
            }
        }
        self.offset += end as u64 + 1;
        Ok(())
    }
}

/// A running anchor: signs checkpoints periodically until [`Anchor::finish`].
pub struct Anchor {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Anchor {
    /// Starts anchoring `audit_file` when `args` give a key (`None` when
    /// not). Call it before the audit file is opened: what the file already
    /// holds (earlier runs) is not this run's to sign.
    pub fn start(
        args: &AnchorArgs,
        audit_file: Option<&Path>,
    ) -> Result<Option<Anchor>, AnchorError> {
        let Some(key_path) = &args.checkpoint_key else {
            return Ok(None);
        };
        let audit_file = audit_file.ok_or(AnchorError::NoAuditFile)?;
        if !(args.checkpoint_interval > 0.0 && args.checkpoint_interval <= 86_400.0) {
            return Err(AnchorError::Interval);
        }
        let key = load_key(key_path, args.generate_checkpoint_key)?;
        let offset = std::fs::metadata(audit_file).map(|m| m.len()).unwrap_or(0);
        let state = Arc::new(Mutex::new(State {
            key,
            audit_file: audit_file.to_path_buf(),
            checkpoints: checkpoint_file(audit_file),
            offset,
            heads: BTreeMap::new(),
            signed: BTreeMap::new(),
        }));
        let every = Duration::from_secs_f64(args.checkpoint_interval);
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let result = state.lock().unwrap_or_else(|p| p.into_inner()).pass();
                    if let Err(error) = result {
                        tracing::error!(error = %error, "audit checkpoint not written; retrying at the next interval");
                    }
                }
            })
        };
        Ok(Some(Anchor { state, task }))
    }

    /// Stops the periodic checkpoints and signs the final heads (call it
    /// after the audit log is flushed and closed).
    pub fn finish(self) -> Result<usize, AnchorError> {
        self.task.abort();
        self.state.lock().unwrap_or_else(|p| p.into_inner()).pass()
    }
}
