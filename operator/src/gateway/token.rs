//! The gateway token (DESIGN §3): the short-lived JWT the operator hands a
//! sidecar in exchange for its pod's projected service-account token, and the
//! signing keys behind it.
//!
//! Tokens are ES256 JWTs whose header names the signing key (`kid`, the key's
//! RFC 7638 thumbprint). A [`KeySet`] holds the current key and the ones it
//! replaced: [`KeySet::sign`] always uses the newest, [`KeySet::verify`] accepts
//! any key still in the set, so rotating the key does not break tokens already
//! handed out. The set is stored in a Secret ([`KeySet::to_secret_data`]) and its
//! public half published at `/v1/jwks` ([`KeySet::jwks`]).
//!
//! Time is always passed in, never read from the clock, so expiry is testable
//! and every replica decides the same way for the same `now`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};

/// The `aud` of every gateway token.
pub const AUDIENCE: &str = "sluice.dev/gateway";
/// The signature algorithm of every gateway token.
pub const ALGORITHM: Algorithm = Algorithm::ES256;
/// Clock difference tolerated on `nbf` between the replica that signed and the
/// one that verifies. Not applied to `exp`: an expired token is refused.
pub const NOT_BEFORE_LEEWAY: Duration = Duration::from_secs(30);
/// Prefix of the Secret keys holding signing keys: `key-<created>-<kid>.pem`.
const SECRET_KEY_PREFIX: &str = "key-";

/// Who a gateway token speaks for, as read from the TokenReview of the pod's
/// projected service-account token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Namespace of the pod and its service account.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Name of the pod the projected token is bound to.
    pub pod: String,
    /// UID of that pod.
    pub pod_uid: String,
    /// UID of the service account (the TokenReview's user UID; empty when
    /// the API server gave none).
    pub service_account_uid: String,
    /// Groups from the TokenReview (e.g. `system:serviceaccounts:ci`).
    pub groups: Vec<String>,
}

/// The claims of a gateway token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClaims {
    /// The operator that issued it (its gateway URL).
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// `system:serviceaccount:NAMESPACE:NAME`.
    pub sub: String,
    /// Namespace of the service account and pod.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID: a token for a deleted pod is useless even if a new pod reuses the name.
    pub pod_uid: String,
    /// Service account UID: a token for a deleted service account is useless
    /// even if one of the same name is created again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_uid: String,
    /// Groups of the service account.
    pub groups: Vec<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token ID, for the audit trail.
    pub jti: String,
}

