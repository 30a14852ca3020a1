//! The JSONPath subset rules and masking use, with a streaming matcher state.
//!
//! The subset: `$`, `.name`, `['name']` / `["name"]`, `[0]`, `[*]`, `.*`, and
//! recursive descent `..name`, `..*`, `..[0]`. No filters, slices, unions or
//! negative indexes (they are refused with the position of the problem).

use serde_json::Value;

/// The longest JSONPath accepted, in bytes.
const MAX_JSON_PATH_LEN: usize = 1024;
/// The most steps a JSONPath may have (the matcher keeps its state in a `u64`).
const MAX_JSON_PATH_STEPS: usize = 63;

/// A JSONPath does not parse. The message names the field, the path and the
/// position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: invalid JSONPath {path:?} at character {position}: {reason}")]
pub struct JsonPathError {
    /// The field, e.g. `jsonBody[0].path` (`jsonPath` when parsed on its own).
    pub field: String,
    /// The path as written.
    pub path: String,
    /// 0-based character offset of the problem.
    pub position: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// One step of a concrete location in a JSON document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathSegment<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

/// A parsed JSONPath (the subset described in the module documentation).
///
/// Besides selecting values from a whole document, it matches locations one
/// segment at a time ([`JsonPath::start`], [`JsonPath::advance`]), so a
/// streaming masker can decide as it reads without keeping the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    /// `..`: the selector may apply at any depth below the current node.
    descendant: bool,
    selector: Selector,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    Key(String),
    Index(usize),
    Wildcard,
}

impl Selector {
    fn accepts(&self, seg: PathSegment<'_>) -> bool {
        match (self, seg) {
            (Selector::Wildcard, _) => true,
            (Selector::Key(k), PathSegment::Key(s)) => k == s,
            (Selector::Index(i), PathSegment::Index(j)) => *i == j,
            _ => false,
        }
    }
}

/// Where a location stands against a [`JsonPath`]: the set of steps reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathState(u64);

impl PathState {
    /// Whether no continuation of the location can match any more.
    pub fn is_dead(self) -> bool {
        self.0 == 0
    }
}

impl JsonPath {
    /// Parses `text`, e.g. `$.customer.email`, `$.items[*].card`, `$..email`.
    pub fn parse(text: &str) -> Result<Self, JsonPathError> {
        Self::parse_field(text, "jsonPath")
    }

