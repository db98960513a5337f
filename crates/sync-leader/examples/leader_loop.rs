//! A leader loop: do the work only while elected, stop the moment the office is lost, campaign
//! again, and step down cleanly when done.
//!
//! Two nodes, `node-a` and `node-b`, run the same loop in the group `billing-run`: campaign,
//! then do one item of work every 100 ms, each write carrying the term; after five items,
//! resign so the next candidate takes over. Partway through the first term the example takes
//! the office away from the leader behind its back (on etcd it ends the leader's session, as a
//! lease expiring in a partition would; on `local` it revokes the group): `revoked()` fires, the
//! leader stops at once and campaigns again, and the other node takes over with a higher term.
//! The store the work writes to refuses any write whose term is older than one it has seen,
//! so a deposed leader that had not noticed yet could not overwrite its successor's work.
//! An observer prints every change of who leads, including "nobody".
//!
//! ```sh
//! eval "$(cargo xtask etcd up)"
//! cargo run -p sync-leader --features etcd --example leader_loop
//! cargo run -p sync-leader --features etcd --example leader_loop -- local
//! ```
//!
//! The backend is the first argument, else `SYNC_URL`, else `SYNC_ETCD_ENDPOINTS` (prefix
//! `sync-examples`), else `local`. Finishes in about two seconds; exits non-zero if any step
//! does not behave as described.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sync_leader::{ElectOptions, EtcdConfig, EtcdLeader, Leader, LocalLeader, Session};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

const GROUP: &str = "billing-run";
/// Items of work a leader does in one term before it steps down.
const ITEMS_PER_TERM: u32 = 5;

/// The backend URL: the first argument, else `SYNC_URL`, else the cluster that
/// `cargo xtask etcd up` announces in `SYNC_ETCD_ENDPOINTS`, else `local`.
fn backend_url() -> String {
    std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SYNC_URL").ok())
        .or_else(|| {
            let endpoints = std::env::var("SYNC_ETCD_ENDPOINTS").ok()?;
            let hosts: Vec<&str> = endpoints
                .split(',')
                .map(|e| e.trim().trim_start_matches("http://"))
                .collect();
            Some(format!("etcd://{}/sync-examples", hosts.join(",")))
        })
        .unwrap_or_else(|| "local".to_owned())
}

/// The election backend, kept concrete only so the example can cut a leader off; the loop
/// itself sees `Arc<dyn Leader>` (what `sync_leader::open(url)` returns).
#[derive(Clone)]
enum Cluster {
    Local(LocalLeader),
    Etcd(EtcdLeader),
}

/// Takes one term away from its leader, as a lost lease would.
enum CutOff {
    Local(LocalLeader),
    Etcd(Session),
}

impl Cluster {
    async fn open(url: &str) -> Result<Cluster, Error> {
        if url == "local" {
            return Ok(Cluster::Local(LocalLeader::new()));
        }
        Ok(Cluster::Etcd(
            EtcdLeader::connect(EtcdConfig::from_url(url)?).await?,
        ))
    }

    fn observer(&self) -> Arc<dyn Leader> {
        match self {
            Cluster::Local(l) => Arc::new(l.clone()),
            Cluster::Etcd(e) => Arc::new(e.clone()),
        }
    }

    /// A handle for one campaign. On etcd it lives in a session of its own (a lease, as a
    /// separate process would have), so that ending it cuts off this node alone.
    async fn campaign(&self) -> Result<(Arc<dyn Leader>, CutOff), Error> {
        Ok(match self {
            Cluster::Local(l) => (Arc::new(l.clone()), CutOff::Local(l.clone())),
            Cluster::Etcd(e) => {
                let session = e.connection().session(Duration::from_secs(5)).await?;
                (Arc::new(e.with_session(&session)), CutOff::Etcd(session))
            }
        })
    }
}

impl CutOff {
    async fn cut(&self) -> Result<(), Error> {
        match self {
            CutOff::Local(l) => {
                l.revoke(GROUP);
            }
            CutOff::Etcd(session) => session.close().await?,
        }
        Ok(())
    }
}

/// What the work writes to: it remembers the highest term it has seen and refuses writes from
/// older terms (the fencing a real resource, a database row or a queue, should do too).
#[derive(Default)]
struct Store {
    writes: Mutex<Vec<(u64, String)>>,
}

impl Store {
    fn write(&self, term: u64, item: String) -> Result<(), String> {
        let mut writes = self.writes.lock().expect("not poisoned");
        match writes.last() {
            Some((highest, _)) if term < *highest => Err(format!(
                "refused {item:?}: term {term} is older than term {highest}"
            )),
            _ => {
                writes.push((term, item));
                Ok(())
            }
        }
    }
}

