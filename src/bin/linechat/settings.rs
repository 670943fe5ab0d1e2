//! The config file, read through the clap definitions themselves: every argument with a long
//! name is a key of the same name and meaning, so a flag added to `Args` is a config key, an
//! entry of the example file and a line of `--check-config` with no further work.
//!
//! Precedence is flags, then `LINECHAT_*` environment variables, then the file, then the
//! defaults. The file is merged by parsing the command line once, asking clap where each
//! value came from ([`ArgMatches::value_source`]), and parsing again with the file's values
//! added as flags for the keys that neither a flag nor the environment set. Each file value is
//! first checked on its own with its argument's parser, so an error names the key, the file
//! and the line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::{Spanned, Value};

/// Arguments that are actions, not settings: they have no key.
const NOT_SETTINGS: &[&str] = &[
    "config",
    "check-config",
    "generate",
    "hash-password",
    "help",
    "version",
];

/// The command line, the environment and the config file, merged.
#[derive(Debug)]
pub struct Loaded {
    pub matches: ArgMatches,
    /// Where each setting's value came from, by key.
    pub sources: BTreeMap<String, Source>,
    /// The config file, when there is one.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    /// The config file, at this line.
    File(usize),
    Default,
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env => f.write_str("environment"),
            Source::File(line) => write!(f, "file, line {line}"),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("not set"),
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The command line itself: clap prints it (with usage) and picks the exit code.
    Clap(clap::Error),
    /// The config file: one line for the person, exit code 1.
    File(String),
}

/// The command, built (so its arguments are final), as the settings are read from it.
pub fn command<T: clap::CommandFactory>() -> Command {
    let mut cmd = T::command();
    cmd.build();
    cmd
}

/// The arguments that are settings (and so config-file keys), in `--help` order.
pub fn settings(cmd: &Command) -> impl Iterator<Item = (&str, &Arg)> {
    cmd.get_arguments().filter_map(|arg| {
        let long = arg.get_long()?;
        (!NOT_SETTINGS.contains(&long)).then_some((long, arg))
    })
}

/// Parses `argv` and merges the config file it names (`--config` or `LINECHAT_CONFIG`).
pub fn load(cmd: &Command, argv: &[OsString]) -> Result<Loaded, Error> {
    let first = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(Error::Clap)?;
    let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
        return Ok(Loaded {
            sources: sources(cmd, &first, &BTreeMap::new()),
            matches: first,
            file: None,
        });
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::File(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    let values = parse(cmd, &path, &text)?;
    let mut merged = argv.to_vec();
    let mut lines = BTreeMap::new();
    for (key, (line, flags)) in values {
        let arg = find(cmd, &key).expect("parse() checked the key");
        match first.value_source(arg.get_id().as_str()) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => {}
            _ => {
                merged.extend(flags);
                lines.insert(key, line);
            }
        }
    }
    let matches = cmd
        .clone()
        .try_get_matches_from(&merged)
        .map_err(|e| Error::File(format!("{}: {}", path.display(), first_line(&e))))?;
    Ok(Loaded {
        sources: sources(cmd, &matches, &lines),
        matches,
        file: Some(path),
    })
}

fn find<'a>(cmd: &'a Command, key: &str) -> Option<&'a Arg> {
    settings(cmd).find(|(long, _)| *long == key).map(|(_, a)| a)
}

/// The file's settings, each as the flags that say the same (`--key=value`, once per value of
/// a list), with its line; or the first thing wrong with it.
fn parse(
    cmd: &Command,
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, (usize, Vec<OsString>)>, Error> {
    let at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| at(s.start));
        Error::File(format!(
            "{}:{line}: {}",
            path.display(),
            e.message().trim().replace('\n', "; ")
        ))
    })?;
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let line = at(key.span().start);
        let key = key.into_inner();
        let fail = |why: String| Error::File(format!("{}:{line}: {key}: {why}", path.display()));
        let Some(arg) = find(cmd, &key) else {
            let why = if NOT_SETTINGS.contains(&key.as_str()) {
                "is not a setting, so it cannot be set in the config file".to_owned()
            } else {
                "unknown key (the keys are linechat's long flags without the dashes; \
                 linechat --help lists them)"
                    .to_owned()
            };
            return Err(fail(why));
        };
        let flags = flags_for(&key, arg, value.get_ref()).map_err(&fail)?;
        // Each value on its own, with the argument's own parser: the same check, and the same
        // words, as on the command line.
        for flag in &flags {
            Command::new("linechat")
                .no_binary_name(true)
                .arg(arg.clone().env(None::<&str>))
                .try_get_matches_from([flag])
                .map_err(|e| fail(first_line(&e)))?;
        }
        out.insert(key, (line, flags));
    }
    Ok(out)
}

