//! The geometra-sidecar binary: command line, start-up, signals.

use clap::{Parser, Subcommand};
use geometra_sidecar::base::{ListenAddr, Live};
use geometra_sidecar::config::{Config, Overrides};
use geometra_sidecar::derive::Deriver;
use geometra_sidecar::export::stats::ExporterStats;
use geometra_sidecar::export::{otlp::Forwarder, remote_write};
use geometra_sidecar::metrics::Store;
use geometra_sidecar::receiver::browser::guard::Guard;
use geometra_sidecar::receiver::cors::{Cors, CorsKeys};
use geometra_sidecar::receiver::grpc::{Logs, Metrics, OtlpService, Traces};
use geometra_sidecar::receiver::listen::{Limits, Sockets};
use geometra_sidecar::receiver::stats::{ListenerStats, Transports};
use geometra_sidecar::receiver::{self, admit::InFlight, listen, Pipeline};
use geometra_sidecar::reload::{self, ReloadStats};
use geometra_sidecar::server::{self, Health};
use geometra_sidecar::telemetry::config::LogFormat;
use geometra_sidecar::telemetry::otlp::Pipelines;
use geometra_sidecar::telemetry::SelfMetrics;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The HTTP/2 max frame size the OTLP/gRPC listener advertises.
const GRPC_MAX_FRAME: u32 = 1 << 20;
/// The OTLP/gRPC listener's HTTP/2 flow-control windows: a stream may have
/// 1 MiB in flight (hyper's default), a connection 4 MiB (hyper's default
/// is 1 MiB). A Collector or gateway exporting with 8 concurrent 190 KB
/// requests on one connection overran 1 MiB, so requests were cut into
/// several DATA frames and the receiver copied them back together: 4 MiB
/// took 8 % of the CPU a span costs (BENCHMARKS.md, "connection window").
/// Memory is not the bound it looks like: a client can hold up to
/// `max_message_bytes` per stream in the receiver's buffers whatever the
/// window, and the request timeout ends a stream that never finishes.
const GRPC_STREAM_WINDOW: u32 = 1 << 20;
const GRPC_CONN_WINDOW: u32 = 4 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "geometra-sidecar",
    version,
    about = "OTLP in; Geometra's metrics out on /metrics; logs forwarded"
)]
struct Cli {
    /// YAML config file (every key optional; see print-default-config)
    #[arg(long, env = "GEOMETRA_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// OTLP/gRPC listen address: IP:PORT, or localhost:PORT for 127.0.0.1 and ::1 [default localhost:4317]
    #[arg(long, env = "GEOMETRA_OTLP_GRPC_LISTEN", global = true)]
    otlp_grpc_listen: Option<ListenAddr>,
    /// OTLP/HTTP listen address (as above), or `off` [default localhost:4318]
    #[arg(long, env = "GEOMETRA_OTLP_HTTP_LISTEN", global = true, value_parser = parse_optional_addr)]
    otlp_http_listen: Option<OptionalAddr>,
    /// /metrics, /healthz and /readyz listen address [default 0.0.0.0:9464]
    #[arg(long, env = "GEOMETRA_METRICS_LISTEN", global = true)]
    metrics_listen: Option<ListenAddr>,
    /// Forward logs to this OTLP endpoint (http://host:4317 gRPC, or a .../v1/logs URL for OTLP/HTTP)
    #[arg(long, env = "GEOMETRA_FORWARD_LOGS_TO", global = true)]
    forward_logs_to: Option<String>,
    /// Push the metrics to this Prometheus remote-write URL (e.g. http://mimir:8080/api/v1/push)
    #[arg(long, env = "GEOMETRA_REMOTE_WRITE_URL", global = true)]
    remote_write_url: Option<String>,
    /// Directory of the on-disk forward queue
    #[arg(long, env = "GEOMETRA_QUEUE_DIR", global = true)]
    queue_dir: Option<PathBuf>,
    /// Log format of the sidecar's own logs
    #[arg(long, env = "GEOMETRA_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config, print the effective config; exit 1 naming the offending key on error
    CheckConfig,
    /// Print the embedded default config, rules included
    PrintDefaultConfig,
}

