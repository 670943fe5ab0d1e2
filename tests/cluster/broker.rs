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
    /// The broker's monitoring endpoint (`-m`), `HOST:PORT`.
    pub monitor: String,
    dir: PathBuf,
    /// The network namespace it runs in (listening on every address there), if any.
    netns: Option<String>,
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
        Broker::start_in(None).await
    }

    /// A broker inside network namespace `netns` (listening on all its addresses, so on its
    /// veth too), or on loopback here.
    pub async fn start_in(netns: Option<&str>) -> Broker {
        let dir = std::env::temp_dir().join(format!(
            "linechat-cluster-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("broker directory");
        // -p -1, -m -1: free ports, which the server logs.
        let netns = netns.map(str::to_owned);
        let (child, url, monitor) = spawn(&dir, "-1", "-1", netns.as_deref()).await;
        Broker {
            child,
            url,
            monitor,
            dir,
            netns,
        }
    }

    /// Stops the broker (SIGKILL, by PID) and starts it again on the same port and store,
    /// after `down`: what the nodes see of a broker restart.
    pub async fn restart(&mut self, down: std::time::Duration) {
        self.child.kill().await.expect("stop nats-server");
        tokio::time::sleep(down).await;
        let port = self.url.rsplit(':').next().expect("a port").to_owned();
        let m_port = self.monitor.rsplit(':').next().expect("a port").to_owned();
        let (child, url, _) = spawn(&self.dir, &port, &m_port, self.netns.as_deref()).await;
        assert_eq!(url, self.url, "the broker came back where it was");
        self.child = child;
    }

    /// The broker's own record of the connection named `name` (a node's `linechat NODE`),
    /// from its monitoring endpoint (`/connz?subs=1`).
    async fn connection(&self, name: &str) -> serde_json::Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.monitor)
            .await
            .expect("monitor");
        s.write_all(b"GET /connz?subs=1 HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        let body = &reply[reply.find("\r\n\r\n").expect("a body") + 4..];
        let connz: serde_json::Value = serde_json::from_str(body).expect("connz JSON");
        let conns = connz["connections"].as_array().cloned().unwrap_or_default();
        conns
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no connection named {name}: {body}"))
    }

    /// The chat subjects (`lc.…`) the connection named `name` subscribes to.
    pub async fn subscriptions(&self, name: &str) -> Vec<String> {
        let conn = self.connection(name).await;
        let mut subs: Vec<String> = conn["subscriptions_list"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.as_str())
                    // Not the client's reply inboxes: the chat's own subjects.
                    .filter(|s| s.starts_with("lc."))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        subs.sort();
        subs
    }

    /// How many messages the broker has sent the connection named `name` so far.
    pub async fn messages_to(&self, name: &str) -> u64 {
        self.connection(name).await["out_msgs"]
            .as_u64()
            .expect("out_msgs")
    }
}

async fn spawn(
    dir: &std::path::Path,
    port: &str,
    monitor: &str,
    netns: Option<&str>,
) -> (Child, String, String) {
    // `ip netns exec` enters the namespace and execs, so the PID is the broker's.
    let (mut command, address) = match netns {
        None => (Command::new("nats-server"), "127.0.0.1"),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nats-server"]);
            (c, "0.0.0.0")
        }
    };
    let mut child = command
        .args(["-js", "-sd"])
        .arg(dir)
        .args(["-a", address, "-p", port, "-m", monitor])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (url, monitor) = tokio::time::timeout(WAIT, async {
        let (mut url, mut monitor) = (None, None);
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.split("Listening for client connections on ").nth(1) {
                url = Some(format!("nats://{}", at.trim()));
            }
            if let Some(at) = line.split("Starting http monitor on ").nth(1) {
                monitor = Some(at.trim().to_owned());
            }
            if line.contains("Server is ready") {
                return (
                    url.expect("nats-server said where it listens"),
                    monitor.expect("nats-server said where it is monitored"),
                );
            }
        }
        panic!("nats-server exited before it was ready")
    })
    .await
    .expect("nats-server ready in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url, monitor)
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
