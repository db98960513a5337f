//! A single-member etcd with TLS (client certificates required) and authentication, on free
//! loopback ports in a temporary directory; certificates are made at start with the `openssl`
//! command. Stopped, and its directory removed, when dropped (also on panic).
//!
//! Users: `root` (password [`ROOT_PASSWORD`]) and one user per [`APPS`] entry, whose role may
//! read and write only keys under `<app>/`, the app's key prefix.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sync_lock::{EtcdConfig, TlsConfig};

/// The root user's password.
pub const ROOT_PASSWORD: &str = "root-secret";
/// Applications: (user = key prefix, password).
pub const APPS: [(&str, &str); 2] = [("alpha", "alpha-secret"), ("beta", "beta-secret")];

/// The running secure etcd. See the module docs.
#[derive(Debug)]
pub struct SecureEtcd {
    dir: PathBuf,
    child: Option<Child>,
    etcdctl: PathBuf,
    /// `127.0.0.1:PORT` of the client endpoint (https).
    pub endpoint: String,
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A client certificate and key signed by [`ca`](Self::ca) (CN `sync-chaos-client`, not a
    /// user name, so it does not authenticate by itself).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// Another CA, which signed nothing the server uses.
    pub wrong_ca: PathBuf,
}

/// Finds a program on `PATH` or in the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// [`find_program`], or an error naming the Debian package to install.
pub(crate) fn need(program: &str, package: &str) -> Result<PathBuf, String> {
    find_program(program)
        .ok_or_else(|| format!("`{program}` not found; install the Debian package {package}"))
}

/// A fresh directory `sync-chaos-<kind>-<pid>-<random>` under the temporary directory.
pub(crate) fn scratch_dir(kind: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "sync-chaos-{kind}-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{shown} failed ({}): {text}", out.status))
    }
}

pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind a loopback port: {e}"))
}

