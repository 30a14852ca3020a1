use super::*;

const ISSUER: &str = "https://sluice-operator.sluice-system.svc:8443";
const TTL: Duration = Duration::from_secs(900);

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn subject() -> Subject {
    Subject {
        namespace: "shop".into(),
        service_account: "report-job".into(),
        pod: "report-api-7d4b9c-x2x7q".into(),
        pod_uid: "5f0c6a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        service_account_uid: "sa-uid".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:shop".into(),
        ],
    }
}

fn claims_at(seconds: u64) -> GatewayClaims {
    GatewayClaims::new(ISSUER, &subject(), at(seconds), TTL).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn signed_token_verifies_with_its_claims() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let claims = claims_at(1_000);
    let token = keys.sign(&claims).unwrap();
    let verified = keys.verify(&token, ISSUER, at(1_100)).unwrap();
    assert_eq!(verified, claims);
    assert_eq!(verified.sub, "system:serviceaccount:shop:report-job");
    assert_eq!(verified.aud, AUDIENCE);
    assert_eq!(verified.exp, 1_900);
    assert_eq!(verified.expires_at(), at(1_900));

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(keys.current().unwrap().kid()));
}

#[test]
fn claims_use_the_api_field_names() {
    let json = serde_json::to_value(claims_at(1_000)).unwrap();
    for field in [
        "iss",
        "aud",
        "sub",
        "namespace",
        "serviceAccount",
        "pod",
        "podUid",
        "groups",
        "iat",
        "nbf",
        "exp",
        "jti",
    ] {
        assert!(
            json.get(field).is_some(),
            "claim {field} missing from {json}"
        );
    }
    assert_ne!(
        claims_at(1_000).jti,
        claims_at(1_000).jti,
        "jti must be unique"
    );
}

#[test]
fn expired_token_is_refused() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let token = keys.sign(&claims_at(1_000)).unwrap();
    let error = keys.verify(&token, ISSUER, at(1_900)).unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::Expired {
                exp: 1_900,
                now: 1_900
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("expired at 1900"), "{error}");
    assert!(keys.verify(&token, ISSUER, at(1_899)).is_ok());
}

#[test]
fn token_from_the_future_is_refused_beyond_the_leeway() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let token = keys.sign(&claims_at(2_000)).unwrap();
    let error = keys.verify(&token, ISSUER, at(1_000)).unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::NotYetValid {
                nbf: 2_000,
                now: 1_000
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not valid before 2000"),
        "{error}"
    );
    // Within the leeway: a replica whose clock is a little behind accepts it.
    assert!(keys.verify(&token, ISSUER, at(1_980)).is_ok());
}

#[test]
fn wrong_audience_is_refused() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let mut claims = claims_at(1_000);
    claims.aud = "sluice.dev".into();
    let token = keys.sign(&claims).unwrap();
    let error = keys.verify(&token, ISSUER, at(1_100)).unwrap_err();
    assert!(matches!(error, VerifyError::WrongAudience), "{error:?}");
    assert!(error.to_string().contains("audience"), "{error}");
}

#[test]
fn wrong_issuer_is_refused() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let token = keys.sign(&claims_at(1_000)).unwrap();
    let error = keys
        .verify(&token, "https://other.example", at(1_100))
        .unwrap_err();
    assert!(
        matches!(error, VerifyError::WrongIssuer { .. }),
        "{error:?}"
    );
}

#[test]
fn token_of_another_key_set_is_an_unknown_key() {
    let ours = KeySet::generate(at(1_000)).unwrap();
    let theirs = KeySet::generate(at(1_000)).unwrap();
    let token = theirs.sign(&claims_at(1_000)).unwrap();
    let error = ours.verify(&token, ISSUER, at(1_100)).unwrap_err();
    let VerifyError::UnknownKey { kid } = &error else {
        panic!("expected UnknownKey, got {error:?}");
    };
    assert_eq!(kid, theirs.current().unwrap().kid());
    assert!(error.to_string().contains("unknown key"), "{error}");
}

#[test]
fn altered_claims_fail_the_signature() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let token = keys.sign(&claims_at(1_000)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims_at(1_000);
    forged.service_account = "admin".into();
    let payload = b64(&serde_json::to_vec(&forged).unwrap());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let error = keys.verify(&tampered, ISSUER, at(1_100)).unwrap_err();
    assert!(matches!(error, VerifyError::BadSignature), "{error:?}");
    assert!(error.to_string().contains("signature"), "{error}");
}

