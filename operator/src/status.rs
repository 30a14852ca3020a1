//! What the controllers write into `status`, computed without I/O.
//!
//! A reconciler gathers the facts (the Secret, the known Connections, the
//! policy compiler's verdict), calls [`connection_status`] or
//! [`access_policy_status`], applies the result with server-side apply when it
//! differs from what is stored, and emits an Event for each of
//! [`transitions`] — so running it twice changes nothing and emits nothing.
//!
//! Fields fed by sidecars (sessions, activity, counters, recent denials) are
//! carried over from the previous status: all of `status` is applied under one
//! field manager, and a field left out of an apply would be removed.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use sluice_crds::{
    AccessPolicy, AccessPolicyStatus, Conditions, Connection, ConnectionStatus, Protocol,
    find_condition, set_condition,
};

/// Condition type summarising the others.
pub const READY: &str = "Ready";
/// Connection condition: the credentials Secret exists and has the keys the protocol needs.
pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
/// AccessPolicy condition: a field is wrong (the reason names it).
pub const INVALID: &str = "Invalid";

/// What a Connection's reconciler read from the cluster.
#[derive(Clone, Debug, Default)]
pub struct ConnectionFacts<'a> {
    /// The Secret named by `spec.credentials.secretRef`, if it exists.
    pub credentials: Option<&'a Secret>,
    /// The Secret named by `spec.upstream.tls.caSecretRef`, if set and it exists.
    pub ca_secret: Option<&'a Secret>,
    /// The Secret named by `spec.credentials.hashKeySecretRef`, if set and it exists.
    pub hash_key_secret: Option<&'a Secret>,
    /// AccessPolicies of the namespace that name this Connection.
    pub bound_policies: Vec<String>,
}

/// Why an AccessPolicy does not compile: the policy compiler's CamelCase
/// reason (e.g. `InvalidPattern`) and its message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyProblem {
    /// CamelCase condition reason.
    pub reason: &'static str,
    /// Human message, naming the field.
    pub message: String,
}

/// A condition whose status changed (or appeared): worth one Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Condition type.
    pub type_: String,
    /// Previous status (`None` when the condition is new).
    pub from: Option<String>,
    /// New status.
    pub to: String,
    /// New reason, for the Event's reason.
    pub reason: String,
    /// New message, for the Event's note.
    pub message: String,
}

/// The status of `connection` given `facts`, at `now`.
pub fn connection_status(
    connection: &Connection,
    facts: &ConnectionFacts<'_>,
    previous: Option<&ConnectionStatus>,
    now: &Time,
) -> ConnectionStatus {
    let generation = connection.metadata.generation;
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let mut bound = facts.bound_policies.clone();
    bound.sort();
    bound.dedup();
    status.bound_policies = bound;

    let spec = &connection.spec;
    let credentials = credentials_problem(connection, facts.credentials).or_else(|| {
        let hash_ref = spec.credentials.hash_key_secret_ref.as_ref()?;
        key_problem(
            facts.hash_key_secret,
            &hash_ref.name,
            &hash_ref.key,
            "HashKeyNotFound",
        )
    });
    let tls = spec
        .upstream
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
        .and_then(|ca| key_problem(facts.ca_secret, &ca.name, &ca.key, "CaNotFound"));

    let credentials_condition = match &credentials {
        None => condition(
            CREDENTIALS_RESOLVED,
            true,
            "Resolved",
            "the credentials Secret has the keys the protocol needs".into(),
            generation,
            now,
        ),
        Some((reason, message)) => condition(
            CREDENTIALS_RESOLVED,
            false,
            reason,
            message.clone(),
            generation,
            now,
        ),
    };
    set_condition(&mut status.conditions, credentials_condition);

    // Every protocol is served whole (#24: mysql since approvals and
    // cursors are); what a plane refuses by design is said in the message.
    let refused_by_design = match spec.protocol {
        Protocol::Mysql => MYSQL_REFUSED,
        Protocol::Postgres | Protocol::Http => "",
    };
    let ready = match credentials.or(tls) {
        None => condition(
            READY,
            true,
            "Ready",
            format!(
                "served on 127.0.0.1:{}; named by {} AccessPolicies{refused_by_design}",
                spec.listen.port,
                status.bound_policies.len()
            ),
            generation,
            now,
        ),
        Some((reason, message)) => condition(READY, false, reason, message, generation, now),
    };
    set_condition(&mut status.conditions, ready);
    status
}

/// What the sidecar's MySQL plane refuses by design, said in a mysql
/// Connection's `Ready` message (no policy can ask for it).
pub const MYSQL_REFUSED: &str = "; the MySQL plane refuses COM_CHANGE_USER (a session never switches credentials), LOAD DATA LOCAL and TLS from the client on loopback";

