//! Finding (and on Debian as root, installing) etcd, etcdctl, protoc, chronyd, nats-server and
//! openssl (the TLS tests make their certificates with it).

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process;
use crate::Result;

/// The Debian packages that provide what the tests need.
pub(crate) const PACKAGES: [&str; 6] = [
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "chrony",
    "nats-server",
    "openssl",
];

/// (program, Debian package providing it).
const NEEDED: [(&str, &str); 6] = [
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("protoc", "protobuf-compiler"),
    ("chronyd", "chrony"),
    ("nats-server", "nats-server"),
    ("openssl", "openssl"),
];

/// Directories searched after `PATH` (chronyd lives in /usr/sbin, often not on a user's PATH).
const EXTRA_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Paths of the programs the services need.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// The etcd server.
    pub(crate) etcd: PathBuf,
    /// The etcd command-line client, used for health checks.
    pub(crate) etcdctl: PathBuf,
    /// The chrony NTP daemon.
    pub(crate) chronyd: PathBuf,
    /// The NATS server (JetStream).
    pub(crate) nats_server: PathBuf,
}

/// Finds an executable named `name` on `PATH` or in the sbin directories.
pub(crate) fn find(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn missing() -> Vec<(&'static str, &'static str)> {
    NEEDED
        .iter()
        .copied()
        .filter(|(prog, _)| find(prog).is_none())
        .collect()
}

/// Finds every needed program. When some are missing and we are root on Debian (and
/// `install` is set), installs the packages with apt-get first; otherwise fails with a
/// message naming the missing packages and the command that installs them.
pub(crate) fn ensure(install: bool) -> Result<Tools> {
    let mut absent = missing();
    if !absent.is_empty() {
        let names = describe(&absent);
        if install && is_root() && Path::new("/etc/debian_version").exists() {
            eprintln!("xtask: missing {names}; installing with apt-get");
            apt_install()?;
            absent = missing();
        }
        if !absent.is_empty() {
            let packages: Vec<&str> = absent.iter().map(|(_, pkg)| *pkg).collect();
            return Err(format!(
                "missing {}; install them with:\n    sudo apt-get update && sudo apt-get install -y {}\n(all of them: {})",
                describe(&absent),
                packages.join(" "),
                PACKAGES.join(" "),
            ));
        }
    }
    let get = |name: &str| find(name).ok_or_else(|| format!("{name} not found on PATH"));
    Ok(Tools {
        etcd: get("etcd")?,
        etcdctl: get("etcdctl")?,
        chronyd: get("chronyd")?,
        nats_server: get("nats-server")?,
    })
}

fn describe(absent: &[(&str, &str)]) -> String {
    absent
        .iter()
        .map(|(prog, pkg)| format!("`{prog}` (package {pkg})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Removes the temporary `policy-rc.d` it wrote, however the install ends.
struct PolicyGuard {
    written: bool,
}

impl PolicyGuard {
    /// Writes a `policy-rc.d` that forbids starting services, unless one exists already.
    fn deny_service_starts() -> PolicyGuard {
        if Path::new(POLICY_RC_D).exists() {
            return PolicyGuard { written: false };
        }
        let written = fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# written by cargo xtask during apt-get install\nexit 101\n",
        )
        .and_then(|()| fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755)))
        .is_ok();
        if !written {
            eprintln!("xtask: warning: could not write {POLICY_RC_D}; the packages may start their services");
        }
        PolicyGuard { written }
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        if self.written {
            let _ = fs::remove_file(POLICY_RC_D);
        }
    }
}

fn apt_install() -> Result<()> {
    let etcd_before = !process::pids_named("etcd").is_empty();
    let chronyd_before = !process::pids_named("chronyd").is_empty();
    let nats_before = !process::pids_named("nats-server").is_empty();
    {
        let _policy = PolicyGuard::deny_service_starts();
        run_apt(&["update"])?;
        let mut args = vec!["install", "-y"];
        args.extend(PACKAGES);
        run_apt(&args)?;
    }
    // The packages' own services must not stay running: stop any that appeared.
    if !etcd_before && !process::pids_named("etcd").is_empty() {
        stop_system_service("etcd");
    }
    if !chronyd_before && !process::pids_named("chronyd").is_empty() {
        stop_system_service("chrony");
    }
    if !nats_before && !process::pids_named("nats-server").is_empty() {
        stop_system_service("nats-server");
    }
    Ok(())
}

fn run_apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`apt-get {}` failed ({status}); install the packages by hand: apt-get install -y {}",
            args.join(" "),
            PACKAGES.join(" ")
        ))
    }
}

/// Best effort: stops a system service the package started despite policy-rc.d.
fn stop_system_service(unit: &str) {
    eprintln!("xtask: the {unit} package started its service; stopping it");
    let quiet = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let stopped = Path::new("/run/systemd/system").exists()
        && quiet(Command::new("systemctl").args(["stop", unit]));
    if !stopped && !quiet(Command::new("service").args([unit, "stop"])) {
        eprintln!("xtask: warning: could not stop the {unit} service; stop it by hand");
    }
}

impl Tools {
    /// The programs' paths if found, else their bare names: for stopping or inspecting
    /// services that are already running, where nothing needs to be installed.
    pub(crate) fn best_effort() -> Tools {
        let get = |name: &str| find(name).unwrap_or_else(|| PathBuf::from(name));
        Tools {
            etcd: get("etcd"),
            etcdctl: get("etcdctl"),
            chronyd: get("chronyd"),
            nats_server: get("nats-server"),
        }
    }
}
