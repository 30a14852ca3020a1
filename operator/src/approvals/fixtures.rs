//! The AccessRequest the approvals unit tests share (rules, controller,
//! notifications), built the way the gateway files one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use sluice_crds::{
    AccessRequest, AccessRequestStatus, Approval, ApprovalMode, Approvers, Command, RequestPhase,
    Requester,
};

use crate::approvals::rules::{Ask, new_request};

/// The tests' clock: `s` seconds after a fixed instant.
pub(crate) fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// A request filed at t(0), expiring at t(60): `shop/report-job` (pod
/// `report-1`) asks to run `DELETE FROM orders` on `orders-db` under rule
/// `bulk` of AccessPolicy `reporting`; approvers `carol` and the group
/// `dba`, `min` of them; named `orders-db-x`; Pending.
pub(crate) fn request(min: u32) -> AccessRequest {
    let approval = Approval {
        approvers: Approvers {
            users: vec!["carol".into()],
            groups: vec!["dba".into()],
        },
        timeout: "15m".into(),
        mode: ApprovalMode::Hold,
        min_approvals: min,
    };
    let command = Command {
        text: "DELETE FROM orders".into(),
        statement: None,
        truncated: false,
        fingerprint: "abc".into(),
        sha256: "a".repeat(64),
    };
    let ask = Ask {
        connection: "orders-db",
        policy: "reporting",
        rule: "bulk",
        command: &command,
        reason: None,
    };
    let requester = Requester {
        service_account: "report-job".into(),
        namespace: "shop".into(),
        pod: Some("report-1".into()),
        groups: vec!["system:serviceaccounts".into()],
    };
    let mut ar = new_request(&ask, requester, &approval, Duration::from_secs(60), t(0));
    ar.metadata.name = Some("orders-db-x".into());
    ar.status = Some(AccessRequestStatus {
        phase: Some(RequestPhase::Pending),
        ..Default::default()
    });
    ar
}

/// `ar` in `phase`, with the Ready condition a phase change leaves when
/// `ready` is given (`(s, reason, message)`: changed at t(s)).
pub(crate) fn in_phase(
    mut ar: AccessRequest,
    phase: Option<RequestPhase>,
    ready: Option<(i64, &str, &str)>,
) -> AccessRequest {
    ar.status = Some(AccessRequestStatus {
        phase,
        conditions: ready
            .map(|(s, reason, message)| Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: None,
                last_transition_time: Time(t(s)),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    });
    ar
}