/// A listen address, or `off` to disable the listener.
#[derive(Clone, Copy, Debug)]
struct OptionalAddr(Option<ListenAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s.trim() {
        "off" | "none" | "disabled" => Ok(OptionalAddr(None)),
        a => a
            .parse()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|e: String| format!("{e}, or `off`")),
    }
}

impl Cli {
    /// What the flags and `GEOMETRA_*` variables set (clap takes a
    /// variable when its flag is absent).
    fn overrides(&self) -> Overrides {
        Overrides {
            otlp_grpc_listen: self.otlp_grpc_listen,
            otlp_http_listen: self.otlp_http_listen.map(|a| a.0),
            metrics_listen: self.metrics_listen,
            forward_logs_to: self.forward_logs_to.clone(),
            remote_write_url: self.remote_write_url.clone(),
            queue_dir: self.queue_dir.clone(),
            log_format: self.log_format.as_deref().map(|f| match f {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            }),
        }
    }
}

/// The config in force: the file (or the defaults), then the variables,
/// then the flags, one key at a time (`config/overrides.rs`).
fn effective_config(cli: &Cli) -> Result<Config, String> {
    Config::load(cli.config.as_deref(), &cli.overrides()).map_err(|e| e.to_string())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (no-color.org); logs captured by Kubernetes or a
/// file get no escape codes.
fn colour(tty: bool, no_color: Option<std::ffi::OsString>) -> bool {
    tty && no_color.is_none_or(|v| v.is_empty())
}

/// Starts the sidecar's own logging: stderr, and the OTLP pipelines when
/// `telemetry.otlp.endpoint` is set. The level filter sits behind a reload
/// handle, so a config reload can change `telemetry.log_level`; the setter
/// returned is `None` when `RUST_LOG` chose the filter, which then wins over
/// the file until a restart.
fn init_logging(cfg: &Config, otlp: Option<&Pipelines>) -> Option<reload::SetLogLevel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&cfg.telemetry.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let stderr = match cfg.telemetry.log_format {
        LogFormat::Json => stderr.json().flatten_event(true).boxed(),
        LogFormat::Text => stderr.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(stderr);
    match otlp {
        Some(p) => registry.with(p.layer()).init(),
        None => registry.init(),
    }
    (!env_set).then_some(level_setter(handle))
}

/// Puts a `telemetry.log_level` in force through the subscriber's handle.
fn level_setter<S: 'static>(
    h: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) -> reload::SetLogLevel {
    Box::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("telemetry.log_level {level:?}: {e}"))?;
        h.reload(f)
            .map_err(|e| format!("cannot change the log level: {e}"))
    })
}

/// `print-default-config` and `check-config`: the exit code, or None to run.
fn subcommand(cli: &Cli) -> Option<ExitCode> {
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{}", Config::default().to_yaml());
            Some(ExitCode::SUCCESS)
        }
        Some(Command::CheckConfig) => Some(match effective_config(cli) {
            Ok(cfg) => {
                print!("{}", cfg.to_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("config error: {e}");
                ExitCode::FAILURE
            }
        }),
        None => None,
    }
}

