//! A rule while its programme is decided, finished at once or deferred by the
//! [`Detail`](super::Detail) asked for.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use super::RuleResult;

/// A rule while its programme is decided. With [`Detail::Full`] it is finished (id, inputs,
/// threshold, explanation); with [`Detail::Summary`] it keeps only what a summary may quote:
/// the id's parts, whether it held, and its explanation unrendered.
///
/// [`Detail::Full`]: super::Detail::Full
/// [`Detail::Summary`]: super::Detail::Summary
pub(super) struct Rule<'c> {
    /// Programme part of the id (`dibao`).
    pub(super) prog: &'static str,
    /// The rest of the id (`assets.financial`).
    pub(super) name: &'static str,
    pub(super) held: bool,
    pub(super) body: Body<'c>,
}

pub(super) enum Body<'c> {
    Full {
        inputs: BTreeMap<String, i64>,
        threshold: i64,
        explanation: String,
    },
    /// Renders the explanation. Boxed: most are never called, and a box of a few captured
    /// numbers costs far less than the formatting it defers.
    Later(Box<dyn Fn() -> String + 'c>),
}

impl fmt::Debug for Rule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} held={}", self.prog, self.name, self.held)
    }
}

impl Rule<'_> {
    /// Whether the id `prog.name` ends with `suffix` (without building the id).
    pub(super) fn id_ends_with(&self, suffix: &str) -> bool {
        match suffix.strip_suffix(self.name) {
            None => self.name.ends_with(suffix),
            Some("") => true,
            Some(head) => head
                .strip_suffix('.')
                .is_some_and(|head| self.prog.ends_with(head)),
        }
    }

    pub(super) fn explanation(&self) -> Cow<'_, str> {
        match &self.body {
            Body::Full { explanation, .. } => Cow::Borrowed(explanation),
            Body::Later(render) => Cow::Owned(render()),
        }
    }

    /// The finished rule (none in [`Detail::Summary`](super::Detail::Summary)).
    pub(super) fn into_result(self) -> Option<RuleResult> {
        let Body::Full {
            inputs,
            threshold,
            explanation,
        } = self.body
        else {
            return None;
        };
        let mut rule = String::with_capacity(self.prog.len() + 1 + self.name.len());
        rule.push_str(self.prog);
        rule.push('.');
        rule.push_str(self.name);
        Some(RuleResult {
            rule,
            held: self.held,
            inputs,
            threshold,
            explanation,
        })
    }
}

/// The explanations of `rules`, joined by "; ".
pub(super) fn joined<'r, 'c: 'r>(rules: impl Iterator<Item = &'r Rule<'c>>) -> String {
    let mut out = String::with_capacity(128);
    for (i, r) in rules.enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&r.explanation());
    }
    out
}
