//! Helpers for tests that run against the real etcd started by `cargo xtask test`.
//!
//! The harness exports `SYNC_ETCD_ENDPOINTS`. Tests that need etcd are `#[ignore]`d so that a
//! plain `cargo test` lists them as not run; the harness runs them with `--include-ignored`, and
//! then they fail loudly, never skip, if the variable is missing or etcd does not answer.

use std::time::Duration;

use crate::{EtcdClient, EtcdConfig};

/// The variable the harness sets: comma-separated endpoints.
pub const ENDPOINTS_VAR: &str = "SYNC_ETCD_ENDPOINTS";

/// The endpoints from [`ENDPOINTS_VAR`]. Panics with instructions if it is not set: a test that
/// asked for etcd must not pass without it.
pub fn endpoints() -> Vec<String> {
    match std::env::var(ENDPOINTS_VAR) {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => panic!(
            "{ENDPOINTS_VAR} is not set: this test needs a real etcd. Run `cargo xtask test`, or \
             `cargo xtask etcd up` and export the variables it prints."
        ),
    }
}

/// A fresh, random key prefix, so tests never see each other's keys.
pub fn unique_prefix(test: &str) -> String {
    format!("sync-test/{test}-{:016x}", rand::random::<u64>())
}

/// A config for the harness's cluster under a fresh prefix, with a short TTL.
pub fn config(test: &str) -> EtcdConfig {
    EtcdConfig::new(endpoints())
        .with_prefix(unique_prefix(test))
        .with_ttl(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(10))
}

/// Connects to the harness's cluster; panics (fails the test) with the reason if it cannot.
pub async fn connect(cfg: EtcdConfig) -> EtcdClient {
    match EtcdClient::connect(cfg.clone()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "{ENDPOINTS_VAR} says etcd is at {:?}, but connecting failed: {e}",
            cfg.endpoints
        ),
    }
}

/// How many keys start with `under` (retrying transient errors, as the library does).
pub async fn count_keys(client: &EtcdClient, under: &str) -> usize {
    let under = under.to_owned();
    let r = client
        .retry("count keys", client.default_budget(), |mut c| {
            let under = under.clone();
            async move {
                c.get(
                    under,
                    Some(
                        etcd_client::GetOptions::new()
                            .with_prefix()
                            .with_count_only(),
                    ),
                )
                .await
            }
        })
        .await
        .unwrap_or_else(|e| panic!("counting keys failed: {e}"));
    r.count() as usize
}

/// Deletes every key under the client's prefix.
pub async fn wipe(client: &EtcdClient) {
    let root = client.keyspace().root().to_owned();
    let _ = client
        .retry("wipe", client.default_budget(), |mut c| {
            let root = root.clone();
            async move {
                c.delete(root, Some(etcd_client::DeleteOptions::new().with_prefix()))
                    .await
            }
        })
        .await;
}

/// One key as the tests inspect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key.
    pub key: String,
    /// Its create revision.
    pub create_revision: i64,
    /// Its lease (0 for none).
    pub lease: i64,
    /// Its value.
    pub value: Vec<u8>,
}

/// Every key starting with `prefix`, oldest first (retrying transient errors).
pub async fn keys_under(client: &EtcdClient, prefix: &str) -> Vec<KeyInfo> {
    let prefix = prefix.to_owned();
    let mut keys = client
        .retry("list keys", client.default_budget(), |mut c| {
            let prefix = prefix.clone();
            async move {
                let r = c
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await?;
                Ok(r.kvs()
                    .iter()
                    .map(|kv| KeyInfo {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        create_revision: kv.create_revision(),
                        lease: kv.lease(),
                        value: kv.value().to_vec(),
                    })
                    .collect::<Vec<_>>())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("listing keys failed: {e}"));
    keys.sort_by_key(|k| k.create_revision);
    keys
}

/// Revokes `lease` behind its holder's back (retrying transient errors).
pub async fn revoke(client: &EtcdClient, lease: i64) {
    client
        .retry(
            "revoke lease",
            client.default_budget(),
            |mut c| async move { c.lease_revoke(lease).await.map(|_| ()) },
        )
        .await
        .unwrap_or_else(|e| panic!("revoking lease {lease:x} failed: {e}"));
}

/// Deletes every key under the client's prefix when dropped, on a runtime of its own (the
/// test's runtime may be shutting down by then).
#[derive(Debug)]
pub struct WipeOnDrop(pub EtcdClient);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        let client = self.0.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                // A connection of its own: the test's connection runs on the test's runtime,
                // which may be blocked on this very thread.
                rt.block_on(async {
                    if let Ok(fresh) = EtcdClient::connect(client.config().clone()).await {
                        wipe(&fresh).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Runs one test of the current test binary as a child process, with `var` set to `value` so
/// the test knows to play the child's part, and returns once the child printed a line
/// containing `marker`; returns the child and the rest of that line after the marker. Kill it
/// with [`std::process::Child::kill`] (SIGKILL on Unix) to simulate a crash; it is killed if it
/// does not print the marker within 30 s.
pub async fn spawn_self(
    test: &str,
    var: &str,
    value: &str,
    marker: &str,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child process");
    let stdout = child.stdout.take().expect("piped stdout");
    let marker = marker.to_owned();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.find(&marker)
                    .map(|at| l[at + marker.len()..].trim().to_owned())
            })
    });
    match tokio::time::timeout(std::time::Duration::from_secs(30), line).await {
        Ok(Ok(Some(rest))) => (child, rest),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child process did not get ready within 30 s: {other:?}");
        }
    }
}

