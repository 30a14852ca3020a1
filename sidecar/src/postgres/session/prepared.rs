//! Named prepared statements as the server knows them: a Parse over a
//! name the session still has is refused (the server refuses it too and
//! keeps the old statement), and a Parse the server failed or skipped is
//! forgotten, so that Binds are judged by the statement the server runs.

use std::sync::Arc;

use super::{ClientLoop, SessionError};
use crate::enforcement::Refusal;
use crate::postgres::framing::Frame;
use crate::postgres::messages::{describe, frontend, parse};

impl ClientLoop {
    /// Forgets the statements whose Parse the server failed or skipped
    /// (reported by the server loop): the server has none of that name, or
    /// kept the one before.
    pub(super) fn forget_failed_parses(&mut self) {
        for name in self.answered.take_failed_parses() {
            if self
                .statements
                .get(&*name)
                .is_some_and(|s| Arc::ptr_eq(&s.name, &name))
            {
                self.statements.remove(&*name);
            }
        }
    }
}

/// Whether a Close of statement `name` comes in `before` (the group's
/// messages before a Parse of it), after its last Parse there.
pub(super) fn closed_before(before: &[Frame], name: &str) -> Result<bool, SessionError> {
    let mut closed = false;
    for f in before {
        match f.tag {
            frontend::CLOSE => {
                if let describe::Target::Statement(s) = describe::decode(f.body(), "Close")?
                    && s == name
                {
                    closed = true;
                }
            }
            frontend::PARSE if parse::decode(f.body())?.name == name => closed = false,
            _ => {}
        }
    }
    Ok(closed)
}

/// The refusal of a Parse of a named statement the session still has: the
/// server refuses it too (42P05) and keeps the one it has, which Sluice must
/// then go on judging Binds of; a Parse it let through would make Sluice
/// judge the new text while the server runs the old one.
pub(super) fn still_prepared_refusal(name: &str) -> Refusal {
    Refusal {
        code: "42P05",
        ..Refusal::plain(&format!(
            "statement refused by Sluice: prepared statement {name:?} already exists in this session; Close it first (the server would refuse this Parse as well)"
        ))
    }
}
