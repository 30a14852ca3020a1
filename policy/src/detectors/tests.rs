//! Unit tests of the detectors, with their property tests.

use sluice_crds::Detector;

use super::{DetectorSet, Finding, PATTERNS};

fn set(d: Detector) -> DetectorSet {
    DetectorSet::new(&[d])
}

fn found(d: Detector, text: &str) -> Vec<&str> {
    set(d)
        .find(text)
        .into_iter()
        .map(|f| &text[f.range])
        .collect()
}

/// Each positive example holds exactly one value to find (the bracketed part
/// when brackets are used, otherwise the whole text); each negative none.
fn check(d: Detector, positives: &[(&str, &str)], negatives: &[&str]) {
    for (text, want) in positives {
        assert_eq!(
            found(d, text),
            vec![*want],
            "{d:?} should find {want:?} in {text:?}"
        );
    }
    for text in negatives {
        assert_eq!(
            found(d, text),
            Vec::<&str>::new(),
            "{d:?} should find nothing in {text:?}"
        );
    }
}

#[test]
fn every_built_in_pattern_compiles() {
    let p = &*PATTERNS;
    for (name, re) in [
        ("ssn", &p.ssn),
        ("email", &p.email),
        ("phone_intl", &p.phone_intl),
        ("phone_nanp", &p.phone_nanp),
        ("iban", &p.iban),
        ("jwt", &p.jwt),
        ("aws_key_id", &p.aws_key_id),
        ("aws_secret", &p.aws_secret),
        ("pem_begin", &p.pem_begin),
        ("pem_end", &p.pem_end),
    ] {
        assert!(re.is_some(), "pattern {name} does not compile");
    }
}