fn main() -> ExitCode {
    geometra_sidecar::allocator::tune();
    let cli = Cli::parse();
    if let Some(code) = subcommand(&cli) {
        return code;
    }
    // read before the load, so a change racing it is reloaded, not missed
    let watched = reload::Watched::read_now(cli.config.clone());
    let cfg = match effective_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // the OTLP exporters' gRPC channels live on the runtime
    let started = {
        let _in_rt = rt.enter();
        Pipelines::start(&cfg.telemetry.otlp)
    };
    let otlp = match started {
        Ok(p) => p,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let set_log_level = init_logging(&cfg, otlp.as_ref());
    let result = rt.block_on(run(cfg, cli, watched, set_log_level, otlp.as_ref()));
    if let Some(p) = &otlp {
        // flushes the last spans and logs (bounded by telemetry.otlp.timeout)
        p.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "geometra-sidecar stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `receivers.keep_accepting_for` after the signal (not ready meanwhile):
/// the app beside a regular-container sidecar exports its last telemetry
/// after it is told to stop. SIGINT (Ctrl-C) ends the wait; a repeated
/// SIGTERM does not, since container engines repeat it (podman 4.3 sends
/// the sidecar a second one when the pod's other container exits).
async fn keep_accepting_after(sig: &str, d: Duration, span: &tracing::Span) {
    if d.is_zero() {
        return;
    }
    tracing::info!(
        parent: span,
        signal = sig,
        seconds = d.as_secs_f64(),
        "not ready; still accepting for receivers.keep_accepting_for, then draining"
    );
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!(parent: span, "SIGINT: draining now"),
    }
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// The listeners, bound before anything is served.
struct Bound {
    grpc: Sockets,
    http: Option<Sockets>,
    browser: Option<Sockets>,
    metrics: Sockets,
    /// what each bound, `addr[,addr]` (`off`: disabled): gRPC, HTTP,
    /// metrics, browser
    addrs: [String; 4],
}

impl Bound {
    /// What /readyz reports after `ready`.
    fn readyz(&self) -> String {
        let [g, h, m, b] = &self.addrs;
        format!("otlp_grpc={g}\notlp_http={h}\nmetrics={m}\nbrowser={b}\n")
    }
}

/// Each listener's connection counters, by name.
struct ListenerCounters {
    grpc: Arc<ListenerStats>,
    http: Arc<ListenerStats>,
    metrics: Arc<ListenerStats>,
    browser: Arc<ListenerStats>,
}

impl ListenerCounters {
    fn new() -> Self {
        ListenerCounters {
            grpc: ListenerStats::new("otlp_grpc"),
            http: ListenerStats::new("otlp_http"),
            metrics: ListenerStats::new("metrics"),
            browser: ListenerStats::new("browser"),
        }
    }
    fn all(&self) -> [Arc<ListenerStats>; 4] {
        let l = self;
        [
            l.grpc.clone(),
            l.http.clone(),
            l.metrics.clone(),
            l.browser.clone(),
        ]
    }
}

async fn bind(cfg: &Config) -> Result<Bound, String> {
    let grpc = listen::bind(cfg.receivers.otlp_grpc.listen, "OTLP/gRPC").await?;
    let http = match cfg.receivers.otlp_http.listen {
        Some(a) => Some(listen::bind(a, "OTLP/HTTP").await?),
        None => None,
    };
    let metrics = listen::bind(cfg.server.listen, "metrics").await?;
    let browser = match cfg.receivers.browser.listen {
        Some(a) => Some(listen::bind(a, "browser").await?),
        None => None,
    };
    let off = |l: &Option<Sockets>| l.as_ref().map_or_else(|| "off".into(), |l| l.describe());
    let addrs = [
        grpc.describe(),
        off(&http),
        metrics.describe(),
        off(&browser),
    ];
    Ok(Bound {
        grpc,
        http,
        browser,
        metrics,
        addrs,
    })
}

/// What the data path is built of: the store, the deriver, the forwarder.
async fn pipeline(cfg: &Config) -> Result<(Arc<Pipeline>, Option<Arc<Forwarder>>), String> {
    let store = Arc::new(Store::new(&cfg.store, &cfg.passthrough));
    let deriver = Deriver::new(&cfg.derive(), store.clone());
    let forward = geometra_sidecar::export::otlp::build(&cfg.forward, &cfg.redaction).await?;
    let pipeline = Arc::new(Pipeline {
        deriver: Live::new(deriver),
        store,
        forward: forward.clone().map(|f| f as _),
        max_value_depth: cfg.receivers.max_value_depth,
        in_flight: InFlight::new(
            cfg.receivers.max_in_flight_bytes,
            cfg.receivers.in_flight_per_connection(),
        ),
        stats: Arc::new(Transports {
            browser_on: cfg.receivers.browser.listen.is_some(),
            ..Transports::default()
        }),
    });
    Ok((pipeline, forward))
}

/// Remote write of the store's snapshot, when configured.
fn remote_write(
    cfg: &Config,
    pipeline: &Arc<Pipeline>,
    own: &Arc<SelfMetrics>,
) -> Result<Option<(Arc<remote_write::Stats>, remote_write::Control)>, String> {
    let Some(rw) = &cfg.remote_write else {
        return Ok(None);
    };
    let (p, o) = (pipeline.clone(), own.clone());
    let source: remote_write::SnapshotSource =
        Arc::new(move || server::snapshot(&p.deriver.load(), &o));
    remote_write::start(rw, source).map(Some)
}

/// The OTLP/gRPC server on its listener, until `stop`.
fn serve_grpc(
    cfg: &Config,
    l: Sockets,
    pipeline: &Arc<Pipeline>,
    stats: Arc<ListenerStats>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let max = cfg.receivers.otlp_grpc.max_message_bytes;
    let limits = Limits::from(&cfg.server.connections);
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(128))
        // OTLP requests are 100-500 KB: frames up to 1 MiB let a client send
        // one in a single DATA frame, which the receiver takes without a
        // copy (receiver/grpc.rs) and h2 reads without regrowing its buffer
        // per 16 KiB frame.
        .max_frame_size(Some(GRPC_MAX_FRAME))
        .initial_stream_window_size(Some(GRPC_STREAM_WINDOW))
        .initial_connection_window_size(Some(GRPC_CONN_WINDOW))
        .timeout(limits.request)
        .add_service(OtlpService::<Traces>::new(pipeline.clone(), max))
        .add_service(OtlpService::<Logs>::new(pipeline.clone(), max))
        .add_service(OtlpService::<Metrics>::new(pipeline.clone(), max))
        .serve_with_incoming_shutdown(
            listen::incoming(l, limits, stats, pipeline.in_flight.clone()),
            stopped(stop),
        );
    tokio::spawn(grpc)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Drops series not updated within `store.series_ttl` (which a reload may change).
fn spawn_sweeper(store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let every = Duration::from_secs((store.ttl_s() / 4).clamp(1, 60));
            tokio::time::sleep(every).await;
            let n = store.expire(geometra_sidecar::base::now_secs());
            if n > 0 {
                tracing::debug!(expired = n, "series expired");
            }
        }
    })
}

