//! Events: one JSON object per line, stamped with `CLOCK_MONOTONIC`.
//!
//! `std::time::Instant` reads `CLOCK_MONOTONIC` on Linux but does not expose its value, so two
//! processes cannot compare their `Instant`s. [`mono_nanos`] reads the same clock through
//! `clock_gettime(2)`: one clock for every process on the machine, never stepped by NTP or an
//! administrator, so the checkers can order events of different processes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Nanoseconds of `CLOCK_MONOTONIC`, comparable across the processes of one machine.
pub fn mono_nanos() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// One logged event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// [`mono_nanos`] when it happened.
    pub t: u64,
    /// The process that logged it.
    pub pid: u32,
    /// The logger's role and number, e.g. `lock-3`, `harness`.
    pub who: String,
    /// What happened: `want`, `enter`, `exit`, `elected`, `revoked`, `resign`, `killed`, …
    pub ev: String,
    /// Fencing token or term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Job number (task scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    /// Outcome where one applies (`exit`: false when the lock was lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// The pid a `killed` event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u32>,
    /// Free text: a reason, an error message, a case name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event `ev` now, by `who` in this process.
    pub fn now(who: &str, ev: &str) -> Self {
        Event {
            t: mono_nanos(),
            pid: std::process::id(),
            who: who.to_owned(),
            ev: ev.to_owned(),
            ..Default::default()
        }
    }

    /// Sets the token or term.
    pub fn token(mut self, token: u64) -> Self {
        self.token = Some(token);
        self
    }

    /// Sets the job number.
    pub fn job(mut self, job: u64) -> Self {
        self.job = Some(job);
        self
    }

    /// Sets the outcome.
    pub fn ok(mut self, ok: bool) -> Self {
        self.ok = Some(ok);
        self
    }

    /// Sets the target pid.
    pub fn target(mut self, pid: u32) -> Self {
        self.target = Some(pid);
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Appends events to `DIR/<who>-<pid>.jsonl`, one `write` per line, flushed at once: an event
/// logged before a `kill -9` is on disk.
#[derive(Debug, Clone)]
pub struct Log {
    who: String,
    file: Arc<Mutex<File>>,
}

impl Log {
    /// Opens (creates) this process's log in `dir`.
    pub fn open(dir: &Path, who: &str) -> io::Result<Log> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{who}-{}.jsonl", std::process::id()));
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Log {
            who: who.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// The role this log writes as.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// A new event `ev` now, to fill in and [`write`](Log::write).
    pub fn event(&self, ev: &str) -> Event {
        Event::now(&self.who, ev)
    }

    /// Writes `event`. A log that cannot be written is a broken run: panic (the checker counts
    /// a missing log's process as a failure).
    pub fn write(&self, event: Event) {
        let mut line = serde_json::to_string(&event).expect("an event serialises");
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes())
            .expect("cannot write the event log");
    }

    /// Writes an event `ev` now with nothing else set.
    pub fn ev(&self, ev: &str) {
        self.write(self.event(ev));
    }

    /// Makes a panic anywhere in the process log a `panic` event before the default hook runs.
    pub fn log_panics(&self) {
        let log = self.clone();
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log.write(log.event("panic").detail(info.to_string()));
            default(info);
        }));
    }
}

/// Every event of every `*.jsonl` file in `dir`, sorted by time. Lines that do not parse
/// (a line cut short by `kill -9`) are counted in the second value.
pub fn read_dir(dir: &Path) -> io::Result<(Vec<Event>, usize)> {
    let mut events = Vec::new();
    let mut bad = 0;
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        for line in BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(e) => events.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    events.sort_by_key(|e| e.t);
    Ok((events, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_round_trips() {
        let a = mono_nanos();
        let b = mono_nanos();
        assert!(b >= a);
        let dir = std::env::temp_dir().join(format!("sync-chaos-ev-{}", rand::random::<u64>()));
        let log = Log::open(&dir, "t").unwrap();
        log.write(log.event("enter").token(7));
        log.ev("exit");
        let (events, bad) = read_dir(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].token, Some(7));
        assert_eq!(events[1].ev, "exit");
        assert!(events[0].t <= events[1].t);
    }
}
