//! The `herald` command line: parses arguments, calls into the library, maps errors to exit
//! codes (0 success, 66 input that cannot be opened, 78 bad config, 1 other failure).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use herald::config::{self, ConfigError, ProcessEnv};
use herald::decode::Context;
use herald::engine::{EngineConfig, Windows};
use herald::model::Nanos;
use herald::replay::Replay;

/// glibc's allocator spends a fifth of a busy pipeline's time arbitrating between threads
/// (engine, sinks, librdkafka's); mimalloc's per-thread heaps do not. It also serves
/// librdkafka's own allocations (the `override` feature).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc.h; the Rust
/// bindings name no constant for it).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system after a second rather than mimalloc's 10 ms: under a
/// burst, pages handed back were faulted in again at once, and zeroing them took a tenth of the
/// pipeline's time. `MIMALLOC_PURGE_DELAY` in the environment still decides when set.
#[cfg(feature = "mimalloc")]
fn keep_freed_memory_a_while() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's global options, which it reads atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
    }
}

const EX_NOINPUT: u8 = 66;
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Clean, stable, ordered cluster events from raft control planes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: sources, engine, sinks, until SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Log lines as JSON objects instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Validate a config file; lists every problem with its key path (exit 78 if any).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a recorded log through the engine on record time; events as JSON lines on stdout.
    Replay {
        /// Engine settings ([engine] and [clusters.*]) from this config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the stability window W of every kind (not the startup grace, not the
        /// split window), e.g. `0`, `500ms`, `2s`.
        #[arg(long, value_parser = parse_duration)]
        window: Option<Duration>,
        /// The cluster OpenZiti records belong to.
        #[arg(long, default_value = "default")]
        cluster: String,
        /// The reporter of records without `event_src_id`.
        #[arg(long, default_value = "unknown")]
        reporter: String,
        /// The log to read, or `-` for standard input.
        input: String,
    },
    /// Write a synthetic OpenZiti event log (duplicates, flaps, failovers, reordering,
    /// terminator spins) to stdout.
    Generate {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 10_000)]
        lines: u64,
        /// Controllers per cluster.
        #[arg(long, default_value_t = 3)]
        controllers: u32,
        /// Routers: each comes online in the startup burst.
        #[arg(long, default_value_t = 20)]
        routers: u32,
        /// After the startup burst, only router changes (a random router flips each time):
        /// a log whose state is its routers, for the state store's benchmarks.
        #[arg(long)]
        router_flips: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = match error.downcast_ref::<ConfigError>() {
            Some(ConfigError::Invalid { .. }) => EX_CONFIG,
            Some(ConfigError::Io { .. }) => EX_NOINPUT,
            None => 1,
        };
        Failure { code, error }
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    keep_freed_memory_a_while();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if is_broken_pipe(&f.error) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("herald: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run { config, log_json } => {
            init_logs(log_json);
            let cfg = config::load(&config, &ProcessEnv)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(herald::daemon::run(cfg, shutdown_signal()))?;
            // Blocking source threads (a terminal's stdin) must not keep the process alive.
            runtime.shutdown_timeout(Duration::from_millis(100));
            Ok(())
        }
        Command::Check { config } => {
            let cfg = config::load(&config, &ProcessEnv)?;
            println!(
                "{}: ok ({} source(s), {} sink(s))",
                config.display(),
                cfg.sources.len(),
                cfg.sinks.len()
            );
            Ok(())
        }
        Command::Replay { config, window, cluster, reporter, input } => {
            let mut engine = match config {
                Some(path) => config::load(&path, &ProcessEnv)?.engine,
                None => EngineConfig::default(),
            };
            if let Some(w) = window {
                let w = Windows::uniform(Nanos::from_std(w));
                engine.defaults.windows = w;
                for params in engine.clusters.values_mut() {
                    params.windows = w;
                }
            }
            replay(engine, Context::new(cluster, reporter), &input)
        }
        Command::Generate { seed, lines, controllers, routers, router_flips } => {
            let stdout = io::stdout().lock();
            let mut out = BufWriter::with_capacity(1 << 16, stdout);
            let opts = herald::generate::Options {
                seed,
                lines,
                controllers,
                routers,
                router_flips,
                ..Default::default()
            };
            herald::generate::write(&opts, &mut out).context("writing the log")?;
            out.flush().context("writing the log")?;
            Ok(())
        }
    }
}

/// One log line per happening on stderr (stdout carries events); `RUST_LOG` filters.
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

fn replay(engine: EngineConfig, context: Context, input: &str) -> Result<(), Failure> {
    let reader: Box<dyn io::BufRead> = if input == "-" {
        Box::new(BufReader::with_capacity(1 << 18, io::stdin().lock()))
    } else {
        match File::open(input) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 18, f)),
            Err(e) => {
                let error = anyhow::Error::new(e).context(format!("cannot open {input}"));
                return Err(Failure { code: EX_NOINPUT, error });
            }
        }
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let stderr = io::stderr();
    let summary = Replay::new(engine, context)
        .run(reader, &mut out, |e| {
            let _ = writeln!(stderr.lock(), "decode error: {e}");
        })
        .with_context(|| format!("replaying {input}"))?;
    out.flush().context("writing events")?;
    eprintln!("{summary}");
    Ok(())
}