/// The running servers and tasks, stopped in order by [`Running::drain`].
struct Running {
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<tokio::task::JoinHandle<()>>,
    browser: Option<tokio::task::JoinHandle<()>>,
    metrics: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    stop_metrics: watch::Sender<bool>,
}

/// Serves every listener until [`Running::drain`]; /metrics keeps serving
/// while draining and stops last.
fn serve(
    cfg: &Config,
    bound: Bound,
    pipeline: &Arc<Pipeline>,
    listeners: &ListenerCounters,
    (cors, browser): (Arc<Live<Cors>>, Option<BrowserParts>),
    own: &Arc<SelfMetrics>,
    health: &Arc<Health>,
) -> Running {
    if let Some((guard, _)) = &browser {
        declare_browser(own, guard);
    }
    warn_trusted_cors(cfg);
    let (stop, stop_rx) = watch::channel(false);
    let grpc = serve_grpc(
        cfg,
        bound.grpc,
        pipeline,
        listeners.grpc.clone(),
        stop_rx.clone(),
    );
    geometra_sidecar::allocator::spawn_trim();
    let limits = Limits::from(&cfg.server.connections);
    let http = bound.http.map(|l| {
        let app = receiver::http::router(pipeline.clone(), &cfg.receivers.otlp_http, cors);
        let stats = listeners.http.clone();
        tokio::spawn(listen::serve_http(l, app, limits, stats, stop_rx.clone()))
    });
    let app = server::router(pipeline.clone(), health.clone(), own.clone());
    let (stop_metrics, metrics_rx) = watch::channel(false);
    let stats = listeners.metrics.clone();
    let metrics = tokio::spawn(listen::serve_http(
        bound.metrics,
        app,
        limits,
        stats,
        metrics_rx,
    ));
    let browser = bound.browser.zip(browser).map(|(l, (guard, cors))| {
        let app = receiver::http::browser_router(pipeline.clone(), guard, cors);
        let stats = listeners.browser.clone();
        tokio::spawn(listen::serve_http(l, app, limits, stats, stop_rx.clone()))
    });
    Running {
        grpc,
        http,
        browser,
        metrics,
        sweeper: spawn_sweeper(pipeline.store.clone()),
        stop,
        stop_metrics,
    }
}

