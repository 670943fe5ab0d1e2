//! Running linechat as a service, through the real binary: the config file and its precedence,
//! every error it can report, `--check-config`, the example file, the man page and
//! completions, readiness for systemd, reload on SIGHUP, and the systemd unit itself.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;

use tokio::process::Command;

use crate::binary::{expect_log, signal, start_logged, terminate};
use crate::support::{Client, TempPath, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_linechat");
const EXAMPLE: &str = include_str!("../../linechat.example.toml");
const UNIT: &str = include_str!("../../contrib/linechat.service");

/// Runs the binary with only `env` in its environment; returns exit code, stdout, stderr.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("exited in time")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `--check-config`'s output, which must succeed.
async fn check(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = args.to_vec();
    all.push("--check-config");
    let (code, out, err) = run(&all, env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("# configuration OK\n"), "{out}");
    out
}

fn file(name: &str, text: &str) -> TempPath {
    let path = TempPath::new(name);
    std::fs::write(&path.0, text).unwrap();
    path
}

fn path(p: &TempPath) -> &str {
    p.0.to_str().unwrap()
}

/// The long flags `--help` lists (but help and version).
async fn help_flags() -> Vec<String> {
    let (_, help, _) = run(&["--help"], &[]).await;
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|&w| w != "--help" && w != "--version")
        .map(|w| w.trim_start_matches('-').to_owned())
        .collect();
    flags.sort_unstable();
    flags.dedup();
    assert!(flags.len() > 20, "{flags:?}");
    flags
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let conf = file(
        "linechat.toml",
        "# a comment\nmax-line = 100\nlisten = [\"127.0.0.1:0\", \"irc://127.0.0.1:0\"]\n\
         rate-limit = 2.5\n",
    );
    let c = path(&conf);
    let out = check(&["--config", c], &[]).await;
    assert!(out.contains("\nmax-line = 100  # file, line 2\n"), "{out}");
    assert!(
        out.contains("\nlisten = [\"127.0.0.1:0\", \"irc://127.0.0.1:0\"]  # file, line 3\n"),
        "{out}"
    );
    assert!(
        out.contains("\nrate-limit = 2.5  # file, line 4\n"),
        "{out}"
    );
    assert!(out.contains("\nmax-clients = 10000  # default\n"), "{out}");

    let env = [("LINECHAT_MAX_LINE", "200")];
    let out = check(&["--config", c], &env).await;
    assert!(out.contains("\nmax-line = 200  # environment\n"), "{out}");
    assert!(
        out.contains("# file, line 3\n"),
        "the file still counts: {out}"
    );

    let out = check(&["--config", c, "--max-line", "300"], &env).await;
    assert!(out.contains("\nmax-line = 300  # flag\n"), "{out}");

    // The file can be named in the environment too.
    let out = check(&[], &[("LINECHAT_CONFIG", c)]).await;
    assert!(out.contains("\nmax-line = 100  # file, line 2\n"), "{out}");

    let out = check(&[], &[]).await;
    assert!(out.contains("\nmax-line = 1024  # default\n"), "{out}");
}