/// The status of `policy`: `compiled` is the policy compiler's verdict and
/// `known_connections` the Connections of its namespace.
pub fn access_policy_status(
    policy: &AccessPolicy,
    compiled: Result<(), PolicyProblem>,
    known_connections: &BTreeSet<String>,
    previous: Option<&AccessPolicyStatus>,
    now: &Time,
) -> AccessPolicyStatus {
    let generation = policy.metadata.generation;
    let namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.subjects = policy
        .spec
        .subjects
        .iter()
        .filter_map(|s| match (&s.service_account, &s.group) {
            (Some(sa), _) => Some(format!(
                "serviceaccount:{}/{sa}",
                s.namespace.as_deref().unwrap_or(&namespace)
            )),
            (None, Some(group)) => Some(format!("group:{group}")),
            (None, None) => None,
        })
        .collect();

    let unknown: Vec<&str> = policy
        .spec
        .connections
        .iter()
        .filter(|c| !known_connections.contains(*c))
        .map(String::as_str)
        .collect();
    let problem = if unknown.is_empty() {
        compiled.err()
    } else {
        Some(PolicyProblem {
            reason: "UnknownConnection",
            message: format!(
                "spec.connections names {} that do not exist in namespace {namespace}: {}; create them or fix the names",
                if unknown.len() == 1 {
                    "a Connection"
                } else {
                    "Connections"
                },
                unknown.join(", ")
            ),
        })
    };
    let (invalid, ready) = match problem {
        None => (
            condition(
                INVALID,
                false,
                "Valid",
                "every field is valid".into(),
                generation,
                now,
            ),
            condition(
                READY,
                true,
                "Compiled",
                format!(
                    "compiled and served to sidecars of {} subjects on {} Connections",
                    status.subjects.len(),
                    policy.spec.connections.len()
                ),
                generation,
                now,
            ),
        ),
        Some(problem) => (
            condition(
                INVALID,
                true,
                problem.reason,
                problem.message.clone(),
                generation,
                now,
            ),
            condition(
                READY,
                false,
                problem.reason,
                problem.message,
                generation,
                now,
            ),
        ),
    };
    set_condition(&mut status.conditions, ready);
    set_condition(&mut status.conditions, invalid);
    status
}

