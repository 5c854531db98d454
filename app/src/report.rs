//! What a run tells the world: one JSON object per line on stdout (tracing with the
//! JSON format, fields flattened, `event` naming each line), a periodic `progress`
//! event with done / total / ETA, a progress bar on stderr when stdout is a terminal,
//! and the final `run_finished` line the alarms' metric filters read.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The bar, when stdout is a terminal; log lines are printed around it.
static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Crates whose debug output could carry request or response bodies: capped at info
/// whatever `RUST_LOG` says, so no token or secret reaches the log.
const CAPS: &str = "aws_smithy_runtime=info,aws_smithy_runtime_api=info,aws_smithy_http=info,aws_sigv4=info,hyper=info,hyper_util=info,reqwest=info,rustls=info,h2=info";

const DEFAULT: &str = "info,aws_config=error";

pub fn init() {
    if std::io::stdout().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} clients, ETA {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        let _ = BAR.set(bar);
    }
    // The SDK's own chatter (e.g. no region from IMDS off EC2) is left out by default:
    // the job says what is wrong, with the fix, when it matters.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT.into());
    let filter = EnvFilter::try_new(format!("{directives},{CAPS}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{DEFAULT},{CAPS}")));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(Stdout)
        .init();
}

/// Writes each formatted line to stdout in one piece, around the bar if there is one.
#[derive(Debug, Clone, Copy)]
struct Stdout;

#[derive(Debug, Default)]
struct Line(Vec<u8>);

impl std::io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let write = || {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not the job's problem.
            let _ = out.write_all(&self.0).and_then(|()| out.flush());
        };
        match BAR.get() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line::default()
    }
}

/// Counts finished units of work and reports them.
#[derive(Debug)]
pub struct Progress {
    job: &'static str,
    total: u64,
    done: AtomicU64,
    started: Instant,
    last_decile: AtomicU64,
}

impl Progress {
    /// Starts the bar and a `progress` event every `every` until dropped.
    pub fn start(
        job: &'static str,
        total: u64,
        every: Duration,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        if let Some(bar) = BAR.get() {
            bar.set_length(total);
            bar.set_message(job);
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        let p = Arc::new(Self {
            job,
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            last_decile: AtomicU64::new(0),
        });
        let ticker = Arc::clone(&p);
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.tick().await;
            loop {
                interval.tick().await;
                ticker.log();
            }
        });
        (p, handle)
    }

    /// One more unit done; also logs at each tenth of the way.
    pub fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = BAR.get() {
            bar.set_position(done);
        }
        let decile = (done * 10).checked_div(self.total).unwrap_or(10);
        if self.last_decile.fetch_max(decile, Ordering::Relaxed) < decile && done < self.total {
            self.log();
        }
    }

    fn log(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        // Whole milliseconds per unit so far, times the units left.
        let per_ms = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .checked_div(done);
        let eta_s = per_ms.map(|ms| ms.saturating_mul(self.total.saturating_sub(done)) / 1000);
        tracing::info!(
            event = "progress",
            job = self.job,
            done,
            total = self.total,
            elapsed_s = elapsed.as_secs(),
            eta_s
        );
    }

    #[allow(clippy::unused_self)] // The bar is global; `finish` reads as the run's end.
    pub fn finish(&self) {
        if let Some(bar) = BAR.get() {
            bar.finish_and_clear();
        }
    }
}
