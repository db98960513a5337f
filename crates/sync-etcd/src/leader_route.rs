//! Requests go to the raft leader first.
//!
//! A write sent to a follower is forwarded to the leader, and the follower answers only once it
//! has heard that the entry committed and applied it: a hop and a wait more than at the leader,
//! whose answer follows its own apply. A linearizable read at a follower asks the leader for its
//! read index first. So each request is tried first on the leader; the balanced connection takes
//! every retry, and a failed attempt at the leader drops the route until a check finds the
//! (possibly new) leader.
//!
//! **How the leader is found.** Every configured endpoint has a connection of its own, and a
//! check asks each of them, side by side, for its status: who it is, whom it follows, in which
//! term. The leader is the member that says it leads, in the highest term any answer names, once a
//! majority of the endpoints has answered (or all have). A member's own word is needed, not a
//! follower's: a follower names its leader until its election timeout passes, so right after the
//! leader's death it names a dead member, and a route pinned to it would hold every first
//! attempt for a request timeout. A leader cut off from the others still says it leads, but in
//! an older term than the majority that elected the next one.
//!
//! A dead member never answers (its connection waits to be ready), so a check does not wait for
//! every endpoint: once a majority has answered and none of them claims the lead, the others get
//! a short grace (twice what the majority took, at least [`GRACE_MIN`]) and then the check ends
//! with no leader. Without a leader the next check follows after a backoff from
//! [`RECHECK_MIN`] up to [`LEADER_CHECK`]; with one, every [`LEADER_CHECK`], or at once after an
//! attempt at the leader failed.
//!
//! Only a leader whose advertised client URL is one of the configured endpoints is used, so a
//! cluster reached through proxies or addresses of its own is never dialled at addresses the user
//! did not give. Correctness never depends on the route: any member serves any request.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the route checks who leads while it has a leader.
pub(crate) const LEADER_CHECK: Duration = Duration::from_secs(5);
/// The first pause between checks that found no leader (it doubles up to [`LEADER_CHECK`]).
const RECHECK_MIN: Duration = Duration::from_millis(200);
/// The least time the endpoints that have not answered get once a majority has.
const GRACE_MIN: Duration = Duration::from_millis(250);

pub(crate) struct LeaderRoute {
    current: RwLock<Option<Pinned>>,
    recheck: Arc<Notify>,
    opts: ConnectOptions,
    urls: Vec<String>,
    /// The bound of one status call (the client's request timeout).
    request_timeout: Duration,
    /// The bound of opening one endpoint's connection (with credentials it talks to the server).
    connect_timeout: Duration,
}

struct Pinned {
    url: String,
    client: Client,
}

impl LeaderRoute {
    /// A route with no leader yet, over the configured endpoint `urls` (normalised to
    /// `scheme://host:port`).
    pub(crate) fn new(
        opts: ConnectOptions,
        urls: Vec<String>,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        LeaderRoute {
            current: RwLock::new(None),
            recheck: Arc::new(Notify::new()),
            opts,
            urls,
            request_timeout,
            connect_timeout,
        }
    }

