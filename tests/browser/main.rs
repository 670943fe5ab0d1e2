//! The built-in web client in real Chromium: `chat.mjs` (playwright-core driving Debian's
//! `chromium` headless) starts the linechat binary on 127.0.0.1 ports the kernel picks, puts a
//! real `nc` user and an IRC user in the lobby with two browser users, and walks through
//! nickname refusals, chat both ways between all four, joins and leaves, room switching with
//! counts and unread marks, private messages, a refused over-long line, a server restart the
//! pages reconnect from, and a page leaving. Screenshots go to `target/browser/`.
//!
//! `scripts/test-deps.sh` installs chromium, node and the npm package; without them the test
//! is skipped outside CI and fails in CI (`CI` set).

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The script's own waits are 15 s each; this only catches a hang of the whole run.
const DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn the_web_client_in_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing = [
        (Path::new("/usr/bin/chromium").exists(), "chromium"),
        (
            Command::new("node").arg("--version").output().is_ok(),
            "node",
        ),
        (
            dir.join("tests/browser/node_modules/playwright-core")
                .exists(),
            "npm's playwright-core in tests/browser",
        ),
        (Command::new("nc").arg("-h").output().is_ok(), "nc"),
    ];
    if let Some((_, what)) = missing.iter().find(|(found, _)| !found) {
        support::skip_outside_ci(
            "the_web_client_in_chromium",
            what,
            "run scripts/test-deps.sh (as root)",
        );
        return;
    }
    let mut node = Command::new("node")
        .arg(dir.join("tests/browser/chat.mjs"))
        .env("LINECHAT_BIN", env!("CARGO_BIN_EXE_linechat"))
        .env("SHOTS", dir.join("target/browser"))
        .spawn()
        .expect("start node");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = node.try_wait().expect("wait for node") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = node.kill();
            let _ = node.wait();
            panic!("the browser tests did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the browser tests failed (their output is above)"
    );
}
