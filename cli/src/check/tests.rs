//! The report's text form, caBundle errors and list cutting.

use super::tls::ca_bundle_expiry;
use super::{Report, count, listed};

#[test]
fn the_text_report_marks_each_line_and_sums_up() {
    let mut report = Report::default();
    report.ok("a", "fine");
    report.warn("a", "hmm", "look");
    report.error("b", "broken", "fix it");
    let report = report.finish();
    assert!(!report.success);
    assert_eq!(
        report.text(),
        "a\n-\n✔ fine\n‼ hmm\n    look\n\nb\n-\n✖ broken\n    fix it\n\nStatus check results are ✖ (1 error, 1 warning)\n"
    );
    let mut fine = Report::default();
    fine.warn("a", "hmm", "look");
    assert!(fine.finish().success);
}

#[test]
fn a_ca_bundle_says_what_is_wrong_with_it() {
    assert_eq!(ca_bundle_expiry(b""), Err("no caBundle".to_string()));
    assert_eq!(
        ca_bundle_expiry(b"hello"),
        Err("a caBundle without a certificate".to_string())
    );
    let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(
        ca_bundle_expiry(bad)
            .unwrap_err()
            .starts_with("a caBundle certificate that does not parse")
    );
}

#[test]
fn long_lists_are_cut() {
    let names = (0..12).map(|i| format!("p{i}"));
    assert_eq!(
        listed(names),
        "p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 2 more"
    );
    assert_eq!(count(1, "pod"), "1 pod");
    assert_eq!(count(2, "pod"), "2 pods");
}
