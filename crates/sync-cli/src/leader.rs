//! `syncctl leader GROUP [--watch]`.

use futures::StreamExt;
use serde_json::json;
use sync_leader::LeaderInfo;

use crate::backend::Connect;
use crate::exit::{self, Failure};
use crate::output::Output;
use crate::supervise::Signals;

fn show(group: &str, who: &Option<LeaderInfo>, out: Output) {
    let value = json!({
        "group": group,
        "leader": who.as_ref().map(|l| json!({ "id": l.id, "term": l.term, "value": l.value })),
    });
    out.answer(&value, || match who {
        None => "nobody".to_owned(),
        Some(l) if l.value.is_empty() => format!("{} (term {})", l.id, l.term),
        Some(l) => format!("{} (term {}) {}", l.id, l.term, l.value),
    });
}

/// Prints who leads `group`; with `watch`, every change until SIGINT/SIGTERM (exit 0) or the
/// backend fails (exit 69).
pub(crate) async fn run(c: &Connect, group: &str, watch: bool, out: Output) -> Result<u8, Failure> {
    let (leaders, closer) = c.leader("leader", None).await?;
    let r = follow(&*leaders, group, watch, out).await;
    closer.close().await;
    r
}

async fn follow(
    leaders: &dyn sync_leader::Leader,
    group: &str,
    watch: bool,
    out: Output,
) -> Result<u8, Failure> {
    if !watch {
        let who = leaders.leader(group).await?;
        show(group, &who, out);
        return Ok(exit::OK);
    }
    let mut signals = Signals::install()?;
    let mut changes = leaders.observe(group).await?;
    loop {
        tokio::select! {
            next = changes.next() => match next {
                Some(who) => show(group, &who, out),
                None => return Err(Failure::new(
                    exit::UNAVAILABLE,
                    format!("stopped following group {group:?}: the backend's stream ended"),
                )),
            },
            _ = signals.recv() => return Ok(exit::OK),
        }
    }
}