    /// The leader's connection, if known.
    pub(crate) fn client(&self) -> Option<Client> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|p| p.client.clone())
    }

    /// The leader's endpoint, if known.
    pub(crate) fn url(&self) -> Option<String> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|p| p.url.clone())
    }

    /// Stops using the leader's connection and asks for a check at once.
    pub(crate) fn forget(&self) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.take().is_some() {
            self.recheck.notify_one();
        }
    }

    fn pin(&self, url: &str, client: &Client) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_none_or(|p| p.url != url) {
            tracing::debug!(%url, "requests go to the raft leader first");
            *current = Some(Pinned {
                url: url.to_owned(),
                client: client.clone(),
            });
        }
    }

    fn unpin(&self) {
        self.current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// Keeps `route` current until it is dropped (with the client that owns it).
pub(crate) async fn follow(route: Weak<LeaderRoute>) {
    // One connection per configured endpoint, opened when first needed, kept across checks.
    let mut conns: Vec<Option<Client>> = Vec::new();
    let mut backoff = RECHECK_MIN;
    loop {
        let Some(strong) = route.upgrade() else {
            return;
        };
        conns.resize(strong.urls.len(), None);
        let wait = match find(&strong, &mut conns).await {
            Some(i) => {
                if let Some(client) = &conns[i] {
                    strong.pin(&strong.urls[i], client);
                }
                backoff = RECHECK_MIN;
                LEADER_CHECK
            }
            None => {
                strong.unpin();
                let wait = backoff;
                backoff = (backoff * 2).min(LEADER_CHECK);
                wait
            }
        };
        // Wait without keeping the route alive. A forget() between the check and here is not
        // lost: Notify keeps one permit.
        let recheck = Arc::clone(&strong.recheck);
        drop(strong);
        if tokio::time::timeout(wait, recheck.notified()).await.is_ok() {
            // An attempt at the leader failed: look again soon, but do not spin.
            tokio::time::sleep(RECHECK_MIN / 2).await;
        }
    }
}

/// What one endpoint said about who leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Said {
    /// Index of the endpoint that answered.
    endpoint: usize,
    /// The member that answered.
    member: u64,
    /// The member it follows (itself when it leads; 0 when it knows none).
    leader: u64,
    term: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Endpoint `endpoint` reaches member `member`, which leads.
    Leader { endpoint: usize, member: u64 },
    /// Keep listening.
    Wait,
    /// Nobody answered that it leads.
    Nobody,
}

/// Decides who leads from the answers so far: `said` (the endpoints that answered), `settled`
/// (those that answered or failed) of `total`.
fn judge(said: &[Said], settled: usize, total: usize) -> Verdict {
    let majority = total / 2 + 1;
    let top = said.iter().map(|s| s.term).max();
    let claim = said
        .iter()
        .find(|s| Some(s.term) == top && s.leader != 0 && s.member == s.leader);
    match claim {
        Some(c) if said.len() >= majority || settled == total => Verdict::Leader {
            endpoint: c.endpoint,
            member: c.member,
        },
        _ if settled == total => Verdict::Nobody,
        _ => Verdict::Wait,
    }
}

/// The index of the configured endpoint that reaches the raft leader, if any does.
async fn find(route: &LeaderRoute, conns: &mut [Option<Client>]) -> Option<usize> {
    let started = Instant::now();
    let deadline = started + route.request_timeout;
    let mut asks: FuturesUnordered<_> = conns
        .iter()
        .enumerate()
        .map(|(i, conn)| ask(route, i, conn.clone()))
        .collect();
    let total = conns.len();
    let (mut said, mut settled) = (Vec::with_capacity(total), 0);
    let mut grace: Option<Instant> = None;
    let winner = loop {
        let until = grace.map_or(deadline, |g| g.min(deadline));
        let next = tokio::time::timeout_at(until, asks.next()).await;
        let Ok(Some((i, conn, answer))) = next else {
            // Out of time (the grace or the check's bound).
            break None;
        };
        settled += 1;
        if conns[i].is_none() {
            conns[i] = conn;
        }
        if let Some(s) = answer {
            said.push(s);
        }
        match judge(&said, settled, total) {
            Verdict::Leader { endpoint, member } => break Some((endpoint, member)),
            Verdict::Nobody => break None,
            Verdict::Wait => {
                if grace.is_none() && said.len() > total / 2 {
                    let took = started.elapsed();
                    grace = Some(Instant::now() + (took * 2).max(GRACE_MIN));
                }
            }
        }
    };
    let (i, member) = winner?;
    let mut client = conns[i].clone()?;
    // Pin only a member that advertises the configured URL: an endpoint in front of several
    // members (a proxy) may reach another member next time.
    let members = tokio::time::timeout(route.request_timeout, client.member_list())
        .await
        .ok()?
        .ok()?;
    let me = members.members().iter().find(|m| m.id() == member)?;
    let want = route.urls[i].as_str();
    me.client_urls()
        .iter()
        .any(|advertised| advertised.trim_end_matches('/') == want)
        .then_some(i)
}

