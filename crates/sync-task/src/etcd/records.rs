//! The key layout and what the keys hold.
//!
//! Under `<prefix>/task/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `q/jobs/<id>` | [`JobRecord`]: command, attempts started, options, retry time | none |
//! | `q/claims/<id>` | [`ClaimRecord`]: the worker running it | the worker's lease |
//! | `q/holds/<id>` | empty: the job's submit has not returned yet | the submitter's lease |
//! | `q/workers/<encoded command>/<worker>` | the worker's id | the worker's lease |
//! | `payloads/<id>` | the job's payload (JSON) | none |
//! | `results/<id>` | [`ResultRecord`]: output or failure | a retention lease (expires) |
//! | `idem/<encoded key>` | the job id | none while the job lives, then the retention lease |
//!
//! Every worker and waiter watches `q/` (see `view`): it holds small records only, so a large
//! backlog or large payloads do not make the view's first read large. A payload is read by the
//! transaction that claims its job; a result by whoever waits for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sync_etcd::{encode_name, Keyspace};

use crate::{Backoff, Failure, Job, JobStatus};

/// The keys of the task primitive under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: String,
}

impl Keys {
    pub(crate) fn new(ks: &Keyspace) -> Self {
        Keys {
            root: ks.kind("task"),
        }
    }

    /// `<prefix>/task/q/`: everything the view watches.
    pub(crate) fn queue(&self) -> String {
        format!("{}q/", self.root)
    }

    pub(crate) fn jobs(&self) -> String {
        format!("{}q/jobs/", self.root)
    }

    pub(crate) fn claims(&self) -> String {
        format!("{}q/claims/", self.root)
    }

    pub(crate) fn holds(&self) -> String {
        format!("{}q/holds/", self.root)
    }

    pub(crate) fn payloads(&self) -> String {
        format!("{}payloads/", self.root)
    }

    pub(crate) fn results(&self) -> String {
        format!("{}results/", self.root)
    }

    pub(crate) fn idems(&self) -> String {
        format!("{}idem/", self.root)
    }

    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}q/jobs/{id}", self.root)
    }

    pub(crate) fn claim(&self, id: &str) -> String {
        format!("{}q/claims/{id}", self.root)
    }

    pub(crate) fn hold(&self, id: &str) -> String {
        format!("{}q/holds/{id}", self.root)
    }

    pub(crate) fn payload(&self, id: &str) -> String {
        format!("{}payloads/{id}", self.root)
    }

    pub(crate) fn result(&self, id: &str) -> String {
        format!("{}results/{id}", self.root)
    }

    pub(crate) fn idem(&self, key: &str) -> String {
        format!("{}idem/{}", self.root, encode_name(key))
    }

    /// `<prefix>/task/q/workers/`: every worker registration.
    pub(crate) fn workers_root(&self) -> String {
        format!("{}q/workers/", self.root)
    }

    pub(crate) fn workers(&self, command: &str) -> String {
        format!("{}q/workers/{}/", self.root, encode_name(command))
    }

    pub(crate) fn worker(&self, command: &str, worker: &str) -> String {
        format!("{}{worker}", self.workers(command))
    }

    /// What a key under `q/` is.
    pub(crate) fn parse<'k>(&self, key: &'k [u8]) -> Option<Entry<'k>> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.root.as_str())?.strip_prefix("q/")?;
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "jobs" => Some(Entry::Job(rest)),
            "claims" => Some(Entry::Claim(rest)),
            "holds" => Some(Entry::Hold(rest)),
            "workers" => {
                let (command, worker) = rest.split_once('/')?;
                Some(Entry::Worker {
                    command: sync_etcd::decode_name(command)?,
                    worker,
                })
            }
            _ => None,
        }
    }
}

/// A parsed key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry<'k> {
    Job(&'k str),
    Claim(&'k str),
    Hold(&'k str),
    Worker { command: String, worker: &'k str },
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(ms)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `now_ms() + d`, saturating.
pub(crate) fn ms_after(d: Duration) -> u64 {
    now_ms().saturating_add(ms(d))
}

/// A new job id: 32 hex digits, the first 12 the submission time in ms (so that ids, and the
/// job keys, sort roughly by age: workers page through the queue oldest first), the other 20
/// random (80 bits).
pub(crate) fn new_job_id() -> String {
    let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    format!("{:012x}{random:020x}", now_ms() & 0xffff_ffff_ffff)
}

pub(crate) fn ms_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// A job waiting or running: `q/jobs/<id>` (its payload is in `payloads/<id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) command: String,
    /// Attempts started (a claim increments it).
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_ms: (u64, u64),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) retention_s: u64,
    /// Not to be claimed before this wall-clock time (ms since the epoch; 0: at once).
    #[serde(default)]
    pub(crate) not_before_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_failure: Option<Failure>,
    pub(crate) submitted_ms: u64,
    /// The payload's size in bytes (what claiming it reads).
    #[serde(default)]
    pub(crate) payload_bytes: u64,
}

impl JobRecord {
    pub(crate) fn new(job: &Job, payload_bytes: usize) -> Self {
        JobRecord {
            command: job.command().to_owned(),
            attempts: 0,
            max_attempts: job.max_attempts(),
            backoff_ms: (ms(job.backoff().initial()), ms(job.backoff().max())),
            timeout_ms: job.timeout().map(ms),
            retention_s: job.retention().as_secs() + u64::from(job.retention().subsec_nanos() > 0),
            not_before_ms: 0,
            idempotency_key: job.idempotency_key().map(str::to_owned),
            last_failure: None,
            submitted_ms: now_ms(),
            payload_bytes: payload_bytes as u64,
        }
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.backoff_ms.0),
            Duration::from_millis(self.backoff_ms.1),
        )
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    pub(crate) fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_s.max(1))
    }

    pub(crate) fn pending_status(&self) -> JobStatus {
        JobStatus::Pending {
            attempts: self.attempts,
            not_before: (self.not_before_ms > 0).then(|| ms_to_time(self.not_before_ms)),
            last_failure: self.last_failure.clone(),
        }
    }
}

