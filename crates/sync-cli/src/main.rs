//! `syncctl`: run a command under a distributed lock, semaphore, read-write lock or leadership,
//! ask who leads a group, submit and run jobs, publish and tail event streams, read
//! synchronized time. See `crates/sync-cli/README.md` and
//! `docs/syncctl.md` for the commands, the exit codes and the loss → kill timeline.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod backend;
mod event;
mod exit;
mod hold;
mod leader;
mod output;
mod supervise;
mod task;
mod time;

use backend::{parse_duration, Connect};
use exit::Failure;
use hold::{Held, Plan};
use output::Output;

/// Run commands under distributed locks and leaderships; ask who leads; jobs; event streams;
/// read synchronized time.
///
/// Exit codes: the command's own status (128 + signal if a signal ended it); 2 usage error;
/// 65 `event tail`: the start was dropped by retention; 69 backend unreachable; 70 internal
/// error; 75 not acquired (--try, --wait ran out); 76 lost while the command ran (the command
/// was stopped); 126/127 command not executable / not found; `task submit --wait`/`task wait`:
/// 1 the job failed.
#[derive(Debug, Parser)]
#[command(name = "syncctl", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    connect: Connect,
    /// Machine-readable output: JSON lines (events on stderr, answers on stdout).
    #[arg(long, global = true)]
    json: bool,
    /// Serve the library's metrics for Prometheus at http://ADDR/metrics while syncctl runs
    /// (e.g. `127.0.0.1:9464`; names in docs/syncctl.md).
    #[arg(long, global = true, env = "SYNC_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Cmd,
}

/// Waiting for what is asked.
#[derive(Debug, Clone, clap::Args)]
struct Wait {
    /// Lease TTL: how long it outlives a syncctl that died (e.g. `10s`; default the URL's).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Wait at most this long (e.g. `30s`), then exit 75; default: as long as it takes.
    #[arg(long, value_name = "D", value_parser = parse_duration, conflicts_with = "try_")]
    wait: Option<Duration>,
    /// Do not wait: exit 75 at once if it is held.
    #[arg(long = "try", id = "try_")]
    try_: bool,
}

impl Wait {
    /// Acquires with `try_acquire` under `--try`, else with `acquire`; the options carry
    /// `--wait` (the TTL is the session's, see `backend::Connect::session`).
    async fn take<T, A>(
        &self,
        try_acquire: impl FnOnce(sync_lock::AcquireOptions) -> T,
        acquire: impl FnOnce(sync_lock::AcquireOptions) -> A,
    ) -> Result<Option<Held>, Failure>
    where
        T: Future<Output = sync_lock::Result<Option<sync_lock::LockGuard>>>,
        A: Future<Output = sync_lock::Result<sync_lock::LockGuard>>,
    {
        let mut o = sync_lock::AcquireOptions::new();
        if let Some(w) = self.wait {
            o = o.with_max_wait(w);
        }
        Ok(if self.try_ {
            try_acquire(o).await?.map(Held::Guard)
        } else {
            Some(Held::Guard(acquire(o).await?))
        })
    }
}

