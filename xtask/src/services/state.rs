//! The state file of `cargo xtask etcd up`: it leaves the services running past xtask and
//! records directory, ports and pids, which `etcd down` and `etcd status` read back.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Member, NatsNode, Services};
use crate::process::Proc;
use crate::tools::Tools;
use crate::Result;

impl Services {
    /// Leaves the processes running past this xtask process, recording them in `state`
    /// for [`Services::load`].
    pub(crate) fn detach(mut self, state: &Path) -> Result<()> {
        self.write_state(state)?;
        self.detached = true;
        Ok(())
    }

    /// Records directory, ports and pids in `state` (a simple line format).
    pub(super) fn write_state(&self, state: &Path) -> Result<()> {
        let mut text = String::from(
            "# written by `cargo xtask etcd up`; `cargo xtask etcd down` stops these\n",
        );
        let _ = writeln!(text, "dir {}", self.dir.display());
        let _ = writeln!(text, "token {}", self.token);
        for m in &self.members {
            let pid = m.proc.as_ref().map_or(0, Proc::pid);
            let _ = writeln!(
                text,
                "member {} {} {} {pid}",
                m.name, m.client_port, m.peer_port
            );
        }
        for n in &self.nats {
            let pid = n.proc.as_ref().map_or(0, Proc::pid);
            let _ = writeln!(
                text,
                "nats {} {} {} {} {pid}",
                n.name, n.client_port, n.route_port, n.http_port
            );
        }
        let pid = self.chronyd.as_ref().map_or(0, Proc::pid);
        let _ = writeln!(text, "chronyd {} {} {pid}", self.ntp_port, self.ntp_cmdport);
        if let Some(parent) = state.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::write(state, text).map_err(|e| format!("cannot write {}: {e}", state.display()))
    }

    /// Reads services started by an earlier `detach`; `None` if there is no state file.
    /// Dropping the result leaves the processes running: call [`Services::stop`].
    pub(crate) fn load(state: &Path, tools: Tools) -> Result<Option<Services>> {
        let text = match fs::read_to_string(state) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", state.display())),
        };
        let bad = |n: usize| {
            format!(
                "malformed line {} in {}; stop its processes by hand and delete the file",
                n + 1,
                state.display()
            )
        };
        let (mut dir, mut token, mut members, mut chronyd) = (None, None, Vec::new(), None);
        let mut nats = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| s.parse::<u32>().map_err(|_| bad(n));
            let port = |s: &str| s.parse::<u16>().map_err(|_| bad(n));
            let detached = |pid: u32, name: &str| {
                (pid != 0).then(|| Proc::Detached {
                    pid,
                    name: name.to_string(),
                })
            };
            match fields.as_slice() {
                [] => {}
                [c, ..] if c.starts_with('#') => {}
                ["dir", _, ..] => {
                    dir = Some(PathBuf::from(line.trim_start()["dir".len()..].trim()))
                }
                ["token", t] => token = Some(t.to_string()),
                ["timing", _] => {} // written by earlier versions
                ["member", name, client, peer, pid] => members.push(Member {
                    name: name.to_string(),
                    client_port: port(client)?,
                    peer_port: port(peer)?,
                    proc: detached(num(pid)?, "etcd"),
                }),
                ["nats", name, client, route, http, pid] => nats.push(NatsNode {
                    name: name.to_string(),
                    client_port: port(client)?,
                    route_port: port(route)?,
                    http_port: port(http)?,
                    proc: detached(num(pid)?, "nats-server"),
                }),
                ["chronyd", p, cmd, pid] => {
                    chronyd = Some((port(p)?, port(cmd)?, detached(num(pid)?, "chronyd")))
                }
                _ => return Err(bad(n)),
            }
        }
        let incomplete = || {
            format!(
                "incomplete {}; stop its processes by hand and delete it",
                state.display()
            )
        };
        let (ntp_port, ntp_cmdport, chronyd) = chronyd.ok_or_else(incomplete)?;
        Ok(Some(Services {
            dir: dir.ok_or_else(incomplete)?,
            token: token.ok_or_else(incomplete)?,
            tools,
            members,
            ntp_port,
            ntp_cmdport,
            chronyd,
            nats,
            // `etcd up` starts the test suite's services, which run the fast timing.
            timing: super::Timing::Fast,
            detached: true,
        }))
    }
}