/// Every mistake in a config file is one line naming the file, the line and the key, and exit
/// code 1; nothing is silently ignored.
#[tokio::test]
async fn every_config_file_error_is_one_line_with_the_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "# ok\nmax-line = 2048\n\nmax-clinets = 5\n",
            4,
            "max-clinets: unknown key",
        ),
        ("max-line = \"lots\"\n", 1, "max-line: invalid value 'lots'"),
        ("\nmax-line = 8\n", 2, "max-line: invalid value '8'"),
        (
            "rate-limit = true\n",
            1,
            "rate-limit: expected a string or a number, not boolean",
        ),
        (
            "max-line = [1, 2]\n",
            1,
            "max-line: expected one value, not a list",
        ),
        (
            "oper = [{ name = \"x\" }]\n",
            1,
            "oper: expected a string or a number, not a table",
        ),
        (
            "log-format = \"xml\"\n",
            1,
            "log-format: invalid value 'xml'",
        ),
        (
            "log-level = \"loud\"\n",
            1,
            "log-level: invalid value 'loud'",
        ),
        ("[server]\nport = 1\n", 1, "server: unknown key"),
        ("config = \"other.toml\"\n", 1, "config: is not a setting"),
        ("check-config = true\n", 1, "check-config: is not a setting"),
        ("max-line = 1\nmax-line = 2\n", 2, "duplicate key"),
        ("max-line = \n", 1, ""),
        ("threads = 1\nnot toml at all\n", 2, ""),
    ];
    for &(text, line, says) in cases {
        let conf = file("bad.toml", text);
        let (code, out, err) = run(&["--config", path(&conf), "--check-config"], &[]).await;
        assert_eq!(code, 1, "{text:?}: {err}");
        assert_eq!(out, "", "{text:?}: nothing checked is printed");
        assert_eq!(err.lines().count(), 1, "{text:?}: one line: {err}");
        let prefix = format!("linechat: {}:{line}: ", path(&conf));
        assert!(
            err.starts_with(&prefix),
            "{text:?}: {err:?} should start {prefix:?}"
        );
        assert!(err.contains(says), "{text:?}: {err:?} should say {says:?}");
        // The same file stops the server from starting, with the same line.
        let (code, _, start_err) = run(&["--config", path(&conf)], &[]).await;
        assert_eq!((code, &start_err), (1, &err), "{text:?}");
    }
    let (code, _, err) = run(&["--config", "/nonexistent/linechat.toml"], &[]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "linechat: cannot read the config file /nonexistent/linechat.toml: No such file or \
         directory (os error 2)\n"
    );
    // A valid file with settings that do not fit together: the same words as for flags.
    let conf = file("mismatch.toml", "queue-bytes = 4096\nmax-line = 4096\n");
    let (code, out, err) = run(&["--config", path(&conf), "--check-config"], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err,
        "linechat: --queue-bytes (4096) must exceed --max-line (4096) with room to spare\n"
    );
}

#[tokio::test]
async fn check_config_masks_secrets() {
    let conf = file(
        "secrets.toml",
        "server-password = \"hunter2\"\noper = [\"root:swordfish\", \"ops:tuna\"]\n",
    );
    let out = check(&["--config", path(&conf)], &[]).await;
    assert!(
        out.contains("\nserver-password = \"********\"  # file, line 1\n"),
        "{out}"
    );
    assert!(
        out.contains("\noper = [\"root:********\", \"ops:********\"]  # file, line 2\n"),
        "{out}"
    );
    for secret in ["hunter2", "swordfish", "tuna"] {
        assert!(!out.contains(secret), "{out}");
    }
}

/// The values `--check-config` prints, without where they came from.
fn values(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .map(|l| l.rsplit_once("  # ").map_or(l, |(v, _)| v).to_owned())
        .collect()
}

#[tokio::test]
async fn the_example_file_is_generated_from_the_flags_and_holds_the_defaults() {
    let (code, generated, _) = run(&["--generate", "example-config"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        generated == EXAMPLE,
        "linechat.example.toml is not what the flags say: run \
         `cargo run -- --generate example-config > linechat.example.toml`"
    );
    for flag in help_flags().await {
        if matches!(flag.as_str(), "config" | "check-config" | "hash-password") {
            continue;
        }
        assert!(
            EXAMPLE.contains(&format!("\n{flag} = "))
                || EXAMPLE.contains(&format!("\n# {flag} = ")),
            "--{flag} has no entry in linechat.example.toml"
        );
    }
    let example = file("example.toml", EXAMPLE);
    let with = check(&["--config", path(&example)], &[]).await;
    let without = check(&[], &[]).await;
    assert_eq!(values(&with), values(&without));
    assert!(with.contains("# file, line "), "{with}");
}

#[tokio::test]
async fn the_man_page_and_completions_cover_every_flag() {
    let flags = help_flags().await;
    for (what, form) in [
        ("man", "--{}"),
        ("bash", "--{}"),
        ("zsh", "--{}"),
        ("fish", "-l {}"),
    ] {
        let (code, text, err) = run(&["--generate", what], &[]).await;
        assert_eq!(code, 0, "{what}: {err}");
        // roff escapes each dash.
        let text = text.replace("\\-", "-");
        for flag in &flags {
            let needle = form.replace("{}", flag);
            assert!(text.contains(&needle), "{what} lacks {needle}");
        }
    }
    let (_, man, _) = run(&["--generate", "man"], &[]).await;
    assert!(
        !man.contains("generate"),
        "the man page shows the hidden --generate"
    );
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH linechat 1"),
        "{man}"
    );
    let (_, version, _) = run(&["--version"], &[]).await;
    assert!(version.starts_with("linechat 0.1.0 (commit "), "{version}");
}

