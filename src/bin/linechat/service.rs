//! Running as a service: logging whose level a reload can change, the reload itself (the
//! config file read again), readiness for systemd, and what `--generate` prints.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use clap::Command;
use linechat::config::{Reloaded, Reloader, RELOADABLE};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::settings::{self, Loaded};
use crate::{Generate, LogFormat};

/// `--log-level`'s parser: a tracing filter, checked whole. Stricter than `RUST_LOG`: a bare
/// word must be a level, since `RUST_LOG=loud` would quietly mean "everything from a module
/// named loud" and a typo in a config file should not.
pub fn log_filter(text: &str) -> Result<String, String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let expected = "expected error, warn, info, debug or trace, or a filter such as \
                    info,linechat=debug";
    for directive in text.split(',') {
        let word = directive.trim().to_ascii_lowercase();
        if !word.contains('=') && !LEVELS.contains(&word.as_str()) {
            return Err(format!("{directive:?} is not a level ({expected})"));
        }
    }
    EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{e} ({expected})"))
}

fn filter(level: Option<&str>) -> EnvFilter {
    match level {
        Some(level) => EnvFilter::builder()
            .parse(level)
            .unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// Changes the log filter of the running server.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Logs to stderr at `level` (else `RUST_LOG`, else info), in `format`.
pub fn init_logging(format: LogFormat, level: Option<&str>) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text)
        .then(|| fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json = (format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_ansi(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
    handle
}

/// Settings as they stand, by key: the value (to compare) and how it is shown (secrets masked).
type Values = BTreeMap<String, (String, String)>;

fn values(cmd: &Command, loaded: &Loaded) -> Values {
    settings::settings(cmd)
        .map(|(key, arg)| {
            let unset = || "(not set)".to_owned();
            let raw = settings::render(arg, &loaded.matches, false).unwrap_or_else(unset);
            let shown = settings::render(arg, &loaded.matches, true).unwrap_or_else(unset);
            (key.to_owned(), (raw, shown))
        })
        .collect()
}

/// Reads the command line, the environment and the config file again, in their order of
/// precedence, as at start-up: a value given as a flag still wins over the file.
#[derive(Debug)]
pub struct FileReloader {
    cmd: Command,
    argv: Vec<OsString>,
    file: Option<PathBuf>,
    /// What runs now: the start-up values, with those of the reloadable settings that later
    /// reloads changed. A setting that needs a restart keeps its start-up value here, so each
    /// reload says again that it is waiting for one.
    running: Mutex<Values>,
    log: LogHandle,
    /// A new log filter, set once the reload has been logged (see `Reloader::after`).
    next_filter: Mutex<Option<EnvFilter>>,
}

impl FileReloader {
    pub fn new(cmd: Command, argv: Vec<OsString>, loaded: &Loaded, log: LogHandle) -> Self {
        FileReloader {
            running: Mutex::new(values(&cmd, loaded)),
            file: loaded.file.clone(),
            cmd,
            argv,
            log,
            next_filter: Mutex::new(None),
        }
    }
}

/// Settings the binary applies itself on a reload, besides the library's.
const RELOADED_HERE: &[&str] = &["log-level"];

impl Reloader for FileReloader {
    fn reload(&self) -> Result<Reloaded, String> {
        let (loaded, args) = crate::load(&self.cmd, &self.argv).map_err(|e| match e {
            settings::Error::Clap(e) => e.to_string().lines().next().unwrap_or("").to_owned(),
            settings::Error::File(e) => e,
        })?;
        let config = args.config().map_err(|e| format!("{e:#}"))?;
        let new = values(&self.cmd, &loaded);
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut applied, mut restart) = (Vec::new(), Vec::new());
        for (key, (raw, shown)) in &new {
            let Some((old_raw, old_shown)) = running.get(key) else {
                continue;
            };
            if raw == old_raw {
                continue;
            }
            let change = format!("{key} {old_shown} -> {shown}");
            if RELOADABLE.contains(&key.as_str()) || RELOADED_HERE.contains(&key.as_str()) {
                applied.push(change);
            } else {
                restart.push(change);
            }
        }
        if running.get("log-level") != new.get("log-level") {
            *self
                .next_filter
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(filter(args.log_level.as_deref()));
        }
        for key in RELOADABLE.iter().chain(RELOADED_HERE) {
            if let Some(value) = new.get(*key) {
                running.insert((*key).to_owned(), value.clone());
            }
        }
        let mut report = if applied.is_empty() {
            "nothing that a reload changes was changed".to_owned()
        } else {
            format!("applied {}", applied.join(", "))
        };
        if !restart.is_empty() {
            report.push_str(&format!(
                "; needs a restart to take effect: {}",
                restart.join(", ")
            ));
        }
        Ok(Reloaded { config, report })
    }

    fn after(&self) {
        let next = self
            .next_filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(filter) = next {
            if let Err(e) = self.log.reload(filter) {
                tracing::warn!(error = %e, "cannot change the log level");
            }
        }
    }

    fn source(&self) -> String {
        match &self.file {
            Some(path) => path.display().to_string(),
            None => "flags and environment (no --config file)".to_owned(),
        }
    }
}

/// Tells systemd (under `Type=notify`; nothing happens without `NOTIFY_SOCKET`) that the
/// listeners are open.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd the server is ready (NOTIFY_SOCKET)");
    }
}

/// Tells systemd that shutdown has begun.
pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::debug!(error = %e, "cannot tell systemd the server is stopping");
    }
}

/// Prints what `--generate` asks for on stdout.
pub fn generate(what: Generate, mut cmd: Command) {
    use clap_complete::Shell;
    let mut out = std::io::stdout().lock();
    let shell = match what {
        Generate::Man => {
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
                eprintln!("linechat: cannot write the man page: {e}");
            }
            return;
        }
        Generate::ExampleConfig => {
            let _ = out.write_all(settings::example(&cmd).as_bytes());
            return;
        }
        Generate::Bash => Shell::Bash,
        Generate::Zsh => Shell::Zsh,
        Generate::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "linechat", &mut out);
}
