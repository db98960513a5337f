//! Consumer groups on etcd. The group's position is `cursor` (the next offset never delivered)
//! plus one `p/<offset>` record per delivered, unacked event (its delivery count); both are
//! plain keys and outlive every member. A member holds a delivery by a `c/<offset>` claim on its
//! own lease, carrying the wall-clock end of its ack wait. Every move (take the cursor's event,
//! reclaim an expired or orphaned delivery, hand out a reserved event, ack, nack) is one
//! transaction guarded by the revisions the member read, so two members never hold one event
//! at once. Far behind the head, a take claims a batch: the first event is delivered, the rest
//! are reserved for the member (`p/` = 0 deliveries, a claim on its lease for at most
//! [`RESERVE`]) and handed out one by one by its next calls (see `docs/event.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::{prefix_end, RangeWatch, Session};

use super::{codec, map_err, parse_u64, Inner, TopicKeys};
use crate::event::dead_letter;
use crate::{check_name, Delivery, Error, Event, GroupOptions, Member, Message, Result, Start};

struct GroupKeys {
    dir: String,
}

impl GroupKeys {
    fn cursor(&self) -> String {
        format!("{}cursor", self.dir)
    }
    fn pending(&self, o: u64) -> String {
        format!("{}p/{o:020}", self.dir)
    }
    fn claim(&self, o: u64) -> String {
        format!("{}c/{o:020}", self.dir)
    }
    /// (kind, offset) of a key of the group.
    fn parse(&self, key: &[u8]) -> Option<(u8, u64)> {
        let k = std::str::from_utf8(key).ok()?.strip_prefix(&self.dir)?;
        let (kind, o) = k.split_once('/')?;
        Some((kind.bytes().next()?, o.parse().ok()?))
    }
}

/// How old a state read by an earlier transaction may be for a step to use it instead of
/// reading again. Every move is guarded by what it read, so an older state never breaks a
/// guarantee; this bounds how late it notices an event due for redelivery.
const FRESH: Duration = Duration::from_millis(50);

/// Offsets one take transaction tries in turn (see [`EtcdMember::take_txn`]): members that
/// read the same cursor all win, one event each, instead of all but one losing a transaction
/// and trying again. Safe against a `next()` dropped while its take is in flight (a
/// `select!` over members, as the conformance test `group_each_event_to_one_member` does)
/// because what a take wins is kept by the member until a step hands it out (see
/// [`EtcdMember::claim`]).
const TAKE_CHAIN: usize = 8;

/// Events one take claims when the group is at least [`BATCH_FROM`] events behind: the first
/// is delivered at once, the others are reserved for the member's next calls (see
/// [`EtcdMember::mark`]). A reserved event counts no delivery until it is handed out, so a
/// member that dies or leaves with reservations uses up none of their attempts.
const TAKE_BATCH: u64 = 8;

/// How far behind the group must be (offsets from its cursor to the sequence) for a take to
/// reserve a batch: closer to the head, a take claims one event, so that a few events spread
/// over the members instead of waiting on one.
const BATCH_FROM: u64 = 4 * TAKE_BATCH;

/// Branches of a take transaction that claims batches (each holds `2 * TAKE_BATCH + 2`
/// operations, so fewer than single takes chain).
const BATCH_CHAIN: usize = 4;

/// The longest a reservation keeps an event from the group's other members (shorter when
/// the ack wait is): a member that stops asking for events holds its reserved ones no longer
/// than this, and then any member takes them, still as attempt 1.
const RESERVE: Duration = Duration::from_secs(5);

/// How many offsets from the first retained event a member last saw its state read looks at
/// to find the first one now. etcd 3.4 walks every key of a range to answer it, even with a
/// limit of 1, so a read over the whole topic cost each group transaction time in proportion
/// to the events retained (the group bench's backlog of 2000 made it 0.25× where 500 gave
/// 0.6–0.75×). When retention removed more than this since, the member reads the whole range
/// once.
const FIRST_WINDOW: u64 = 32;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