    pub(crate) fn parse_field(text: &str, field: &str) -> Result<Self, JsonPathError> {
        parse_steps(text)
            .map(|steps| JsonPath {
                text: text.to_string(),
                steps,
            })
            .map_err(|(position, reason)| JsonPathError {
                field: field.to_string(),
                path: text.to_string(),
                position,
                reason,
            })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The member of the root the path starts with (`$.a.b`: `"a"`); `None`
    /// when it starts otherwise (`$`, `$..a`, `$.*`, `$[0]`).
    pub fn root_key(&self) -> Option<&str> {
        match self.steps.first() {
            Some(Step {
                descendant: false,
                selector: Selector::Key(k),
            }) => Some(k),
            _ => None,
        }
    }

    /// Whether the path's first step selects array elements (`$[0]`,
    /// `$[0].a`).
    pub fn starts_with_index(&self) -> bool {
        matches!(
            self.steps.first(),
            Some(Step {
                descendant: false,
                selector: Selector::Index(_),
            })
        )
    }

    /// Every member name the path selects by, at any step.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(|s| match &s.selector {
            Selector::Key(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// The values `self` selects in `v` (document order; empty when none).
    pub fn select<'v>(&self, v: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![v];
        for step in &self.steps {
            let candidates = if step.descendant {
                let mut all = Vec::new();
                for c in current {
                    descendants_or_self(c, &mut all);
                }
                all
            } else {
                current
            };
            let mut next = Vec::new();
            for c in candidates {
                match (&step.selector, c) {
                    (Selector::Key(k), Value::Object(m)) => next.extend(m.get(k)),
                    (Selector::Index(i), Value::Array(a)) => next.extend(a.get(*i)),
                    (Selector::Wildcard, Value::Object(m)) => next.extend(m.values()),
                    (Selector::Wildcard, Value::Array(a)) => next.extend(a.iter()),
                    _ => {}
                }
            }
            current = next;
        }
        current
    }

    /// The state of the document root.
    pub fn start(&self) -> PathState {
        PathState(1)
    }

    /// The state after descending from a node in `state` into `seg`.
    pub fn advance(&self, state: PathState, seg: PathSegment<'_>) -> PathState {
        let mut next = 0u64;
        for (i, step) in self.steps.iter().enumerate() {
            if state.0 & (1 << i) == 0 {
                continue;
            }
            if step.descendant {
                // `..` may skip this segment and apply further down.
                next |= 1 << i;
            }
            if step.selector.accepts(seg) {
                next |= 1 << (i + 1);
            }
        }
        PathState(next)
    }

    /// Whether a node in `state` is selected by the path.
    pub fn is_match(&self, state: PathState) -> bool {
        state.0 & (1 << self.steps.len()) != 0
    }

    /// Whether the value at `location` (from the root) is selected by the path.
    pub fn matches_location(&self, location: &[PathSegment<'_>]) -> bool {
        let state = location
            .iter()
            .fold(self.start(), |s, seg| self.advance(s, *seg));
        self.is_match(state)
    }

    /// Whether the value at `location`, or one of its ancestors, is selected (a
    /// value inside a masked object or array is masked too).
    pub fn covers_location(&self, location: &[PathSegment<'_>]) -> bool {
        let mut state = self.start();
        if self.is_match(state) {
            return true;
        }
        for seg in location {
            state = self.advance(state, *seg);
            if self.is_match(state) {
                return true;
            }
        }
        false
    }
}

fn descendants_or_self<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    out.push(v);
    match v {
        Value::Object(m) => m.values().for_each(|c| descendants_or_self(c, out)),
        Value::Array(a) => a.iter().for_each(|c| descendants_or_self(c, out)),
        _ => {}
    }
}

type ParseError = (usize, &'static str);

fn parse_steps(text: &str) -> Result<Vec<Step>, ParseError> {
    if text.len() > MAX_JSON_PATH_LEN {
        return Err((
            MAX_JSON_PATH_LEN,
            "the path is too long (at most 1024 bytes)",
        ));
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.first() != Some(&'$') {
        return Err((0, "a JSONPath starts with '$'"));
    }
    let mut steps = Vec::new();
    let mut i = 1;
    while i < chars.len() {
        let descendant;
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                descendant = true;
                i += 2;
                if chars.get(i) == Some(&'[') {
                    let (sel, next) = parse_bracket(&chars, i)?;
                    steps.push(Step {
                        descendant,
                        selector: sel,
                    });
                    i = next;
                    continue;
                }
            }
            '.' => {
                descendant = false;
                i += 1;
            }
            '[' => {
                let (sel, next) = parse_bracket(&chars, i)?;
                steps.push(Step {
                    descendant: false,
                    selector: sel,
                });
                i = next;
                continue;
            }
            _ => return Err((i, "expected '.', '..' or '['")),
        }
        // A dotted name or `*`.
        if chars.get(i) == Some(&'*') {
            steps.push(Step {
                descendant,
                selector: Selector::Wildcard,
            });
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !matches!(chars[i], '.' | '[' | ']' | '*' | '\'' | '"' | ' ') {
            i += 1;
        }
        if i == start {
            return Err((i, "expected a member name or '*' after '.'"));
        }
        steps.push(Step {
            descendant,
            selector: Selector::Key(chars[start..i].iter().collect()),
        });
    }
    if steps.len() > MAX_JSON_PATH_STEPS {
        return Err((chars.len(), "the path has too many steps (at most 63)"));
    }
    Ok(steps)
}

/// Parses `[...]` starting at `chars[i] == '['`; returns the selector and the
/// index after `]`.
fn parse_bracket(chars: &[char], i: usize) -> Result<(Selector, usize), ParseError> {
    let mut j = i + 1;
    let sel = match chars.get(j) {
        Some('*') => {
            j += 1;
            Selector::Wildcard
        }
        Some(&q @ ('\'' | '"')) => {
            j += 1;
            let mut name = String::new();
            loop {
                match chars.get(j) {
                    None => return Err((j, "unterminated quoted name")),
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some(&c @ ('\\' | '\'' | '"')) => name.push(c),
                            _ => return Err((j, "unsupported escape in a quoted name")),
                        }
                        j += 2;
                    }
                    Some(&c) if c == q => {
                        j += 1;
                        break;
                    }
                    Some(&c) => {
                        name.push(c);
                        j += 1;
                    }
                }
            }
            Selector::Key(name)
        }
        Some(c) if c.is_ascii_digit() => {
            let start = j;
            while chars.get(j).is_some_and(char::is_ascii_digit) {
                j += 1;
            }
            let digits: String = chars[start..j].iter().collect();
            let index = digits
                .parse::<usize>()
                .map_err(|_| (start, "array index too large"))?;
            Selector::Index(index)
        }
        Some('-') => return Err((j, "negative indexes are not supported")),
        Some('?') => return Err((j, "filters are not supported")),
        _ => return Err((j, "expected '*', a quoted name or an index after '['")),
    };
    match chars.get(j) {
        Some(']') => Ok((sel, j + 1)),
        Some(',') => Err((j, "unions are not supported; write one path per value")),
        Some(':') => Err((j, "slices are not supported")),
        _ => Err((j, "expected ']'")),
    }
}

// === masking JSON ===
