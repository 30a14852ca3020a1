//! Gateway tokens already verified, so a sidecar's next request with the same
//! token costs a hash lookup instead of an ES256 verification (#25: the
//! signature check was the largest cost per bundle poll and audit upload).
//!
//! What a verification proves about a token string that cannot change while
//! the key set stays the same (signature, algorithm, key ID, issuer,
//! audience) is kept; what depends on the time (expiry, not-before) is
//! checked again on every use. An entry is used only with the very key set
//! ([`Arc`]) it was verified under: a rotation or a pruned key re-verifies
//! (and refuses a token whose key is gone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::gateway::token::{GatewayClaims, KeySet, VerifyError, check_times};

/// Most tokens remembered (about one per sidecar, two around a renewal);
/// past it the expired ones are dropped, and if none are, all of them.
pub const MAX_TOKENS: usize = 65_536;

/// Verified tokens by the SHA-256 of their text.
#[derive(Default)]
pub struct VerifiedTokens {
    by_hash: Mutex<HashMap<[u8; 32], Verified>>,
    verifications: AtomicU64,
}

struct Verified {
    keys: Arc<KeySet>,
    claims: GatewayClaims,
}

impl VerifiedTokens {
    /// [`KeySet::verify`] of `token` with `keys`, remembered for the next call.
    pub fn verify(
        &self,
        keys: &Arc<KeySet>,
        token: &str,
        issuer: &str,
        now: SystemTime,
    ) -> Result<GatewayClaims, VerifyError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = self
            .lock()
            .get(&hash)
            .filter(|v| Arc::ptr_eq(&v.keys, keys) && v.claims.iss == issuer)
            .map(|v| v.claims.clone());
        if let Some(claims) = known {
            check_times(&claims, now)?;
            return Ok(claims);
        }
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let claims = keys.verify(token, issuer, now)?;
        let mut map = self.lock();
        if map.len() >= MAX_TOKENS {
            map.retain(|_, v| check_times(&v.claims, now).is_ok());
            if map.len() >= MAX_TOKENS {
                map.clear();
            }
        }
        map.insert(
            hash,
            Verified {
                keys: keys.clone(),
                claims: claims.clone(),
            },
        );
        Ok(claims)
    }

    /// How many tokens were verified in full (not answered from memory).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Verified>> {
        self.by_hash.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::token::Subject;
    use std::time::Duration;

    fn subject() -> Subject {
        Subject {
            namespace: "shop".into(),
            service_account: "report-job".into(),
            pod: "report-0".into(),
            pod_uid: "uid-0".into(),
            service_account_uid: "sa-uid".into(),
            groups: vec!["system:serviceaccounts".into()],
        }
    }

    const ISSUER: &str = "https://sluice-operator.sluice-system.svc";

    #[test]
    fn a_token_is_verified_once_and_its_expiry_checked_on_every_use() {
        let now = SystemTime::now();
        let keys = Arc::new(KeySet::generate(now).unwrap());
        let claims = GatewayClaims::new(ISSUER, &subject(), now, Duration::from_secs(60)).unwrap();
        let token = keys.sign(&claims).unwrap();
        let cache = VerifiedTokens::default();
        for _ in 0..3 {
            assert_eq!(cache.verify(&keys, &token, ISSUER, now).unwrap(), claims);
        }
        assert_eq!(cache.verifications(), 1, "verified in full once");
        // Remembered, but expired all the same.
        let later = now + Duration::from_secs(61);
        assert!(matches!(
            cache.verify(&keys, &token, ISSUER, later),
            Err(VerifyError::Expired { .. })
        ));
        // Another issuer is not answered from memory.
        assert!(matches!(
            cache.verify(&keys, &token, "https://other", now),
            Err(VerifyError::WrongIssuer { .. })
        ));
    }

    #[test]
    fn a_changed_key_set_verifies_again_and_refuses_a_token_whose_key_is_gone() {
        let now = SystemTime::now();
        let keys = Arc::new(KeySet::generate(now).unwrap());
        let claims = GatewayClaims::new(ISSUER, &subject(), now, Duration::from_secs(60)).unwrap();
        let token = keys.sign(&claims).unwrap();
        let cache = VerifiedTokens::default();
        cache.verify(&keys, &token, ISSUER, now).unwrap();
        // The same keys, read again (another replica rotated and pruned): a new set.
        let other = Arc::new(KeySet::generate(now).unwrap());
        assert!(matches!(
            cache.verify(&other, &token, ISSUER, now),
            Err(VerifyError::UnknownKey { .. })
        ));
        let same_keys_again = Arc::new((*keys).clone());
        assert_eq!(
            cache.verify(&same_keys_again, &token, ISSUER, now).unwrap(),
            claims
        );
        assert_eq!(cache.verifications(), 3);
        // A token altered in one byte is its own entry, and refused.
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(cache.verify(&keys, &forged, ISSUER, now).is_err());
    }
}
