//! Masking JSON values in place by JSONPath and detectors: HTTP bodies whole
//! (the sidecar's streaming masker walks the same [`JsonPath`] states).

use serde_json::Value;

use crate::detectors::DetectorSet;
use crate::masker::Masker;

use crate::json_path::{JsonPath, PathSegment, PathState};

/// Masks `value` in place and returns how many values were masked.
///
/// `paths` pairs each JSONPath with the index of its masker in `maskers`; when
/// several select the same value, the first in `paths` wins. A selected string
/// is masked as a whole; a number or boolean becomes the masked string of its
/// text (`42` → `"[redacted]"`); in a selected object or array every string,
/// number and boolean inside is masked (the shape stays); `null` stays `null`
/// (it reveals nothing). Every other string, and the text of every other
/// number (a card number stored as a JSON number), is then searched with
/// `detectors` (if given) and its findings masked with that masker (a number
/// with a finding becomes a string). Object keys in which a detector finds
/// something are masked the same way (paths match the original keys; a masked
/// key equal to another key gets a `#2`, `#3`… suffix). A masker index out
/// of range redacts.
pub fn mask_json(
    value: &mut Value,
    paths: &[(JsonPath, usize)],
    maskers: &[Masker],
    detectors: Option<(&DetectorSet, usize)>,
) -> usize {
    let detectors = detectors.filter(|(set, _)| !set.is_empty());
    let states: Vec<PathState> = paths.iter().map(|(p, _)| p.start()).collect();
    let mut walk = JsonMasking {
        paths,
        maskers,
        detectors,
        fallback: Masker::redact(),
        count: 0,
    };
    walk.node(value, &states);
    walk.count
}

struct JsonMasking<'a> {
    paths: &'a [(JsonPath, usize)],
    maskers: &'a [Masker],
    detectors: Option<(&'a DetectorSet, usize)>,
    fallback: Masker,
    count: usize,
}

impl JsonMasking<'_> {
    fn masker(&self, index: usize) -> &Masker {
        self.maskers.get(index).unwrap_or(&self.fallback)
    }

    fn node(&mut self, value: &mut Value, states: &[PathState]) {
        let selected = self
            .paths
            .iter()
            .zip(states)
            .find(|((p, _), s)| p.is_match(**s))
            .map(|((_, m), _)| *m);
        if let Some(m) = selected {
            let masked = mask_all(value, self.masker(m));
            self.count += masked;
            return;
        }
        let live = states.iter().any(|s| !s.is_dead());
        match value {
            Value::Object(map) => {
                let sensitive_keys = self
                    .detectors
                    .is_some_and(|(set, _)| map.keys().any(|k| set.contains_any(k)));
                if sensitive_keys {
                    self.object_with_masked_keys(map, states, live);
                } else {
                    for (k, child) in map.iter_mut() {
                        let next = self.advance(states, live, PathSegment::Key(k));
                        self.node(child, &next);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    let next = self.advance(states, live, PathSegment::Index(i));
                    self.node(child, &next);
                }
            }
            Value::String(s) => {
                if let Some((set, m)) = self.detectors {
                    let findings = set.find(s);
                    if !findings.is_empty() {
                        *s = self.masker(m).mask_findings(s, &findings);
                        self.count += 1;
                    }
                }
            }
            Value::Number(n) => {
                if let Some((set, m)) = self.detectors {
                    let text = n.to_string();
                    let findings = set.find(&text);
                    if !findings.is_empty() {
                        *value = Value::String(self.masker(m).mask_findings(&text, &findings));
                        self.count += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// An object keyed by sensitive values (`{"alice@example.com": {…}}`): the
    /// keys are masked too. Paths still match the original keys. A masked key
    /// that equals another key gets a `#2`, `#3`… suffix, so no entry is lost.
    fn object_with_masked_keys(
        &mut self,
        map: &mut serde_json::Map<String, Value>,
        states: &[PathState],
        live: bool,
    ) {
        let Some((set, m)) = self.detectors else {
            return;
        };
        let old = std::mem::take(map);
        let original: std::collections::BTreeSet<String> = old.keys().cloned().collect();
        for (k, mut child) in old {
            let next = self.advance(states, live, PathSegment::Key(&k));
            self.node(&mut child, &next);
            let findings = set.find(&k);
            let key = if findings.is_empty() {
                k
            } else {
                self.count += 1;
                let masked = self.masker(m).mask_findings(&k, &findings);
                let taken = |c: &String| original.contains(c) || map.contains_key(c);
                let mut candidate = masked.clone();
                let mut n = 2;
                while taken(&candidate) {
                    candidate = format!("{masked}#{n}");
                    n += 1;
                }
                candidate
            };
            map.insert(key, child);
        }
    }

    pub(super) fn advance(
        &self,
        states: &[PathState],
        live: bool,
        seg: PathSegment<'_>,
    ) -> Vec<PathState> {
        if !live {
            return states.to_vec();
        }
        self.paths
            .iter()
            .zip(states)
            .map(|((p, _), s)| p.advance(*s, seg))
            .collect()
    }
}

/// Masks every leaf of `value`; returns how many.
fn mask_all(value: &mut Value, masker: &Masker) -> usize {
    match value {
        Value::String(s) => {
            *s = masker.mask(s);
            1
        }
        Value::Number(n) => {
            *value = Value::String(masker.mask(&n.to_string()));
            1
        }
        Value::Bool(b) => {
            *value = Value::String(masker.mask(if *b { "true" } else { "false" }));
            1
        }
        Value::Null => 0,
        Value::Array(items) => items.iter_mut().map(|v| mask_all(v, masker)).sum(),
        Value::Object(map) => map.values_mut().map(|v| mask_all(v, masker)).sum(),
    }
}
