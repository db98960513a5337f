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
    ///
    /// It must lie between 1 s and etcd's longest lease TTL, 9,000,000,000 s
    /// ([`sync_core::duration::validate_ttl`]); anything else (zero, sub-second,
    /// `Duration::MAX`) makes `elect` fail at once with
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions), on every backend.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The longest `elect` waits before failing with [`Error::Timeout`](crate::Error::Timeout).
    /// With the etcd backend it includes the round trips, so a very short wait may time out in
    /// an empty group.
    ///
    /// Zero is refused with [`Error::InvalidOptions`](crate::Error::InvalidOptions). A wait of
    /// 100 years or more ([`sync_core::duration::UNLIMITED_WAIT`]), `Duration::MAX` included,
    /// saturates to "no limit": [`max_wait`](Self::max_wait) then returns `None`.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        // Zero is kept, for `validate` to refuse it.
        self.max_wait = sync_core::duration::validate_max_wait(max_wait).unwrap_or(Some(max_wait));
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

    /// The maximum wait, if any: `None` when unset or when it saturated to "no limit".
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// The initial value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Checks the group name, the candidate id, the TTL and the maximum wait.
    pub(crate) fn validate(&self, candidate: &str) -> crate::Result<()> {
        crate::check_group(&self.group)?;
        crate::check_candidate(candidate)?;
        let invalid = |reason: String| crate::Error::InvalidOptions {
            group: sync_core::name::display_name(&self.group),
            reason,
        };
        if let Some(ttl) = self.ttl {
            sync_core::duration::validate_ttl(ttl).map_err(invalid)?;
        }
        if let Some(max_wait) = self.max_wait {
            sync_core::duration::validate_max_wait(max_wait).map_err(invalid)?;
        }
        Ok(())
    }
}
