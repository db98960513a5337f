//! TLS and authentication against an etcd of the test's own (TLS with client certificates,
//! auth on, users `root`, `alpha`, `beta`; see `sync_chaos::secure`), started on free loopback
//! ports and stopped when the test ends, also on panic.

use std::time::Duration;

use sync_chaos::badinput::etcd_error;
use sync_chaos::secure::{SecureEtcd, APPS, ROOT_PASSWORD};
use sync_etcd::Error as EtcdError;
use sync_leader::{ElectOptions, EtcdLeader, Leader};
use sync_lock::{AcquireOptions, EtcdLock, Lock, TlsConfig};
use sync_task::{Command, EtcdTask, Job, Task, TaskOptions};

fn start() -> SecureEtcd {
    SecureEtcd::start().unwrap_or_else(|e| panic!("cannot start the TLS etcd: {e}"))
}

fn root_cause(e: &sync_lock::Error) -> &EtcdError {
    etcd_error(e).unwrap_or_else(|| panic!("not an etcd error: {e:?}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs etcd and openssl: run `cargo xtask test`"]
async fn right_credentials_work_and_each_wrong_one_says_which() {
    let etcd = start();
    let (app, password) = APPS[0];
    let good = etcd.config(app).with_auth(app, password);

    let locks = EtcdLock::connect(good.clone())
        .await
        .expect("right credentials");
    let g = locks.acquire("a", AcquireOptions::new()).await.unwrap();
    g.release().await.unwrap();
    let election = EtcdLeader::new(locks.connection());
    election
        .elect("me", ElectOptions::new())
        .await
        .unwrap()
        .resign()
        .await
        .unwrap();
    let task = EtcdTask::new(locks.connection(), TaskOptions::new()).unwrap();
    let out = task
        .run(Command::typed("hello", |()| async { Ok("hi") }))
        .await
        .unwrap();
    assert_eq!(out, "hi");
    task.shutdown().await.unwrap();

    let mut wrong_ca = good.clone();
    wrong_ca.tls = Some(
        TlsConfig::with_ca(&etcd.wrong_ca).with_client_cert(&etcd.client_cert, &etcd.client_key),
    );
    let e = EtcdLock::connect(wrong_ca).await.unwrap_err();
    match root_cause(&e) {
        EtcdError::Tls { detail, .. } => assert!(detail.contains("server's certificate"), "{e}"),
        other => panic!("wrong CA: expected Error::Tls, got {other:?}"),
    }
    assert!(!e.is_retryable());

    let mut no_cert = good.clone();
    no_cert.tls = Some(TlsConfig::with_ca(&etcd.ca));
    let e = EtcdLock::connect(no_cert).await.unwrap_err();
    match root_cause(&e) {
        EtcdError::Tls { detail, .. } => assert!(detail.contains("client certificate"), "{e}"),
        other => panic!("no client certificate: expected Error::Tls, got {other:?}"),
    }

    let e = EtcdLock::connect(etcd.config(app).with_auth(app, "wrong"))
        .await
        .unwrap_err();
    match root_cause(&e) {
        EtcdError::Auth { detail, .. } => {
            assert!(detail.contains("authentication failed"), "{e}")
        }
        other => panic!("wrong password: expected Error::Auth, got {other:?}"),
    }

    let e = EtcdLock::connect(etcd.config(app)).await.unwrap_err();
    match root_cause(&e) {
        EtcdError::Auth { detail, .. } => {
            assert!(detail.contains("no user or password configured"), "{e}")
        }
        other => panic!("no credentials: expected Error::Auth, got {other:?}"),
    }

    // The app's user may not use another app's prefix.
    let e = EtcdLock::connect(etcd.config(APPS[1].0).with_auth(app, password))
        .await
        .unwrap_err();
    assert!(
        matches!(root_cause(&e), EtcdError::Auth { .. }),
        "other app's prefix: {e:?}"
    );
    // Locks and candidacies leave nothing; the task's result stays for its retention time.
    for kind in ["lock", "election"] {
        let left = etcd.keys(&format!("{app}/{kind}/")).unwrap();
        assert!(left.is_empty(), "keys left behind: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs etcd and openssl: run `cargo xtask test`"]
async fn applications_with_different_prefixes_never_meet() {
    let etcd = start();
    // Both as root: only the prefix separates them, not permissions.
    let connect = |prefix: &'static str| {
        let cfg = etcd.config(prefix).with_auth("root", ROOT_PASSWORD);
        async move { EtcdLock::connect(cfg).await.expect("connect as root") }
    };
    let (a, b) = (connect("alpha").await, connect("beta").await);

    let held = a.acquire("shared", AcquireOptions::new()).await.unwrap();
    let other = b
        .try_acquire("shared", AcquireOptions::new())
        .await
        .unwrap()
        .expect("the other app's lock of the same name is free");
    assert!(a
        .try_acquire("shared", AcquireOptions::new())
        .await
        .unwrap()
        .is_none());

    let (la, lb) = (
        EtcdLeader::new(a.connection()),
        EtcdLeader::new(b.connection()),
    );
    let opts = ElectOptions::new()
        .with_group("g")
        .with_max_wait(Duration::from_secs(10));
    let ea = la.elect("alpha-leader", opts.clone()).await.unwrap();
    let eb = lb.elect("beta-leader", opts).await.unwrap();
    assert_eq!(la.leader("g").await.unwrap().unwrap().id, "alpha-leader");
    assert_eq!(lb.leader("g").await.unwrap().unwrap().id, "beta-leader");

    // Both register the same command name; each answers with its app's name. Jobs of one
    // app must only ever be run by that app's workers.
    let ta = EtcdTask::new(a.connection(), TaskOptions::new()).unwrap();
    let tb = EtcdTask::new(b.connection(), TaskOptions::new()).unwrap();
    ta.register(Command::typed("who", |_: u32| async { Ok("alpha") }))
        .await
        .unwrap();
    tb.register(Command::typed("who", |_: u32| async { Ok("beta") }))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..20u32 {
        handles.push(("alpha", ta.submit(Job::new("who", i)).await.unwrap()));
        handles.push(("beta", tb.submit(Job::new("who", i)).await.unwrap()));
    }
    for (app, h) in handles {
        let ran_by: String = tokio::time::timeout(Duration::from_secs(30), h.wait_as())
            .await
            .expect("job finished")
            .unwrap();
        assert_eq!(ran_by, app, "a job of {app} ran in the other application");
    }

    ea.resign().await.unwrap();
    eb.resign().await.unwrap();
    held.release().await.unwrap();
    other.release().await.unwrap();
    ta.shutdown().await.unwrap();
    tb.shutdown().await.unwrap();
    assert!(etcd.keys("alpha/lock").unwrap().is_empty());
    assert!(etcd.keys("beta/election").unwrap().is_empty());
}