/// `--key=value` for each value, or why the TOML value cannot be one for this argument.
fn flags_for(key: &str, arg: &Arg, value: &Value) -> Result<Vec<OsString>, String> {
    let action = arg.get_action();
    if matches!(action, ArgAction::SetTrue) {
        return match value {
            Value::Boolean(true) => Ok(vec![format!("--{key}").into()]),
            Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expected true or false, not {}", describe(other))),
        };
    }
    if !action.takes_values() {
        return Err("cannot be set in the config file".to_owned());
    }
    let many = matches!(action, ArgAction::Append);
    let items: Vec<&Value> = match value {
        Value::Array(items) if many => items.iter().collect(),
        Value::Array(_) => {
            return Err("expected one value, not a list (only repeatable options take one)".into())
        }
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| {
            let text = match item {
                Value::String(s) => s.clone(),
                Value::Integer(n) => n.to_string(),
                Value::Float(x) => x.to_string(),
                other => {
                    return Err(format!(
                        "expected a string or a number, not {}",
                        describe(other)
                    ))
                }
            };
            Ok(format!("--{key}={text}").into())
        })
        .collect()
}

fn describe(value: &Value) -> String {
    match value {
        Value::Table(_) => "a table (the config file has no sections)".to_owned(),
        other => format!("{} `{other}`", other.type_str()),
    }
}

/// Clap's message without its `error: ` prefix and its usage lines.
fn first_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn sources(
    cmd: &Command,
    matches: &ArgMatches,
    file_lines: &BTreeMap<String, usize>,
) -> BTreeMap<String, Source> {
    settings(cmd)
        .map(|(key, arg)| {
            let source = match (
                file_lines.get(key),
                matches.value_source(arg.get_id().as_str()),
            ) {
                (Some(&line), Some(ValueSource::CommandLine)) => Source::File(line),
                (_, Some(ValueSource::CommandLine)) => Source::Flag,
                (_, Some(ValueSource::EnvVariable)) => Source::Env,
                (_, Some(ValueSource::DefaultValue)) => Source::Default,
                _ => Source::Unset,
            };
            (key.to_owned(), source)
        })
        .collect()
}

/// Whether an argument's value is a secret: its value name says PASSWORD (the part after
/// `:` when it is `NAME:PASSWORD`, so an operator's name still shows).
fn secret(arg: &Arg) -> Option<bool> {
    let names = arg.get_value_names()?;
    let name = names.first()?.as_str().to_ascii_uppercase();
    if !(name.contains("PASSWORD") || name.contains("SECRET")) {
        return None;
    }
    Some(name.contains(':'))
}

fn mask(arg: &Arg, value: &str) -> String {
    match secret(arg) {
        None => value.to_owned(),
        Some(true) => match value.split_once(':') {
            Some((name, _)) => format!("{name}:********"),
            None => "********".to_owned(),
        },
        Some(false) => "********".to_owned(),
    }
}

/// A value as TOML: a number when it reads as one and back the same, else a string.
fn toml_scalar(value: &str) -> String {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = value.split_once('.').unwrap_or((value, "1"));
    let number = digits(int) && (int == "0" || !int.starts_with('0')) && digits(frac);
    if number && value.len() < 16 {
        value.to_owned()
    } else {
        Value::String(value.to_owned()).to_string()
    }
}