/// The value a crash-test child gets through [`spawn_self`]'s variable: the parent's key
/// prefix, a TTL and words of the test's own (a name, a kind…), one per line. The child reads
/// it back with [`parse_child_spec`].
pub fn child_spec(prefix: &str, ttl: std::time::Duration, words: &[&str]) -> String {
    let mut spec = format!("{prefix}\n{}", ttl.as_secs());
    for w in words {
        spec.push('\n');
        spec.push_str(w);
    }
    spec
}

/// The child's side of [`child_spec`]: a config for the parent's prefix on the harness's
/// endpoints, the TTL, and the words. Panics (failing the child) on a spec it did not write.
pub fn parse_child_spec(spec: &str) -> (EtcdConfig, std::time::Duration, Vec<String>) {
    let mut lines = spec.split('\n');
    let prefix = lines.next().expect("a child spec starts with the prefix");
    let ttl = lines
        .next()
        .and_then(|t| t.parse().ok())
        .map(std::time::Duration::from_secs)
        .expect("a child spec's second line is the TTL in seconds");
    let cfg = EtcdConfig::new(endpoints()).with_prefix(prefix);
    (cfg, ttl, lines.map(str::to_owned).collect())
}

/// The child's last words: prints `marker` and `token` on a line of their own (what
/// [`spawn_self`] waits for), then waits to be killed.
pub async fn hold_until_killed(marker: &str, token: u64) -> ! {
    use std::io::Write;
    // Straight to stdout: the parent reads this line from the child's pipe.
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{marker}{token}").expect("write to the child's stdout");
    out.flush().expect("flush the child's stdout");
    drop(out);
    std::future::pending::<()>().await;
    unreachable!("pending() never resolves")
}

/// A TCP proxy on loopback to the first etcd member, which the test can cut: [`cut`] closes
/// every connection and refuses new ones until [`restore`]. A client whose only endpoint is the
/// proxy ([`CutProxy::config`]) is thereby cut off from the cluster, as in a partition.
///
/// [`cut`]: CutProxy::cut
/// [`restore`]: CutProxy::restore
#[derive(Debug)]
pub struct CutProxy {
    addr: std::net::SocketAddr,
    /// (generation, blocked): a new generation closes the connections of older ones.
    ctl: tokio::sync::watch::Sender<(u64, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts the proxy on a free loopback port.
    pub async fn start() -> Self {
        let upstream = endpoints()[0].trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (ctl, rx) = tokio::sync::watch::channel((0u64, false));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let (generation, blocked) = *rx.borrow();
                if blocked {
                    continue; // dropped: the connection is refused
                }
                let upstream = upstream.clone();
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|(g, _)| *g != generation) => {}
                    }
                });
            }
        });
        CutProxy { addr, ctl, task }
    }

    /// Cuts every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.ctl.send_modify(|(g, blocked)| {
            *g += 1;
            *blocked = true;
        });
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.ctl.send_modify(|(_, blocked)| *blocked = false);
    }

    /// `cfg` with the proxy as its only endpoint (and a short request timeout).
    pub fn config(&self, cfg: &EtcdConfig) -> EtcdConfig {
        let mut via = cfg
            .clone()
            .with_request_timeout(std::time::Duration::from_millis(500));
        via.endpoints = vec![self.addr.to_string()];
        via
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Waits until exactly `n` keys are queued under `dir` (holder plus waiters) and returns them,
/// oldest first; panics, failing the test, if that does not happen within 20 s. Polling the
/// backend for the event, with a deadline: not a sleep standing in for synchronisation.
pub async fn queued(client: &EtcdClient, dir: &str, n: usize) -> Vec<KeyInfo> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let keys = keys_under(client, dir).await;
        if keys.len() == n {
            return keys;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} keys never queued under {dir} (found {})",
            keys.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
