use super::*;
use crate::approvals::fixtures::{request, t};
use sluice_crds::ApprovalMode;

fn who(user: &str, groups: &[&str]) -> Approver {
    Approver {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn with_decision(ar: &AccessRequest, user: &str, verdict: Verdict) -> AccessRequest {
    let mut new = ar.clone();
    new.status
        .get_or_insert_with(Default::default)
        .decisions
        .push(RequestDecision {
            user: user.into(),
            groups: vec![],
            verdict,
            time: Time(t(0)),
            comment: Some("ok".into()),
        });
    new
}

#[test]
fn the_decision_is_bound_to_the_admission_user() {
    let old = request(1);
    let new = with_decision(&old, "mallory-typed-this", Verdict::Approve);
    let bound = bind_decisions(&old, &new, &who("alice", &["dba"]), "op", t(5)).unwrap();
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0].user, "alice");
    assert_eq!(bound[0].groups, vec!["dba".to_string()]);
    assert_eq!(bound[0].time, Time(t(5)));
    assert_eq!(bound[0].comment.as_deref(), Some("ok"));
    // Named users approve too, without a group.
    assert!(bind_decisions(&old, &new, &who("carol", &[]), "op", t(5)).is_ok());
}

#[test]
fn outsiders_the_requester_and_late_or_repeat_decisions_are_refused() {
    let old = request(2);
    let new = with_decision(&old, "x", Verdict::Approve);
    let refuse = |old: &AccessRequest, new: &AccessRequest, w: Approver, now| -> DecisionRefusal {
        bind_decisions(old, new, &w, "op", now).unwrap_err()
    };
    let e = refuse(&old, &new, who("bob", &["dev"]), t(1));
    assert!(matches!(e, DecisionRefusal::NotAnApprover { .. }));
    assert!(e.to_string().contains("bob is not an approver"));
    assert!(e.to_string().contains("group dba"));
    let e = refuse(
        &old,
        &new,
        who("system:serviceaccount:shop:report-job", &["dba"]),
        t(1),
    );
    assert!(matches!(e, DecisionRefusal::SelfDecision { .. }));
    let e = refuse(&old, &new, who("alice", &["dba"]), t(60));
    assert!(matches!(e, DecisionRefusal::Expired { .. }));

    let once = with_decision(&old, "alice", Verdict::Approve);
    let twice = with_decision(&once, "alice", Verdict::Approve);
    let e = refuse(&once, &twice, who("alice", &["dba"]), t(2));
    assert!(matches!(e, DecisionRefusal::AlreadyDecided { .. }));

    let mut decided = old.clone();
    decided.status.as_mut().unwrap().phase = Some(RequestPhase::Denied);
    let e = refuse(
        &decided,
        &with_decision(&decided, "y", Verdict::Approve),
        who("alice", &["dba"]),
        t(1),
    );
    assert!(matches!(e, DecisionRefusal::NotPending { .. }));

    let two = with_decision(
        &with_decision(&old, "a", Verdict::Approve),
        "b",
        Verdict::Approve,
    );
    let e = refuse(&old, &two, who("alice", &["dba"]), t(1));
    assert!(matches!(
        e,
        DecisionRefusal::TooManyDecisions { count: 2, .. }
    ));
}

#[test]
fn recorded_decisions_and_the_phase_are_not_for_approvers_to_change() {
    let old = with_decision(&request(2), "alice", Verdict::Approve);
    let mut edited = old.clone();
    edited.status.as_mut().unwrap().decisions[0].verdict = Verdict::Deny;
    let e = bind_decisions(&old, &edited, &who("carol", &[]), "op", t(1)).unwrap_err();
    assert!(matches!(e, DecisionRefusal::DecisionsRewritten { .. }));
    let mut removed = old.clone();
    removed.status.as_mut().unwrap().decisions.clear();
    let e = bind_decisions(&old, &removed, &who("op", &[]), "op", t(1)).unwrap_err();
    assert!(matches!(e, DecisionRefusal::DecisionsRewritten { .. }));

    let mut approved = old.clone();
    approved.status.as_mut().unwrap().phase = Some(RequestPhase::Approved);
    let e = bind_decisions(&old, &approved, &who("alice", &["dba"]), "op", t(1)).unwrap_err();
    assert!(matches!(e, DecisionRefusal::NotTheOperator { .. }));
    // The operator moves the phase but never decides.
    assert!(bind_decisions(&old, &approved, &who("op", &[]), "op", t(1)).is_ok());
    let e = bind_decisions(
        &old,
        &with_decision(&old, "op", Verdict::Approve),
        &who("op", &[]),
        "op",
        t(1),
    )
    .unwrap_err();
    assert!(matches!(e, DecisionRefusal::OperatorDecision { .. }));
    assert!(check_create(&who("alice", &["dba"]), "op").is_err());
    assert!(check_create(&who("op", &[]), "op").is_ok());
}