/// Asks endpoint `i` for its status, opening its connection first when `conn` is `None`; the
/// endpoint, the connection it opened (if it did) and what it said.
async fn ask(
    route: &LeaderRoute,
    i: usize,
    conn: Option<Client>,
) -> (usize, Option<Client>, Option<Said>) {
    let opened = conn.is_none();
    let mut client = match conn {
        Some(c) => c,
        None => {
            let url = route.urls[i].as_str();
            let connect = Client::connect([url], Some(route.opts.clone()));
            match tokio::time::timeout(route.connect_timeout, connect).await {
                Ok(Ok(c)) => c,
                _ => return (i, None, None),
            }
        }
    };
    let status = tokio::time::timeout(route.request_timeout, client.status()).await;
    let said = match status {
        Ok(Ok(s)) => s.header().map(|h| Said {
            endpoint: i,
            member: h.member_id(),
            leader: s.leader(),
            term: s.raft_term(),
        }),
        _ => None,
    };
    (i, opened.then_some(client), said)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(endpoint: usize, member: u64, leader: u64, term: u64) -> Said {
        Said {
            endpoint,
            member,
            leader,
            term,
        }
    }

    #[test]
    fn a_member_that_says_it_leads_is_the_leader_once_a_majority_answered() {
        let a = said(0, 11, 12, 3);
        let b = said(1, 12, 12, 3);
        assert_eq!(judge(&[b], 1, 3), Verdict::Wait);
        assert_eq!(
            judge(&[a, b], 2, 3),
            Verdict::Leader {
                endpoint: 1,
                member: 12
            }
        );
    }

    #[test]
    fn followers_naming_a_leader_are_not_enough() {
        // Right after the leader's death both followers still name it.
        let a = said(0, 11, 12, 3);
        let c = said(2, 13, 12, 3);
        assert_eq!(judge(&[a, c], 2, 3), Verdict::Wait);
        assert_eq!(judge(&[a, c], 3, 3), Verdict::Nobody);
    }

    #[test]
    fn a_deposed_leader_in_an_older_term_is_not_believed() {
        // Member 12 was cut off and still says it leads in term 3; 13 won term 4.
        let old = said(1, 12, 12, 3);
        let a = said(0, 11, 13, 4);
        assert_eq!(judge(&[old, a], 2, 3), Verdict::Wait);
        let new = said(2, 13, 13, 4);
        assert_eq!(
            judge(&[old, a, new], 3, 3),
            Verdict::Leader {
                endpoint: 2,
                member: 13
            }
        );
    }

    #[test]
    fn a_member_between_elections_leads_nobody() {
        // A candidate reports leader 0; an answer with member id 0 must not match it.
        let cand = said(0, 0, 0, 5);
        assert_eq!(judge(&[cand], 1, 1), Verdict::Nobody);
        let a = said(0, 11, 0, 5);
        assert_eq!(judge(&[a], 1, 1), Verdict::Nobody);
    }

    #[test]
    fn a_single_endpoint_decides_alone() {
        assert_eq!(
            judge(&[said(0, 7, 7, 1)], 1, 1),
            Verdict::Leader {
                endpoint: 0,
                member: 7
            }
        );
        assert_eq!(judge(&[said(0, 7, 8, 1)], 1, 1), Verdict::Nobody);
    }

    #[test]
    fn when_every_endpoint_settled_the_highest_claim_wins_even_without_a_majority() {
        // Two of three failed; the one that answered leads.
        assert_eq!(
            judge(&[said(2, 9, 9, 2)], 3, 3),
            Verdict::Leader {
                endpoint: 2,
                member: 9
            }
        );
    }
}
