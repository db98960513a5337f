//! Consumer groups of the local backend: a member claims the oldest free pending event or the
//! group's cursor under the topic's lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use super::{Hold, Inner, Pending, Topic};
use crate::event::dead_letter;
use crate::{Delivery, Error, Event, GroupOptions, Member, Message, Result};

pub(super) struct LocalMember {
    pub(super) inner: Arc<Inner>,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) id: u64,
    pub(super) options: GroupOptions,
    pub(super) left: AtomicBool,
}

impl std::fmt::Debug for LocalMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMember")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

enum Step {
    Deliver(Delivery),
    DeadLetter(Message),
    Fail(Error),
    Wait(Option<Instant>, watch::Receiver<u64>),
}

impl LocalMember {
    fn step(&self) -> Step {
        let mut topics = self.inner.lock();
        let t = self.inner.topic(&mut topics, &self.topic);
        t.prune();
        let first = t.first_available();
        let now = Instant::now();
        let Topic {
            events,
            groups,
            next,
            changed,
            waiting,
            ..
        } = t;
        let g = groups.get_mut(&self.group).expect("joined group exists");
        let get = |o: u64| -> Option<Event> {
            if o < first {
                return None;
            }
            events.get((o - first) as usize).cloned()
        };
        // Holds whose ack wait passed are free again.
        for p in g.pending.values_mut() {
            if p.holder.is_some_and(|h| h.until <= now) {
                p.holder = None;
            }
        }
        let tag = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        let hold = Hold {
            member: self.id,
            until: now + self.options.ack_wait(),
            tag,
        };
        if let Some((&offset, p)) = g.pending.iter_mut().find(|(_, p)| p.holder.is_none()) {
            let Some(event) = get(offset) else {
                g.pending.remove(&offset);
                return Step::Fail(Error::Truncated {
                    topic: self.topic.clone(),
                    requested: offset,
                    first_available: first,
                });
            };
            if p.attempts >= self.options.max_deliveries() {
                let attempts = p.attempts;
                g.pending.remove(&offset);
                let mut m = Message::new(event.payload);
                m.headers = event.headers;
                let m = m
                    .with_header(dead_letter::TOPIC, self.topic.clone())
                    .with_header(dead_letter::OFFSET, offset.to_string())
                    .with_header(dead_letter::GROUP, self.group.clone())
                    .with_header(dead_letter::DELIVERIES, attempts.to_string());
                return Step::DeadLetter(m);
            }
            p.attempts += 1;
            p.holder = Some(hold);
            return Step::Deliver(Delivery::new(event, p.attempts, tag));
        }
        if g.cursor < first {
            let requested = g.cursor;
            g.cursor = first;
            return Step::Fail(Error::Truncated {
                topic: self.topic.clone(),
                requested,
                first_available: first,
            });
        }
        if g.cursor < *next {
            let offset = g.cursor;
            let event = get(offset).expect("retained offsets are contiguous");
            g.cursor += 1;
            g.pending.insert(
                offset,
                Pending {
                    attempts: 1,
                    holder: Some(hold),
                },
            );
            return Step::Deliver(Delivery::new(event, 1, tag));
        }
        let wake = g
            .pending
            .values()
            .filter_map(|p| p.holder.map(|h| h.until))
            .min();
        // Nothing to take: the next change wakes this member (see `Topic::waiting`).
        *waiting = true;
        Step::Wait(wake, changed.subscribe())
    }

    fn release_holds(&self) {
        let mut topics = self.inner.lock();
        let t = self.inner.topic(&mut topics, &self.topic);
        if let Some(g) = t.groups.get_mut(&self.group) {
            for p in g.pending.values_mut() {
                if p.holder.is_some_and(|h| h.member == self.id) {
                    p.holder = None;
                }
            }
        }
        t.bump();
    }

    /// Applies `f` to the pending entry of `d` if this member still holds it.
    fn settle(&self, d: &Delivery, ack: bool) -> Result<()> {
        if self.left.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let mut topics = self.inner.lock();
        let t = self.inner.topic(&mut topics, &self.topic);
        let now = Instant::now();
        let offset = d.event.offset;
        let g = t.groups.get_mut(&self.group).expect("joined group exists");
        let held = g
            .pending
            .get(&offset)
            .and_then(|p| p.holder)
            .is_some_and(|h| h.member == self.id && h.tag == d.tag && h.until > now);
        if !held {
            return Err(Error::DeliveryLost {
                topic: self.topic.clone(),
                group: self.group.clone(),
                offset,
            });
        }
        if ack {
            g.pending.remove(&offset);
        } else if let Some(p) = g.pending.get_mut(&offset) {
            p.holder = None;
        }
        t.bump();
        Ok(())
    }
}

impl Member for LocalMember {
    fn next(&self) -> BoxFuture<'_, Result<Delivery>> {
        async move {
            loop {
                if self.left.load(Ordering::SeqCst) {
                    return Err(Error::Closed);
                }
                match self.step() {
                    Step::Deliver(d) => return Ok(d),
                    Step::Fail(e) => return Err(e),
                    Step::DeadLetter(m) => {
                        let dl = self.options.dead_letter_for(&self.topic);
                        let mut topics = self.inner.lock();
                        self.inner.topic(&mut topics, &dl).append(&dl, m);
                    }
                    Step::Wait(wake, mut rx) => {
                        let until = wake.map(tokio::time::Instant::from_std);
                        tokio::select! {
                            _ = rx.changed() => {}
                            _ = async {
                                match until {
                                    Some(u) => tokio::time::sleep_until(u).await,
                                    None => futures::future::pending().await,
                                }
                            } => {}
                        }
                    }
                }
            }
        }
        .boxed()
    }

    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>> {
        futures::future::ready(self.settle(delivery, true)).boxed()
    }

    fn nack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>> {
        futures::future::ready(self.settle(delivery, false)).boxed()
    }

    fn leave(&self) -> BoxFuture<'_, Result<()>> {
        if !self.left.swap(true, Ordering::SeqCst) {
            self.release_holds();
        }
        futures::future::ready(Ok(())).boxed()
    }
}

impl Drop for LocalMember {
    fn drop(&mut self) {
        if !self.left.swap(true, Ordering::SeqCst) {
            self.release_holds();
        }
    }
}
