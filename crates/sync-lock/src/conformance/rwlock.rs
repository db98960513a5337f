//! The read-write lock suite (cases prefixed `rw_`), over [`SemHarness`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::semaphore::{opts, rw_entries_are, LONG};
use super::SemHarness;
use crate::{AcquireOptions, Error, RwLock};

/// Readers share a name.
pub async fn rw_readers_share(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let r1 = l.read("share", opts(h)).await.unwrap();
    let r2 = l
        .try_read("share", opts(h))
        .await
        .unwrap()
        .expect("readers share");
    let r3 = l.read("share", opts(h).with_max_wait(LONG)).await.unwrap();
    drop((r1, r2, r3));
    rw_entries_are(h, "share", 0).await;
}

/// A writer is alone: no reader nor writer beside it.
pub async fn rw_writer_alone(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let w = l.write("alone", opts(h)).await.unwrap();
    assert!(l.try_read("alone", opts(h)).await.unwrap().is_none());
    assert!(l.try_write("alone", opts(h)).await.unwrap().is_none());
    w.release().await.unwrap();
    let r = l.read("alone", opts(h)).await.unwrap();
    assert!(l.try_write("alone", opts(h)).await.unwrap().is_none());
    r.release().await.unwrap();
    rw_entries_are(h, "alone", 0).await;
}

/// A reader that comes behind a waiting writer waits for it (writers are not starved).
pub async fn rw_reader_behind_waiting_writer_waits(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let r1 = l.read("fair", opts(h)).await.unwrap();
    let (l2, o) = (h.rwlock().await, opts(h));
    let writer = tokio::spawn(async move { l2.write("fair", o).await.unwrap() });
    rw_entries_are(h, "fair", 2).await;
    assert!(l.try_read("fair", opts(h)).await.unwrap().is_none());
    let (l3, o) = (h.rwlock().await, opts(h));
    let reader = tokio::spawn(async move { l3.read("fair", o).await.unwrap() });
    rw_entries_are(h, "fair", 3).await;
    r1.release().await.unwrap();
    let w = tokio::time::timeout(LONG, writer).await.unwrap().unwrap();
    assert!(!reader.is_finished());
    let wt = w.fencing_token();
    w.release().await.unwrap();
    let r = tokio::time::timeout(LONG, reader).await.unwrap().unwrap();
    assert!(r.fencing_token() > wt);
    r.release().await.unwrap();
    rw_entries_are(h, "fair", 0).await;
}