pub(super) async fn join(
    inner: Arc<Inner>,
    topic: &str,
    group: &str,
    options: GroupOptions,
) -> Result<Box<dyn crate::Member>> {
    check_name("topic", topic)?;
    check_name("group", group)?;
    options.validate(topic)?;
    let keys = inner.keys(topic);
    let gk = GroupKeys {
        dir: format!("{}g/{}/", keys.dir, sync_etcd::encode_name(group)),
    };
    let (first, seq) = inner.first_available(&keys).await?;
    let start = match options.start() {
        Start::Earliest => first,
        Start::Latest => seq + 1,
        Start::Offset(n) if n < first => {
            return Err(Error::Truncated {
                topic: topic.to_owned(),
                requested: n,
                first_available: first,
            })
        }
        Start::Offset(n) => n,
        Start::Time(t) => {
            super::subscribe::find_time(&inner, &keys, topic, t, first, seq, 0).await?
        }
    };
    let txn = Txn::new()
        .when([Compare::version(gk.cursor(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(gk.cursor(), start.to_string(), None)]);
    run(&inner, "create group", txn).await?;
    let ttl = inner.client.config().ttl;
    let session = inner.connection.session(ttl).await.map_err(map_err)?;
    Ok(Box::new(EtcdMember {
        id: format!("{:016x}", rand::random::<u64>()),
        inner,
        topic: topic.to_owned(),
        group: group.to_owned(),
        keys,
        gk,
        options,
        session,
        watch: tokio::sync::Mutex::new(None),
        cached: std::sync::Mutex::new(None),
        won: Arc::new(tokio::sync::Mutex::new(Vec::new())),
        reserved: std::sync::Mutex::new(BTreeSet::new()),
        recheck: AtomicBool::new(false),
        first_seen: AtomicU64::new(0),
        left: AtomicBool::new(false),
    }))
}

async fn run(inner: &Inner, op: &'static str, txn: Txn) -> Result<TxnResponse> {
    inner
        .client
        .retry(op, inner.client.default_budget(), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(map_err)
}

struct EtcdMember {
    inner: Arc<Inner>,
    id: String,
    topic: String,
    group: String,
    keys: TopicKeys,
    gk: GroupKeys,
    options: GroupOptions,
    session: Session,
    /// A watch over the topic's keys: wakes the member on a publish, an ack, a nack or a lost
    /// lease.
    watch: tokio::sync::Mutex<Option<RangeWatch>>,
    /// The state the member's last ack, nack or lost take read, and when: its next step uses
    /// it instead of reading again.
    cached: std::sync::Mutex<Option<(State, std::time::Instant)>>,
    /// Answers of claiming transactions (takes, reclaims) not handed out yet: a `next()`
    /// dropped before it picked its answer up leaves it here for the member's next step. A
    /// transaction in flight holds the lock until its answer is stored.
    won: Arc<tokio::sync::Mutex<Vec<Won>>>,
    /// Events a batch take reserved for this member and no step handed out yet: (offset,
    /// revision of the take that wrote their `p/` and `c/`), lowest offset first. In etcd each
    /// has `p/<offset>` = 0 (no delivery yet) and a claim on the member's lease.
    reserved: std::sync::Mutex<BTreeSet<(u64, i64)>>,
    /// Set by a nack: the next step reads the group's state before it hands out a reserved
    /// event, so the nacked event comes first (redeliveries before new events).
    recheck: AtomicBool,
    /// The first retained offset this member last read (0: none yet). Retention only ever
    /// removes the oldest events, so the first retained offset never goes back: a state read
    /// looks for it in [`FIRST_WINDOW`] offsets from here instead of over the whole topic.
    first_seen: AtomicU64,
    left: AtomicBool,
}

impl std::fmt::Debug for EtcdMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMember")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The answer of a transaction that may have claimed an event for the member.
enum Won {
    /// A take over `branches` (see [`EtcdMember::take_txn`]).
    Take {
        branches: Vec<(u64, u64)>,
        /// Where its state read looked for the first event.
        from: Option<u64>,
        resp: TxnResponse,
    },
    /// A reclaim of offset `o`, delivered `attempts` times before; `first` is the first
    /// offset retention kept when the member read the state.
    Reclaim {
        o: u64,
        attempts: u32,
        first: u64,
        resp: TxnResponse,
    },
    /// The hand-out of reserved offset `o` (see [`EtcdMember::mark`]).
    Mark { o: u64, resp: TxnResponse },
}

#[derive(Default)]
struct State {
    cursor: (u64, i64),
    /// offset → (deliveries, mod revision)
    pending: BTreeMap<u64, (u32, i64)>,
    /// offset → (member, ack wait end in ms, mod revision)
    claims: BTreeMap<u64, (String, u64, i64)>,
    first: u64,
    seq: u64,
}

fn gets(resp: TxnResponse) -> Vec<etcd_client::GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

impl EtcdMember {
    /// The reads that make up a [`State`]: the group's keys, the sequence, the first event
    /// (looked for from `from`, see [`FIRST_WINDOW`]; `None`: over the whole topic).
    /// They go into every transaction whose response the next step can use, so that a step
    /// after an ack (or after a lost race for the cursor) needs no read of its own.
    fn state_ops(&self, from: Option<u64>) -> [TxnOp; 3] {
        let ev = self.keys.events();
        let end = match from {
            Some(f) => self.keys.event(f + FIRST_WINDOW).into_bytes(),
            None => prefix_end(ev.as_bytes()),
        };
        let start = from.map_or(ev, |f| self.keys.event(f));
        [
            TxnOp::get(
                self.gk.dir.clone(),
                Some(GetOptions::new().with_range(prefix_end(self.gk.dir.as_bytes()))),
            ),
            TxnOp::get(self.keys.seq(), None),
            TxnOp::get(
                start,
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_limit(1)
                        .with_keys_only(),
                ),
            ),
        ]
    }

    /// Where this member's state reads look for the first retained event.
    fn first_from(&self) -> Option<u64> {
        Some(self.first_seen.load(Ordering::Relaxed).max(1))
    }

    /// The state in the last three gets of `g` (as [`EtcdMember::state_ops`] puts them with
    /// `from`); `None` if the first retained event lies beyond the window looked at.
    fn parse_state(&self, g: &[etcd_client::GetResponse], from: Option<u64>) -> Option<State> {
        let [dir, seq, first] = g.get(g.len().checked_sub(3)?..)? else {
            return None;
        };
        let mut s = State::default();
        let cursor_key = self.gk.cursor();
        for kv in dir.kvs() {
            if kv.key() == cursor_key.as_bytes() {
                s.cursor = (parse_u64(kv.value()), kv.mod_revision());
                continue;
            }
            match self.gk.parse(kv.key()) {
                Some((b'p', o)) => {
                    s.pending
                        .insert(o, (parse_u64(kv.value()) as u32, kv.mod_revision()));
                }
                Some((b'c', o)) => {
                    let v = String::from_utf8_lossy(kv.value()).into_owned();
                    let (member, until) = v.split_once(' ').unwrap_or(("", "0"));
                    s.claims.insert(
                        o,
                        (
                            member.to_owned(),
                            until.parse().unwrap_or(0),
                            kv.mod_revision(),
                        ),
                    );
                }
                _ => {}
            }
        }
        s.seq = seq.kvs().first().map_or(0, |kv| parse_u64(kv.value()));
        s.first = match first
            .kvs()
            .first()
            .and_then(|kv| self.keys.offset_of(kv.key()))
        {
            Some(o) => o,
            // Nothing retained from `from` up to the sequence: the topic holds no event.
            None if from.is_none_or(|f| f <= s.seq + 1 && s.seq < f + FIRST_WINDOW) => s.seq + 1,
            // Retention went past the window: the whole range must be read.
            None => return None,
        };
        self.first_seen.fetch_max(s.first, Ordering::Relaxed);
        Some(s)
    }

    /// Keeps `s` (read by the transaction just run) for the next step, if it is taken soon.
    fn keep(&self, s: Option<State>) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            s.map(|s| (s, std::time::Instant::now()));
    }

    /// The group's state: the one the last transaction read, if it is fresh (at most
    /// [`FRESH`] old, and used once), else read now at one revision.
    async fn state(&self) -> Result<State> {
        let kept = self.cached.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((s, at)) = kept {
            if at.elapsed() <= FRESH {
                return Ok(s);
            }
        }
        let from = self.first_from();
        let txn = Txn::new().and_then(self.state_ops(from));
        let g = gets(run(&self.inner, "read group", txn).await?);
        if let Some(s) = self.parse_state(&g, from) {
            return Ok(s);
        }
        let txn = Txn::new().and_then(self.state_ops(None));
        let g = gets(run(&self.inner, "read group", txn).await?);
        self.parse_state(&g, None)
            .ok_or_else(|| Error::Unavailable {
                op: "read group",
                endpoint: self.inner.client.endpoints().to_owned(),
                source: "etcd answered a read of the group with fewer results than asked for"
                    .into(),
            })
    }

    /// One transaction that takes the first of `branches` whose start the group's cursor is
    /// at: "if the cursor is `x0`, take `x0..e0`; else if it is `x1` (= `e0`), take `x1..e1`;
    /// …". A branch moves the cursor to its end, records its first event pending (1
    /// delivery) and claims it, reserves the rest (pending with 0 deliveries, claimed for at
    /// most [`RESERVE`]), and reads the first event. Members that read the same cursor and
    /// race for it then take consecutive batches in one round trip each, instead of all but
    /// one failing and trying again. When the cursor is past every branch, the innermost
    /// branch reads the state for the next step.
    fn take_txn(&self, branches: &[(u64, u64)], from: Option<u64>) -> Txn {
        let mut txn = Txn::new().and_then(self.state_ops(from));
        for &(x, end) in branches.iter().rev() {
            let mut ops = vec![
                TxnOp::put(self.gk.cursor(), end.to_string(), None),
                TxnOp::put(self.gk.pending(x), "1", None),
                self.claim_op(x),
            ];
            for y in x + 1..end {
                ops.push(TxnOp::put(self.gk.pending(y), "0", None));
                ops.push(self.reserve_op(y));
            }
            ops.push(TxnOp::get(self.keys.event(x), None));
            txn = Txn::new()
                .when([Compare::value(
                    self.gk.cursor(),
                    CompareOp::Equal,
                    x.to_string(),
                )])
                .and_then(ops)
                .or_else([TxnOp::txn(txn)]);
        }
        txn
    }

    /// The branches of a take from `cursor` with the sequence at `seq`: single offsets near
    /// the head, batches aligned to [`TAKE_BATCH`] (so that members racing from the same
    /// cursor line up) when the group is at least [`BATCH_FROM`] behind.
    fn take_branches(cursor: u64, seq: u64) -> Vec<(u64, u64)> {
        let batch = seq + 1 - cursor >= BATCH_FROM;
        let most = if batch { BATCH_CHAIN } else { TAKE_CHAIN };
        let mut branches = Vec::with_capacity(most);
        let mut x = cursor;
        while branches.len() < most && x <= seq {
            let end = if batch {
                (x / TAKE_BATCH + 1) * TAKE_BATCH
            } else {
                x + 1
            };
            let end = end.min(seq + 1);
            branches.push((x, end));
            x = end;
        }
        branches
    }

    /// A reservation of `o` for this member: its claim, ending after [`RESERVE`] or the ack
    /// wait, whichever is shorter.
    fn reserve_op(&self, o: u64) -> TxnOp {
        let until = now_ms() + self.options.ack_wait().min(RESERVE).as_millis() as u64;
        TxnOp::put(
            self.gk.claim(o),
            format!("{} {until}", self.id),
            Some(PutOptions::new().with_lease(self.session.lease_id())),
        )
    }

    fn claim_op(&self, o: u64) -> TxnOp {
        let until = now_ms() + self.options.ack_wait().as_millis() as u64;
        TxnOp::put(
            self.gk.claim(o),
            format!("{} {until}", self.id),
            Some(PutOptions::new().with_lease(self.session.lease_id())),
        )
    }

    fn event_of(&self, o: u64, resp: &etcd_client::GetResponse) -> Option<Event> {
        let kv = resp.kvs().first()?;
        let (at, m) = codec::decode(kv.value())?;
        Some(Event::new(self.topic.clone(), o, at, m))
    }

    /// One step: a delivery, an error to report, or how long to wait (None: until a change).
    async fn step(&self) -> Result<std::result::Result<Delivery, Option<Duration>>> {
        // What an earlier, dropped `next()` won comes first (waiting for a claim in flight),
        // so the member's deliveries keep the order it claimed them in.
        let won = self.won.lock().await.pop();
        if let Some(w) = won {
            return self.hand_out(w).await;
        }
        // With events reserved, the state is read only after a nack of this member's (whose
        // event must come first); the reserved events are handed out before the member
        // looks for redeliveries again, which it does at its next take.
        let have_reserved = !self.reserved().is_empty();
        if have_reserved && !self.recheck.load(Ordering::SeqCst) {
            return self.mark().await;
        }
        let s = self.state().await?;
        self.recheck.store(false, Ordering::SeqCst);
        let now = now_ms();
        // Redeliveries first, oldest offset first: a pending event nobody holds (a nack, a
        // member gone with its lease) or whose holder's ack wait (or reservation) passed.
        for (&o, &(attempts, p_rev)) in &s.pending {
            let claim = s.claims.get(&o);
            if claim.is_some_and(|(_, until, _)| *until > now) {
                continue;
            }
            let c_guard = match claim {
                Some((_, _, rev)) => {
                    Compare::mod_revision(self.gk.claim(o), CompareOp::Equal, *rev)
                }
                None => Compare::version(self.gk.claim(o), CompareOp::Equal, 0),
            };
            let p_guard = Compare::mod_revision(self.gk.pending(o), CompareOp::Equal, p_rev);
            if attempts >= self.options.max_deliveries() {
                self.dead_letter(o, attempts, p_guard, c_guard).await?;
                return Ok(Err(Some(Duration::ZERO)));
            }
            let txn = Txn::new().when([p_guard, c_guard]).and_then([
                TxnOp::put(self.gk.pending(o), (attempts + 1).to_string(), None),
                self.claim_op(o),
                TxnOp::get(self.keys.event(o), None),
            ]);
            let first = s.first;
            // One of this member's own reservations that ran out: reclaimed here, so no
            // longer to be handed out from the reserve.
            self.reserved().retain(|&(r, _)| r != o);
            return self
                .claim("reclaim event", move || {
                    Some((txn, move |resp| Won::Reclaim {
                        o,
                        attempts,
                        first,
                        resp,
                    }))
                })
                .await;
        }
        if have_reserved {
            return self.mark().await;
        }
        let (cursor, c_rev) = s.cursor;
        if cursor < s.first {
            let guard = Compare::mod_revision(self.gk.cursor(), CompareOp::Equal, c_rev);
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(
                self.gk.cursor(),
                s.first.to_string(),
                None,
            )]);
            if run(&self.inner, "move group cursor", txn)
                .await?
                .succeeded()
            {
                return Err(Error::Truncated {
                    topic: self.topic.clone(),
                    requested: cursor,
                    first_available: s.first,
                });
            }
            return Ok(Err(Some(Duration::ZERO)));
        }
        if cursor <= s.seq {
            let branches = Self::take_branches(cursor, s.seq);
            let from = self.first_from();
            return self
                .claim("take event", move || {
                    let txn = self.take_txn(&branches, from);
                    Some((txn, move |resp| Won::Take {
                        branches,
                        from,
                        resp,
                    }))
                })
                .await;
        }
        let wake = s
            .claims
            .values()
            .map(|(_, until, _)| *until)
            .filter(|u| *u > now)
            .min()
            .map(|u| Duration::from_millis(u - now + 1));
        Ok(Err(wake))
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, i64)>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands out the lowest reserved event: *if `p/<o>` and `c/<o>` still have the revision
    /// of the take that reserved it, then `p/<o>` := 1 and claim it for the ack wait*, with
    /// a read of the event. The delivery counts from here, as a take's would. A reservation
    /// that another member took over (it ran out) fails the compare and is skipped.
    async fn mark(&self) -> Result<std::result::Result<Delivery, Option<Duration>>> {
        self.claim("hand out reserved event", || {
            // Taken under the `won` lock, so that a `next()` dropped from here on leaves the
            // event in the answer of the transaction, not out of both lists.
            let (o, rev) = self.reserved().pop_first()?;
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(self.gk.claim(o), CompareOp::Equal, rev),
                    Compare::mod_revision(self.gk.pending(o), CompareOp::Equal, rev),
                ])
                .and_then([
                    TxnOp::put(self.gk.pending(o), "1", None),
                    self.claim_op(o),
                    TxnOp::get(self.keys.event(o), None),
                ]);
            Some((txn, move |resp| Won::Mark { o, resp }))
        })
        .await
    }

    /// Runs a transaction that may claim an event, on a task of its own that holds the
    /// member's `won` lock until it has stored the answer there, then hands out an answer.
    /// If this `next()` is dropped meanwhile, what it won waits for the member's next step
    /// (which takes the lock first) instead of staying claimed until the ack wait ends.
    /// `make` builds the transaction once the lock is held (`None`: nothing to run).
    async fn claim<W>(
        &self,
        op: &'static str,
        make: impl FnOnce() -> Option<(Txn, W)>,
    ) -> Result<std::result::Result<Delivery, Option<Duration>>>
    where
        W: FnOnce(TxnResponse) -> Won + Send + 'static,
    {
        let mut slot = self.won.clone().lock_owned().await;
        let Some((txn, won)) = make() else {
            return Ok(Err(Some(Duration::ZERO)));
        };
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let resp = run(&inner, op, txn).await?;
            slot.push(won(resp));
            Ok::<(), Error>(())
        });
        task.await.map_err(|_| Error::Closed)??;
        let won = self.won.lock().await.pop();
        match won {
            Some(w) => self.hand_out(w).await,
            // Another `next()` of this member handed it out.
            None => Ok(Err(Some(Duration::ZERO))),
        }
    }

    async fn hand_out(&self, w: Won) -> Result<std::result::Result<Delivery, Option<Duration>>> {
        match w {
            Won::Take {
                branches,
                from,
                resp,
            } => self.took(&branches, from, resp).await,
            Won::Reclaim {
                o,
                attempts,
                first,
                resp,
            } => {
                if !resp.succeeded() {
                    return Ok(Err(Some(Duration::ZERO)));
                }
                let tag = resp.header().map_or(0, |h| h.revision()) as u64;
                let g = gets(resp);
                match g.first().and_then(|r| self.event_of(o, r)) {
                    Some(e) => Ok(Ok(Delivery::new(e, attempts + 1, tag))),
                    None => {
                        self.forget(&[o]).await?;
                        Err(Error::Truncated {
                            topic: self.topic.clone(),
                            requested: o,
                            first_available: first,
                        })
                    }
                }
            }
            Won::Mark { o, resp } => {
                if !resp.succeeded() {
                    return Ok(Err(Some(Duration::ZERO)));
                }
                let tag = resp.header().map_or(0, |h| h.revision()) as u64;
                let g = gets(resp);
                match g.first().and_then(|r| self.event_of(o, r)) {
                    Some(e) => Ok(Ok(Delivery::new(e, 1, tag))),
                    None => Err(self.lost_to_retention(o).await?),
                }
            }
        }
    }

    /// What a take transaction over `branches` got: the delivery (the rest of its batch goes
    /// to the member's reserve), or how long to wait.
    async fn took(
        &self,
        branches: &[(u64, u64)],
        from: Option<u64>,
        resp: TxnResponse,
    ) -> Result<std::result::Result<Delivery, Option<Duration>>> {
        let tag = resp.header().map_or(0, |h| h.revision()) as u64;
        // Down the chain to the branch that ran.
        let (mut resp, mut depth) = (resp, 0usize);
        while !resp.succeeded() {
            let Some(TxnOpResponse::Txn(inner)) = resp.op_responses().into_iter().next() else {
                return Ok(Err(Some(Duration::ZERO)));
            };
            if depth + 1 >= branches.len() {
                // The cursor was past the chain: the innermost branch read the state.
                self.keep(self.parse_state(&gets(inner), from));
                return Ok(Err(Some(Duration::ZERO)));
            }
            resp = inner;
            depth += 1;
        }
        let (x, end) = branches[depth];
        // Every key the take wrote has the take's revision.
        self.reserved()
            .extend((x + 1..end).map(|y| (y, tag as i64)));
        let g = gets(resp);
        match g.first().and_then(|r| self.event_of(x, r)) {
            Some(e) => Ok(Ok(Delivery::new(e, 1, tag))),
            // Retention removed it between the state read and the take: the group is told,
            // as when the state read sees it gone, never skipped silently.
            None => Err(self.lost_to_retention(x).await?),
        }
    }

    /// Retention removed event `o`, which this member claimed (took or had reserved), and,
    /// retention removing from the front, every event before it: drops the group's records of
    /// it and of the member's reserved events retention removed too, moves the group's cursor
    /// past what retention removed (unless another member did), and returns the one
    /// `Truncated` the member reports for all of them.
    async fn lost_to_retention(&self, o: u64) -> Result<Error> {
        self.keep(None);
        let s = self.state().await?;
        let first = s.first.max(o + 1);
        let mut gone = vec![o];
        {
            let mut reserved = self.reserved();
            while let Some(&(r, _)) = reserved.first() {
                if r >= first {
                    break;
                }
                gone.push(r);
                reserved.pop_first();
            }
        }
        self.forget(&gone).await?;
        let (cursor, c_rev) = s.cursor;
        if cursor < first {
            let guard = Compare::mod_revision(self.gk.cursor(), CompareOp::Equal, c_rev);
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(
                self.gk.cursor(),
                first.to_string(),
                None,
            )]);
            run(&self.inner, "move group cursor", txn).await?;
        }
        Ok(Error::Truncated {
            topic: self.topic.clone(),
            requested: o,
            first_available: first,
        })
    }

    /// Drops the group's records of events that retention removed.
    async fn forget(&self, offsets: &[u64]) -> Result<()> {
        let ops: Vec<TxnOp> = offsets
            .iter()
            .flat_map(|&o| {
                [
                    TxnOp::delete(self.gk.pending(o), None),
                    TxnOp::delete(self.gk.claim(o), None),
                ]
            })
            .collect();
        let txn = Txn::new().and_then(ops);
        run(&self.inner, "forget event", txn).await.map(|_| ())
    }

    async fn dead_letter(&self, o: u64, attempts: u32, p: Compare, c: Compare) -> Result<()> {
        let key = self.keys.event(o);
        let r = self
            .inner
            .client
            .retry(
                "read event",
                self.inner.client.default_budget(),
                |mut cl| {
                    let key = key.clone();
                    async move { cl.get(key, None).await }
                },
            )
            .await
            .map_err(map_err)?;
        if let Some(e) = self.event_of(o, &r) {
            let mut m = Message::new(e.payload);
            m.headers = e.headers;
            let m = m
                .with_header(dead_letter::TOPIC, self.topic.clone())
                .with_header(dead_letter::OFFSET, o.to_string())
                .with_header(dead_letter::GROUP, self.group.clone())
                .with_header(dead_letter::DELIVERIES, attempts.to_string());
            // At least once: a member that dies here leaves the record, and the next one
            // dead-letters it again.
            self.inner
                .publish(&self.options.dead_letter_for(&self.topic), m)
                .await?;
        }
        let txn = Txn::new().when([p, c]).and_then([
            TxnOp::delete(self.gk.pending(o), None),
            TxnOp::delete(self.gk.claim(o), None),
        ]);
        run(&self.inner, "dead-letter event", txn).await.map(|_| ())
    }

    async fn wait(&self, wake: Option<Duration>) -> Result<()> {
        let mut guard = self.watch.lock().await;
        if guard.is_none() {
            let (w, _) = RangeWatch::open_parts(
                self.inner.client.clone(),
                self.keys.dir.clone(),
                vec![self.keys.nothing()],
            )
            .await
            .map_err(map_err)?;
            *guard = Some(w);
            // Opened after the state was read: look again rather than miss a change.
            return Ok(());
        }
        let w = guard.as_mut().expect("opened above");
        // Drain what is already there: any change may be ours to act on.
        let mut sleep = wake.unwrap_or(Duration::from_secs(3600));
        if sleep.is_zero() {
            return Ok(());
        }
        // Catch the lease's loss: its claims vanish, which the watch reports too.
        sleep = sleep.min(Duration::from_secs(3600));
        tokio::select! {
            _ = w.next() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        Ok(())
    }

    async fn settle(&self, d: &Delivery, ack: bool) -> Result<()> {
        if self.left.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let o = d.event.offset;
        let mut ops = vec![TxnOp::delete(self.gk.claim(o), None)];
        if ack {
            ops.push(TxnOp::delete(self.gk.pending(o), None));
        }
        // The state after it, for the member's next step (most callers ask for the next
        // event at once), unless that step hands out a reserved event without reading it.
        let from = self.first_from();
        let read = self.reserved().is_empty();
        if read {
            ops.extend(self.state_ops(from));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.gk.claim(o),
                CompareOp::Equal,
                d.tag as i64,
            )])
            .and_then(ops);
        let resp = run(&self.inner, if ack { "ack" } else { "nack" }, txn).await?;
        if resp.succeeded() {
            if !ack {
                // Its event comes before the member's reserved ones.
                self.recheck.store(true, Ordering::SeqCst);
            }
            if read {
                self.keep(self.parse_state(&gets(resp), from));
            }
            Ok(())
        } else {
            Err(Error::DeliveryLost {
                topic: self.topic.clone(),
                group: self.group.clone(),
                offset: o,
            })
        }
    }
}

impl Member for EtcdMember {
    fn next(&self) -> BoxFuture<'_, Result<Delivery>> {
        async move {
            loop {
                if self.left.load(Ordering::SeqCst) {
                    return Err(Error::Closed);
                }
                match self.step().await? {
                    Ok(d) => return Ok(d),
                    Err(wake) => self.wait(wake).await?,
                }
            }
        }
        .boxed()
    }

    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>> {
        self.settle(delivery, true).boxed()
    }

    fn nack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>> {
        self.settle(delivery, false).boxed()
    }

    fn leave(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            if !self.left.swap(true, Ordering::SeqCst) {
                // Revoking the lease deletes every claim of this member at once.
                self.session.close().await.map_err(map_err)?;
            }
            Ok(())
        }
        .boxed()
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        if !self.left.swap(true, Ordering::SeqCst) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let session = self.session.clone();
                rt.spawn(async move {
                    let _ = session.close().await;
                });
            }
        }
    }
}
