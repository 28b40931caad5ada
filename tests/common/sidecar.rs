//! The one way tests (and benches/outage_rss.rs) start the sidecar: the
//! real binary on free ports, configured by a builder, stopped with SIGTERM
//! (graceful: the drain) or SIGKILL, and always killed on drop.
//!
//! ```ignore
//! let sc = Sidecar::start("store:\n  series_ttl: 2s\n").await; // the common case
//! let sc = Sidecar::builder()
//!     .config(&cfg)
//!     .dir(dir.path(), "drain") // drain.yaml, drain.log in a directory of the test's
//!     .args(["--queue-dir", q])
//!     .rust_log(Some("info"))
//!     .stderr_to_file()
//!     .start()
//!     .await;
//! ```

use super::free_port;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The sidecar binary cargo built for this test (or bench) target.
pub const BIN: &str = env!("CARGO_BIN_EXE_geometra-sidecar");

/// How long a started sidecar has to answer 200 on /readyz.
const READY_WITHIN: Duration = Duration::from_secs(15);

enum Config {
    /// Written to `<dir>/<name>.yaml` and passed with `--config`.
    Text(String),
    /// Passed with `--config` as it is (a test that edits or links it).
    File(PathBuf),
    /// No `--config` at all.
    None,
}

enum Dir {
    /// A temporary directory of the sidecar's own, gone with it.
    Own,
    /// A directory the test keeps (a queue directory beside the config,
    /// several sidecars one after another).
    At(PathBuf),
    /// A temporary directory the test made, kept as long as the sidecar.
    Keep(tempfile::TempDir),
}

enum Stderr {
    Stdio(Stdio),
    /// Into `<dir>/<name>.log`, read back with [`Sidecar::log_text`].
    File,
}

/// What the sidecar is started with; [`Sidecar::builder`] makes one with
/// the defaults: an empty config, the three listeners on 127.0.0.1 at free
/// ports, `RUST_LOG=warn`, stdout to /dev/null, stderr inherited.
pub struct SidecarBuilder {
    config: Config,
    dir: Dir,
    name: String,
    grpc: Option<String>,
    http: Option<String>,
    metrics: Option<String>,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    rust_log: Option<String>,
    stdout: Stdio,
    stderr: Stderr,
}

/// A running sidecar (killed and reaped on drop).
pub struct Sidecar {
    pub child: Child,
    /// Where its listeners are reached: 127.0.0.1 and the port for a
    /// `localhost:PORT` listener; port 0 when the port is not known (a
    /// listener given as `…:0` or `off`).
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    config: Option<PathBuf>,
    log: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// The address a listener spec is reached at (see [`Sidecar::grpc`]).
fn reach(spec: &str) -> SocketAddr {
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return a;
    }
    let port = spec
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(0);
    ([127, 0, 0, 1], port).into()
}

impl Default for SidecarBuilder {
    fn default() -> Self {
        SidecarBuilder {
            config: Config::Text(String::new()),
            dir: Dir::Own,
            name: "sidecar".into(),
            grpc: None,
            http: None,
            metrics: None,
            args: Vec::new(),
            env: Vec::new(),
            rust_log: Some("warn".into()),
            stdout: Stdio::null(),
            stderr: Stderr::Stdio(Stdio::inherit()),
        }
    }
}

impl SidecarBuilder {
    /// The config file's text (YAML, may be empty).
    pub fn config(mut self, text: &str) -> Self {
        self.config = Config::Text(text.to_string());
        self
    }

    /// The config file at `path`, used as it is.
    pub fn config_file(mut self, path: &Path) -> Self {
        self.config = Config::File(path.to_path_buf());
        self
    }

    /// No `--config` flag (the built-in defaults, flags and environment).
    pub fn no_config(mut self) -> Self {
        self.config = Config::None;
        self
    }

    /// The config and the log go to `dir` as `<name>.yaml` and `<name>.log`
    /// (the test keeps `dir`).
    pub fn dir(mut self, dir: &Path, name: &str) -> Self {
        self.dir = Dir::At(dir.to_path_buf());
        self.name = name.to_string();
        self
    }