#[test]
fn other_algorithms_and_missing_kid_are_refused() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let current = keys.current().unwrap();
    let claims = claims_at(1_000);

    // HS256 with a key id the set knows (the classic algorithm confusion): the
    // HMAC key here is the kid's bytes; any key will do, since the algorithm is
    // pinned before a key is looked up.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(current.kid().to_string());
    let secret = EncodingKey::from_secret(current.kid().as_bytes());
    let token = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
    let error = keys.verify(&token, ISSUER, at(1_100)).unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::WrongAlgorithm {
                alg: Algorithm::HS256
            }
        ),
        "{error:?}"
    );

    let token = jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &current.encoding).unwrap();
    let error = keys.verify(&token, ISSUER, at(1_100)).unwrap_err();
    assert!(matches!(error, VerifyError::MissingKeyId), "{error:?}");

    let error = keys.verify("not-a-jwt", ISSUER, at(1_100)).unwrap_err();
    assert!(matches!(error, VerifyError::Malformed(_)), "{error:?}");
}

#[test]
fn rotation_keeps_tokens_in_flight_until_pruned() {
    let mut keys = KeySet::generate(at(1_000)).unwrap();
    let old_kid = keys.current().unwrap().kid().to_string();
    let old_token = keys.sign(&claims_at(1_000)).unwrap();

    keys.rotate(at(1_200)).unwrap();
    let new_kid = keys.current().unwrap().kid().to_string();
    assert_ne!(old_kid, new_kid);
    let new_token = keys.sign(&claims_at(1_200)).unwrap();
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some(new_kid.as_str()),
        "signs with the newest key"
    );
    assert!(
        keys.verify(&old_token, ISSUER, at(1_300)).is_ok(),
        "old token still verifies"
    );

    // Not yet past the retention window: nothing dropped.
    assert!(!keys.prune(at(1_300), TTL));
    assert_eq!(keys.keys().len(), 2);
    // Past it: the replaced key goes, and with it the tokens it signed.
    assert!(keys.prune(at(1_200 + 900), TTL));
    assert_eq!(keys.keys().len(), 1);
    assert_eq!(keys.current().unwrap().kid(), new_kid);
    let error = keys.verify(&old_token, ISSUER, at(1_300)).unwrap_err();
    assert!(matches!(error, VerifyError::UnknownKey { .. }), "{error:?}");
    assert!(keys.verify(&new_token, ISSUER, at(1_300)).is_ok());
}

#[test]
fn needs_rotation_by_age() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let day = Duration::from_secs(86_400);
    assert!(!keys.needs_rotation(at(1_000 + 86_399), day));
    assert!(keys.needs_rotation(at(1_000 + 86_400), day));
    assert!(KeySet::default().needs_rotation(at(0), day));
    assert!(matches!(
        KeySet::default().sign(&claims_at(1)),
        Err(TokenError::NoKeys)
    ));
}

