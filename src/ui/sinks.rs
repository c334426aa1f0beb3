//! The event sinks: human progress (indicatif, one prefixed line stream per
//! job, each line with the UTC time of day), JSON lines on stdout (each
//! with its RFC 3339 `time`), and a plain-text log file.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, JobStatus, Redactor, Sink};

/// People: a spinner per job on a terminal, plain prefixed lines otherwise.
/// Writes to stderr, like cargo, so stdout stays for results.
pub struct HumanSink {
    progress: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// A bar per download (by job and URL), on a terminal only: the log
    /// has the download's start and end as messages.
    downloads: HashMap<(Option<String>, String), ProgressBar>,
}

impl HumanSink {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        HumanSink {
            progress: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: HashMap::new(),
            downloads: HashMap::new(),
        }
    }

    fn line(&self, text: String) {
        let ts = clock();
        let text = match text.strip_prefix('\n') {
            Some(t) => format!("\n{ts} {t}"),
            None => format!("{ts} {text}"),
        };
        self.print(text);
    }

    /// A line without the time: the summary's artifact list, which people
    /// and scripts copy from.
    fn print(&self, text: String) {
        match &self.progress {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl HumanSink {
    /// Moves (or makes, or clears when done) a download's bar.
    fn download(
        &mut self,
        job: &Option<String>,
        url: &str,
        bytes: u64,
        total: Option<u64>,
        done: bool,
    ) {
        let Some(mp) = &self.progress else { return };
        let key = (job.clone(), url.to_string());
        if done {
            if let Some(bar) = self.downloads.remove(&key) {
                bar.finish_and_clear();
            }
            return;
        }
        let bar = self.downloads.entry(key).or_insert_with(|| {
            let (bar, template) = match total {
                Some(t) => (
                    ProgressBar::new(t),
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{prefix} {spinner} {bytes} {bytes_per_sec} {wide_msg}",
                ),
            };
            let bar = mp.add(bar);
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            let who = job.as_deref().map(|j| format!("{j}: ")).unwrap_or_default();
            bar.set_prefix(format!("{who}downloading"));
            bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
            bar
        });
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(bytes);
    }
}

impl Default for HumanSink {
    fn default() -> Self {
        Self::new()
    }
}

/// The UTC time of day, `HH:MM:SS`, that starts every human line.
fn clock() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now.get(11..19).unwrap_or_default().to_string()
}

/// The RFC 3339 UTC time, in milliseconds, of a JSON event.
fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn human_duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms - ms % 100)).to_string()
}

impl Sink for HumanSink {
    fn handle(&mut self, event: &Event) {
        match event {
            Event::BuildStarted { build_id, jobs, .. } => self.line(format!(
                "==> build {build_id}: {} job(s): {}",
                jobs.len(),
                jobs.join(", ")
            )),
            Event::JobStarted { job } => {
                if let Some(mp) = &self.progress {
                    let bar = mp.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix}: {wide_msg} {elapsed}")
                            .expect("valid template"),
                    );
                    bar.set_prefix(job.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.bars.insert(job.clone(), bar);
                }
                self.line(format!("==> {job}: started"));
            }
            Event::StepStarted { job, step } => match self.bars.get(job) {
                Some(bar) => bar.set_message(step.clone()),
                None => self.line(format!("==> {job}: {step}")),
            },
            Event::StepFinished {
                job,
                step,
                ok: false,
                ..
            } => self.line(format!("==> {job}: {step} failed")),
            Event::StepFinished { .. } => {}
            Event::Output { job, line, .. } => self.line(format!("    {job}: {line}")),
            Event::Artifact { job, artifact } => {
                let digest = artifact
                    .digest
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                self.line(format!(
                    "==> {job}: artifact {} {}{digest}",
                    artifact.kind, artifact.id
                ))
            }
            Event::Message {
                job: Some(job),
                text,
            } => self.line(format!("==> {job}: {text}")),
            Event::Message { job: None, text } => self.line(format!("==> {text}")),
            Event::Download {
                job,
                url,
                bytes,
                total,
                done,
            } => self.download(job, url, *bytes, *total, *done),
            Event::Error { job, message, .. } => {
                let who = job.as_deref().map(|j| format!("{j}: ")).unwrap_or_default();
                self.line(format!("error: {who}{message}"))
            }
            Event::JobFinished {
                job,
                status,
                duration_ms,
                error,
            } => {
                if let Some(bar) = self.bars.remove(job) {
                    bar.finish_and_clear();
                }
                let why = error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                let status = match status {
                    JobStatus::Succeeded => "succeeded",
                    JobStatus::Failed => "FAILED",
                    JobStatus::Cancelled => "cancelled",
                };
                self.line(format!(
                    "==> {job}: {status} after {}{why}",
                    human_duration(*duration_ms)
                ))
            }
            Event::Summary {
                build_id,
                succeeded,
                failed,
                cancelled,
                duration_ms,
                jobs,
            } => {
                self.line(format!(
                    "\nbuild {build_id}: {succeeded} succeeded, {failed} failed, {cancelled} cancelled in {}",
                    human_duration(*duration_ms)
                ));
                for j in jobs {
                    for a in &j.artifacts {
                        self.print(format!("  {}: {} {}", j.job, a.kind, a.id));
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        for (_, bar) in self.downloads.drain() {
            bar.finish_and_clear();
        }
    }
}

/// Machines: one JSON object per line on stdout, nothing else there; each
/// carries `time`, when it happened (RFC 3339, UTC, milliseconds).
pub struct JsonSink;

/// One JSON event line (without the newline), with its `time`: what
/// [`JsonSink`] writes, for the few events printed outside a build.
pub fn json_line<T: serde::Serialize>(event: &T) -> String {
    let mut value = serde_json::to_value(event).expect("events always serialize");
    if let Some(o) = value.as_object_mut() {
        o.insert("time".into(), timestamp().into());
    }
    value.to_string()
}

impl Sink for JsonSink {
    fn handle(&mut self, event: &Event) {
        let line = json_line(event);
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(line.as_bytes());
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    }
}

/// The build log: every event as a timestamped line.
pub struct LogFileSink {
    file: std::fs::File,
}

impl LogFileSink {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        Ok(LogFileSink {
            file: fs_err::File::create(path)?.into_parts().0,
        })
    }
}

impl Sink for LogFileSink {
    fn handle(&mut self, event: &Event) {
        let ts = timestamp();
        let json = serde_json::to_string(event).expect("events always serialize");
        let _ = writeln!(self.file, "{ts} {json}");
    }

    fn finish(&mut self) {
        let _ = self.file.sync_all();
    }
}

/// A writer for `tracing` that redacts each write before it reaches stderr.
pub struct RedactingWriter {
    redactor: Arc<RwLock<Redactor>>,
}

impl RedactingWriter {
    pub fn stderr(redactor: Arc<RwLock<Redactor>>) -> Self {
        RedactingWriter { redactor }
    }
}

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = self
            .redactor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .redact(&text);
        std::io::stderr().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
