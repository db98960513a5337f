use std::sync::Arc;
use std::time::Duration;

use crate::{ElectOptions, Elected, Leader, LeaderInfo, LeaderStream, Result};

/// One election group on a backend: the seed's shape, `NewLeader(Group("name"))` then
/// `Elect("id")`, and its loop: act while leading, and campaign again once revoked.
///
/// ```
/// use std::time::Duration;
/// use sync_leader::{Group, LocalLeader};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let backend = LocalLeader::new();
/// let l = Group::new(backend.clone(), "name");
///
/// // elect leader
/// let mut e = l.elect("id").await?;
/// # let mut rounds = 0;
/// loop {
///     tokio::select! {
///         _ = e.revoked() => {
///             // re-elect
///             e = l.elect("id").await?;
///         }
///         _ = tokio::time::sleep(Duration::from_millis(1)) => {
///             // leader operation, passing e.term() along
///             # rounds += 1;
///             # if rounds == 2 { backend.revoke("name"); }
///             # if rounds == 4 { break; }
///         }
///     }
/// }
/// # assert!(e.term() > 1);
///
/// // resign leadership
/// e.resign().await?;
/// # Ok::<(), sync_leader::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Group {
    leader: Arc<dyn Leader>,
    options: ElectOptions,
}

impl Group {
    /// The group `name` on any backend, with default options.
    pub fn new(leader: impl Leader + 'static, name: impl Into<String>) -> Self {
        Self::from_arc(Arc::new(leader), name)
    }

    /// The group `name` on a shared backend.
    pub fn from_arc(leader: Arc<dyn Leader>, name: impl Into<String>) -> Self {
        Group {
            leader,
            options: ElectOptions::new().with_group(name),
        }
    }

    /// Uses these options for every campaign (their group is replaced by this group's name).
    pub fn with_options(mut self, options: ElectOptions) -> Self {
        let name = self.options.group().to_owned();
        self.options = options.with_group(name);
        self
    }

    /// Uses this TTL for every campaign.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.options = self.options.with_ttl(ttl);
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        self.options.group()
    }

    /// Campaigns as `id` and returns once elected.
    pub async fn elect(&self, id: &str) -> Result<Elected> {
        self.leader.elect(id, self.options.clone()).await
    }

    /// Who leads the group now.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.leader.leader(self.name()).await
    }

    /// Follows who leads the group.
    pub async fn observe(&self) -> Result<LeaderStream> {
        self.leader.observe(self.name()).await
    }
}
