//! The geometra-sidecar binary: command line, start-up, signals.

use clap::{Parser, Subcommand};
use geometra_sidecar::config::{Config, ListenAddr, LogFormat};
use geometra_sidecar::derive::Deriver;
use geometra_sidecar::receiver::grpc::{Logs, Metrics, OtlpService, Traces};
use geometra_sidecar::receiver::{self, listen, Pipeline};
use geometra_sidecar::reload;
use geometra_sidecar::server::{self, Health};
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

/// The config file with the command line's overrides applied.
fn effective_config(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(a) = cli.otlp_grpc_listen {
        cfg.receivers.otlp_grpc.listen = a;
    }
    if let Some(a) = cli.otlp_http_listen {
        cfg.receivers.otlp_http.listen = a.0;
    }
    if let Some(a) = cli.metrics_listen {
        cfg.server.listen = a;
    }
    if let Some(f) = &cli.log_format {
        cfg.telemetry.log_format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    if let Some(url) = &cli.forward_logs_to {
        cfg.forward.logs = Some(geometra_sidecar::config::Endpoint {
            endpoint: url.clone(),
            protocol: None,
            headers: Default::default(),
            bearer_token_file: None,
            timeout: geometra_sidecar::config::Dur(Duration::from_secs(10)),
            compression: geometra_sidecar::config::Compression::Gzip,
            tls: None,
        });
    }
    if let Some(url) = &cli.remote_write_url {
        match &mut cfg.remote_write {
            Some(rw) => rw.url = url.clone(),
            None => {
                cfg.remote_write = Some(geometra_sidecar::config::RemoteWrite::with_url(url));
            }
        }
    }
    if let Some(d) = &cli.queue_dir {
        cfg.forward.queue.dir = Some(d.clone());
    }
    cfg.validate().map_err(|e| format!("command line: {e}"))?;
    Ok(cfg)
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

fn main() -> ExitCode {
    geometra_sidecar::allocator::tune();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{}", Config::default().to_yaml());
            return ExitCode::SUCCESS;
        }
        Some(Command::CheckConfig) => {
            return match effective_config(&cli) {
                Ok(cfg) => {
                    print!("{}", cfg.to_yaml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("config error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
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
    let otlp = {
        let _in_rt = rt.enter();
        match Pipelines::start(&cfg.telemetry.otlp) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("config error: {e}");
                return ExitCode::FAILURE;
            }
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

/// The addresses each listener bound, comma-separated (`off`: disabled).
struct Bound {
    otlp_grpc: String,
    otlp_http: String,
    metrics: String,
}

impl Bound {
    /// What /readyz reports after `ready`.
    fn readyz(&self) -> String {
        format!(
            "otlp_grpc={}\notlp_http={}\nmetrics={}\n",
            self.otlp_grpc, self.otlp_http, self.metrics
        )
    }
}

async fn run(
    cfg: Config,
    cli: Cli,
    watched: reload::Watched,
    set_log_level: Option<reload::SetLogLevel>,
    otlp: Option<&Pipelines>,
) -> Result<(), String> {
    // spans of the sidecar's own life (exported with telemetry.otlp): start-up
    // from here to ready, drain from the signal to the end
    let startup = tracing::info_span!("startup", version = env!("CARGO_PKG_VERSION"));
    let deriver = Deriver::new(&cfg);
    let store = deriver.store().clone();
    let forward = geometra_sidecar::export::otlp::build(&cfg, &store).await?;
    let pipeline = Arc::new(Pipeline {
        deriver: geometra_sidecar::reload::Live::new(deriver),
        store: store.clone(),
        forward: forward.clone().map(|f| f as _),
        max_value_depth: cfg.receivers.max_value_depth,
        in_flight: receiver::admit::InFlight::new(
            cfg.receivers.max_in_flight_bytes,
            cfg.receivers.in_flight_per_connection(),
        ),
    });
    let health = Arc::new(Health::default());
    // per-metric self-metrics list every rule and pass-through family
    let families = cfg.rules.len() + cfg.extra_rules.len() + cfg.store.max_passthrough_families;
    let own = Arc::new(SelfMetrics::new(otlp, families + 64));
    let remote_write = match &cfg.remote_write {
        Some(rw) => {
            let (p, o) = (pipeline.clone(), own.clone());
            let source: geometra_sidecar::export::remote_write::SnapshotSource =
                Arc::new(move || server::snapshot(&p.deriver.load(), &o));
            Some(geometra_sidecar::export::remote_write::start(
                rw, &store, source,
            )?)
        }
        None => None,
    };
    // after every exporter is built: they declare their counters too
    declare_self_metrics(&own, &pipeline);
    let remote_write = remote_write.map(|(stats, control)| {
        stats.declare(&own);
        control
    });

    let grpc_l = listen::bind(cfg.receivers.otlp_grpc.listen, "OTLP/gRPC").await?;
    let http_l = match cfg.receivers.otlp_http.listen {
        Some(a) => Some(listen::bind(a, "OTLP/HTTP").await?),
        None => None,
    };
    let metrics_l = listen::bind(cfg.server.listen, "metrics").await?;
    let bound = Bound {
        otlp_grpc: grpc_l.describe(),
        otlp_http: http_l
            .as_ref()
            .map_or_else(|| "off".into(), |l| l.describe()),
        metrics: metrics_l.describe(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let max = cfg.receivers.otlp_grpc.max_message_bytes;
    let limits = receiver::listen::Limits::from(&cfg.server.connections);
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
            receiver::listen::incoming(
                grpc_l,
                limits,
                store.listeners[0].clone(),
                pipeline.in_flight.clone(),
            ),
            stopped(stop_rx.clone()),
        );
    let grpc_task = tokio::spawn(grpc);
    geometra_sidecar::allocator::spawn_trim();

    let cors = Arc::new(reload::Live::new(receiver::cors::Cors::new(
        &cfg.receivers.otlp_http,
    )));
    let http_task = http_l.map(|l| {
        let app = receiver::http::router(pipeline.clone(), &cfg.receivers.otlp_http, cors.clone());
        tokio::spawn(receiver::listen::serve_http(
            l,
            app,
            limits,
            ("otlp_http", store.listeners[1].clone()),
            stop_rx.clone(),
        ))
    });
    let metrics_app = server::router(pipeline.clone(), health.clone(), own.clone());
    // /metrics keeps serving while draining; it stops last.
    let (mstop_tx, mstop_rx) = watch::channel(false);
    let metrics_task = tokio::spawn(receiver::listen::serve_http(
        metrics_l,
        metrics_app,
        limits,
        ("metrics", store.listeners[2].clone()),
        mstop_rx,
    ));

    // series expiry
    let sweeper = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                // series_ttl may change on a config reload
                let every = Duration::from_secs((store.ttl_s() / 4).clamp(1, 60));
                tokio::time::sleep(every).await;
                let n = store.expire(geometra_sidecar::metrics::now_secs());
                if n > 0 {
                    tracing::debug!(expired = n, "series expired");
                }
            }
        })
    };

    let _ = health.listening.set(bound.readyz());
    // SIGHUP or a change of the config file reloads it (src/reload.rs)
    let load = Box::new(move || effective_config(&cli));
    reload::spawn(
        watched,
        reload::Reloader::new(load, cfg.clone(), pipeline.clone())
            .with_cors(cors)
            .with_log_level(set_log_level)
            .with_remote_write(remote_write)
            .with_forward(forward.clone()),
    )?;
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        parent: &startup,
        otlp_grpc = %bound.otlp_grpc,
        otlp_http = %bound.otlp_http,
        metrics = %bound.metrics,
        rules = cfg.rules.len() + cfg.extra_rules.len(),
        forward_logs = cfg.forward.logs.as_ref().map(|e| e.endpoint.as_str()).unwrap_or("off"),
        "geometra-sidecar ready"
    );
    drop(startup);

    let sig = shutdown_signal().await;
    let drain_span = tracing::info_span!("drain", signal = sig);
    tracing::info!(
        parent: &drain_span,
        signal = sig,
        "stopping: no new requests, finishing in-flight ones"
    );
    health.draining.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let drain = cfg.forward.drain_timeout.0;
    let _ = tokio::time::timeout(drain + Duration::from_secs(5), grpc_task).await;
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(drain + Duration::from_secs(5), t).await;
    }
    if let Some(f) = forward {
        f.drain(drain).await;
    }
    sweeper.abort();
    let _ = mstop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), metrics_task).await;
    tracing::info!(parent: &drain_span, "stopped");
    drop(drain_span);
    // the last push of the self-metrics (blocking: off the async workers)
    let _ = tokio::task::spawn_blocking(move || own.shutdown()).await;
    Ok(())
}

/// Every component declares the self-metrics it counts, in the order
/// /metrics shows them.
fn declare_self_metrics(t: &SelfMetrics, p: &Arc<Pipeline>) {
    use geometra_sidecar::metrics;
    let store = &p.store;
    metrics::ReceiverStats::declare(t, store);
    receiver::admit::InFlight::declare(t, &p.in_flight);
    metrics::ListenerStats::declare(t, store);
    reload::ReloadStats::declare(t, store);
    metrics::ExporterStats::declare(t, store);
    metrics::Store::declare(t, store);
    let live = p.clone();
    Deriver::declare_skipped(t, move || live.deriver.load());
    metrics::passthrough::Passthrough::declare(t, store);
    geometra_sidecar::telemetry::process::declare(t, store.started_s);
}
