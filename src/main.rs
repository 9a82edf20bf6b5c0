//! The `herald` command line: parses arguments, calls into the library, maps errors to exit
//! codes (0 success, 66 input that cannot be opened, 78 bad config, 1 other failure).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

use herald::config::{self, ConfigError, ProcessEnv};
use herald::decode::Context;
use herald::engine::EngineConfig;
use herald::model::Nanos;
use herald::replay::Replay;
use herald::sinks::encoding::{Encoding, LineFormat};

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
        /// `json` (the ClusterEvent lines) or `text` (readable lines); by default text on a
        /// terminal and JSON otherwise. With `--sweep`, a table or JSON.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Replay once per window and print, per window, the events by kind, the suppressed
        /// flaps, the events avoided against W = 0 and the delay of each emitted state against
        /// W = 0, e.g. `0,500ms,1s,2s,5s`. The startup grace and split window stay as they are.
        #[arg(long, value_delimiter = ',', value_parser = parse_duration, conflicts_with = "window")]
        sweep: Option<Vec<Duration>>,
        /// Also write a self-contained HTML page of each key's states over time, the
        /// suppressed flaps marked and the emitted events as ticks.
        #[arg(long, value_name = "FILE.html", conflicts_with = "sweep")]
        timeline: Option<PathBuf>,
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
    /// Follow a running daemon's events as they are emitted (its `GET /events`).
    Tap {
        /// The daemon's HTTP address (its `[server] listen`).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        server: String,
        /// Only this cluster's events.
        #[arg(long)]
        cluster: Option<String>,
        /// Only events of this kind, e.g. `cluster.leader_elected`.
        #[arg(long)]
        kind: Option<String>,
        /// `json` or `text`; by default text on a terminal and JSON otherwise.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Shell completions on stdout, e.g. `herald completions bash > /etc/bash_completion.d/herald`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, e.g. `herald man | man -l -`.
    Man,
}

