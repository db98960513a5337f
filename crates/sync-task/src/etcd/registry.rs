//! The worker's registrations (`q/workers/<command>/<worker>`, on its lease): which commands this
//! handle runs, and the lease its registrations and claims live on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{PutOptions, Txn, TxnOp};
use sync_etcd::{EtcdClient, Lease, LeasePool};
use tokio::sync::watch;

use super::records::Keys;
use super::worker::{until, Stop};
use crate::Command;

/// The worker's lease (a new one if the last was lost): its registrations and claims live on it.
pub(crate) struct WorkerLease {
    leases: LeasePool,
    ttl: Duration,
}

impl WorkerLease {
    pub(crate) fn new(client: EtcdClient, ttl: Duration) -> Self {
        WorkerLease {
            leases: LeasePool::new(client),
            ttl,
        }
    }

    pub(crate) async fn get(&self) -> sync_etcd::Result<Arc<Lease>> {
        self.leases.get(self.ttl).await
    }
}

/// The commands this handle runs, and their registrations in etcd.
pub(crate) struct Registry {
    client: EtcdClient,
    keys: Keys,
    me: String,
    lease: Arc<WorkerLease>,
    commands: RwLock<HashMap<String, Command>>,
}

impl Registry {
    pub(crate) fn new(client: EtcdClient, keys: Keys, me: String, lease: Arc<WorkerLease>) -> Self {
        Registry {
            client,
            keys,
            me,
            lease,
            commands: RwLock::new(HashMap::new()),
        }
    }

    /// The command registered under `name`.
    pub(crate) fn command(&self, name: &str) -> Option<Command> {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Adds (or replaces) `command` locally. False if the very same command was there already.
    pub(crate) fn insert(&self, command: Command) -> bool {
        let mut commands = self.commands.write().unwrap_or_else(|p| p.into_inner());
        if commands
            .get(command.name())
            .is_some_and(|c| c.same_as(&command))
        {
            return false;
        }
        commands.insert(command.name().to_owned(), command);
        true
    }

    fn names(&self) -> Vec<String> {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Registers every command in etcd, on the current lease. Returns when the puts landed on a
    /// lease that was not lost meanwhile (else the keeper may have registered on a new one
    /// before our put landed on the old one).
    pub(crate) async fn register(&self) -> sync_etcd::Result<()> {
        loop {
            let lease = self.lease.get().await?;
            self.put(&lease).await?;
            if !lease.is_lost() {
                return Ok(());
            }
        }
    }

    /// Keeps the registrations on the current lease: after a lease is lost, puts them again on
    /// the new one. Runs until shutdown.
    pub(crate) async fn keep(self: Arc<Self>, mut stop: watch::Receiver<Stop>) {
        loop {
            let registered = async {
                let lease = self.lease.get().await?;
                self.put(&lease).await?;
                Ok::<_, sync_etcd::Error>(lease)
            };
            let lease = tokio::select! {
                r = registered => r,
                _ = until(&mut stop, Stop::Closing) => return,
            };
            match lease {
                Ok(lease) => tokio::select! {
                    reason = lease.signal().fired() => {
                        tracing::warn!(worker = %self.me, %reason, "worker lease lost: running jobs were cancelled; registering again on a new lease");
                    }
                    _ = until(&mut stop, Stop::Closing) => return,
                },
                Err(e) => {
                    tracing::warn!(worker = %self.me, error = %e, "cannot register the worker yet");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = until(&mut stop, Stop::Closing) => return,
                    }
                }
            }
        }
    }

    /// Puts `workers/<command>/<me>` for every registered command, on `lease`.
    async fn put(&self, lease: &Lease) -> sync_etcd::Result<()> {
        let names = self.names();
        if names.is_empty() {
            return Ok(());
        }
        let ops: Vec<TxnOp> = names
            .iter()
            .map(|n| {
                TxnOp::put(
                    self.keys.worker(n, &self.me),
                    self.me.clone(),
                    Some(PutOptions::new().with_lease(lease.id())),
                )
            })
            .collect();
        self.client
            .retry("register worker", self.client.default_budget(), |mut c| {
                let txn = Txn::new().and_then(ops.clone());
                async move { c.txn(txn).await.map(|_| ()) }
            })
            .await
    }

    /// Deletes the worker's registrations (at shutdown).
    pub(crate) async fn unregister(&self) -> sync_etcd::Result<()> {
        let ops: Vec<TxnOp> = self
            .names()
            .iter()
            .map(|n| TxnOp::delete(self.keys.worker(n, &self.me), None))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        self.client
            .retry(
                "unregister worker",
                self.client.default_budget(),
                |mut c| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { c.txn(txn).await.map(|_| ()) }
                },
            )
            .await
    }

    /// Revokes the worker's lease (at shutdown, once nothing runs).
    pub(crate) async fn revoke(&self) {
        match self.lease.get().await {
            Ok(lease) => {
                if let Err(e) = lease.revoke().await {
                    tracing::warn!(worker = %self.me, error = %e, "could not revoke the worker's lease; it will expire");
                }
            }
            Err(e) => {
                tracing::warn!(worker = %self.me, error = %e, "could not revoke the worker's lease; it will expire")
            }
        }
    }
}
