//! Schedules: a command that runs every interval on exactly one member of a group, the current
//! leader, and moves with leadership (go-micro's `Cron` composite of Task and Leader).
//!
//! Every member starts the same [`Schedule`] with its own member id over a shared
//! [`Leader`] backend. Each campaigns in the schedule's group; the one elected runs the command
//! every interval, the others wait in line. When the leader goes away (it stops, crashes, or
//! loses its office), the next member in line is elected and runs the command from then on.
//!
//! Exactly one at a time: a run starts only while its member holds the office, and a run in
//! progress when the office is lost is told through the leadership's `revoked()` (the
//! [`Tick::revoked`] future resolves), gets one more poll to react, and is then dropped; by the
//! leader backend's guarantee that happens before another member can be elected.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use serde_json::Value;
use sync_core::signal::{LossReason, LossSignal};
use sync_leader::{ElectOptions, Leader};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::command::HandlerFuture;
use crate::{check_name, exec, CommandError, Error, Failure, Result};

type TickFn = dyn Fn(Tick) -> HandlerFuture + Send + Sync;

/// A command to run every interval on the current leader of a group.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sync_leader::LocalLeader;
/// use sync_task::Schedule;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let election = Arc::new(LocalLeader::new()); // or EtcdLeader::connect(cfg).await?
/// let schedule = Schedule::new("compact-logs", Duration::from_millis(50), |tick| async move {
///     println!("run {} as leader in term {}", tick.run(), tick.term());
///     Ok(())
/// });
/// // Every member starts it; only the leader runs it.
/// let a = schedule.clone().start(election.clone(), "node-a")?;
/// let b = schedule.start(election, "node-b")?;
/// let status = a.wait_for(|s| s.runs >= 2).await;
/// assert!(status.leading.is_some());
/// assert_eq!(b.status().runs, 0);
/// a.stop().await?; // node-b takes over
/// b.wait_for(|s| s.runs >= 1).await;
/// b.stop().await?;
/// # Ok::<(), sync_task::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Schedule {
    name: String,
    every: Duration,
    group: Option<String>,
    ttl: Option<Duration>,
    stop_grace: Duration,
    func: Arc<TickFn>,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("name", &self.name)
            .field("every", &self.every)
            .field("group", &self.group())
            .finish()
    }
}

/// What a scheduled run gets: its leadership and its place in the series.
#[derive(Debug, Clone)]
pub struct Tick {
    schedule: Arc<str>,
    member: Arc<str>,
    term: u64,
    run: u64,
    signal: LossSignal,
}

impl Tick {
    /// The schedule's name.
    pub fn schedule(&self) -> &str {
        &self.schedule
    }

    /// The member running it (the id it campaigned with).
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The leadership's term: strictly increases from one leader to the next. Pass it with the
    /// run's writes so a resource can refuse a deposed leader.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Which run this is in the current term, from 1.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Resolves when the office is lost: stop at once (the run is dropped right after).
    pub async fn revoked(&self) -> LossReason {
        self.signal.fired().await
    }

    /// The loss signal, to hand to tasks the run starts.
    pub fn revoked_signal(&self) -> LossSignal {
        self.signal.clone()
    }
}

/// What a running schedule has done, on one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleStatus {
    /// The term, while this member leads.
    pub leading: Option<u64>,
    /// How many times it was elected.
    pub terms: u64,
    /// Runs started on this member (all terms).
    pub runs: u64,
    /// Runs that failed (returned an error, panicked, or were cancelled by a loss of office).
    pub failures: u64,
    /// The last failure.
    pub last_failure: Option<Failure>,
    /// Whether the schedule stopped on this member.
    pub stopped: bool,
}

/// One member's running schedule; [`stop`](ScheduleHandle::stop) it to resign. Dropping the
/// handle stops it too (in the background).
#[derive(Debug)]
pub struct ScheduleHandle {
    status: watch::Receiver<ScheduleStatus>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    group: String,
}

impl Schedule {
    /// A schedule named `name` (also its election group, unless
    /// [`with_group`](Schedule::with_group)) that runs `func` every `every`, measured from the
    /// start of one run to the next; a run that takes longer delays the next (runs never
    /// overlap). A newly elected leader runs it at once.
    pub fn new<F, Fut, T>(name: impl Into<String>, every: Duration, func: F) -> Self
    where
        F: Fn(Tick) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, CommandError>> + Send + 'static,
        T: Serialize + 'static,
    {
        let func = move |tick: Tick| -> HandlerFuture {
            let fut = func(tick);
            async move {
                fut.await.and_then(|out| {
                    serde_json::to_value(out).map_err(|e| CommandError::permanent(e.to_string()))
                })
            }
            .boxed()
        };
        Schedule {
            name: name.into(),
            every,
            group: None,
            ttl: None,
            stop_grace: Duration::from_secs(10),
            func: Arc::new(func),
        }
    }