#[test]
fn credit_cards() {
    check(
        Detector::CreditCard,
        &[
            ("4111111111111111", "4111111111111111"),
            ("card: 4111 1111 1111 1111.", "4111 1111 1111 1111"),
            ("5500-0000-0000-0004 exp 12/29", "5500-0000-0000-0004"),
            ("amex 378282246310005", "378282246310005"),
            ("visa13 4222222222222 ok", "4222222222222"),
            ("ref 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
            ("(6011111111111117)", "6011111111111117"),
            ("\"n\":\"3530111333300000\"", "3530111333300000"),
        ],
        &[
            "4111111111111112",        // Luhn fails
            "4111 1111 1111 1112",     // Luhn fails, grouped
            "41111111111111111111111", // part of a longer digit run
            "1700000000000",           // epoch millis: leading 1
            "0.30000000000000004",     // a decimal fraction
            "x4111111111111111",       // glued to a letter
            "4111111111111111abc",     // glued to letters
            "4111  1111 1111 1111",    // double space breaks the group run
            "411111111111",            // 12 digits
            "no digits here at all",
        ],
    );
}

#[test]
fn ssns() {
    check(
        Detector::Ssn,
        &[
            ("123-45-6789", "123-45-6789"),
            ("ssn=078-05-1120;", "078-05-1120"),
            ("(665-12-3456)", "665-12-3456"),
        ],
        &[
            "000-12-3456",   // area 000
            "666-12-3456",   // area 666
            "912-12-3456",   // area 9xx
            "123-00-4567",   // group 00
            "123-45-0000",   // serial 0000
            "123456789",     // undashed: not detected (documented)
            "1-123-45-6789", // part of a longer dashed number
            "123-45-6789-1", // part of a longer dashed number
            "2024-01-15",    // a date
        ],
    );
}

#[test]
fn emails() {
    check(
        Detector::Email,
        &[
            ("alice@example.com", "alice@example.com"),
            (
                "to: <bob.smith+tag@mail.example.co.uk>",
                "bob.smith+tag@mail.example.co.uk",
            ),
            ("x_y%z-1@sub-domain.io, next", "x_y%z-1@sub-domain.io"),
        ],
        &[
            "@example.com",
            "alice@",
            "alice@localhost",
            "a@b.c",
            "user at example dot com",
        ],
    );
}

#[test]
fn phones() {
    check(
        Detector::Phone,
        &[
            ("+14155552671", "+14155552671"),
            ("call +44 20 7946 0958 now", "+44 20 7946 0958"),
            ("+1 (415) 555-2671", "+1 (415) 555-2671"),
            ("(415) 555-2671", "(415) 555-2671"),
            ("tel 415-555-2671.", "415-555-2671"),
            ("415.555.2671", "415.555.2671"),
            ("1-800-555-0199", "1-800-555-0199"),
        ],
        &[
            "2024",              // a year
            "order 4155552671",  // bare digits
            "2024-01-15",        // a date
            "+1234567",          // too short for E.164
            "+1234567890123456", // too long for E.164
            "10.0.0.1",          // an address
            "123-45-6789",       // an SSN layout
            "v1.2.3-4",
            "x+14155552671", // glued to a letter
        ],
    );
}

#[test]
fn ibans() {
    check(
        Detector::Iban,
        &[
            ("DE89370400440532013000", "DE89370400440532013000"),
            (
                "iban: DE89 3704 0044 0532 0130 00 EUR",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
            ("NO9386011117947", "NO9386011117947"),
        ],
        &[
            "DE89370400440532013001", // wrong checksum
            "GB82 WEST 1234 5698 7654 33",
            "DE8937040044",            // too short
            "de89370400440532013000",  // lower case (documented)
            "XDE89370400440532013000", // glued to a letter
            "ORDER12345678901234",
        ],
    );
}

#[test]
fn jwts() {
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    let bearer = format!("Authorization: Bearer {token}");
    check(
        Detector::Jwt,
        &[(token, token), (&bearer, token), (unsigned, unsigned)],
        &[
            // header {"foo":"bar"}: no alg
            "eyJmb28iOiJiYXIifQ.eyJzdWIiOiJ4In0.c2ln",
            // random base64url in three parts
            "eyJxxxxxxxxxxxxxxxx.yyyyyyyyyy.zzzzzzzz",
            "abc.def.ghi",
            // only two parts
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",
        ],
    );
}

#[test]
fn aws_keys() {
    check(
        Detector::AwsKey,
        &[
            ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            ("key=ASIAY34FZKBOKMUTVV7A;", "ASIAY34FZKBOKMUTVV7A"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            (
                r#"{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#,
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
        ],
        &[
            "AKIAIOSFODNN7EXAMPL",   // 15 after the prefix
            "AKIAIOSFODNN7EXAMPLEX", // glued: too long
            "AKIDIOSFODNN7EXAMPLE",  // unknown prefix
            "akiaiosfodnn7example",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", // unlabelled secret (documented)
            "secret: short",
        ],
    );
}

#[test]
fn private_keys() {
    let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----";
    let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----";
    let in_text = format!("key:\n{rsa}\ntrailing");
    let truncated = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB";
    check(
        Detector::PrivateKey,
        &[
            (rsa, rsa),
            (pkcs8, pkcs8),
            (openssh, openssh),
            (&in_text, rsa),
            (truncated, truncated),
        ],
        &[
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "BEGIN RSA PRIVATE KEY",
        ],
    );
}

#[test]
fn overlapping_findings_merge_and_stay_sorted() {
    let all = DetectorSet::new(&[Detector::Email, Detector::Phone, Detector::CreditCard]);
    let text = "x +14155552671 and 4111111111111111 and a@example.com";
    let got: Vec<(&str, Detector)> = all
        .find(text)
        .into_iter()
        .map(|f| (&text[f.range], f.detector))
        .collect();
    assert_eq!(
        got,
        vec![
            ("+14155552671", Detector::Phone),
            ("4111111111111111", Detector::CreditCard),
            ("a@example.com", Detector::Email),
        ]
    );
    // "+4222222222222" is both an E.164 number and a (13-digit) card: one
    // finding, attributed to the detector whose span starts first.
    let both = "+4222222222222";
    let f = all.find(both);
    assert_eq!(
        f,
        vec![Finding {
            range: 0..both.len(),
            detector: Detector::Phone
        }]
    );
}

#[test]
fn hash_mask_output_is_never_a_finding() {
    let all = DetectorSet::new(&[Detector::CreditCard]);
    // Digests whose leading or trailing digits are a Luhn-valid card number.
    assert!(all.contains_any("4111111111111111"));
    assert!(!all.contains_any("hmac:4111111111111111abcdefabcdefabcd"));
    assert!(!all.contains_any("hmac:abcdefabcdefabcd4111111111111111"));
    assert!(all.contains_any("hmac:abcdefabcdefabcd4111111111111111 4111111111111111"));
}

#[test]
fn empty_set_finds_nothing_and_cheap_texts_are_skipped() {
    let none = DetectorSet::new(&[]);
    assert!(none.is_empty());
    assert!(none.find("4111111111111111 a@example.com").is_empty());
    let all = DetectorSet::new(&[
        Detector::CreditCard,
        Detector::Ssn,
        Detector::Email,
        Detector::Phone,
        Detector::Iban,
        Detector::Jwt,
        Detector::AwsKey,
        Detector::PrivateKey,
    ]);
    assert!(!all.is_empty());
    assert!(!all.contains_any("shipped, awaiting pickup at the depot"));
    assert!(all.contains_any("é 4111111111111111 ü"));
}

#[test]
fn values_next_to_non_ascii_letters_are_found() {
    for (d, value) in [
        (Detector::CreditCard, "4111111111111111"),
        (Detector::Ssn, "123-45-6789"),
        (Detector::Email, "alice@example.com"),
        (Detector::Phone, "415-555-2671"),
        (Detector::Iban, "DE89370400440532013000"),
        (Detector::AwsKey, "AKIAIOSFODNN7EXAMPLE"),
    ] {
        let text = format!("é{value}ü");
        assert_eq!(found(d, &text), vec![value], "{d:?} in {text:?}");
    }
}

#[test]
fn findings_are_on_char_boundaries() {
    let all = DetectorSet::new(&[Detector::Email, Detector::CreditCard]);
    let text = "ünïcödé→alice@example.com←4111111111111111…";
    for f in all.find(text) {
        assert!(text.is_char_boundary(f.range.start) && text.is_char_boundary(f.range.end));
    }
    assert_eq!(all.find(text).len(), 2);
}

mod precheck {
    use proptest::prelude::*;

    use super::*;
    use crate::masker::tests::detector_value;

    const ALL: [Detector; 8] = [
        Detector::CreditCard,
        Detector::Ssn,
        Detector::Email,
        Detector::Phone,
        Detector::Iban,
        Detector::Jwt,
        Detector::AwsKey,
        Detector::PrivateKey,
    ];

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            detector_value().prop_map(|(_, v)| v),
            "[0-9]{1,5}",
            "[ .\\-+()@/:=_]",
            "[A-Z]{1,3}",
            "[a-z]{1,3}",
            "\\PC",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The pre-check only skips work: with or without it, `find` agrees.
        #[test]
        fn precheck_never_hides_a_finding(pieces in prop::collection::vec(piece(), 0..8)) {
            let text = pieces.concat();
            let set = DetectorSet::new(&ALL);
            prop_assert_eq!(set.find(&text), set.find_everything(&text), "{:?}", text);
        }
    }
}
