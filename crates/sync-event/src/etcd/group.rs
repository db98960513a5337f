//! Consumer groups on etcd. The group's position is `cursor` (the next offset never delivered)
//! plus one `p/<offset>` record per delivered, unacked event (its delivery count); both are
//! plain keys and outlive every member. A member holds a delivery by a `c/<offset>` claim on its
//! own lease, carrying the wall-clock end of its ack wait. Every move (take the cursor's event,
//! reclaim an expired or orphaned delivery, ack, nack) is one transaction guarded by the
//! revisions the member read, so two members never hold one event at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    async fn state(&self) -> Result<State> {
        let ev = self.keys.events();
        let txn = Txn::new().and_then([
            TxnOp::get(
                self.gk.dir.clone(),
                Some(GetOptions::new().with_range(prefix_end(self.gk.dir.as_bytes()))),
            ),
            TxnOp::get(self.keys.seq(), None),
            TxnOp::get(
                ev.clone(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(ev.as_bytes()))
                        .with_limit(1)
                        .with_keys_only(),
                ),
            ),
        ]);
        let g = gets(run(&self.inner, "read group", txn).await?);
        let mut s = State::default();
        for kv in g[0].kvs() {
            if kv.key() == self.gk.cursor().as_bytes() {
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
        s.seq = g[1].kvs().first().map_or(0, |kv| parse_u64(kv.value()));
        s.first = g[2]
            .kvs()
            .first()
            .and_then(|kv| self.keys.offset_of(kv.key()))
            .unwrap_or(s.seq + 1);
        Ok(s)
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
        let s = self.state().await?;
        let now = now_ms();
        // Redeliveries first, oldest offset first: a pending event nobody holds (a nack, a
        // member gone with its lease) or whose holder's ack wait passed.
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
            let resp = run(&self.inner, "reclaim event", txn).await?;
            if !resp.succeeded() {
                return Ok(Err(Some(Duration::ZERO)));
            }
            let tag = resp.header().map_or(0, |h| h.revision()) as u64;
            let g = gets(resp);
            return match g.first().and_then(|r| self.event_of(o, r)) {
                Some(e) => Ok(Ok(Delivery::new(e, attempts + 1, tag))),
                None => {
                    self.forget(o).await?;
                    Err(Error::Truncated {
                        topic: self.topic.clone(),
                        requested: o,
                        first_available: s.first,
                    })
                }
            };
        }
        let (cursor, c_rev) = s.cursor;
        let guard = Compare::mod_revision(self.gk.cursor(), CompareOp::Equal, c_rev);
        if cursor < s.first {
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
            let txn = Txn::new().when([guard]).and_then([
                TxnOp::put(self.gk.cursor(), (cursor + 1).to_string(), None),
                TxnOp::put(self.gk.pending(cursor), "1", None),
                self.claim_op(cursor),
                TxnOp::get(self.keys.event(cursor), None),
            ]);
            let resp = run(&self.inner, "take event", txn).await?;
            if !resp.succeeded() {
                return Ok(Err(Some(Duration::ZERO)));
            }
            let tag = resp.header().map_or(0, |h| h.revision()) as u64;
            let g = gets(resp);
            return match g.first().and_then(|r| self.event_of(cursor, r)) {
                Some(e) => Ok(Ok(Delivery::new(e, 1, tag))),
                None => {
                    // Retention removed it between the state read and the take: the group is
                    // told, as when the state read sees it gone, never skipped silently.
                    self.forget(cursor).await?;
                    let first = self.state().await?.first.max(cursor + 1);
                    if first > cursor + 1 {
                        // Past everything removed, unless another member moved it already.
                        let txn = Txn::new()
                            .when([Compare::value(
                                self.gk.cursor(),
                                CompareOp::Equal,
                                (cursor + 1).to_string(),
                            )])
                            .and_then([TxnOp::put(self.gk.cursor(), first.to_string(), None)]);
                        run(&self.inner, "move group cursor", txn).await?;
                    }
                    Err(Error::Truncated {
                        topic: self.topic.clone(),
                        requested: cursor,
                        first_available: first,
                    })
                }
            };
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

    /// Drops the group's record of an event that retention removed.
    async fn forget(&self, o: u64) -> Result<()> {
        let txn = Txn::new().and_then([
            TxnOp::delete(self.gk.pending(o), None),
            TxnOp::delete(self.gk.claim(o), None),
        ]);
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
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.gk.claim(o),
                CompareOp::Equal,
                d.tag as i64,
            )])
            .and_then(ops);
        if run(&self.inner, if ack { "ack" } else { "nack" }, txn)
            .await?
            .succeeded()
        {
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