impl GatewayClaims {
    /// Claims for `subject`, issued by `issuer` at `now`, valid for `ttl`.
    pub fn new(
        issuer: &str,
        subject: &Subject,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<GatewayClaims, TokenError> {
        let iat = unix_seconds(now);
        Ok(GatewayClaims {
            iss: issuer.to_string(),
            aud: AUDIENCE.to_string(),
            sub: format!(
                "system:serviceaccount:{}:{}",
                subject.namespace, subject.service_account
            ),
            namespace: subject.namespace.clone(),
            service_account: subject.service_account.clone(),
            pod: subject.pod.clone(),
            pod_uid: subject.pod_uid.clone(),
            service_account_uid: subject.service_account_uid.clone(),
            groups: subject.groups.clone(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(ttl.as_secs()),
            jti: random_id()?,
        })
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// Why a key set could not be built, stored, loaded, or sign.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Generating a key failed.
    #[error("could not generate a gateway signing key")]
    Generate(#[source] rcgen::Error),
    /// The operating system gave no randomness.
    #[error("the operating system's random number generator failed")]
    Random(#[source] ring::error::Unspecified),
    /// A stored key could not be used.
    #[error(
        "gateway signing key {name:?} in the key Secret is not a PKCS#8 P-256 key; delete the Secret to have the operator create a new key (outstanding gateway tokens then stop working and sidecars exchange new ones)"
    )]
    Key {
        /// The Secret key (or `new key`) holding it.
        name: String,
        /// The JWT library's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A Secret key has a name this module does not write.
    #[error(
        "the gateway key Secret holds {name:?}, which is not named key-<unix seconds>-<kid>.pem; remove that key from the Secret"
    )]
    SecretKeyName {
        /// The offending Secret key.
        name: String,
    },
    /// A Secret value is not text.
    #[error("gateway signing key {name:?} in the key Secret is not UTF-8 PEM")]
    NotUtf8 {
        /// The Secret key.
        name: String,
        /// The decoder's error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// The key set is empty, so nothing can be signed.
    #[error("the gateway key set has no keys; rotate once to create one")]
    NoKeys,
    /// Signing failed.
    #[error("could not sign a gateway token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Why a presented gateway token was refused. The sidecar shows the message,
/// and the HTTP status is 401 for every variant.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not three base64url parts of JSON with the expected claims.
    #[error(
        "the gateway token is malformed: {0}; exchange the service-account token for a new one"
    )]
    Malformed(#[source] jsonwebtoken::errors::Error),
    /// The header names no key.
    #[error("the gateway token's header has no kid; it was not issued by a Sluice operator")]
    MissingKeyId,
    /// The header names a key this operator does not have (any more).
    #[error(
        "the gateway token was signed by unknown key {kid:?} (rotated out, or not issued by this operator); exchange the service-account token for a new one"
    )]
    UnknownKey {
        /// The `kid` from the header.
        kid: String,
    },
    /// The header names another algorithm than ES256.
    #[error("the gateway token uses algorithm {alg:?}; only ES256 is accepted")]
    WrongAlgorithm {
        /// The header's `alg`.
        alg: Algorithm,
    },
    /// The signature does not match.
    #[error("the gateway token's signature does not verify; the token was altered or forged")]
    BadSignature,
    /// `aud` is not [`AUDIENCE`].
    #[error("the gateway token's audience is not {AUDIENCE}; it is meant for another service")]
    WrongAudience,
    /// `iss` is not this operator.
    #[error("the gateway token was issued by another operator (expected issuer {expected:?})")]
    WrongIssuer {
        /// The issuer this operator expects.
        expected: String,
    },
    /// `exp` has passed.
    #[error(
        "the gateway token expired at {exp} (now {now}, seconds since the Unix epoch); exchange the service-account token for a new one"
    )]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `nbf` is still in the future.
    #[error(
        "the gateway token is not valid before {nbf} (now {now}, seconds since the Unix epoch); check the clocks of the operator's nodes"
    )]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The verifier's clock.
        now: u64,
    },
}

impl VerifyError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::MissingKeyId => "missing_kid",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::WrongAlgorithm { .. } => "wrong_algorithm",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::WrongIssuer { .. } => "wrong_issuer",
            VerifyError::Expired { .. } => "expired",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
        }
    }
}

/// One ES256 signing key.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    created: u64,
    pkcs8_pem: String,
    encoding: EncodingKey,
    /// The same key as ring's, parsed once: a signature then costs tens of
    /// microseconds, where jsonwebtoken's RustCrypto backend parses the
    /// PKCS#8 key again for every signature and signs in portable code (#25:
    /// a checkpoint is signed per audit batch, a token per exchange). `None`
    /// for a PKCS#8 key ring does not take (one stored without its public
    /// key): that key signs through jsonwebtoken, as before.
    ring: Option<std::sync::Arc<ring::signature::EcdsaKeyPair>>,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh P-256 key, created at `now`.
    pub fn generate(now: SystemTime) -> Result<SigningKey, TokenError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(TokenError::Generate)?;
        SigningKey::from_pkcs8_pem(&pair.serialize_pem(), unix_seconds(now), "new key")
    }

    /// Loads a PKCS#8 PEM P-256 key created at `created` (Unix seconds);
    /// `name` says where it came from, for errors.
    pub fn from_pkcs8_pem(pem: &str, created: u64, name: &str) -> Result<SigningKey, TokenError> {
        let key_error = |source| TokenError::Key {
            name: name.to_string(),
            source,
        };
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(key_error)?;
        let mut jwk = Jwk::from_encoding_key(&encoding, ALGORITHM).map_err(key_error)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(key_error)?;
        use rustls::pki_types::pem::PemObject as _;
        let ring = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .ok()
            .and_then(|der| {
                ring::signature::EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_der(),
                    &ring::rand::SystemRandom::new(),
                )
                .ok()
            })
            .map(std::sync::Arc::new);
        Ok(SigningKey {
            kid,
            created,
            pkcs8_pem: pem.to_string(),
            encoding,
            ring,
            decoding,
            jwk,
        })
    }

    /// `payload` signed as a compact JWS under `header` (ES256): what
    /// `jsonwebtoken::encode` makes, the header and payload serialised the
    /// same way, the signature ring's (`r || s`, as ES256 has it).
    fn jws<T: Serialize>(&self, header: &Header, payload: &T) -> Result<String, TokenError> {
        let Some(pair) = &self.ring else {
            return jsonwebtoken::encode(header, payload, &self.encoding).map_err(TokenError::Sign);
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let json =
            |v: Result<Vec<u8>, serde_json::Error>| v.map_err(|e| TokenError::Sign(e.into()));
        let mut jws = b64.encode(json(serde_json::to_vec(header))?);
        jws.push('.');
        b64.encode_string(json(serde_json::to_vec(payload))?, &mut jws);
        let signature = pair
            .sign(&ring::rand::SystemRandom::new(), jws.as_bytes())
            .map_err(TokenError::Random)?;
        jws.push('.');
        b64.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }

    /// The key ID in token headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When the key was created, Unix seconds.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }
}

