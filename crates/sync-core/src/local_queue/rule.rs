//! Admission rules: when a claim may hold, given the claims ahead of it.

/// When a claim may hold a name, given the claims ahead of it (the holders, and the waiters
/// queued before it). Waiters are admitted from the front while their rule admits them, so a
/// claim never overtakes an earlier one (no barging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Rule {
    /// Nobody ahead: one holder at a time (a lock, a leader).
    #[default]
    Exclusive,
    /// Fewer than `n` claims ahead (a semaphore of `n` permits).
    Permits(usize),
    /// No [`Write`](Rule::Write) or [`Exclusive`](Rule::Exclusive) claim ahead (a reader).
    Read,
    /// Nobody ahead (a writer).
    Write,
}

impl Rule {
    /// Whether a claim with this rule may hold, given the rules of the claims ahead of it.
    pub fn admits<'a>(self, mut ahead: impl Iterator<Item = &'a Rule>) -> bool {
        match self {
            Rule::Exclusive | Rule::Write => ahead.next().is_none(),
            Rule::Permits(n) => ahead.take(n).count() < n,
            Rule::Read => ahead.all(|r| !matches!(r, Rule::Write | Rule::Exclusive)),
        }
    }

    /// Whether a claim with this rule conflicts with one already there with rule `theirs`:
    /// two semaphore claims with different numbers of permits.
    pub fn mismatch(self, theirs: Rule) -> bool {
        matches!((self, theirs), (Rule::Permits(a), Rule::Permits(b)) if a != b)
    }
}
