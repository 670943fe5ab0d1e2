//! A real `nats-server` with JetStream (`-js -sd DIR`) on a loopback port the kernel picks,
//! stopped by its PID when dropped (tokio's `kill_on_drop`), its store in a directory of its
//! own that is removed afterwards.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::WAIT;

#[derive(Debug)]
pub struct Broker {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

/// Whether `nats-server` is here. Outside CI a missing one skips the test with a message; in
/// CI (`CI` set) it fails, so a cluster test never passes by not running.
pub fn available() -> bool {
    let found = std::process::Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is missing: scripts/test-deps.sh installs it"
        );
        eprintln!("skipped: nats-server is missing (scripts/test-deps.sh installs it)");
    }
    found
}

impl Broker {
    pub async fn start() -> Broker {
        let dir = std::env::temp_dir().join(format!(
            "linechat-cluster-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("broker directory");
        // -p -1: a free port, which the server logs.
        let (child, url) = spawn(&dir, "-1").await;
        Broker { child, url, dir }
    }

    /// Stops the broker (SIGKILL, by PID) and starts it again on the same port and store,
    /// after `down`: what the nodes see of a broker restart.
    pub async fn restart(&mut self, down: std::time::Duration) {
        self.child.kill().await.expect("stop nats-server");
        tokio::time::sleep(down).await;
        let port = self.url.rsplit(':').next().expect("a port").to_owned();
        let (child, url) = spawn(&self.dir, &port).await;
        assert_eq!(url, self.url, "the broker came back where it was");
        self.child = child;
    }
}

async fn spawn(dir: &std::path::Path, port: &str) -> (Child, String) {
    let mut child = Command::new("nats-server")
        .args(["-js", "-sd"])
        .arg(dir)
        .args(["-a", "127.0.0.1", "-p", port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        let mut url = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.split("Listening for client connections on ").nth(1) {
                url = Some(format!("nats://{}", at.trim()));
            }
            if line.contains("Server is ready") {
                return url.expect("nats-server said where it listens");
            }
        }
        panic!("nats-server exited before it was ready")
    })
    .await
    .expect("nats-server ready in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