/// What nodes tell `main`, which plays the fault.
enum Note {
    Elected(String, CutOff),
    Worked(String, u32),
}

/// One node: campaign, work while elected, react to loss, step down when its work is done.
async fn node(
    id: String,
    cluster: Cluster,
    store: Arc<Store>,
    notes: mpsc::UnboundedSender<Note>,
) -> Result<u32, Error> {
    let mut terms = 0;
    loop {
        let (election, cut_off) = cluster.campaign().await?;
        let options = ElectOptions::new()
            .with_group(GROUP)
            .with_max_wait(Duration::from_secs(20));
        let elected = election.elect(&id, options).await?;
        let term = elected.term();
        terms += 1;
        println!("{id}: elected (term {term})");
        let _ = notes.send(Note::Elected(id.clone(), cut_off));

        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut done = 0;
        let finished = loop {
            tokio::select! {
                reason = elected.revoked() => {
                    println!("{id}: lost the office ({reason}) after {done} items: stopping the work");
                    break false;
                }
                _ = tick.tick() => {
                    // The leader's work, with the term on every write.
                    store.write(term, format!("{id} item {done}"))?;
                    done += 1;
                    println!("{id}: item {done}/{ITEMS_PER_TERM} in term {term}");
                    let _ = notes.send(Note::Worked(id.clone(), done));
                    if done == ITEMS_PER_TERM {
                        break true;
                    }
                }
            }
        };
        if finished {
            // Stepping down: the next candidate is elected at once, no TTL to wait out.
            elected.resign().await?;
            println!("{id}: done, resigned");
            return Ok(terms);
        }
        // Lost: nothing to resign (`elected` is dropped); campaign again.
        println!("{id}: campaigning again");
    }
}

/// Prints the error (its message, not its `Debug` form) and exits 1 on failure.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leader_loop: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let url = backend_url();
    println!("backend: {}", sync_core::backend::redact_url(&url));
    let cluster = Cluster::open(&url).await?;

    // Anyone can follow who leads; the stream also says when nobody does.
    let mut changes = cluster.observer().observe(GROUP).await?;
    let observer = tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            match change {
                Some(info) => println!("observer: {info} leads"),
                None => println!("observer: nobody leads"),
            }
        }
    });

    let store = Arc::new(Store::default());
    let (tx, mut notes) = mpsc::unbounded_channel();
    let nodes: Vec<_> = ["node-a", "node-b"]
        .into_iter()
        .map(|id| {
            tokio::spawn(node(
                id.to_owned(),
                cluster.clone(),
                store.clone(),
                tx.clone(),
            ))
        })
        .collect();
    drop(tx);

    // The fault: once the first leader has done two items, take its office away.
    // Every term's cut-off is kept: on etcd it is a clone of the term's session, and the last
    // clone's drop would end the session.
    let mut terms_seen: Vec<(String, CutOff)> = Vec::new();
    let mut cut = false;
    while let Some(note) = notes.recv().await {
        match note {
            Note::Elected(id, cut_off) => terms_seen.push((id, cut_off)),
            Note::Worked(id, 2) if !cut && terms_seen.len() == 1 && terms_seen[0].0 == id => {
                println!("main: cutting {id} off (its lease ends behind its back)");
                terms_seen[0].1.cut().await?;
                cut = true;
            }
            _ => {}
        }
    }

    let mut terms = 0;
    for n in nodes {
        terms += tokio::time::timeout(Duration::from_secs(30), n)
            .await
            .map_err(|_| "a node did not finish within 30 s")???;
    }
    observer.abort();

    let writes = store.writes.lock().expect("not poisoned").clone();
    let distinct: std::collections::BTreeSet<u64> = writes.iter().map(|(t, _)| *t).collect();
    println!(
        "{} writes in {} terms {:?}; {terms} elections",
        writes.len(),
        distinct.len(),
        distinct
    );
    if !cut || terms != 3 || distinct.len() != 3 || writes.len() != 2 + 2 * ITEMS_PER_TERM as usize
    {
        return Err(format!(
            "expected 3 terms (one cut off after 2 items, two of {ITEMS_PER_TERM}), got {writes:?}"
        )
        .into());
    }
    if cluster.observer().leader(GROUP).await?.is_some() {
        return Err("somebody still leads after both nodes resigned".into());
    }
    println!("leader_loop: ok");
    Ok(())
}