/// One setting's value as it stands, as TOML (`None` when unset); `masked` hides secrets.
pub fn render(arg: &Arg, matches: &ArgMatches, masked: bool) -> Option<String> {
    let id = arg.get_id().as_str();
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return Some(matches.get_flag(id).to_string());
    }
    let raw: Vec<String> = matches
        .get_raw(id)?
        .map(|v| {
            let v = v.to_string_lossy();
            toml_scalar(&if masked {
                mask(arg, &v)
            } else {
                v.into_owned()
            })
        })
        .collect();
    Some(match arg.get_action() {
        ArgAction::Append => format!("[{}]", raw.join(", ")),
        _ => raw.join(", "),
    })
}

/// What `--check-config` prints: every setting as it is in effect and where it came from,
/// secrets masked. A TOML file itself.
pub fn effective(cmd: &Command, loaded: &Loaded) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The effective configuration (flags, then LINECHAT_* environment, then {}, then \
         defaults).",
        loaded
            .file
            .as_ref()
            .map_or_else(|| "no config file".to_owned(), |p| p.display().to_string())
    );
    for (key, arg) in settings(cmd) {
        let source = &loaded.sources[key];
        match render(arg, &loaded.matches, true) {
            Some(value) => {
                let _ = writeln!(out, "{key} = {value}  # {source}");
            }
            None => {
                let _ = writeln!(out, "# {key}: not set");
            }
        }
    }
    out
}

/// `linechat.example.toml`: every setting with its help, its flag and variable, and its
/// default (keys without one are commented out, with a placeholder).
pub fn example(cmd: &Command) -> String {
    let mut out = String::from(
        "# linechat.example.toml: every setting linechat has, with its default.\n\
         # Generated by `linechat --generate example-config` from the same definitions as\n\
         # `linechat --help`; the test suite fails if this file and they differ.\n\
         #\n\
         # Use it with `linechat --config FILE` (or LINECHAT_CONFIG=FILE). Each key is a long\n\
         # flag without its dashes, with the same meaning; a repeatable flag takes a list.\n\
         # Precedence: flags, then LINECHAT_* environment variables, then this file, then the\n\
         # defaults. An unknown key or a value of the wrong type stops linechat with the file\n\
         # and the line; `linechat --config FILE --check-config` checks a file without\n\
         # starting. SIGHUP (or IRC REHASH by a server operator) reads it again.\n",
    );
    for (key, arg) in settings(cmd) {
        out.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        // clap drops a one-paragraph help's final period; a comment reads better with it.
        let help = match help.trim_end() {
            h if h.ends_with(['.', ')', ':']) || h.is_empty() => h.to_owned(),
            h => format!("{h}."),
        };
        for line in wrap(&help, 92) {
            let _ = writeln!(out, "# {line}");
        }
        let env = arg
            .get_env()
            .map(|e| format!(", or {}", e.to_string_lossy()))
            .unwrap_or_default();
        let reload = if linechat::config::RELOADABLE.contains(&key) || key == "log-level" {
            "; a reload applies it"
        } else {
            ""
        };
        let _ = writeln!(out, "# (--{key}{env}{reload})");
        let many = matches!(arg.get_action(), ArgAction::Append);
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| toml_scalar(&v.to_string_lossy()))
            .collect();
        let placeholder = || {
            let name = arg
                .get_value_names()
                .and_then(|n| n.first())
                .map_or_else(|| key.to_ascii_uppercase(), |n| n.to_string());
            toml_scalar(&name)
        };
        let line = match (matches!(arg.get_action(), ArgAction::SetTrue), many) {
            (true, _) => format!("{key} = false"),
            (false, true) if defaults.is_empty() => format!("# {key} = [{}]", placeholder()),
            (false, true) => format!("{key} = [{}]", defaults.join(", ")),
            (false, false) if defaults.is_empty() => format!("# {key} = {}", placeholder()),
            (false, false) => format!("{key} = {}", defaults.join(", ")),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Words of `text` in lines of at most `width` (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_numbers_and_the_rest_are_strings() {
        assert_eq!(toml_scalar("1024"), "1024");
        assert_eq!(toml_scalar("0"), "0");
        assert_eq!(toml_scalar("2.5"), "2.5");
        assert_eq!(toml_scalar("007"), "\"007\"");
        assert_eq!(toml_scalar("64M"), "\"64M\"");
        assert_eq!(toml_scalar("a\"b"), "'a\"b'");
    }
}