#[tokio::test]
async fn systemd_is_told_when_the_server_is_ready_and_when_it_stops() {
    let dir = TempPath::new("notify.sock");
    let socket = UnixDatagram::bind(&dir.0).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let (mut child, addr, _log) = start_logged(&[], &[("NOTIFY_SOCKET", path(&dir))]).await;
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 in time");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means serving.
    let _alice = Client::join(addr, "alice").await;
    signal(&child, libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("STOPPING=1 in time");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sighup_reloads_the_file_for_connected_clients_and_says_what_needs_a_restart() {
    let conf = file("linechat.toml", "max-line = 1024\nrate-limit = 20\n");
    let (mut child, addr, mut log) = start_logged(&["--config", path(&conf)], &[]).await;
    let mut alice = Client::join(addr, "alice").await;

    std::fs::write(
        &conf.0,
        "max-line = 2048\nrate-limit = 5\nlog-level = \"warn\"\nlisten = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    let line = expect_log(&mut log, "configuration reloaded").await;
    assert!(
        line.contains(
            "applied log-level (not set) -> \"warn\", rate-limit 20 -> 5; needs a restart to \
             take effect: max-line 1024 -> 2048"
        ),
        "{line}"
    );
    // The command line's --listen still wins over the file: not a change.
    assert!(!line.contains("listen"), "{line}");

    // At warn, a newcomer is no longer logged; the next warning is the first line after.
    let mut bob = Client::join(addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    bob.send("still here").await;
    alice.expect("bob: still here").await;
    std::fs::write(&conf.0, "rate-limit = \"fast\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    let line = tokio::time::timeout(WAIT, log.recv())
        .await
        .expect("a log line in time")
        .expect("the log goes on");
    assert!(
        line.contains("configuration not reloaded, the running one stays")
            && line.contains(":1: rate-limit: invalid value 'fast'"),
        "{line}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad file ended the server"
    );
    alice.send("and me").await;
    bob.expect("alice: and me").await;
    terminate(&mut child).await;
}

/// `--motd FILE`: netcat users see it after the welcome; editing the file and sending SIGHUP
/// shows newcomers the new text and the log says so; a file that is no longer plain text is
/// refused at reload (the old text stays) and at start (one line, exit 1).
#[tokio::test]
async fn the_motd_file_is_shown_and_read_again_on_sighup() {
    let motd = file("motd.txt", "Be kind.\nRooms: /rooms\n");
    let (mut child, addr, mut log) = start_logged(&["--motd", path(&motd)], &[]).await;
    let mut alice = Client::greeted(addr, "alice").await;
    alice.expect("- Be kind.").await;
    alice.expect("- Rooms: /rooms").await;
    alice.expect("You are in lobby (just you so far).").await;

    std::fs::write(&motd.0, "New rules.\n").unwrap();
    signal(&child, libc::SIGHUP);
    let line = expect_log(&mut log, "configuration reloaded").await;
    assert!(
        line.contains("applied motd (a new text in the file)"),
        "{line}"
    );
    let mut bob = Client::greeted(addr, "bob").await;
    bob.expect("- New rules.").await;

    std::fs::write(&motd.0, "bad \u{1b}[2J\n").unwrap();
    signal(&child, libc::SIGHUP);
    let line = expect_log(&mut log, "configuration not reloaded").await;
    assert!(
        line.contains("line 1: control character U+001B; a message of the day is plain text"),
        "{line}"
    );
    let mut carol = Client::greeted(addr, "carol").await;
    carol.expect("- New rules.").await;
    alice.skip_until("carol has joined the chat.").await;
    terminate(&mut child).await;

    let (code, _, err) = run(&["--motd", "/nonexistent/motd.txt"], &[]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "linechat: --motd /nonexistent/motd.txt: cannot read it: No such file or directory (os error 2)\n"
    );
}

/// The unit in contrib/ passes `systemd-analyze verify`: its ExecStart is pointed at the
/// binary under test, as verify checks that the program exists, and no man page lookup is
/// made (`--man=no`: the page is installed only with the package).
#[tokio::test]
async fn the_systemd_unit_verifies_clean() {
    let Some(analyze) = crate::support::required_tool("systemd-analyze", "--version", "systemd")
    else {
        return;
    };
    for needed in [
        "Type=notify",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=linechat",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "#AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(UNIT.lines().any(|l| l == needed), "the unit lacks {needed}");
    }
    let unit = TempPath::new("linechat.service");
    std::fs::write(&unit.0, UNIT.replace("/usr/local/bin/linechat", BIN)).unwrap();
    let out = tokio::time::timeout(
        WAIT * 3,
        Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(&unit.0)
            .output(),
    )
    .await
    .expect("systemd-analyze in time")
    .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