/// Who runs a job: `q/claims/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClaimRecord {
    pub(crate) worker: String,
    pub(crate) attempt: u32,
    pub(crate) started_ms: u64,
}

/// A finished job: `results/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResultRecord {
    pub(crate) command: String,
    pub(crate) attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) worker: Option<String>,
    pub(crate) finished_ms: u64,
    pub(crate) outcome: Outcome,
}

/// How a finished job ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Succeeded { output: Value },
    Failed { failure: Failure },
}

impl ResultRecord {
    pub(crate) fn status(self) -> JobStatus {
        match self.outcome {
            Outcome::Succeeded { output } => JobStatus::Succeeded {
                attempts: self.attempts,
                output,
            },
            Outcome::Failed { failure } => JobStatus::Failed {
                attempts: self.attempts,
                failure,
            },
        }
    }
}

/// A record as stored.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Our records hold strings, numbers and JSON values only: serialising them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_commands_do_not_collide() {
        let k = Keys::new(&Keyspace::new("p"));
        assert_eq!(k.parse(k.job("abc").as_bytes()), Some(Entry::Job("abc")));
        assert_eq!(k.parse(k.claim("x").as_bytes()), Some(Entry::Claim("x")));
        assert_eq!(k.parse(k.hold("x").as_bytes()), Some(Entry::Hold("x")));
        assert!(k.hold("x").starts_with(&k.holds()) && k.holds().starts_with(&k.queue()));
        assert_eq!(k.parse(k.result("x").as_bytes()), None);
        assert_eq!(k.parse(k.payload("x").as_bytes()), None);
        assert!(k.job("x").starts_with(&k.queue()));
        assert_eq!(
            k.parse(k.worker("a/b", "w1").as_bytes()),
            Some(Entry::Worker {
                command: "a/b".into(),
                worker: "w1"
            })
        );
        assert!(!k.workers("a/b").starts_with(&k.workers("a")));
        assert_eq!(k.parse(k.idem("key").as_bytes()), None);
        assert_eq!(k.parse(b"p/lock/x/y"), None);
        assert_eq!(k.parse(b"p/task/jobs/x"), None);
    }

    #[test]
    fn job_ids_are_well_formed_and_sort_by_time() {
        let a = new_job_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_job_id();
        assert_eq!(a.len(), 32);
        assert!(crate::JobId::from(a.as_str()).is_well_formed());
        assert!(a < b, "{a} {b}");
        assert_ne!(new_job_id(), new_job_id());
    }

    #[test]
    fn times_saturate() {
        assert_eq!(ms(Duration::MAX), u64::MAX);
        assert_eq!(ms_after(Duration::MAX), u64::MAX);
        let _ = ms_to_time(u64::MAX);
    }

    #[test]
    fn records_round_trip() {
        let job = Job::new("c", serde_json::json!({"x": 1}))
            .with_timeout(Duration::from_millis(1500))
            .with_idempotency_key("k");
        let r = JobRecord::new(&job, 7);
        let back: JobRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(back.idempotency_key.as_deref(), Some("k"));
        assert_eq!(back.retention(), Duration::from_secs(3600));
        assert_eq!(back.payload_bytes, 7);
        let res = ResultRecord {
            command: "c".into(),
            attempts: 2,
            worker: None,
            finished_ms: 1,
            outcome: Outcome::Failed {
                failure: Failure::TimedOut {
                    after: Duration::from_millis(200),
                },
            },
        };
        let back: ResultRecord =
            serde_json::from_slice(&serde_json::to_vec(&res).unwrap()).unwrap();
        assert!(matches!(
            back.status(),
            JobStatus::Failed {
                attempts: 2,
                failure: Failure::TimedOut { .. }
            }
        ));
    }
}