/// How `replay` prints what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Text,
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
        Command::Replay { config, window, cluster, reporter, format, sweep, timeline, input } => {
            let mut engine = match config {
                Some(path) => config::load(&path, &ProcessEnv)?.engine,
                None => EngineConfig::default(),
            };
            let context = Context::new(cluster, reporter);
            if let Some(windows) = sweep {
                return self::sweep(engine, context, &input, &windows, format);
            }
            if timeline.is_some() && input == "-" {
                let error = anyhow::anyhow!("--timeline reads the log twice: give a file, not -");
                return Err(Failure { code: 1, error });
            }
            let mut title = input.clone();
            if let Some(w) = window {
                herald::replay::set_window(&mut engine, Nanos::from_std(w));
                title = format!("{input} at W = {}", herald::sweep::duration(Nanos::from_std(w).0));
            }
            let timeline = timeline.as_deref().map(|path| (path, title.as_str()));
            replay(engine, context, &input, format, timeline)
        }
        Command::Tap { server, cluster, kind, format } => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let format = line_format(format);
            let filter = herald::telemetry::tap::Filter { cluster, kind };
            let stdout = io::stdout();
            let mut written = Ok(());
            let mut buf = Vec::new();
            runtime.block_on(herald::telemetry::tap::follow(&server, &filter, |e, _| {
                let mut out = stdout.lock();
                written = herald::replay::write_line(format, &e, &mut buf, &mut out)
                    .and_then(|()| out.flush());
                written.is_ok()
            }))?;
            written.context("writing events")?;
            Ok(())
        }
        Command::Completions { shell } => {
            let mut out = io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "herald", &mut out);
            out.flush().context("writing the completions")?;
            Ok(())
        }
        Command::Man => {
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("writing the manual page")?;
            Ok(())
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

/// What `replay` reads: a file (with its length, for the progress bar) or standard input.
fn open(input: &str) -> Result<(Box<dyn io::Read>, Option<u64>), Failure> {
    if input == "-" {
        return Ok((Box::new(io::stdin().lock()), None));
    }
    match File::open(input) {
        Ok(f) => {
            let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            Ok((Box::new(f), len))
        }
        Err(e) => {
            let error = anyhow::Error::new(e).context(format!("cannot open {input}"));
            Err(Failure { code: EX_NOINPUT, error })
        }
    }
}

/// Inputs smaller than this replay in a blink: no bar.
const PROGRESS_FROM: u64 = 16 << 20;

/// A progress bar on stderr for a large file, only when stderr is a terminal (DESIGN §12).
fn progress(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    let len = len.filter(|l| *l >= PROGRESS_FROM)?;
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    let style =
        indicatif::ProgressStyle::with_template("{bar:20} {bytes}/{total_bytes} {msg} eta {eta}")
            .ok()?;
    bar.set_style(style);
    Some(bar)
}

/// Where decode errors go: above the bar when there is one.
fn report(bar: Option<indicatif::ProgressBar>) -> impl FnMut(&herald::decode::DecodeError) {
    let stderr = io::stderr();
    move |e| match &bar {
        Some(bar) => bar.println(format!("decode error: {e}")),
        None => {
            let _ = writeln!(stderr.lock(), "decode error: {e}");
        }
    }
}

fn line_format(format: Option<Format>) -> LineFormat {
    let encoding = format.map(|f| match f {
        Format::Json => Encoding::Json,
        Format::Text => Encoding::Text,
    });
    LineFormat::for_stream(encoding, io::stdout().is_terminal())
}

fn replay(
    engine: EngineConfig,
    context: Context,
    input: &str,
    format: Option<Format>,
    timeline: Option<(&std::path::Path, &str)>,
) -> Result<(), Failure> {
    let (reader, len) = open(input)?;
    let bar = progress(len);
    let reader: Box<dyn io::Read> = match &bar {
        Some(bar) => Box::new(bar.wrap_read(reader)),
        None => reader,
    };
    let reader = BufReader::with_capacity(1 << 18, reader);
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut run = Replay::new(engine.clone(), context.clone());
    run.format = line_format(format);
    if let Some(bar) = &bar {
        run.on_records = Some(records_per_second(bar.clone()));
    }
    let mut emitted = Vec::new();
    let format = run.format;
    let summary = run
        .run_with(reader, report(bar.clone()), |e, buf| {
            if timeline.is_some() {
                emitted.push(e.clone());
            }
            herald::replay::write_line(format, e, buf, &mut out)
        })
        .with_context(|| format!("replaying {input}"))?;
    out.flush().context("writing events")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some((path, title)) = timeline {
        write_timeline(engine, context, input, (path, title), &emitted)?;
    }
    eprintln!("{summary}");
    Ok(())
}

/// The bar's message: records so far and their rate.
fn records_per_second(bar: indicatif::ProgressBar) -> Box<dyn FnMut(u64)> {
    let start = std::time::Instant::now();
    Box::new(move |records| {
        let rate = records as f64 / start.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{records} records, {rate:.0}/s"));
    })
}

/// The log again at W = 0 (every change as it came), for the timeline's lanes.
fn write_timeline(
    mut engine: EngineConfig,
    context: Context,
    input: &str,
    (path, title): (&std::path::Path, &str),
    emitted: &[herald::model::ClusterEvent],
) -> Result<(), Failure> {
    herald::replay::set_window(&mut engine, Nanos::ZERO);
    let (reader, _) = open(input)?;
    let (zero, _) = herald::replay::collect(engine, context, BufReader::new(reader), |_| {})
        .with_context(|| format!("replaying {input} at W = 0"))?;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut page = BufWriter::new(file);
    herald::timeline::render(&mut page, title, &zero, emitted)
        .and_then(|()| page.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One replay per window against one at W = 0 (DESIGN §12).
fn sweep(
    engine: EngineConfig,
    context: Context,
    input: &str,
    windows: &[Duration],
    format: Option<Format>,
) -> Result<(), Failure> {
    // The log is read once per window: standard input is kept in memory for that.
    let stdin = if input == "-" {
        let mut all = Vec::new();
        io::Read::read_to_end(&mut io::stdin().lock(), &mut all).context("reading stdin")?;
        Some(all)
    } else {
        None
    };
    let read = || -> Result<Box<dyn io::BufRead>, Failure> {
        Ok(match &stdin {
            Some(all) => Box::new(io::Cursor::new(all.clone())),
            None => Box::new(BufReader::with_capacity(1 << 18, open(input)?.0)),
        })
    };
    let at = |w: Nanos, errors: bool| -> Result<_, Failure> {
        let mut engine = engine.clone();
        herald::replay::set_window(&mut engine, w);
        let on_error = report(None);
        let mut quiet = |_: &herald::decode::DecodeError| {};
        let result = if errors {
            herald::replay::collect(engine, context.clone(), read()?, on_error)
        } else {
            herald::replay::collect(engine, context.clone(), read()?, &mut quiet)
        };
        Ok(result.with_context(|| format!("replaying {input}"))?)
    };
    let (zero, zero_summary) = at(Nanos::ZERO, true)?;
    let mut runs = Vec::with_capacity(windows.len());
    for w in windows {
        let w = Nanos::from_std(*w);
        if w == Nanos::ZERO {
            runs.push((w, zero.clone(), zero_summary));
        } else {
            let (events, summary) = at(w, false)?;
            runs.push((w, events, summary));
        }
    }
    let rows = herald::sweep::rows(&runs, &zero);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let json = match format {
        Some(Format::Json) => true,
        Some(Format::Text) => false,
        None => !stdout.is_terminal(),
    };
    if json {
        for r in &rows {
            serde_json::to_writer(&mut out, r).context("writing the sweep")?;
            writeln!(out).context("writing the sweep")?;
        }
    } else {
        write!(out, "{}", herald::sweep::table(&rows)).context("writing the sweep")?;
    }
    out.flush().context("writing the sweep")?;
    eprintln!("{zero_summary}");
    Ok(())
}
