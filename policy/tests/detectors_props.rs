//! Properties of the detectors: well-formed findings on any input, valid values
//! found in context, and one-character corruptions of checksummed values
//! never found.

use proptest::prelude::*;
use sluice_crds::Detector;
use sluice_policy::detectors::DetectorSet;

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

/// Text made of pieces that look like parts of sensitive values, so the
/// detectors' edge cases are exercised, not just their fast "no" path.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9]{1,6}",
        "[ .\\-+()@/:=_]",
        "[A-Z]{1,4}",
        "[a-z]{1,4}",
        Just("eyJ".to_string()),
        Just("AKIA".to_string()),
        Just("-----BEGIN RSA PRIVATE KEY-----".to_string()),
        Just("-----END PRIVATE KEY-----".to_string()),
        Just("secret_access_key=".to_string()),
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

fn luhn_digit(payload: &[u8]) -> u8 {
    // The check digit that makes payload+digit Luhn-valid.
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(k, d)| {
            let d = u32::from(*d);
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    u8::try_from((10 - sum % 10) % 10).unwrap_or(0)
}

/// An unseparated card number.
fn card() -> impl Strategy<Value = Vec<u8>> {
    (2u8..=6, prop::collection::vec(0u8..10, 11..=17)).prop_map(|(first, rest)| {
        let mut d = vec![first];
        d.extend(rest);
        let check = luhn_digit(&d);
        d.push(check);
        d
    })
}

fn digits(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

/// A compact IBAN.
fn iban() -> impl Strategy<Value = String> {
    ("[A-Z]{2}", "[A-Z0-9]{11,30}").prop_map(|(cc, bban)| {
        let mut rem: u32 = 0;
        for c in format!("{bban}{cc}00").bytes() {
            let v = u32::from(if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'A' + 10
            });
            rem = if v >= 10 {
                (rem * 100 + v) % 97
            } else {
                (rem * 10 + v) % 97
            };
        }
        format!("{cc}{:02}{bban}", 98 - rem)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// On any text: findings are sorted, non-overlapping, non-empty, inside the
    /// text and on character boundaries; `contains_any` agrees with `find`.
    #[test]
    fn findings_are_well_formed(text in tricky_text()) {
        let set = DetectorSet::new(&ALL);
        let found = set.find(&text);
        let mut end = 0;
        for f in &found {
            prop_assert!(f.range.start >= end, "overlap or unsorted: {:?}", found);
            prop_assert!(f.range.start < f.range.end && f.range.end <= text.len());
            prop_assert!(text.is_char_boundary(f.range.start) && text.is_char_boundary(f.range.end));
            end = f.range.end;
        }
        prop_assert_eq!(set.contains_any(&text), !found.is_empty());
        // A single detector never finds what the whole set does not cover.
        for d in ALL {
            for f in DetectorSet::new(&[d]).find(&text) {
                prop_assert!(found.iter().any(|g| g.range.start <= f.range.start && f.range.end <= g.range.end));
            }
        }
    }

    /// A valid card or IBAN between separators is found exactly.
    #[test]
    fn valid_values_are_found_in_context(
        card in card(),
        iban in iban(),
        before in "[ a-z:,;(\"]{0,6}[ :,;(\"]",
        after in "[ :,;)\"][ a-z:,;)\"]{0,6}",
    ) {
        for (d, value) in [(Detector::CreditCard, digits(&card)), (Detector::Iban, iban)] {
            let text = format!("{before}{value}{after}");
            let found: Vec<&str> = DetectorSet::new(&[d]).find(&text).into_iter().map(|f| &text[f.range]).collect();
            prop_assert_eq!(found, vec![value.as_str()]);
        }
    }

    /// Changing one digit of a card (Luhn) or one character of an IBAN (mod 97)
    /// always breaks its checksum: the result is never found.
    #[test]
    fn corrupted_checksums_are_not_found(
        card in card(),
        iban in iban(),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..10,
        letter in "[A-Z0-9]",
    ) {
        let mut bad = card.clone();
        let i = pos.index(bad.len());
        bad[i] = (bad[i] + delta) % 10;
        // The first digit must stay a network digit for this to test Luhn.
        prop_assume!((2..=6).contains(&bad[0]));
        prop_assert!(DetectorSet::new(&[Detector::CreditCard]).find(&digits(&bad)).is_empty());

        // Change one character after the country code.
        let mut chars: Vec<char> = iban.chars().collect();
        let j = 2 + pos.index(chars.len() - 2);
        let replacement = letter.chars().next().unwrap_or('0');
        prop_assume!(chars[j] != replacement);
        // Same class (digit for digit, letter for letter): a letter counts as
        // two digits, so swapping classes shifts every digit after it and may
        // land on a valid checksum by chance (1 in 97).
        prop_assume!(chars[j].is_ascii_digit() == replacement.is_ascii_digit());
        chars[j] = replacement;
        let bad: String = chars.into_iter().collect();
        prop_assert!(DetectorSet::new(&[Detector::Iban]).find(&bad).is_empty(), "{}", bad);
    }
}