/// Many readers and writers at once: a writer never overlaps anyone.
pub async fn rw_mutual_exclusion_under_contention(h: &dyn SemHarness) {
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let l = h.rwlock().await;
        let (readers, writers, o) = (readers.clone(), writers.clone(), opts(h));
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                if i % 3 == 0 {
                    let g = l.write("mix", o.clone()).await.unwrap();
                    assert_eq!(writers.fetch_add(1, Ordering::SeqCst), 0);
                    assert_eq!(readers.load(Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    writers.fetch_sub(1, Ordering::SeqCst);
                    g.release().await.unwrap();
                } else {
                    let g = l.read("mix", o.clone()).await.unwrap();
                    readers.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(writers.load(Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    readers.fetch_sub(1, Ordering::SeqCst);
                    g.release().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rw_entries_are(h, "mix", 0).await;
}

/// try_read refuses behind a writer (holding or waiting); try_write behind anyone.
pub async fn rw_try_semantics(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let w = l.try_write("try", opts(h)).await.unwrap().expect("free");
    assert!(l.try_read("try", opts(h)).await.unwrap().is_none());
    drop(w);
    rw_entries_are(h, "try", 0).await;
    let r = l.try_read("try", opts(h)).await.unwrap().expect("free");
    assert!(l.try_write("try", opts(h)).await.unwrap().is_none());
    drop(r);
    rw_entries_are(h, "try", 0).await;
}

/// Max-wait timeouts of readers and writers leave nothing behind.
pub async fn rw_wait_timeout_leaves_nothing(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let w = l.write("slow", opts(h)).await.unwrap();
    let short = opts(h).with_max_wait(Duration::from_millis(200));
    let e = l.read("slow", short.clone()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let e = l.write("slow", short).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    rw_entries_are(h, "slow", 1).await;
    w.release().await.unwrap();
    rw_entries_are(h, "slow", 0).await;
}

/// Dropping a writer's guard hands the name to all the readers waiting at the front.
pub async fn rw_drop_hands_over_to_readers(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let w = l.write("hand", opts(h)).await.unwrap();
    let mut readers = Vec::new();
    for i in 0..3 {
        let (l2, o) = (h.rwlock().await, opts(h));
        readers.push(tokio::spawn(
            async move { l2.read("hand", o).await.unwrap() },
        ));
        rw_entries_are(h, "hand", i + 2).await;
    }
    drop(w);
    let mut guards = Vec::new();
    for r in readers {
        guards.push(tokio::time::timeout(LONG, r).await.unwrap().unwrap());
    }
    drop(guards);
    rw_entries_are(h, "hand", 0).await;
}

/// Bad names and a zero TTL are typed errors.
pub async fn rw_invalid_input_rejected(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let e = l.read("", opts(h)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    let e = l.try_write("", opts(h)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    let e = l
        .write("ttl", AcquireOptions::new().with_ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
}

/// Fencing tokens increase from writer to reader to writer.
pub async fn rw_fencing_tokens_increase(h: &dyn SemHarness) {
    let l = h.rwlock().await;
    let mut last = 0;
    for i in 0..4 {
        let g = if i % 2 == 0 {
            l.write("tokens", opts(h)).await.unwrap()
        } else {
            l.read("tokens", opts(h)).await.unwrap()
        };
        assert!(g.fencing_token() > last);
        last = g.fencing_token();
        g.release().await.unwrap();
    }
}

/// Read-write locks of different names do not interfere, and work through `Arc<dyn RwLock>`.
pub async fn rw_names_do_not_interfere(h: &dyn SemHarness) {
    let l: Arc<dyn RwLock> = h.rwlock().await;
    let w = l.write("x", opts(h)).await.unwrap();
    let w2 = l
        .try_write("y", opts(h))
        .await
        .unwrap()
        .expect("other name free");
    drop((w, w2));
    rw_entries_are(h, "x", 0).await;
    rw_entries_are(h, "y", 0).await;
}

/// Writers are not starved: readers that keep arriving (on the holder's client and another)
/// while a writer waits behind a reader do not overtake it; they are granted only once the
/// writer released, with later fencing tokens.
pub async fn rw_writer_not_starved_by_arriving_readers(h: &dyn SemHarness) {
    let name = "starve";
    let (a, b, c) = (h.rwlock().await, h.rwlock().await, h.rwlock().await);
    let first = a.read(name, opts(h)).await.unwrap();
    let o = opts(h);
    let writer = tokio::spawn(async move { b.write(name, o).await.unwrap() });
    rw_entries_are(h, name, 2).await;
    let mut readers = Vec::new();
    for i in 0..4 {
        let l = if i % 2 == 0 { a.clone() } else { c.clone() };
        let r = l.try_read(name, opts(h)).await.unwrap();
        assert!(r.is_none(), "try_read {i} overtook the waiting writer");
        let o = opts(h);
        readers.push(tokio::spawn(async move {
            let g = l.read(name, o).await.unwrap();
            (Instant::now(), g)
        }));
        rw_entries_are(h, name, 3 + i).await;
    }
    first.release().await.unwrap();
    let w = tokio::time::timeout(LONG, writer)
        .await
        .expect("the writer is granted once the first reader left")
        .unwrap();
    rw_entries_are(h, name, 5).await;
    let writer_left = Instant::now();
    let wt = w.fencing_token();
    w.release().await.unwrap();
    let mut guards = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        let (granted, g) = tokio::time::timeout(LONG, r).await.unwrap().unwrap();
        assert!(
            granted >= writer_left,
            "reader {i} was granted before the writer it arrived behind had released"
        );
        assert!(g.fencing_token() > wt);
        guards.push(g);
    }
    drop(guards);
    rw_entries_are(h, name, 0).await;
}

/// An explicit `release()` hands over at once and in order: a writer's to the reader waiting
/// first (on another client), and that reader's to the writer waiting behind it, not before.
pub async fn rw_release_hands_over(h: &dyn SemHarness) {
    let name = "handover";
    let (a, b, c) = (h.rwlock().await, h.rwlock().await, h.rwlock().await);
    let first = a.write(name, opts(h)).await.unwrap();
    let (tx_r, rx_r) = tokio::sync::oneshot::channel();
    let o = opts(h);
    let reader = tokio::spawn(async move {
        let g = b.read(name, o).await.unwrap();
        let _ = tx_r.send(Instant::now());
        g
    });
    rw_entries_are(h, name, 2).await;
    let (tx_w, rx_w) = tokio::sync::oneshot::channel();
    let o = opts(h);
    let writer = tokio::spawn(async move {
        let g = c.write(name, o).await.unwrap();
        let _ = tx_w.send(Instant::now());
        g
    });
    rw_entries_are(h, name, 3).await;
    // Generous bounds: not a benchmark, only a guard against a hand-over by polling or TTL.
    let released = Instant::now();
    first.release().await.unwrap();
    let got = tokio::time::timeout(LONG, rx_r).await.unwrap().unwrap();
    let took = got.duration_since(released);
    assert!(
        took < Duration::from_secs(1),
        "writer to reader took {took:?}"
    );
    let r = reader.await.unwrap();
    rw_entries_are(h, name, 2).await;
    let released = Instant::now();
    r.release().await.unwrap();
    let got = tokio::time::timeout(LONG, rx_w).await.unwrap().unwrap();
    assert!(got >= released, "the writer was granted beside the reader");
    let took = got.duration_since(released);
    assert!(
        took < Duration::from_secs(1),
        "reader to writer took {took:?}"
    );
    writer.await.unwrap().release().await.unwrap();
    rw_entries_are(h, name, 0).await;
}

/// Across two separate clients (processes, on a distributed backend): a writer of one excludes
/// readers and writers of the other, readers of both share, and under contention of four tasks
/// on each client there is never more than one writer, nor a reader beside it.
pub async fn rw_exclusion_across_two_clients(h: &dyn SemHarness) {
    let name = "two-clients";
    let (a, b) = (h.rwlock().await, h.rwlock().await);
    for (x, y) in [(&a, &b), (&b, &a)] {
        let w = x.write(name, opts(h)).await.unwrap();
        assert!(y.try_read(name, opts(h)).await.unwrap().is_none());
        assert!(y.try_write(name, opts(h)).await.unwrap().is_none());
        let short = opts(h).with_max_wait(Duration::from_millis(300));
        let e = y.read(name, short).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        w.release().await.unwrap();
        let r = y.read(name, opts(h)).await.unwrap();
        assert!(x.try_write(name, opts(h)).await.unwrap().is_none());
        let r2 = x.try_read(name, opts(h)).await.unwrap();
        assert!(r2.is_some(), "readers of two clients do not share");
        drop((r, r2));
        rw_entries_are(h, name, 0).await;
    }
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (readers, writers, o) = (readers.clone(), writers.clone(), opts(h));
        tasks.push(tokio::spawn(async move {
            for round in 0..4 {
                if (i + round) % 3 == 0 {
                    let g = l.write(name, o.clone()).await.unwrap();
                    assert_eq!(writers.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                    assert_eq!(
                        readers.load(Ordering::SeqCst),
                        0,
                        "a reader beside a writer"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    assert_eq!(
                        readers.load(Ordering::SeqCst),
                        0,
                        "a reader beside a writer"
                    );
                    writers.fetch_sub(1, Ordering::SeqCst);
                    g.release().await.unwrap();
                } else {
                    let g = l.read(name, o.clone()).await.unwrap();
                    readers.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(
                        writers.load(Ordering::SeqCst),
                        0,
                        "a writer beside a reader"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    assert_eq!(
                        writers.load(Ordering::SeqCst),
                        0,
                        "a writer beside a reader"
                    );
                    readers.fetch_sub(1, Ordering::SeqCst);
                    g.release().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(LONG, t).await.unwrap().unwrap();
    }
    rw_entries_are(h, name, 0).await;
}

/// A writer that gives up waiting (its maximum wait passes, or its task is aborted) does not
/// keep the readers queued behind it waiting: they join the readers holding at once.
pub async fn rw_readers_behind_a_writer_that_gave_up_join_the_readers(h: &dyn SemHarness) {
    let name = "gave-up";
    let (a, b, c) = (h.rwlock().await, h.rwlock().await, h.rwlock().await);
    let first = a.read(name, opts(h)).await.unwrap();
    for abort in [false, true] {
        // Long enough for the reader to queue behind it first, even on a loaded machine.
        let o = opts(h).with_max_wait(if abort { LONG } else { Duration::from_secs(2) });
        let b2 = b.clone();
        let writer = tokio::spawn(async move { b2.write(name, o).await });
        rw_entries_are(h, name, 2).await;
        let (c2, o) = (c.clone(), opts(h));
        let reader = tokio::spawn(async move { c2.read(name, o).await.unwrap() });
        rw_entries_are(h, name, 3).await;
        if abort {
            writer.abort();
            assert!(writer.await.unwrap_err().is_cancelled());
        } else {
            let e = writer.await.unwrap().unwrap_err();
            assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        }
        let r = tokio::time::timeout(LONG, reader)
            .await
            .expect("the reader behind a writer that gave up still waits")
            .unwrap();
        assert!(!first.is_lost());
        rw_entries_are(h, name, 2).await;
        r.release().await.unwrap();
    }
    first.release().await.unwrap();
    rw_entries_are(h, name, 0).await;
}