    /// Campaigns in `group` rather than in the group named like the schedule.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The TTL of each member's candidacy: how long a crashed leader keeps the office (and the
    /// schedule) before the next member takes over. Default: the leader backend's.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long [`ScheduleHandle::stop`] lets a run in progress finish before cancelling it
    /// (default 10 s).
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The election group.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }

    /// The interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Starts the schedule on this member: campaigns as `member` over `leader` in the background
    /// and runs the command whenever elected. Fails at once for an invalid name or interval.
    pub fn start(
        self,
        leader: Arc<dyn Leader>,
        member: impl Into<String>,
    ) -> Result<ScheduleHandle> {
        let member = member.into();
        check_name("schedule name", &self.name)?;
        check_name("schedule group", self.group())?;
        check_name("member id", &member)?;
        if self.every.is_zero() {
            return Err(Error::options(
                &self.name,
                "a schedule's interval must be above zero",
            ));
        }
        if let Some(ttl) = self.ttl {
            if ttl < Duration::from_secs(1) || ttl > crate::MAX_TTL {
                return Err(Error::options(
                    &self.name,
                    format!(
                        "a candidacy TTL must be within 1 s ..= {:?} (sync_task::MAX_TTL), not {ttl:?}",
                        crate::MAX_TTL
                    ),
                ));
            }
        }
        let (status_tx, status) = watch::channel(ScheduleStatus::default());
        let (stop, stop_rx) = watch::channel(false);
        let group = self.group().to_owned();
        let task = tokio::spawn(drive(self, leader, member.into(), status_tx, stop_rx));
        Ok(ScheduleHandle {
            status,
            stop,
            task: Some(task),
            group,
        })
    }
}

impl ScheduleHandle {
    /// What it has done so far.
    pub fn status(&self) -> ScheduleStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f`, and returns it.
    pub async fn wait_for(&self, mut f: impl FnMut(&ScheduleStatus) -> bool) -> ScheduleStatus {
        let mut rx = self.status.clone();
        let seen = rx.wait_for(|s| f(s)).await.map(|s| s.clone()).ok();
        seen.unwrap_or_else(|| rx.borrow().clone())
    }

    /// Stops the schedule on this member: a run in progress may finish within the stop grace
    /// (then it is cancelled), then the member resigns (the next member in line takes over at
    /// once) and campaigns no more.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| Error::Backend {
                subject: self.group.clone(),
                retryable: false,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

impl Drop for ScheduleHandle {
    fn drop(&mut self) {
        // The background task sees the flag, finishes a run in progress and resigns.
        self.stop.send_replace(true);
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The handle is gone without a stop: that is a stop too (see its Drop).
    }
}

async fn drive(
    schedule: Schedule,
    leader: Arc<dyn Leader>,
    member: Arc<str>,
    status: watch::Sender<ScheduleStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let name: Arc<str> = schedule.name.as_str().into();
    let mut options = ElectOptions::new().with_group(schedule.group());
    if let Some(ttl) = schedule.ttl {
        options = options.with_ttl(ttl);
    }
    let mut backoff = Duration::from_millis(100);
    'campaign: loop {
        let elected = tokio::select! {
            e = leader.elect(&member, options.clone()) => e,
            _ = stopped(&mut stop) => break 'campaign,
        };
        let elected = match elected {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(schedule = %name, %member, error = %e, "campaign failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => break 'campaign,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let term = elected.term();
        let signal = elected.revoked_signal();
        tracing::info!(schedule = %name, %member, term, "elected: running the schedule");
        status.send_modify(|s| {
            s.leading = Some(term);
            s.terms += 1;
        });
        let mut next = Instant::now();
        let mut run = 0;
        let lost = loop {
            tokio::select! {
                biased;
                reason = signal.fired() => break Some(reason),
                _ = stopped(&mut stop) => break None,
                _ = tokio::time::sleep_until(next) => {}
            }
            run += 1;
            let started = Instant::now();
            let tick = Tick {
                schedule: name.clone(),
                member: member.clone(),
                term,
                run,
                signal: signal.clone(),
            };
            status.send_modify(|s| s.runs += 1);
            let func = schedule.func.clone();
            let attempt = exec::guarded(
                move || func(tick),
                None,
                |message| tracing::warn!(schedule = %name, %member, term, run, %message, "scheduled run panicked"),
            );
            // The run is polled first, so when the office is lost it sees `revoked()` resolve
            // and may react within that poll; then it is dropped.
            let grace = schedule.stop_grace;
            let stop_deadline = async {
                stopped(&mut stop).await;
                tokio::time::sleep(grace).await;
            };
            let outcome = tokio::select! {
                biased;
                r = attempt => r.map(|_: Value| ()).map_err(|f| f.failure),
                reason = signal.fired() => {
                    tracing::warn!(schedule = %name, %member, term, run, %reason, "office lost during a run: run cancelled");
                    Err(Failure::Error { message: format!("cancelled: the leadership was lost ({reason})") })
                }
                _ = stop_deadline => {
                    tracing::warn!(schedule = %name, %member, term, run, ?grace, "stopping: run still going after the stop grace; cancelled");
                    Err(Failure::ShutDown)
                }
            };
            if let Err(failure) = outcome {
                status.send_modify(|s| {
                    s.failures += 1;
                    s.last_failure = Some(failure);
                });
            }
            // An interval too long to add (`Duration::MAX`) waits far ahead, never overflows.
            next = crate::options::deadline_after(started, schedule.every).max(Instant::now());
        };
        status.send_modify(|s| s.leading = None);
        match lost {
            Some(reason) => {
                tracing::warn!(schedule = %name, %member, term, %reason, "leadership lost; campaigning again");
                drop(elected);
            }
            None => {
                if let Err(e) = elected.resign().await {
                    tracing::warn!(schedule = %name, %member, term, error = %e, "could not resign cleanly");
                }
                break 'campaign;
            }
        }
    }
    status.send_modify(|s| {
        s.leading = None;
        s.stopped = true;
    });
}
