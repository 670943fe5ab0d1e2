//! WeeChat headless (no terminal): set up with `--run-command` as a user would type it, given
//! lines through its FIFO plugin (`irc.test.#lobby *text`, as if typed in that buffer), and
//! read through its logger's file for the channel.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::harness::{available, tail, wait_for, Home, Netcat, Proc, Server, CHANNEL};

/// Whether WeeChat's FIFO plugin is installed (Debian ships it in weechat-plugins; the irc and
/// logger plugins come with weechat-core).
fn fifo_plugin_installed() -> bool {
    let mut dirs = vec![
        PathBuf::from("/usr/lib"),
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/usr/local/lib"),
    ];
    // Debian's multiarch directories: /usr/lib/x86_64-linux-gnu and the like.
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    dirs.iter()
        .any(|d| d.join("weechat/plugins/fifo.so").exists())
}

/// A running WeeChat and the files it is known by.
struct Weechat {
    proc: Proc,
    files: Files,
}

struct Files {
    fifo: PathBuf,
    channel_log: PathBuf,
    log_dir: PathBuf,
    output: PathBuf,
}

impl Files {
    /// Everything WeeChat logged (every buffer) and the end of its own output, for failures.
    fn context(&self, server: &Server) -> String {
        let mut text = String::from("--- weechat's logs ---\n");
        if let Ok(entries) = fs::read_dir(&self.log_dir) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                text += &format!("== {}\n", path.display());
                text += &tail(&fs::read_to_string(&path).unwrap_or_default(), 40);
                text += "\n";
            }
        }
        format!(
            "{text}--- weechat's output (end) ---\n{}\n{}",
            tail(&read(&self.output), 30),
            server.log_text()
        )
    }
}

impl Weechat {
    fn context(&self, server: &Server) -> String {
        self.files.context(server)
    }

    /// Gives WeeChat a line as if typed in the #lobby buffer: a message, or a /command.
    fn type_line(&self, server: &Server, text: &str) {
        // O_NONBLOCK: opening a FIFO for writing fails at once, instead of blocking, if nobody
        // reads it. WeeChat reads it; a line this short is written whole (under PIPE_BUF).
        let mut pipe = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.files.fifo)
            .unwrap_or_else(|e| {
                panic!(
                    "open weechat's FIFO {}: {e}\n{}",
                    self.files.fifo.display(),
                    self.context(server)
                )
            });
        writeln!(pipe, "irc.test.{CHANNEL} *{text}")
            .unwrap_or_else(|e| panic!("write to weechat's FIFO: {e}\n{}", self.context(server)));
    }

    /// Waits until the #lobby log has a line ending in `end` (after the time and a tab).
    fn expect(&mut self, server: &Server, what: &str, end: &str) {
        let files = &self.files;
        wait_for(
            &format!(
                "weechat to log {what} (a line ending in {end:?} in {})",
                files.channel_log.display()
            ),
            || {
                self.proc.assert_running(|| files.context(server));
                read(&files.channel_log)
                    .lines()
                    .any(|l| l.ends_with(end))
                    .then_some(())
            },
            || files.context(server),
        );
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn weechat_and_a_netcat_user_chat_in_the_lobby() {
    let test = "weechat_and_a_netcat_user_chat_in_the_lobby";
    let plugin = (!fifo_plugin_installed()).then_some("weechat's fifo plugin (weechat-plugins)");
    if !available(test, &[("weechat-headless", "--version")], plugin) {
        return;
    }
    let server = Server::start();
    let mut carol = Netcat::join(&server, "carol");

    let home = Home::new("weechat");
    let dir = home.join("weechat");
    let log_dir = dir.join("logs");
    let fifo = dir.join("fifo");
    let nick = "wendy";
    // What a user would type, `;` between commands. The server is called "test", so the
    // channel's buffer is irc.test.#lobby and its log irc.test.#lobby.weechatlog.
    let setup = [
        "/set fifo.file.enabled on".to_owned(),
        format!("/set fifo.file.path {}", fifo.display()),
        "/set logger.file.flush_delay 0".to_owned(),
        format!("/set logger.file.path {}", log_dir.display()),
        format!(
            "/server add test {}/{} -notls",
            server.irc.ip(),
            server.irc.port()
        ),
        format!("/set irc.server.test.nicks {nick}"),
        format!("/set irc.server.test.username {nick}"),
        format!("/set irc.server.test.realname {nick}"),
        format!("/set irc.server.test.autojoin {CHANNEL}"),
        // Its anti-flood queue off (by default a line every 2 s after a burst), as the
        // server's is: the test is about what arrives, not how fast a client may send.
        "/set irc.server.test.anti_flood_prio_high 0".to_owned(),
        "/set irc.server.test.anti_flood_prio_low 0".to_owned(),
        "/connect test".to_owned(),
    ]
    .join(";");
    let output = home.join("weechat.out");
    let out = fs::File::create(&output).unwrap();
    let proc = Proc::spawn(
        "weechat-headless",
        home.command("weechat-headless")
            .arg("--dir")
            .arg(&dir)
            .args(["--no-script", "--stdout", "--run-command", &setup])
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    );
    let mut weechat = Weechat {
        proc,
        files: Files {
            fifo,
            channel_log: log_dir.join(format!("irc.test.{CHANNEL}.weechatlog")),
            log_dir,
            output,
        },
    };

    // Its own JOIN logged means the #lobby buffer exists, so lines can be typed into it.
    weechat.expect(&server, "its own join", &format!("has joined {CHANNEL}"));
    carol.expect_seeing(&server, "wendy has joined the room.", || {
        weechat.context(&server)
    });

    weechat.type_line(&server, "hello from weechat");
    carol.expect_seeing(&server, "wendy: hello from weechat", || {
        weechat.context(&server)
    });
    weechat.type_line(&server, "/me waves from weechat");
    carol.expect_seeing(&server, "* wendy waves from weechat", || {
        weechat.context(&server)
    });

    carol.send("hi wendy, carol here");
    weechat.expect(&server, "carol's line", "\tcarol\thi wendy, carol here");
    carol.send("/me waves back at wendy");
    weechat.expect(&server, "carol's action", "\t *\tcarol waves back at wendy");

    weechat.type_line(&server, "/quit bye for now");
    carol.expect_seeing(&server, "wendy has left the chat (bye for now).", || {
        weechat.context(&server)
    });
    let status = wait_for(
        "weechat to exit after /quit",
        || weechat.proc.child.try_wait().ok().flatten(),
        || weechat.files.context(&server),
    );
    assert!(
        status.success(),
        "weechat exited with {status} after /quit\n{}",
        weechat.context(&server)
    );
}