/// What `lock`, `semaphore` and `rwlock` share: the name, the waiting flags and the command.
#[derive(Debug, Clone, clap::Args)]
struct Target {
    /// The lock's, semaphore's or read-write lock's name.
    name: String,
    #[command(flatten)]
    wait: Wait,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl Target {
    fn plan(&self, kind: &'static str, out: Output) -> Plan<'_> {
        Plan {
            kind,
            name: &self.name,
            command: &self.command,
            out,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Run CMD while holding the lock NAME (SYNC_FENCING_TOKEN in its environment).
    Lock(Target),
    /// Run CMD while holding one of N permits of the semaphore NAME.
    Semaphore {
        /// How many holders at once (all users of NAME must agree).
        #[arg(short = 'n', long = "permits", value_name = "N")]
        permits: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Run CMD while reading (shared) or writing (alone) the read-write lock NAME.
    Rwlock {
        /// Shared with other readers.
        #[arg(long, conflicts_with = "write", required_unless_present = "write")]
        read: bool,
        /// Alone.
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Campaign in GROUP and run CMD while leader (SYNC_LEADER_TERM in its environment).
    Elect {
        /// The group.
        group: String,
        /// Our candidate id (default: HOSTNAME-PID).
        #[arg(long)]
        id: Option<String>,
        /// A value to proclaim with the leadership (shown by `syncctl leader`).
        #[arg(long)]
        value: Option<String>,
        /// Lease TTL (e.g. `10s`; default the URL's).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Campaign at most this long, then exit 75.
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        wait: Option<Duration>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Who leads GROUP ("nobody" if no one); with --watch, every change until interrupted.
    Leader {
        /// The group.
        group: String,
        /// Follow every change.
        #[arg(long)]
        watch: bool,
    },
    /// Jobs: submit, status, wait, and a worker running a shell command per job.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// Event streams: publish to a topic, tail it (alone or as a consumer group member).
    #[command(subcommand)]
    Event(event::EventCmd),
    /// Synchronized time: now, its bounds, and what each NTP server said.
    Time {
        /// NTP server `host[:port]` (repeat for several). None: the system clock, with an
        /// assumed error.
        #[arg(long = "server", value_name = "ADDR")]
        servers: Vec<String>,
        /// Samples per server.
        #[arg(long)]
        samples: Option<u32>,
        /// Time allowed for one query (e.g. `1s`).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "syncctl".to_owned());
    format!("{host}-{}", std::process::id())
}

async fn dispatch(cli: Cli, out: Output) -> Result<u8, Failure> {
    let c = &cli.connect;
    match cli.command {
        Cmd::Lock(t) => {
            let (locks, closer) = c.lock(t.wait.ttl).await?;
            let acquire = t.wait.take(
                |o| locks.try_acquire(&t.name, o),
                |o| locks.acquire(&t.name, o),
            );
            hold::run(t.plan("lock", out), closer, acquire).await
        }
        Cmd::Semaphore { permits, target: t } => {
            let (sems, closer) = c.semaphore(t.wait.ttl).await?;
            let acquire = t.wait.take(
                |o| sems.try_acquire(&t.name, permits, o),
                |o| sems.acquire(&t.name, permits, o),
            );
            hold::run(t.plan("semaphore", out), closer, acquire).await
        }
        Cmd::Rwlock {
            read,
            write: _,
            target: t,
        } => {
            let (locks, closer) = c.rwlock(t.wait.ttl).await?;
            let acquire = async {
                if read {
                    let r = t
                        .wait
                        .take(|o| locks.try_read(&t.name, o), |o| locks.read(&t.name, o));
                    r.await
                } else {
                    let w = t
                        .wait
                        .take(|o| locks.try_write(&t.name, o), |o| locks.write(&t.name, o));
                    w.await
                }
            };
            hold::run(t.plan("rwlock", out), closer, acquire).await
        }
        Cmd::Elect {
            group,
            id,
            value,
            ttl,
            wait,
            command,
        } => {
            let (leaders, closer) = c.leader("elect", ttl).await?;
            let id = id.unwrap_or_else(default_id);
            let plan = Plan {
                kind: "elect",
                name: &group,
                command: &command,
                out,
            };
            let acquire = async {
                let mut o = sync_leader::ElectOptions::new().with_group(group.clone());
                if let Some(w) = wait {
                    o = o.with_max_wait(w);
                }
                if let Some(v) = value {
                    o = o.with_value(v);
                }
                Ok(Some(Held::Elected(leaders.elect(&id, o).await?)))
            };
            hold::run(plan, closer, acquire).await
        }
        Cmd::Task(cmd) => task::run(c, cmd, out).await,
        Cmd::Event(cmd) => event::run(c, cmd, out).await,
        Cmd::Leader { group, watch } => leader::run(c, &group, watch, out).await,
        Cmd::Time {
            servers,
            samples,
            timeout,
        } => time::run(servers, samples, timeout, out).await,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let out = Output { json: cli.json };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.failure(exit::INTERNAL, &format!("cannot start the runtime: {e}"));
            return ExitCode::from(exit::INTERNAL);
        }
    };
    if let Some(addr) = cli.metrics_addr {
        let installed = rt.block_on(async {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
        });
        if let Err(e) = installed {
            out.failure(
                exit::USAGE,
                &format!("cannot serve metrics at {addr}: {e} (pick a free --metrics-addr)"),
            );
            return ExitCode::from(exit::USAGE);
        }
    }
    let result = rt.block_on(dispatch(cli, out));
    // The lease keeper and watches run on this runtime: stop them without waiting.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            out.failure(f.code, &f.message);
            f.exit_code()
        }
    }
}