/// The operator's gateway signing keys, newest first.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl KeySet {
    /// A set holding one new key.
    pub fn generate(now: SystemTime) -> Result<KeySet, TokenError> {
        Ok(KeySet {
            keys: vec![SigningKey::generate(now)?],
        })
    }

    /// Whether `other` holds the same keys (IDs, creation times, key
    /// material) in the same order.
    pub fn same_keys(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().zip(&other.keys).all(|(a, b)| {
                a.kid == b.kid && a.created == b.created && a.pkcs8_pem == b.pkcs8_pem
            })
    }

    /// The keys, newest first.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> Option<&SigningKey> {
        self.keys.first()
    }

    /// Whether the current key is older than `max_age` (or there is none).
    pub fn needs_rotation(&self, now: SystemTime, max_age: Duration) -> bool {
        self.current()
            .is_none_or(|k| k.created.saturating_add(max_age.as_secs()) <= unix_seconds(now))
    }

    /// Adds a new current key; the old ones keep verifying until [`KeySet::prune`].
    pub fn rotate(&mut self, now: SystemTime) -> Result<(), TokenError> {
        let mut key = SigningKey::generate(now)?;
        // Keep creation times strictly increasing, so the order (and with it
        // the current key) survives a round trip through the Secret.
        if let Some(current) = self.current() {
            key.created = key.created.max(current.created.saturating_add(1));
        }
        self.keys.insert(0, key);
        Ok(())
    }

    /// Drops keys that were replaced more than `retain_for` ago. Pass at least
    /// the longest token lifetime (plus the time replicas take to see a
    /// rotation), so no token still in flight loses its key. Returns whether
    /// anything was dropped.
    pub fn prune(&mut self, now: SystemTime, retain_for: Duration) -> bool {
        let now = unix_seconds(now);
        let before = self.keys.len();
        let replaced_at: Vec<Option<u64>> = (0..self.keys.len())
            .map(|i| i.checked_sub(1).map(|newer| self.keys[newer].created))
            .collect();
        let mut index = 0;
        self.keys.retain(|_| {
            let keep = replaced_at[index]
                .is_none_or(|replaced| replaced.saturating_add(retain_for.as_secs()) > now);
            index += 1;
            keep
        });
        self.keys.len() != before
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &GatewayClaims) -> Result<String, TokenError> {
        let key = self.current().ok_or(TokenError::NoKeys)?;
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.kid.clone());
        key.jws(&header, claims)
    }

    /// Signs any JSON payload with the current key as a compact JWS (used for
    /// audit checkpoints, which are not gateway tokens); returns it and the `kid`.
    pub fn sign_payload<T: Serialize>(&self, payload: &T) -> Result<(String, String), TokenError> {
        let key = self.current().ok_or(TokenError::NoKeys)?;
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.kid.clone());
        header.typ = Some("sluice-checkpoint+jwt".to_string());
        let jws = key.jws(&header, payload)?;
        Ok((jws, key.kid.clone()))
    }

    /// Checks `token` was signed by a key in this set, is for [`AUDIENCE`],
    /// issued by `issuer`, and valid at `now`; returns its claims.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        now: SystemTime,
    ) -> Result<GatewayClaims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(VerifyError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(VerifyError::WrongAlgorithm { alg: header.alg });
        }
        let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(VerifyError::UnknownKey { kid })?;

        if let Some(pair) = &key.ring {
            // ring checks the signature (#25: jsonwebtoken's portable P-256
            // verification was a tenth of the operator's CPU with a fleet
            // renewing tokens), then the claims are decoded and their
            // audience and issuer checked as jsonwebtoken does.
            verify_with(pair, token)?;
            let claims = jsonwebtoken::dangerous::insecure_decode::<GatewayClaims>(token)
                .map_err(VerifyError::Malformed)?
                .claims;
            if claims.aud != AUDIENCE {
                return Err(VerifyError::WrongAudience);
            }
            if claims.iss != issuer {
                return Err(VerifyError::WrongIssuer {
                    expected: issuer.to_string(),
                });
            }
            check_times(&claims, now)?;
            return Ok(claims);
        }
        // Times are checked below against the `now` passed in, not the library's clock.
        let mut validation = Validation::new(ALGORITHM);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[issuer]);
        let claims = jsonwebtoken::decode::<GatewayClaims>(token, &key.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => VerifyError::BadSignature,
                    ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                    ErrorKind::InvalidIssuer => VerifyError::WrongIssuer {
                        expected: issuer.to_string(),
                    },
                    _ => VerifyError::Malformed(e),
                }
            })?
            .claims;
        check_times(&claims, now)?;
        Ok(claims)
    }

    /// The public keys, for `GET /v1/jwks`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// The Secret `data` holding the keys: `key-<created>-<kid>.pem` → PKCS#8 PEM.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        self.keys
            .iter()
            .map(|k| {
                (
                    format!("{SECRET_KEY_PREFIX}{}-{}.pem", k.created, k.kid),
                    ByteString(k.pkcs8_pem.as_bytes().to_vec()),
                )
            })
            .collect()
    }

    /// Reads what [`KeySet::to_secret_data`] wrote.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<KeySet, TokenError> {
        let mut keys = Vec::with_capacity(data.len());
        for (name, value) in data {
            let created = name
                .strip_prefix(SECRET_KEY_PREFIX)
                .and_then(|rest| rest.strip_suffix(".pem"))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(created, _kid)| created.parse::<u64>().ok())
                .ok_or_else(|| TokenError::SecretKeyName { name: name.clone() })?;
            let pem = String::from_utf8(value.0.clone()).map_err(|source| TokenError::NotUtf8 {
                name: name.clone(),
                source,
            })?;
            keys.push(SigningKey::from_pkcs8_pem(&pem, created, name)?);
        }
        keys.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.kid.cmp(&b.kid)));
        Ok(KeySet { keys })
    }
}