impl Running {
    /// No new requests; in-flight ones finish, the forward queues drain
    /// within `drain`, then /metrics stops.
    async fn drain(
        self,
        sig: &str,
        health: &Health,
        forward: Option<Arc<Forwarder>>,
        [keep_accepting, drain]: [Duration; 2],
    ) {
        let span = tracing::info_span!("drain", signal = sig);
        health.draining.store(true, Ordering::Relaxed);
        keep_accepting_after(sig, keep_accepting, &span).await;
        tracing::info!(
            parent: &span,
            signal = sig,
            "stopping: no new requests, finishing in-flight ones"
        );
        let _ = self.stop.send(true);
        let started = std::time::Instant::now();
        let _ = tokio::time::timeout(drain + Duration::from_secs(5), self.grpc).await;
        for t in self.http.into_iter().chain(self.browser) {
            let _ = tokio::time::timeout(drain + Duration::from_secs(5), t).await;
        }
        tracing::info!(
            parent: &span,
            ms = started.elapsed().as_millis() as u64,
            "receivers closed: every connection finished"
        );
        if let Some(f) = forward {
            f.drain(drain).await;
        }
        self.sweeper.abort();
        let _ = self.stop_metrics.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.metrics).await;
        tracing::info!(parent: &span, "stopped");
    }
}

async fn run(
    cfg: Config,
    cli: Cli,
    watched: reload::Watched,
    set_log_level: Option<reload::SetLogLevel>,
    otlp: Option<&Pipelines>,
) -> Result<(), String> {
    // spans of its own life (telemetry.otlp): start-up to ready, then the drain
    let startup = tracing::info_span!("startup", version = env!("CARGO_PKG_VERSION"));
    let started_s = geometra_sidecar::base::now_secs();
    let (pipeline, forward) = pipeline(&cfg).await?;
    let health = Arc::new(Health::default());
    // per-metric self-metrics list every rule and pass-through family
    let own = Arc::new(SelfMetrics::new(
        otlp,
        cfg.all_rules().count() + cfg.store.max_passthrough_families + 64,
    ));
    let remote_write = remote_write(&cfg, &pipeline, &own)?;
    let listeners = ListenerCounters::new();
    let cors = Arc::new(Live::new(Cors::new(&cfg.receivers.otlp_http)));
    let browser = browser_parts(&cfg)?;
    let load = Box::new(move || effective_config(&cli));
    let mut reloader = reload::Reloader::new(load, cfg.clone(), pipeline.clone())
        .with_cors(cors.clone())
        .with_log_level(set_log_level)
        .with_forward(forward.clone());
    let mut exporters = forward.as_ref().map(|f| f.stats()).unwrap_or_default();
    exporters.extend(remote_write.as_ref().map(|(s, _)| s.points.clone()));
    let counters = Counters::of(listeners.all(), reloader.stats(), exporters, started_s);
    declare_self_metrics(&own, &pipeline, &counters);
    if let Some((stats, control)) = remote_write {
        stats.declare(&own);
        reloader = reloader.with_remote_write(Some(control));
    }

    let bound = bind(&cfg).await?;
    let addrs = bound.addrs.clone();
    let _ = health.listening.set(bound.readyz());
    let running = serve(
        &cfg,
        bound,
        &pipeline,
        &listeners,
        (cors, browser),
        &own,
        &health,
    );
    // SIGHUP or a change of the config file reloads it (src/reload.rs)
    reload::spawn(watched, reloader)?;
    health.ready.store(true, Ordering::Relaxed);
    announce(startup, &cfg, addrs);

    let sig = shutdown_signal().await;
    running.drain(sig, &health, forward, stop_times(&cfg)).await;
    // the last push of the self-metrics (blocking: off the async workers)
    let _ = tokio::task::spawn_blocking(move || own.shutdown()).await;
    Ok(())
}