    /// As [`SidecarBuilder::dir`] in a temporary directory the sidecar
    /// keeps (for a test that prepared files in it).
    pub fn temp_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Dir::Keep(dir);
        self
    }

    /// `--otlp-grpc-listen` (default `127.0.0.1:<free port>`).
    pub fn grpc_listen(mut self, spec: &str) -> Self {
        self.grpc = Some(spec.to_string());
        self
    }

    /// `--otlp-http-listen` (default `127.0.0.1:<free port>`).
    pub fn http_listen(mut self, spec: &str) -> Self {
        self.http = Some(spec.to_string());
        self
    }

    /// `--metrics-listen` (default `127.0.0.1:<free port>`).
    pub fn metrics_listen(mut self, spec: &str) -> Self {
        self.metrics = Some(spec.to_string());
        self
    }

    /// More arguments, after the config and listener flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable for the sidecar.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// An environment variable the sidecar must not inherit.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_string(), None));
        self
    }

    /// `RUST_LOG` for the sidecar (default `warn`); `None` unsets it, so
    /// that the config's `telemetry.log_level` rules.
    pub fn rust_log(mut self, level: Option<&str>) -> Self {
        self.rust_log = level.map(str::to_string);
        self
    }

    /// Where the sidecar's stdout goes (default /dev/null).
    pub fn stdout(mut self, out: Stdio) -> Self {
        self.stdout = out;
        self
    }

    /// Where the sidecar's stderr (its log) goes (default: the test's).
    pub fn stderr(mut self, err: Stdio) -> Self {
        self.stderr = Stderr::Stdio(err);
        self
    }

    /// The sidecar's stderr into `<dir>/<name>.log`: [`Sidecar::log_text`]
    /// reads it, and a start that fails shows it.
    pub fn stderr_to_file(mut self) -> Self {
        self.stderr = Stderr::File;
        self
    }

    /// Starts the process and returns at once (for a start that is meant
    /// to fail, or a test that reads the sidecar's output itself).
    pub fn spawn(self) -> Sidecar {
        let (own, dir) = match self.dir {
            Dir::Own => {
                let t = tempfile::tempdir().expect("tempdir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
            Dir::At(p) => (None, p),
            Dir::Keep(t) => {
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let listen =
            |spec: Option<String>| spec.unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let (g, h, m) = (listen(self.grpc), listen(self.http), listen(self.metrics));
        let mut cmd = Command::new(BIN);
        let config = match self.config {
            Config::Text(text) => {
                let p = dir.join(format!("{}.yaml", self.name));
                std::fs::File::create(&p)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .expect("write config");
                Some(p)
            }
            Config::File(p) => Some(p),
            Config::None => None,
        };
        if let Some(p) = &config {
            cmd.arg("--config").arg(p);
        }
        cmd.args(["--otlp-grpc-listen", &g])
            .args(["--otlp-http-listen", &h])
            .args(["--metrics-listen", &m])
            .args(&self.args);
        match &self.rust_log {
            Some(l) => cmd.env("RUST_LOG", l),
            None => cmd.env_remove("RUST_LOG"),
        };
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let (stderr, log) = match self.stderr {
            Stderr::Stdio(s) => (s, None),
            Stderr::File => {
                let p = dir.join(format!("{}.log", self.name));
                let f = std::fs::File::create(&p).expect("log file");
                (Stdio::from(f), Some(p))
            }
        };
        let child = cmd
            .stdout(self.stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the sidecar");
        Sidecar {
            child,
            grpc: reach(&g),
            http: reach(&h),
            metrics: reach(&m),
            config,
            log,
            _dir: own,
        }
    }

    /// Starts the sidecar and waits (async) for 200 on /readyz.
    pub async fn start(self) -> Sidecar {
        let mut s = self.spawn();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(r) = reqwest::get(format!("http://{}/readyz", s.ready_addr())).await {
                if r.status().is_success() {
                    return s;
                }
            }
            s.check_starting(deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// As [`SidecarBuilder::start`], for a test without a runtime.
    pub fn start_blocking(self) -> Sidecar {
        let mut s = self.spawn();
        let deadline = Instant::now() + READY_WITHIN;
        while get_blocking(s.ready_addr(), "/readyz").is_none() {
            s.check_starting(deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

/// A GET over plain HTTP/1.1 on a fresh connection: the body when
/// answered 200, else None.
pub fn get_blocking(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    match chunked {
        true => dechunk(body),
        false => Some(body.to_string()),
    }
}

/// An HTTP/1.1 chunked body decoded (`/metrics` streams its body); None
/// when it is cut short or malformed, as a client would take it.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(body);
        }
        body.push_str(after.get(..n)?);
        rest = after.get(n..)?.strip_prefix("\r\n")?;
    }
}

impl Sidecar {
    /// A builder with the defaults (see [`SidecarBuilder`]).
    pub fn builder() -> SidecarBuilder {
        SidecarBuilder::default()
    }

    /// Starts the sidecar with `config` (YAML, may be empty) and the
    /// defaults, and waits for /readyz.
    pub async fn start(config: &str) -> Sidecar {
        Sidecar::builder().config(config).start().await
    }

    fn ready_addr(&self) -> SocketAddr {
        assert!(
            self.metrics.port() != 0,
            "readiness needs a metrics listener at a known port"
        );
        self.metrics
    }

    /// Fails the start when the process is gone or `deadline` has passed.
    fn check_starting(&mut self, deadline: Instant) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "the sidecar exited ({st}) before it was ready{}",
                self.log_suffix()
            );
        }
        assert!(
            Instant::now() < deadline,
            "sidecar not ready within {READY_WITHIN:?}{}",
            self.log_suffix()
        );
    }

    fn log_suffix(&self) -> String {
        match &self.log {
            Some(_) => format!(":\n{}", self.log_text()),
            None => String::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The config file it was started on (None without `--config`).
    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Its stderr file ([`SidecarBuilder::stderr_to_file`]).
    pub fn log_path(&self) -> &Path {
        self.log
            .as_deref()
            .expect("stderr_to_file() for a log file")
    }

    /// Its stderr so far ([`SidecarBuilder::stderr_to_file`]).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends `signal` (libc::SIGHUP, …) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on the pid of our own child, not yet reaped
        // (`Child::wait` reaps it, and takes `&mut self`).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits (at most `within`) for the process to exit; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                t.elapsed() < within,
                "still running after {within:?}{}",
                self.log_suffix()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The graceful stop: SIGTERM, then waits for the exit (at most
    /// `within`); how long it took.
    pub fn term(&mut self, within: Duration) -> Duration {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "no exit within {within:?} of SIGTERM{}",
                self.log_suffix()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The crash: SIGKILL, and the process reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}
