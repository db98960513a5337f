//! Subscriptions: pages read at the revision a watch starts from, then the watch. Offsets are
//! dense (see `mod.rs`), so a reader knows the exact key it needs next and recognises a
//! deletion by retention ahead of it as `Truncated`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use sync_etcd::{prefix_end, read_page, RangeChange, RangeEvent, RangeWatch};

use super::{codec, map_err, parse_u64, Inner, TopicKeys};
use crate::{check_name, Error, Event, Result, Start, Subscription};

const PAGE: i64 = 100;

pub(super) async fn subscribe(
    inner: Arc<Inner>,
    topic: &str,
    start: Start,
) -> Result<Subscription> {
    check_name("topic", topic)?;
    let keys = inner.keys(topic);
    if let Some(age) = inner.options.retention_for(topic).max_age() {
        inner.sweep_age(topic, &keys, Some(age)).await;
    }
    // The snapshot reads one part that holds no key (`e/~` sorts after every offset): it only
    // fixes the revision our pages are read at and the watch starts after. (With no part at
    // all the revision would stay 0 and the watch would replay the topic's whole history.)
    let (watch, snap) =
        RangeWatch::open_parts(inner.client.clone(), keys.events(), vec![keys.nothing()])
            .await
            .map_err(map_err)?;
    let rev = snap.revision;
    let mut r = Reader {
        inner,
        topic: topic.to_owned(),
        keys,
        next: 0,
        rev,
        buffer: VecDeque::new(),
        watch,
        paging: true,
        done: false,
    };
    let (first, seq) = r.bounds().await?;
    let truncated = |requested| Error::Truncated {
        topic: topic.to_owned(),
        requested,
        first_available: first,
    };
    r.next = match start {
        Start::Earliest => first,
        Start::Latest => seq + 1,
        Start::Offset(n) if n < first => return Err(truncated(n)),
        Start::Offset(n) => n,
        Start::Time(t) => find_time(&r.inner, &r.keys, topic, t, first, seq, rev).await?,
    };
    Ok(Subscription::new(
        futures::stream::unfold(r, |mut r| async move {
            let item = r.read().await?;
            Some((item, r))
        })
        .boxed(),
    ))
}

struct Reader {
    inner: Arc<Inner>,
    topic: String,
    keys: TopicKeys,
    /// The next offset to deliver.
    next: u64,
    /// The revision pages are read at.
    rev: i64,
    buffer: VecDeque<Event>,
    watch: RangeWatch,
    paging: bool,
    done: bool,
}

impl Reader {
    /// (first retained offset or seq + 1, seq), at `self.rev`.
    async fn bounds(&self) -> Result<(u64, u64)> {
        let ev = self.keys.events();
        let page = read_page(
            &self.inner.client,
            ev.as_bytes(),
            &prefix_end(ev.as_bytes()),
            1,
            self.rev,
        )
        .await
        .map_err(map_err)?;
        let seq_key = self.keys.seq();
        let mut seq_end = seq_key.clone().into_bytes();
        seq_end.push(0);
        let s = read_page(
            &self.inner.client,
            seq_key.as_bytes(),
            &seq_end,
            1,
            self.rev,
        )
        .await
        .map_err(map_err)?;
        let seq = s.kvs.first().map_or(0, |kv| parse_u64(&kv.value));
        let first = page
            .kvs
            .first()
            .and_then(|kv| self.keys.offset_of(&kv.key))
            .unwrap_or(seq + 1);
        Ok((first, seq))
    }

    async fn truncated(&mut self) -> Error {
        self.done = true;
        let first = match self.inner.first_available(&self.keys).await {
            Ok((f, _)) => f,
            Err(e) => return e,
        };
        Error::Truncated {
            topic: self.topic.clone(),
            requested: self.next,
            first_available: first.max(self.next + 1),
        }
    }

    fn take(&mut self, offset: u64, value: &[u8]) {
        if let Some((at, m)) = codec::decode(value) {
            self.buffer
                .push_back(Event::new(self.topic.clone(), offset, at, m));
        }
        self.next = offset + 1;
    }

    async fn read(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            if self.paging {
                let from = self.keys.event(self.next);
                let end = prefix_end(self.keys.events().as_bytes());
                let page = match read_page(
                    &self.inner.client,
                    from.as_bytes(),
                    &end,
                    PAGE,
                    self.rev,
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => return Some(Err(map_err(e))),
                };
                if page.kvs.is_empty() {
                    // Nothing at or after `next`: either not yet published, or all dropped.
                    match self.bounds().await {
                        Ok((_, seq)) if self.next <= seq => {
                            return Some(Err(self.truncated().await));
                        }
                        Ok(_) => {}
                        Err(e) => return Some(Err(e)),
                    }
                    self.paging = false;
                    continue;
                }
                for kv in &page.kvs {
                    let Some(o) = self.keys.offset_of(&kv.key) else {
                        continue;
                    };
                    if o < self.next {
                        continue;
                    }
                    if o > self.next {
                        if self.buffer.is_empty() {
                            return Some(Err(self.truncated().await));
                        }
                        // Deliver what we have first; the gap is found again next time.
                        break;
                    }
                    self.take(o, &kv.value);
                }
                if page.next.is_none() {
                    self.paging = false;
                }
                continue;
            }
            match self.watch.next().await {
                RangeEvent::Changes { revision, changes } => {
                    if revision <= self.rev {
                        continue;
                    }
                    for c in changes {
                        match c {
                            RangeChange::Put(kv) => {
                                let Some(o) = self.keys.offset_of(&kv.key) else {
                                    continue;
                                };
                                if o == self.next {
                                    self.take(o, &kv.value);
                                } else if o > self.next {
                                    // Cannot happen with dense offsets unless we fell behind
                                    // a reset: read pages from where we are.
                                    self.rev = revision;
                                    self.paging = true;
                                }
                            }
                            RangeChange::Delete { key } => {
                                let Some(o) = self.keys.offset_of(&key) else {
                                    continue;
                                };
                                if o >= self.next && !self.paging {
                                    // Retention dropped an event we have not read.
                                    self.rev = revision;
                                    self.paging = true;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                RangeEvent::Reset { revision, .. } => {
                    self.rev = revision;
                    self.paging = true;
                }
                _ => {}
            }
        }
    }
}

/// The first offset published at or after `t`; `Truncated` if retention may have dropped
/// such events (something was dropped, and the oldest retained event is already at or
/// after `t`).
pub(super) async fn find_time(
    inner: &Inner,
    keys: &TopicKeys,
    topic: &str,
    t: SystemTime,
    first: u64,
    seq: u64,
    rev: i64,
) -> Result<u64> {
    let ev = keys.events();
    let end = prefix_end(ev.as_bytes());
    let mut from = keys.event(first).into_bytes();
    let mut at_front = true;
    loop {
        let page = read_page(&inner.client, &from, &end, PAGE, rev)
            .await
            .map_err(map_err)?;
        for kv in &page.kvs {
            if codec::time_of(&kv.value).is_some_and(|at| at >= t) {
                let o = keys.offset_of(&kv.key).unwrap_or(first);
                if at_front && first > 1 {
                    return Err(Error::Truncated {
                        topic: topic.to_owned(),
                        requested: first - 1,
                        first_available: first,
                    });
                }
                return Ok(o);
            }
            at_front = false;
        }
        match page.next {
            Some(n) => from = n,
            None => break,
        }
    }
    if at_front && first > 1 && first <= seq {
        return Err(Error::Truncated {
            topic: topic.to_owned(),
            requested: first - 1,
            first_available: first,
        });
    }
    Ok(seq + 1)
}