/// After the stop signal: how long to keep accepting, then to drain.
fn stop_times(cfg: &Config) -> [Duration; 2] {
    [
        cfg.receivers.keep_accepting_for.0,
        cfg.forward.drain_timeout.0,
    ]
}

/// The browser listener's guard and CORS policy, when it is on.
type BrowserParts = (Arc<Guard>, Arc<Live<Cors>>);

fn browser_parts(cfg: &Config) -> Result<Option<BrowserParts>, String> {
    let b = &cfg.receivers.browser;
    if b.listen.is_none() {
        return Ok(None);
    }
    let guard = Arc::new(Guard::new(b)?);
    let mut keys = CorsKeys::from(b);
    // a token is sent in Authorization: the preflight must allow it
    let mut headers = b.cors_allowed_headers.clone();
    if b.auth.enabled() {
        headers.push("authorization".into());
    }
    keys.headers = &headers;
    Ok(Some((guard, Arc::new(Live::new(Cors::new(keys))))))
}

/// The browser listener's own counters.
fn declare_browser(t: &SelfMetrics, g: &Arc<Guard>) {
    geometra_sidecar::receiver::browser::guard::declare(t, g);
}

/// CORS on the in-pod OTLP/HTTP listener beyond loopback: anyone who can
/// reach it writes the app's own metrics (say so at start-up).
fn warn_trusted_cors(cfg: &Config) {
    let h = &cfg.receivers.otlp_http;
    let beyond = h.listen.is_some_and(|l| !l.is_loopback());
    if beyond && !h.cors_allowed_origins.is_empty() {
        tracing::warn!(
            listen = %h.listen.map(|l| l.to_string()).unwrap_or_default(),
            "receivers.otlp_http has CORS origins and listens beyond loopback: its data is trusted \
             as the app's own; serve browsers on receivers.browser instead"
        );
    }
}

/// The "ready" log line, in the start-up span (which ends here).
fn announce(startup: tracing::Span, cfg: &Config, [g, h, m, b]: [String; 4]) {
    tracing::info!(
        parent: &startup,
        otlp_grpc = %g,
        otlp_http = %h,
        metrics = %m,
        browser = %b,
        rules = cfg.rules.len() + cfg.extra_rules.len(),
        forward_logs = cfg.forward.logs.as_ref().map(|e| e.endpoint.as_str()).unwrap_or("off"),
        "geometra-sidecar ready"
    );
}

/// The counters the binary hands to `/metrics` besides the pipeline's.
struct Counters {
    listeners: [Arc<ListenerStats>; 4],
    reload: Arc<ReloadStats>,
    exporters: Vec<Arc<ExporterStats>>,
    started_s: u64,
}

impl Counters {
    fn of(
        listeners: [Arc<ListenerStats>; 4],
        reload: Arc<ReloadStats>,
        exporters: Vec<Arc<ExporterStats>>,
        started_s: u64,
    ) -> Counters {
        Counters {
            listeners,
            reload,
            exporters,
            started_s,
        }
    }
}

/// Every component declares the self-metrics it counts, in the order
/// /metrics shows them.
fn declare_self_metrics(t: &SelfMetrics, p: &Arc<Pipeline>, c: &Counters) {
    Transports::declare(t, &p.stats);
    InFlight::declare(t, &p.in_flight);
    ListenerStats::declare(t, &c.listeners);
    c.reload.declare(t);
    ExporterStats::declare(t, &c.exporters);
    Store::declare(t, &p.store);
    let live = p.clone();
    Deriver::declare_skipped(t, move || live.deriver.load());
    geometra_sidecar::metrics::passthrough::Passthrough::declare(t, &p.store);
    geometra_sidecar::telemetry::process::declare(t, c.started_s);
}