/// Checks the ES256 signature of the compact JWS `token` with `pair`'s
/// public key (ring).
fn verify_with(pair: &ring::signature::EcdsaKeyPair, token: &str) -> Result<(), VerifyError> {
    use ring::signature::KeyPair as _;
    let (message, signature) = token.rsplit_once('.').ok_or(VerifyError::BadSignature)?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VerifyError::BadSignature)?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        pair.public_key().as_ref(),
    )
    .verify(message.as_bytes(), &signature)
    .map_err(|_| VerifyError::BadSignature)
}

/// Whether verified `claims` are valid at `now` (not expired, not before
/// their `nbf` beyond [`NOT_BEFORE_LEEWAY`]).
pub(crate) fn check_times(claims: &GatewayClaims, now: SystemTime) -> Result<(), VerifyError> {
    let now = unix_seconds(now);
    if now >= claims.exp {
        return Err(VerifyError::Expired {
            exp: claims.exp,
            now,
        });
    }
    if claims.nbf > now.saturating_add(NOT_BEFORE_LEEWAY.as_secs()) {
        return Err(VerifyError::NotYetValid {
            nbf: claims.nbf,
            now,
        });
    }
    Ok(())
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// 128 random bits, base64url: unique per token.
fn random_id() -> Result<String, TokenError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(TokenError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests;