#[test]
fn phases_follow_decisions_and_time() {
    let mut fresh = request(2);
    fresh.status = None;
    let (change, requeue) = next_phase(&fresh, t(0));
    assert_eq!(change.unwrap().to, RequestPhase::Pending);
    assert_eq!(requeue, Some(Duration::from_secs(60)));

    let pending = request(2);
    assert_eq!(
        next_phase(&pending, t(10)),
        (None, Some(Duration::from_secs(50)))
    );
    let one = with_decision(&pending, "alice", Verdict::Approve);
    assert_eq!(next_phase(&one, t(10)).0, None, "minApprovals 2 needs two");
    let same_twice = with_decision(&one, "alice", Verdict::Approve);
    assert_eq!(next_phase(&same_twice, t(10)).0, None, "distinct approvers");
    let two = with_decision(&one, "carol", Verdict::Approve);
    let change = next_phase(&two, t(10)).0.unwrap();
    assert_eq!(change.to, RequestPhase::Approved);
    assert_eq!(change.note, "approved by alice, carol");

    let denied = with_decision(&one, "carol", Verdict::Deny);
    let change = next_phase(&denied, t(10)).0.unwrap();
    assert_eq!(change.to, RequestPhase::Denied);
    assert!(change.note.contains("carol"));

    assert_eq!(
        next_phase(&pending, t(60)).0.unwrap().to,
        RequestPhase::Expired
    );
    let mut approved = pending.clone();
    approved.status.as_mut().unwrap().phase = Some(RequestPhase::Approved);
    assert_eq!(
        next_phase(&approved, t(30)),
        (None, Some(Duration::from_secs(30)))
    );
    assert_eq!(
        next_phase(&approved, t(61)).0.unwrap().to,
        RequestPhase::Expired
    );
    let mut executed = pending.clone();
    executed.status.as_mut().unwrap().phase = Some(RequestPhase::Executed);
    assert_eq!(next_phase(&executed, t(100)), (None, None));
}

#[test]
fn timeouts_parse() {
    assert_eq!(parse_timeout("15m"), Some(Duration::from_secs(900)));
    assert_eq!(parse_timeout("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_timeout("2s"), Some(Duration::from_secs(2)));
    assert_eq!(parse_timeout("500ms"), Some(Duration::from_millis(500)));
    for bad in ["", "m", "15", "15x", "-1s", "1.5m"] {
        assert_eq!(parse_timeout(bad), None, "{bad:?}");
    }
}

/// Service-account names up to 253 characters make valid label values
/// (#19 item 9): stable, distinct for names sharing a prefix, the full name
/// in the annotation; names that fit are kept as they are.
#[test]
fn long_requester_names_make_valid_stable_labels() {
    let valid = |v: &str| {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let long = format!("{}.{}", "a".repeat(44), "b".repeat(208));
    assert_eq!(long.len(), 253);
    let sibling = format!("{}.{}c", "a".repeat(44), "b".repeat(207));
    let value = requester_label_value(&long);
    assert!(valid(&value), "{value:?}");
    assert_eq!(value, requester_label_value(&long));
    assert_ne!(value, requester_label_value(&sibling));
    assert_eq!(requester_label_value("report-job"), "report-job");
    let mut ar = request(1);
    ar.spec.requester.service_account = long.clone();
    let ar = new_request(
        &Ask {
            connection: "orders-db",
            policy: "reporting",
            rule: "bulk",
            command: &ar.spec.command,
            reason: None,
        },
        ar.spec.requester.clone(),
        &Approval {
            approvers: ar.spec.approvers.clone(),
            timeout: "15m".into(),
            mode: ApprovalMode::Hold,
            min_approvals: 1,
        },
        Duration::from_secs(60),
        t(0),
    );
    let labels = ar.metadata.labels.unwrap();
    assert!(labels.values().all(|v| valid(v)), "{labels:?}");
    assert_eq!(labels[REQUESTER_LABEL], value);
    assert_eq!(ar.metadata.annotations.unwrap()[REQUESTER_LABEL], long);
}

#[test]
fn duplicates_are_found_by_requester_and_hash() {
    let ar = request(1);
    let r = ar.spec.requester.clone();
    assert!(is_reusable(&ar, &r, &"a".repeat(64), t(1)));
    assert!(!is_reusable(&ar, &r, &"b".repeat(64), t(1)));
    assert!(!is_reusable(&ar, &r, &"a".repeat(64), t(60)));
    let other = Requester {
        service_account: "other".into(),
        ..r.clone()
    };
    assert!(!is_reusable(&ar, &other, &"a".repeat(64), t(1)));
    assert_eq!(ar.metadata.labels.unwrap()[COMMAND_LABEL], "a".repeat(32));
}
