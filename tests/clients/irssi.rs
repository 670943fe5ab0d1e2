//! irssi, a terminal IRC client, in a tmux server of its own: keys typed with `send-keys`, the
//! screen read with `capture-pane`, as a person at a terminal would use it.

use std::fs;
use std::process::{Output, Stdio};

use crate::harness::{available, tail, wait_for, Home, Netcat, Server, CHANNEL};

/// A tmux server of the test's own: on a socket of its own (`-L`, under `TMUX_TMPDIR` in the
/// client's home) and with no configuration but ours (`-f`), so nothing of anyone's tmux is
/// read or touched. On drop the pane's program and then the server are killed by PID.
struct Tmux<'h> {
    home: &'h Home,
    socket: String,
    /// The server's PID and the pane's (irssi's).
    pids: Option<(libc::pid_t, libc::pid_t)>,
}

const SESSION: &str = "irssi";

impl<'h> Tmux<'h> {
    /// Starts a server running `command` in a detached 200×50 window. The pane stays when the
    /// program ends (`remain-on-exit`), so its last screen and exit status can still be shown.
    fn start(home: &'h Home, command: &str) -> Tmux<'h> {
        // Unique to this test, as the directory is.
        let socket = home
            .path()
            .parent()
            .and_then(|d| d.file_name())
            .expect("the home's directory has a name")
            .to_string_lossy()
            .into_owned();
        let conf = home.join("tmux.conf");
        fs::write(&conf, "set-option -g remain-on-exit on\n").unwrap();
        let mut tmux = Tmux {
            home,
            socket,
            pids: None,
        };
        let conf = conf.to_string_lossy();
        let session = ["new-session", "-d", "-s", SESSION, "-x", "200", "-y", "50"];
        tmux.must(&[&["-f", &conf][..], &session, &[command]].concat());
        let pids = tmux.must(&["display-message", "-p", "-t", SESSION, "#{pid} #{pane_pid}"]);
        let parsed: Vec<libc::pid_t> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        match parsed[..] {
            [server, pane] => tmux.pids = Some((server, pane)),
            _ => panic!("tmux gave its and the pane's PIDs as {pids:?}"),
        }
        tmux
    }

    fn tmux(&self, args: &[&str]) -> Output {
        self.home
            .command("tmux")
            .env("TMUX_TMPDIR", self.home.path())
            .args(["-L", &self.socket])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run tmux")
    }

    /// Runs a tmux command that must succeed; returns what it printed.
    fn must(&self, args: &[&str]) -> String {
        let out = self.tmux(args);
        assert!(
            out.status.success(),
            "tmux {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` as a person would: the keys, then (once the input line shows them) Enter,
    /// then waits until the input line is empty again, i.e. irssi took the line. A question
    /// irssi asks, or keys it dropped, fail here with the screen instead of as a missing line.
    fn type_line(&self, server: &Server, text: &str) {
        self.must(&["send-keys", "-t", SESSION, "-l", text]);
        wait_for(
            &format!("irssi's input line to show {text:?} (typed)"),
            || (self.input_line() == text).then_some(()),
            || self.context(server),
        );
        self.must(&["send-keys", "-t", SESSION, "Enter"]);
        wait_for(
            &format!("irssi to take the line {text:?} (Enter; its input line empty again)"),
            || self.input_line().is_empty().then_some(()),
            || self.context(server),
        );
    }

    /// What is typed on the input line: the screen's last row, past the prompt (`[#lobby] `).
    fn input_line(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", SESSION]);
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or("").trim_end();
        match last.split_once("] ") {
            Some((_prompt, typed)) => typed.trim_start().to_owned(),
            None => String::new(),
        }
    }

    /// The screen and its scrollback, wrapped lines joined, blank lines dropped.
    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-S", "-1000", "-t", SESSION]);
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        lines.join("\n")
    }

    /// tmux's `formats` for the pane (e.g. `#{pane_dead}`), joined by spaces, trimmed.
    fn pane(&self, formats: &[&str]) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", SESSION, &formats.join(" ")]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The pane's exit status (or `signal N`) once its program has ended and tmux has reaped it.
    fn exit_status(&self) -> Option<String> {
        let status = self.pane(&[
            "#{pane_dead}",
            "#{pane_dead_status}",
            "#{?pane_dead_signal,signal #{pane_dead_signal},}",
        ]);
        match status.split_once(' ') {
            Some(("1", status)) => Some(status.trim().to_owned()),
            None if status == "1" => {
                // Dead (its terminal closed) but not reaped: Debian's tmux uses libutempter,
                // whose own SIGCHLD handler, in place while tmux removes the pane's utmp
                // record, can swallow the child's SIGCHLD, and tmux then never waits for it
                // (tmux issue #311). Another SIGCHLD makes tmux reap it.
                eprintln!("irssi's pane is dead but not reaped: SIGCHLD to tmux");
                if let Some((server, _)) = self.pids {
                    // SAFETY: signalling the tmux server we started, by its PID.
                    unsafe { libc::kill(server, libc::SIGCHLD) };
                }
                None
            }
            _ => None,
        }
    }

    /// What a failure shows: the screen, whether irssi is still running, and the server's log.
    fn context(&self, server: &Server) -> String {
        let state = self.pane(&[
            "#{?pane_dead,irssi has exited: status #{pane_dead_status} signal #{pane_dead_signal},irssi is running}",
        ]);
        // The process state from /proc/PID/stat: R, S, Z (dead, not reaped)…
        let process = match self.pids {
            Some((_, pid)) => match fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => {
                    let state = stat.rsplit_once(')').map_or("", |(_, rest)| rest.trim());
                    format!("PID {pid} state {}", &state[..state.len().min(1)])
                }
                Err(_) => format!("PID {pid} gone"),
            },
            None => "not started".to_owned(),
        };
        format!(
            "--- irssi's screen (end; {state}; {process}) ---\n{}\n{}",
            tail(&self.screen(), 40),
            server.log_text()
        )
    }

    /// Waits until the screen shows `needle`.
    fn expect(&self, server: &Server, what: &str, needle: &str) {
        wait_for(
            &format!("irssi to show {what} ({needle:?} on its screen)"),
            || self.screen().contains(needle).then_some(()),
            || self.context(server),
        );
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        // irssi is tmux's child, not ours: kill it while tmux still runs (so the PID is still
        // irssi's, not reaped and reused) and only if tmux is indeed its parent. Then the
        // server: asked to go (which works even if its PIDs were never learnt), then killed
        // if that PID is still a tmux. tmux runs as a daemon, so the init process reaps both.
        if let Some((server, pane)) = self.pids {
            if parent_of(pane) == Some(server) {
                // SAFETY: signalling the pane's process we started, by its PID.
                unsafe { libc::kill(pane, libc::SIGKILL) };
            }
        }
        let _ = self.tmux(&["kill-server"]);
        if let Some((server, _)) = self.pids {
            let comm = fs::read_to_string(format!("/proc/{server}/comm")).unwrap_or_default();
            if comm.starts_with("tmux") {
                // SAFETY: signalling the tmux server we started, by its PID.
                unsafe { libc::kill(server, libc::SIGKILL) };
            }
        }
    }
}

/// The parent PID of `pid`, from `/proc/PID/stat` (field 4, after the parenthesised name).
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// irssi's configuration as a user would write it: one server, and who we are. Its flood
/// queue is off (by default it holds lines past the first 5 for 2.2 s each), as the server's
/// is: the test is about what arrives, not how fast a client may send.
/// Over TLS (`ircs://`), irssi verifies the server's certificate against the test CA.
fn irssi_config(server: &Server, nick: &str, tls: bool) -> String {
    let (host, port, tls) = match (&server.ircs, tls) {
        // irssi matches only DNS names against the certificate, and prefers IPv4 for them
        // (`resolve_prefer_ipv6` is off), so `localhost` reaches the 127.0.0.1 listener.
        (Some((ircs, cert)), true) => (
            "localhost".to_owned(),
            ircs.port(),
            format!(
                r#"use_tls = "yes"; tls_verify = "yes"; tls_cafile = "{}";"#,
                cert.ca.display()
            ),
        ),
        _ => (
            server.irc.ip().to_string(),
            server.irc.port(),
            r#"use_tls = "no";"#.to_owned(),
        ),
    };
    format!(
        r#"servers = (
  {{ address = "{host}"; chatnet = "test"; port = "{port}"; {tls} autoconnect = "yes"; }}
);
chatnets = {{ test = {{ type = "IRC"; }}; }};
settings = {{
  core = {{ real_name = "{nick}"; user_name = "{nick}"; nick = "{nick}"; }};
  "fe-common/core" = {{ autolog = "no"; }};
  "irc/core" = {{ cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; }};
}};
"#
    )
}

