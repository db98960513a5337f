//! A group member killed with SIGKILL (a real process, its lease left to expire) loses
//! nothing: the event it held goes to another member after the lease TTL, long before its ack
//! wait. Needs the harness's etcd.

use std::time::Duration;

use sync_etcd::testing;
use sync_event::{EtcdEvents, EventOptions, EventStream, GroupOptions, Message};

const CHILD: &str = "SYNC_EVENT_KILL_CHILD";

fn opts() -> GroupOptions {
    // Far longer than the test: only the lease's end can free the delivery.
    GroupOptions::new().with_ack_wait(Duration::from_secs(600))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn killed_member_loses_nothing() {
    if let Ok(prefix) = std::env::var(CHILD) {
        // The child: take one delivery, say which, and hang until killed.
        let cfg = testing::config("x").with_prefix(prefix);
        let ev = EtcdEvents::connect(cfg, EventOptions::new()).await.unwrap();
        let m = ev.join("t", "g", opts()).await.unwrap();
        let d = m.next().await.unwrap();
        println!("HOLDING {}", d.event.offset);
        futures::future::pending::<()>().await;
        return;
    }
    let cfg = testing::config("event-kill");
    let client = testing::connect(cfg.clone()).await;
    let _wipe = testing::WipeOnDrop(client);
    let ev = EtcdEvents::connect(cfg.clone(), EventOptions::new())
        .await
        .unwrap();
    let o = ev.publish("t", Message::new("x")).await.unwrap();
    let (mut child, held) =
        testing::spawn_self("killed_member_loses_nothing", CHILD, &cfg.prefix, "HOLDING").await;
    assert_eq!(held, o.to_string());
    child.kill().unwrap(); // SIGKILL: no leave, no lease revoke
    child.wait().unwrap();
    let m = ev.join("t", "g", opts()).await.unwrap();
    let d = sync_core::check::within(
        "redelivery after the lease's end",
        Duration::from_secs(20),
        m.next(),
    )
    .await
    .unwrap();
    assert_eq!((d.event.offset, d.attempt), (o, 2));
    m.ack(&d).await.unwrap();
}
