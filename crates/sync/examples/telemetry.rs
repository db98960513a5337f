//! Spans and loss events with `tracing-subscriber`: run with
//! `RUST_LOG=sync=debug,sync_core=debug cargo run -p sync-coord --example telemetry`
//! (the default filter shows the acquire spans and the warning a loss produces).

use std::time::Duration;

use sync::leader::{ElectOptions, Leader, LocalLeader};
use sync::lock::{AcquireOptions, LocalLock};
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug")),
        )
        .init();

    let locks = LocalLock::new();
    let guard = locks.acquire("billing", AcquireOptions::new()).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    guard.release().await?; // DEBUG released … held=…

    let guard = locks.acquire("billing", AcquireOptions::new()).await?;
    locks.revoke("billing"); // WARN lock "billing" (token 2) lost: revoked or deleted by someone else
    println!("lost: {:?}", guard.loss_signal().reason());

    let election = LocalLeader::new();
    let elected = election
        .elect("node-1", ElectOptions::new().with_group("scheduler"))
        .await?;
    println!("leading {} in term {}", elected.group(), elected.term());
    elected.resign().await?;
    Ok(())
}