#[test]
fn irssi_and_a_netcat_user_chat_in_the_lobby() {
    let test = "irssi_and_a_netcat_user_chat_in_the_lobby";
    if !available(test, &[("irssi", "--version"), ("tmux", "-V")], None) {
        return;
    }
    chat(&Server::start(), false);
}

/// The same over `ircs://`, irssi checking the certificate chain.
#[test]
fn irssi_over_tls_and_a_netcat_user_chat_in_the_lobby() {
    let test = "irssi_over_tls_and_a_netcat_user_chat_in_the_lobby";
    if !available(test, &[("irssi", "--version"), ("tmux", "-V")], None) {
        return;
    }
    chat(&Server::start_tls(), true);
}

fn chat(server: &Server, tls: bool) {
    let mut carol = Netcat::join(server, "carol");

    let home = Home::new("irssi");
    let irssi_home = home.join("irssi");
    fs::create_dir(&irssi_home).unwrap();
    fs::write(irssi_home.join("config"), irssi_config(server, "bob", tls)).unwrap();
    let tmux = Tmux::start(
        &home,
        &format!("exec irssi --home={}", irssi_home.display()),
    );
    let irssi = || tmux.context(server);

    // irssi connects on its own (autoconnect); then the person types /join.
    tmux.expect(
        server,
        "the welcome (001)",
        "Welcome to the linechat IRC network, bob!",
    );
    tmux.type_line(server, &format!("/join {CHANNEL}"));
    carol.expect_seeing(server, "bob has joined the room.", irssi);
    // The channel's window comes to the front: its prompt reads [#lobby].
    tmux.expect(server, "its #lobby window", &format!("[{CHANNEL}]"));

    tmux.type_line(server, "hello from irssi");
    carol.expect_seeing(server, "bob: hello from irssi", irssi);
    tmux.type_line(server, "/me waves from irssi");
    carol.expect_seeing(server, "* bob waves from irssi", irssi);

    carol.send("hi bob, carol here");
    tmux.expect(server, "carol's line", "carol> hi bob, carol here");
    carol.send("/me waves back at bob");
    tmux.expect(server, "carol's action", " * carol waves back at bob");

    tmux.type_line(server, "/quit bye for now");
    carol.expect_seeing(server, "bob has left the chat (bye for now).", irssi);
    let status = wait_for(
        "irssi to exit after /quit (tmux to know its exit status)",
        || tmux.exit_status(),
        irssi,
    );
    assert_eq!(status, "0", "irssi's exit status after /quit\n{}", irssi());
}