/// Makes `name.pem`/`name.key` in `dir`: a CA if `ca` is `None`, else a certificate signed by
/// `ca` (`(cert, key)`) with the given extensions.
fn make_cert(
    openssl: &Path,
    dir: &Path,
    name: &str,
    cn: &str,
    ca: Option<(&Path, &Path)>,
    ext: &str,
) -> Result<(PathBuf, PathBuf), String> {
    let key = dir.join(format!("{name}.key"));
    let pem = dir.join(format!("{name}.pem"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    match ca {
        None => {
            run(Command::new(openssl)
                .args(["req", "-x509"])
                .args(ec)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&pem)
                .args(["-days", "2", "-subj", &format!("/CN={cn}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]))?;
        }
        Some((ca_pem, ca_key)) => {
            let csr = dir.join(format!("{name}.csr"));
            let extfile = dir.join(format!("{name}.ext"));
            std::fs::write(&extfile, ext).map_err(|e| e.to_string())?;
            run(Command::new(openssl)
                .arg("req")
                .args(ec)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", &format!("/CN={cn}")]))?;
            run(Command::new(openssl)
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(ca_pem)
                .arg("-CAkey")
                .arg(ca_key)
                .arg("-out")
                .arg(&pem)
                .arg("-extfile")
                .arg(&extfile))?;
        }
    }
    Ok((pem, key))
}

impl SecureEtcd {
    /// Starts it and sets up users, roles and authentication. Needs `etcd`, `etcdctl` and
    /// `openssl`.
    pub fn start() -> Result<SecureEtcd, String> {
        let (etcd, etcdctl, openssl) = (
            need("etcd", "etcd-server")?,
            need("etcdctl", "etcd-client")?,
            need("openssl", "openssl")?,
        );
        let dir = scratch_dir("secure")?;
        let mut me = SecureEtcd {
            ca: PathBuf::new(),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
            wrong_ca: PathBuf::new(),
            endpoint: String::new(),
            etcdctl,
            child: None,
            dir,
        };
        // From here on, dropping `me` cleans up.
        let dir = me.dir.clone();
        let (ca, ca_key) = make_cert(&openssl, &dir, "ca", "sync-chaos-ca", None, "")?;
        let (wrong_ca, _) = make_cert(&openssl, &dir, "wrong-ca", "sync-chaos-ca", None, "")?;
        let (server, server_key) = make_cert(
            &openssl,
            &dir,
            "server",
            "127.0.0.1",
            Some((&ca, &ca_key)),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        let (client, client_key) = make_cert(
            &openssl,
            &dir,
            "client",
            "sync-chaos-client",
            Some((&ca, &ca_key)),
            "extendedKeyUsage=clientAuth\n",
        )?;
        me.ca = ca.clone();
        me.wrong_ca = wrong_ca;
        me.client_cert = client;
        me.client_key = client_key;
        let mut last = String::new();
        for _attempt in 0..3 {
            let (cport, pport) = (free_port()?, free_port()?);
            me.endpoint = format!("127.0.0.1:{cport}");
            let client_url = format!("https://127.0.0.1:{cport}");
            let peer_url = format!("http://127.0.0.1:{pport}");
            let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(&etcd);
            cmd.args(["--name", "s1", "--data-dir"])
                .arg(dir.join(format!("data-{cport}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("s1={peer_url}")])
                .arg("--cert-file")
                .arg(&server)
                .arg("--key-file")
                .arg(&server_key)
                .arg("--trusted-ca-file")
                .arg(&ca)
                .arg("--client-cert-auth")
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("ETCD") {
                    cmd.env_remove(k);
                }
            }
            me.child = Some(cmd.spawn().map_err(|e| format!("cannot start etcd: {e}"))?);
            match me.wait_ready(Duration::from_secs(20)) {
                Ok(()) => {
                    me.set_up_auth()?;
                    return Ok(me);
                }
                Err(e) => {
                    last = e;
                    me.stop();
                }
            }
        }
        let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
        Err(format!("the TLS etcd did not start: {last}\n{log}"))
    }

    fn etcdctl(&self, user: Option<&str>, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{}", self.endpoint))
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.client_cert)
            .arg("--key")
            .arg(&self.client_key)
            .args(["--dial-timeout=2s", "--command-timeout=5s"]);
        if let Some(u) = user {
            cmd.arg(format!("--user={u}"));
        }
        run(cmd.args(args))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("etcd exited during start-up ({status})"));
                }
            }
            match self.etcdctl(None, &["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn set_up_auth(&self) -> Result<(), String> {
        self.etcdctl(None, &["user", "add", &format!("root:{ROOT_PASSWORD}")])?;
        if self
            .etcdctl(None, &["user", "grant-role", "root", "root"])
            .is_err()
        {
            self.etcdctl(None, &["role", "add", "root"])?;
            self.etcdctl(None, &["user", "grant-role", "root", "root"])?;
        }
        for (app, password) in APPS {
            self.etcdctl(None, &["role", "add", app])?;
            self.etcdctl(
                None,
                &[
                    "role",
                    "grant-permission",
                    app,
                    "--prefix=true",
                    "readwrite",
                    &format!("{app}/"),
                ],
            )?;
            self.etcdctl(None, &["user", "add", &format!("{app}:{password}")])?;
            self.etcdctl(None, &["user", "grant-role", app, app])?;
        }
        self.etcdctl(None, &["auth", "enable"])?;
        Ok(())
    }

    /// A config for the app `app` (user = prefix) with the right CA and client certificate and
    /// no password; add one with [`EtcdConfig::with_auth`].
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig::new([self.endpoint.clone()])
            .with_prefix(prefix)
            .with_tls(
                TlsConfig::with_ca(&self.ca).with_client_cert(&self.client_cert, &self.client_key),
            )
            .with_ttl(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(3))
            .with_request_timeout(Duration::from_secs(2))
    }

    /// Every key under `prefix`, read as root.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, String> {
        let out = self.etcdctl(
            Some(&format!("root:{ROOT_PASSWORD}")),
            &["get", "--prefix", "--keys-only", prefix],
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