/// The conditions of `next` whose status differs from `previous` (or that are new).
pub fn transitions(previous: &Conditions, next: &Conditions) -> Vec<Transition> {
    next.iter()
        .filter_map(|c| {
            let before = find_condition(previous, &c.type_).map(|p| p.status.clone());
            (before.as_deref() != Some(c.status.as_str())).then(|| Transition {
                type_: c.type_.clone(),
                from: before,
                to: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
        })
        .collect()
}

/// The conditions of an object the operator cannot decode (`kind` names it):
/// `Ready` false and, for kinds that have it, `Invalid` true, both with reason
/// `Undecodable` and the decoder's error. Transition times move only on flips.
pub fn undecodable_conditions(
    kind: &str,
    error: &str,
    generation: Option<i64>,
    previous: &Conditions,
    now: &Time,
) -> Conditions {
    let message = format!(
        "the operator cannot read this {kind}: {error}; fix the field (kubectl edit) or delete and re-create the object"
    );
    let mut types = vec![(READY, false)];
    if kind == "AccessPolicy" {
        types.push((INVALID, true));
    }
    let mut out = previous.clone();
    for (type_, status) in types {
        set_condition(
            &mut out,
            condition(
                type_,
                status,
                "Undecodable",
                message.clone(),
                generation,
                now,
            ),
        );
    }
    out
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The keys the Secret must hold for the protocol, and what is wrong if not.
fn credentials_problem(
    connection: &Connection,
    secret: Option<&Secret>,
) -> Option<(&'static str, String)> {
    let name = &connection.spec.credentials.secret_ref.name;
    let Some(secret) = secret else {
        return Some((
            "SecretNotFound",
            format!(
                "Secret {name:?} (spec.credentials.secretRef) does not exist in this namespace; create it"
            ),
        ));
    };
    let has = |key: &str| secret_has(secret, key);
    let missing: Vec<String> = match connection.spec.protocol {
        Protocol::Postgres | Protocol::Mysql => ["username", "password"]
            .into_iter()
            .filter(|k| !has(k))
            .map(str::to_string)
            .collect(),
        Protocol::Http => match &connection.spec.credentials.headers {
            Some(headers) => headers.iter().filter(|h| !has(h)).cloned().collect(),
            None if secret_keys(secret).is_empty() => {
                return Some((
                    "MissingKeys",
                    format!(
                        "Secret {name:?} is empty; add one key per header to inject (e.g. Authorization)"
                    ),
                ));
            }
            None => Vec::new(),
        },
    };
    if missing.is_empty() {
        return None;
    }
    Some((
        "MissingKeys",
        format!(
            "Secret {name:?} lacks the key(s) {}; add them",
            missing.join(", ")
        ),
    ))
}

fn key_problem(
    secret: Option<&Secret>,
    name: &str,
    key: &str,
    reason: &'static str,
) -> Option<(&'static str, String)> {
    match secret {
        None => Some((
            reason,
            format!("Secret {name:?} does not exist in this namespace; create it"),
        )),
        Some(secret) if !secret_has(secret, key) => Some((
            reason,
            format!("Secret {name:?} has no key {key:?}; add it or fix the reference"),
        )),
        Some(_) => None,
    }
}

fn secret_has(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

fn secret_keys(secret: &Secret) -> Vec<&String> {
    secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn connection(protocol: &str, extra: serde_json::Value) -> Connection {
        let mut spec = serde_json::json!({
            "protocol": protocol,
            "upstream": {"host": "db", "database": "orders"},
            "credentials": {"secretRef": {"name": "creds"}},
            "listen": {"port": 15432}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Connection",
            "metadata": {"name": "orders-db", "namespace": "shop", "generation": 3},
            "spec": spec
        }))
        .unwrap()
    }

    fn secret(keys: &[&str]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn cond<'a>(conditions: &'a Conditions, type_: &str) -> &'a Condition {
        find_condition(conditions, type_).unwrap()
    }

    #[test]
    fn connection_with_its_secret_is_ready() {
        let creds = secret(&["username", "password"]);
        let facts = ConnectionFacts {
            credentials: Some(&creds),
            bound_policies: vec!["reporting".into(), "reporting".into()],
            ..Default::default()
        };
        let status = connection_status(
            &connection("postgres", serde_json::json!({})),
            &facts,
            None,
            &at(100),
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.bound_policies, vec!["reporting".to_string()]);
        let ready = cond(&status.conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(
            cond(&status.conditions, CREDENTIALS_RESOLVED).status,
            "True"
        );
    }

    #[test]
    fn a_mysql_connection_is_ready_once_served() {
        let creds = secret(&["username", "password"]);
        let facts = ConnectionFacts {
            credentials: Some(&creds),
            ..Default::default()
        };
        let status = connection_status(
            &connection("mysql", serde_json::json!({})),
            &facts,
            None,
            &at(100),
        );
        let ready = cond(&status.conditions, READY);
        // Served whole since approvals and cursors are (#24).
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert!(
            ready.message.starts_with("served on 127.0.0.1:"),
            "{}",
            ready.message
        );
        // It says what the plane refuses by design, and nothing else.
        assert!(
            ready.message.contains("COM_CHANGE_USER"),
            "{}",
            ready.message
        );
        for served in ["requireApproval", "COM_STMT_FETCH"] {
            assert!(!ready.message.contains(served), "{}", ready.message);
        }
        // The credentials themselves are fine, and say so.
        assert_eq!(
            cond(&status.conditions, CREDENTIALS_RESOLVED).status,
            "True"
        );
    }

    #[test]
    fn missing_secret_or_keys_say_which() {
        let conn = connection("postgres", serde_json::json!({}));
        let status = connection_status(&conn, &ConnectionFacts::default(), None, &at(100));
        let ready = cond(&status.conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert!(ready.message.contains("\"creds\""), "{}", ready.message);

        let creds = secret(&["username"]);
        let facts = ConnectionFacts {
            credentials: Some(&creds),
            ..Default::default()
        };
        let status = connection_status(&conn, &facts, None, &at(100));
        let resolved = cond(&status.conditions, CREDENTIALS_RESOLVED);
        assert_eq!(resolved.reason, "MissingKeys");
        assert!(
            resolved.message.contains("password"),
            "{}",
            resolved.message
        );

        let http = connection(
            "http",
            serde_json::json!({
                "upstream": {"baseURL": "https://api.example"},
                "credentials": {"secretRef": {"name": "creds"}, "headers": ["Authorization"]}
            }),
        );
        let creds = secret(&["X-Api-Key"]);
        let facts = ConnectionFacts {
            credentials: Some(&creds),
            ..Default::default()
        };
        let status = connection_status(&http, &facts, None, &at(100));
        assert!(
            cond(&status.conditions, READY)
                .message
                .contains("Authorization")
        );
    }

    #[test]
    fn ca_secret_problems_make_it_unready_but_credentials_resolved() {
        let conn = connection(
            "postgres",
            serde_json::json!({"upstream": {"host": "db", "tls": {"mode": "verify-full", "caSecretRef": {"name": "db-ca"}}}}),
        );
        let creds = secret(&["username", "password"]);
        let ca = secret(&["other.crt"]);
        let facts = ConnectionFacts {
            credentials: Some(&creds),
            ca_secret: Some(&ca),
            ..Default::default()
        };
        let status = connection_status(&conn, &facts, None, &at(100));
        assert_eq!(
            cond(&status.conditions, CREDENTIALS_RESOLVED).status,
            "True"
        );
        let ready = cond(&status.conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "CaNotFound")
        );
        assert!(ready.message.contains("ca.crt"), "{}", ready.message);
    }

    #[test]
    fn reconciling_twice_changes_nothing_and_keeps_sidecar_fields() {
        let conn = connection("postgres", serde_json::json!({}));
        let creds = secret(&["username", "password"]);
        let facts = ConnectionFacts {
            credentials: Some(&creds),
            ..Default::default()
        };
        let mut first = connection_status(&conn, &facts, None, &at(100));
        first.active_sessions = Some(4);
        let second = connection_status(&conn, &facts, Some(&first), &at(200));
        assert_eq!(
            second, first,
            "same facts, same status (transition times kept)"
        );
        assert!(transitions(&first.conditions, &second.conditions).is_empty());

        // The Secret disappears: one transition per flipped condition, new time.
        let third = connection_status(&conn, &ConnectionFacts::default(), Some(&second), &at(300));
        let flips = transitions(&second.conditions, &third.conditions);
        assert_eq!(flips.len(), 2);
        assert!(
            flips
                .iter()
                .all(|t| t.from.as_deref() == Some("True") && t.to == "False")
        );
        assert_eq!(cond(&third.conditions, READY).last_transition_time, at(300));
        assert_eq!(third.active_sessions, Some(4));
    }

    fn policy(connections: &[&str]) -> AccessPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "reporting", "namespace": "shop", "generation": 2},
            "spec": {
                "subjects": [
                    {"serviceAccount": "report-job"},
                    {"serviceAccount": "auditor", "namespace": "audit"},
                    {"group": "system:serviceaccounts:ci"}
                ],
                "connections": connections
            }
        }))
        .unwrap()
    }

    #[test]
    fn valid_policy_is_ready_with_resolved_subjects() {
        let known: BTreeSet<String> = ["orders-db".to_string()].into();
        let status = access_policy_status(&policy(&["orders-db"]), Ok(()), &known, None, &at(100));
        assert_eq!(
            status.subjects,
            vec![
                "serviceaccount:shop/report-job".to_string(),
                "serviceaccount:audit/auditor".to_string(),
                "group:system:serviceaccounts:ci".to_string()
            ]
        );
        assert_eq!(cond(&status.conditions, READY).status, "True");
        assert_eq!(cond(&status.conditions, INVALID).status, "False");
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn unknown_connection_and_compile_errors_are_named() {
        let known: BTreeSet<String> = ["orders-db".to_string()].into();
        let status = access_policy_status(
            &policy(&["orders-db", "ordres-db"]),
            Ok(()),
            &known,
            None,
            &at(100),
        );
        let invalid = cond(&status.conditions, INVALID);
        assert_eq!(
            (invalid.status.as_str(), invalid.reason.as_str()),
            ("True", "UnknownConnection")
        );
        assert!(invalid.message.contains("ordres-db"), "{}", invalid.message);
        let ready = cond(&status.conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "UnknownConnection")
        );

        let problem = PolicyProblem {
            reason: "InvalidPattern",
            message: "spec.rules[0].match.tables[0]: invalid pattern \"[\"".into(),
        };
        let status = access_policy_status(
            &policy(&["orders-db"]),
            Err(problem),
            &known,
            None,
            &at(100),
        );
        assert_eq!(cond(&status.conditions, READY).reason, "InvalidPattern");
        assert!(
            cond(&status.conditions, INVALID)
                .message
                .contains("spec.rules[0]")
        );
    }

    #[test]
    fn policy_counters_survive_reconciles() {
        let known: BTreeSet<String> = ["orders-db".to_string()].into();
        let mut first =
            access_policy_status(&policy(&["orders-db"]), Ok(()), &known, None, &at(100));
        first.counters = Some(sluice_crds::PolicyCounters {
            denied: 7,
            ..Default::default()
        });
        let second = access_policy_status(
            &policy(&["orders-db"]),
            Ok(()),
            &known,
            Some(&first),
            &at(200),
        );
        assert_eq!(second, first);
    }
}