#[test]
fn key_set_survives_a_secret_round_trip() {
    let mut keys = KeySet::generate(at(1_000)).unwrap();
    let old_token = keys.sign(&claims_at(1_000)).unwrap();
    keys.rotate(at(1_000)).unwrap();
    let data = keys.to_secret_data();
    assert_eq!(data.len(), 2);
    assert!(
        data.keys()
            .all(|k| k.starts_with("key-") && k.ends_with(".pem"))
    );

    let loaded = KeySet::from_secret_data(&data).unwrap();
    let kids = |set: &KeySet| {
        set.keys()
            .iter()
            .map(|k| k.kid().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kids(&loaded),
        kids(&keys),
        "same keys, same order (current first)"
    );
    assert!(loaded.verify(&old_token, ISSUER, at(1_100)).is_ok());
    let token = loaded.sign(&claims_at(1_000)).unwrap();
    assert!(keys.verify(&token, ISSUER, at(1_100)).is_ok());
}

#[test]
fn bad_secret_data_is_a_clear_error() {
    let mut data = BTreeMap::new();
    data.insert("tls.key".to_string(), ByteString(b"x".to_vec()));
    let error = KeySet::from_secret_data(&data).unwrap_err();
    assert!(
        matches!(error, TokenError::SecretKeyName { .. }),
        "{error:?}"
    );

    let mut data = BTreeMap::new();
    data.insert("key-1-abc.pem".to_string(), ByteString(b"not pem".to_vec()));
    let error = KeySet::from_secret_data(&data).unwrap_err();
    assert!(matches!(error, TokenError::Key { .. }), "{error:?}");
    assert!(error.to_string().contains("key-1-abc.pem"), "{error}");
}

#[test]
fn jwks_publishes_public_keys_that_verify() {
    let mut keys = KeySet::generate(at(1_000)).unwrap();
    keys.rotate(at(1_100)).unwrap();
    let token = keys.sign(&claims_at(1_100)).unwrap();

    let json = serde_json::to_value(keys.jwks()).unwrap();
    let published = json["keys"].as_array().unwrap();
    assert_eq!(published.len(), 2);
    for jwk in published {
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "private key published: {jwk}");
    }

    // A client holding only the JWKS (the sidecar, another replica) verifies.
    let set: JwkSet = serde_json::from_value(json).unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
    let mut validation = Validation::new(ALGORITHM);
    validation.set_audience(&[AUDIENCE]);
    validation.validate_exp = false;
    assert!(jsonwebtoken::decode::<GatewayClaims>(&token, &key, &validation).is_ok());
}

#[test]
fn checkpoints_are_signed_by_the_current_key_and_verify_with_the_jwks() {
    let mut keys = KeySet::generate(at(1_000)).unwrap();
    keys.rotate(at(1_100)).unwrap();
    let payload = serde_json::json!({"stream": "s", "sequence": 7, "hash": "ab"});
    let (jws, kid) = keys.sign_payload(&payload).unwrap();
    assert_eq!(kid, keys.current().unwrap().kid());
    let set = keys.jwks();
    let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
    let mut validation = Validation::new(ALGORITHM);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let decoded = jsonwebtoken::decode::<serde_json::Value>(&jws, &key, &validation).unwrap();
    assert_eq!(decoded.claims, payload);
    // A checkpoint is not a gateway token.
    assert!(keys.verify(&jws, ISSUER, at(1_100)).is_err());
    assert!(KeySet::default().sign_payload(&payload).is_err());
}

#[test]
fn keys_sign_through_ring_as_jsonwebtoken_would() {
    let mut keys = KeySet::generate(at(1_000)).unwrap();
    keys.rotate(at(1_100)).unwrap();
    // New keys and keys read back from the Secret both sign with ring (the
    // key parsed once, not per signature).
    let again = KeySet::from_secret_data(&keys.to_secret_data()).unwrap();
    for set in [&keys, &again] {
        assert!(set.keys().iter().all(|k| k.ring.is_some()));
    }
    // Header and payload are what jsonwebtoken writes; the signature is
    // ring's, and jsonwebtoken verifies it (the JWKS tests above, too).
    let key = keys.current().unwrap();
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(key.kid.clone());
    let claims = claims_at(1_100);
    let ours = key.jws(&header, &claims).unwrap();
    let theirs = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
    let signed_part = |jws: &str| jws.rsplit_once('.').unwrap().0.to_string();
    assert_eq!(signed_part(&ours), signed_part(&theirs));
    assert_eq!(keys.verify(&ours, ISSUER, at(1_200)).unwrap(), claims);
    // A key ring does not take still signs, through jsonwebtoken.
    let mut fallback = key.clone();
    fallback.ring = None;
    let slow = fallback.jws(&header, &claims).unwrap();
    assert_eq!(keys.verify(&slow, ISSUER, at(1_200)).unwrap(), claims);
}

#[test]
fn a_set_read_again_holds_the_same_keys_and_a_rotated_one_does_not() {
    let keys = KeySet::generate(at(1_000)).unwrap();
    let again = KeySet::from_secret_data(&keys.to_secret_data()).unwrap();
    assert!(keys.same_keys(&again));
    let mut rotated = again.clone();
    rotated.rotate(at(2_000)).unwrap();
    assert!(!keys.same_keys(&rotated));
    assert!(!keys.same_keys(&KeySet::generate(at(1_000)).unwrap()));
}
