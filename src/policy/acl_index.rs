//! Which `[[acl]]` rules can apply to a name, so that 10,000 rules cost little more than ten:
//! rules filed by the first path segment their name glob spells out, and the rules whose first
//! segment is a wildcard or `${account}` in a list of their own. A name's candidates are its
//! segment's rules and that list, merged in the rules' order, so the first candidate that
//! applies is the first rule that applies: first-match-wins is kept exactly (acl_tests.rs
//! compares the two on 100,000 generated requests).

use std::collections::HashMap;

use crate::glob::Glob;

#[derive(Debug, Default)]
pub(super) struct NameIndex {
    by_segment: HashMap<Box<str>, Vec<usize>>,
    /// Rules whose name may start with anything, in order.
    any: Vec<usize>,
}

impl NameIndex {
    /// The index of rules whose name globs are `names`, in the rules' order.
    pub(super) fn new<'a>(names: impl Iterator<Item = &'a Glob>) -> Self {
        let mut index = Self::default();
        for (i, g) in names.enumerate() {
            match g.first_segment() {
                Some(s) => index.by_segment.entry(s.into()).or_default().push(i),
                None => index.any.push(i),
            }
        }
        index
    }

    /// The rules that can match `name`, in order.
    pub(super) fn candidates(&self, name: &str) -> Merged<'_> {
        let segment = name.split('/').next().unwrap_or_default();
        let filed = self.by_segment.get(segment).map_or(&[][..], Vec::as_slice);
        Merged(filed, &self.any)
    }

    /// The rules that can match every name rule `rule` (named `name`) matches, in order: only
    /// those can shadow it. A rule filed under a segment covers no name outside it, so a rule
    /// in the list of any names can only be covered by another there.
    pub(super) fn rivals(&self, name: &Glob) -> Merged<'_> {
        match name.first_segment() {
            Some(s) => self.candidates(s),
            None => Merged(&[], &self.any),
        }
    }
}

/// Two ascending lists of rule numbers, walked as one.
pub(super) struct Merged<'a>(&'a [usize], &'a [usize]);

impl Iterator for Merged<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let take_first = match (self.0.first(), self.1.first()) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let list = if take_first { &mut self.0 } else { &mut self.1 };
        let (head, rest) = list.split_first()?;
        *list = rest;
        Some(*head)
    }
}
