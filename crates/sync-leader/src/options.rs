use std::time::Duration;

/// The group a candidate campaigns in when the options name none.
pub const DEFAULT_GROUP: &str = "default";

/// Options of [`Leader::elect`](crate::Leader::elect).
///
/// ```
/// use std::time::Duration;
/// use sync_leader::ElectOptions;
/// let opts = ElectOptions::new()
///     .with_group("scheduler")
///     .with_ttl(Duration::from_secs(5))
///     .with_max_wait(Duration::from_secs(30))
///     .with_value("10.0.0.7:8080");
/// assert_eq!(opts.group(), "scheduler");
/// assert_eq!(opts.ttl(), Some(Duration::from_secs(5)));
/// assert_eq!(ElectOptions::new().group(), sync_leader::DEFAULT_GROUP);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElectOptions {
    group: String,
    ttl: Option<Duration>,
    max_wait: Option<Duration>,
    value: String,
}

impl Default for ElectOptions {
    fn default() -> Self {
        ElectOptions {
            group: DEFAULT_GROUP.to_owned(),
            ttl: None,
            max_wait: None,
            value: String::new(),
        }
    }
}

impl ElectOptions {
    /// Defaults: the group [`DEFAULT_GROUP`], the backend's TTL, wait as long as it takes, an
    /// empty value.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group to campaign in: candidates of one group elect one leader; groups are
    /// independent of each other (names sharing a prefix included).
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// How long the leadership (or a candidacy) outlives a candidate that stops renewing it (a
    /// crash). The etcd backend rounds it up to whole seconds, and etcd may raise it to its
    /// minimum ([`Elected::ttl`](crate::Elected::ttl) tells the granted one). The in-process
    /// backend has no one to outlive and checks it only for validity.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The longest `elect` waits before failing with [`Error::Timeout`](crate::Error::Timeout).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// What observers see as [`LeaderInfo::value`](crate::LeaderInfo::value) once this
    /// candidate leads, until it [proclaims](crate::Elected::proclaim) another.
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = value.into();
        self
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The TTL asked for, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The maximum wait, if any.
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// The initial value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Checks the group name, the candidate id and the TTL.
    pub(crate) fn validate(&self, candidate: &str) -> crate::Result<()> {
        crate::check_group(&self.group)?;
        crate::check_candidate(candidate)?;
        if let Some(ttl) = self.ttl {
            if ttl < Duration::from_secs(1) {
                return Err(crate::Error::InvalidOptions {
                    group: sync_core::name::display_name(&self.group),
                    reason: format!("ttl {ttl:?} is below the 1 s minimum"),
                });
            }
        }
        Ok(())
    }
}
