//! Abuse from one address (issue 10, items 1 and 2), from real non-loopback sources: the
//! client namespace of a lab has three addresses on its veth. From one, a prompt flood opens
//! connections as fast as it can and holds every one it gets without choosing a nickname (the
//! "ten thousand prompts" attack, scaled to a 64-slot server); from another, a churn loop
//! connects, sends a nickname and closes, as fast as it can. From the third, a bystander in
//! the lobby and a sender talking to it, and a newcomer who arrives mid-attack. The default
//! per-address limits (16 connections, 2 new a second after a burst of 16) apply: loopback
//! is exempt, these addresses are not.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use linechat::Config;
use socket2::{Domain, Socket, Type};

use crate::lab::{self, Lab, CLIENT_IF};
use crate::support::{Client, TestServer, PROMPT};

/// How long each attack runs, and the most connections each may try.
const ATTACK: Duration = Duration::from_secs(3);
const MAX_ATTEMPTS: usize = 5000;
/// Lines the sender sends to the bystander while the attacks run, one every 20 ms.
const LINES: usize = 150;
const MAX_CLIENTS: usize = 64;

fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// What an attacker's connections were told.
#[derive(Debug, Default)]
struct Tally {
    attempts: usize,
    admitted: usize,
    per_address: usize,
    rate: usize,
    other: Vec<String>,
    took: Duration,
}

impl Tally {
    /// Reads the server's first words on `stream` and counts them.
    fn answer(&mut self, stream: &mut TcpStream) -> bool {
        self.attempts += 1;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < PROMPT.len() && !got.ends_with(b"\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&got);
        if text.starts_with(PROMPT) {
            self.admitted += 1;
            return true;
        }
        if text == "Error: too many connections from your address (16 open); close one and try again.\n" {
            self.per_address += 1;
        } else if text == "Error: too many new connections from your address (at most 2 a second); wait a moment and try again.\n" {
            self.rate += 1;
        } else if self.other.len() < 10 {
            self.other.push(text.into_owned());
        }
        false
    }
}

/// Opens connections from `from` for [`ATTACK`] and holds every one admitted, never sending a
/// nickname. Returns the tally and the held connections.
fn prompt_flood(from: Ipv4Addr, to: SocketAddr) -> (Tally, Vec<TcpStream>) {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut held = Vec::new();
    while started.elapsed() < ATTACK && tally.attempts < MAX_ATTEMPTS {
        let Ok(mut stream) = connect_from(from, to) else {
            continue;
        };
        if tally.answer(&mut stream) {
            held.push(stream);
        }
    }
    tally.took = started.elapsed();
    (tally, held)
}

/// Connects from `from`, sends a nickname and closes, as fast as it can, for [`ATTACK`].
fn churn(from: Ipv4Addr, to: SocketAddr) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    while started.elapsed() < ATTACK && tally.attempts < MAX_ATTEMPTS {
        let Ok(mut stream) = connect_from(from, to) else {
            continue;
        };
        if tally.answer(&mut stream) {
            let _ = stream.write_all(format!("churn{}\n", tally.attempts).as_bytes());
            // Wait for the welcome, so the join really happened before the close.
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf);
        }
    }
    tally.took = started.elapsed();
    tally
}

#[tokio::test]
async fn a_prompt_flood_and_churn_from_one_address_are_refused_and_harm_nobody() {
    if !lab::available("a_prompt_flood_and_churn_from_one_address_are_refused_and_harm_nobody") {
        return;
    }
    let lab = Lab::new();
    let [a, b, c, _] = lab.client_ip.octets();
    let flooder = lab.client_ip;
    let honest = Ipv4Addr::new(a, b, c, 3);
    let churner = Ipv4Addr::new(a, b, c, 4);
    for ip in [honest, churner] {
        let out = Command::new("ip")
            .args(["-n", &lab.client_ns, "addr", "add", &format!("{ip}/24")])
            .args(["dev", CLIENT_IF])
            .output()
            .expect("ip addr add");
        assert!(out.status.success(), "{out:?}");
    }
    let server = TestServer::with_listener(
        lab.listen(),
        Config {
            max_clients: MAX_CLIENTS,
            rate_limit: None,
            ..Config::default()
        },
    )
    .await;
    let to = SocketAddr::from((lab.server_ip, server.addr.port()));
    let from_honest = || {
        let s = Lab::within(&lab.client_ns, || {
            connect_from(honest, to).expect("connect")
        });
        let mut c = Client::from_std(s);
        c.wait = Duration::from_secs(30);
        c
    };
    let mut bystander = from_honest();
    bystander.register("bystander").await;
    let mut sender = from_honest();
    sender.register("sender").await;
    bystander.expect("sender has joined the chat.").await;

    let ns = lab.client_ns.clone();
    let flood = std::thread::spawn(move || Lab::within(&ns, || prompt_flood(flooder, to)));
    let ns = lab.client_ns.clone();
    let churning = std::thread::spawn(move || Lab::within(&ns, || churn(churner, to)));

    let started = Instant::now();
    let reading = tokio::spawn(async move {
        let mut next = 0;
        let mut worst = Duration::ZERO;
        let mut notices = Vec::new();
        while next < LINES {
            let line = bystander.line().await;
            match line.strip_prefix("sender: ") {
                Some(text) => {
                    let (seq, sent_us) = text.split_once(' ').expect(&line);
                    assert_eq!(seq.parse::<usize>().unwrap(), next, "lost or reordered");
                    let sent = Duration::from_micros(sent_us.parse().unwrap());
                    worst = worst.max(started.elapsed().saturating_sub(sent));
                    next += 1;
                }
                None => notices.push(line),
            }
        }
        (bystander, worst, notices)
    });
    let mut newcomer = None;
    for seq in 0..LINES {
        let at = started.elapsed().as_micros();
        sender.send(&format!("{seq} {at}")).await;
        if seq == LINES / 2 {
            // Mid-attack, someone new arrives from an honest address: there is room for them.
            let mut c = from_honest();
            c.register("newcomer").await;
            newcomer = Some(c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (flood, held) = flood.join().expect("flood thread");
    let churned = churning.join().expect("churn thread");
    let (mut bystander, worst, mut notices) =
        tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .expect("the bystander received every line")
            .unwrap();
    notices.extend(bystander.sync().await);
    let report = bystander.command("/metrics").await;
    let connections = report
        .iter()
        .find(|l| l.starts_with("Connections:"))
        .cloned()
        .unwrap_or_default();
    let addresses = report
        .iter()
        .find(|l| l.starts_with("Addresses:"))
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "prompt flood: {flood:?}, {} held; churn: {churned:?}; bystander: {LINES} of {LINES} \
         lines in order, slowest {worst:?}, {} notices; {connections}; {addresses}",
        held.len(),
        notices.len()
    );

    assert!(
        flood.other.is_empty() && churned.other.is_empty(),
        "{flood:?} {churned:?}"
    );
    // The flood holds at most its address's 16 connections; the rest were refused at once.
    assert!(held.len() <= 16, "{} held", held.len());
    assert!(flood.per_address + flood.rate + flood.admitted == flood.attempts);
    assert!(flood.rate > 0, "{flood:?}");
    // The churn loop is held to the rate: the burst plus 2 a second (and one for timing).
    let churn_bound = 16 + 2 * ATTACK.as_secs() as usize + 2;
    assert!(churned.admitted <= churn_bound, "{churned:?}");
    assert!(churned.rate > churned.admitted, "{churned:?}");
    // The bystander saw every line, promptly, and otherwise only the churn's and the
    // newcomer's comings and goings (past the room's allowance of 30 notices per 10 s, in a
    // summary).
    assert!(
        worst < Duration::from_secs(1),
        "slowest line took {worst:?}"
    );
    for notice in &notices {
        assert!(
            (notice.starts_with("churn")
                && (notice.ends_with(" has joined the chat.")
                    || notice.ends_with(" has left the chat (connection closed).")
                    || notice.ends_with(" has left the chat (connection reset).")))
                || notice == "newcomer has joined the chat."
                || notice.contains(" in the last 10 s ("),
            "{notice}: {notices:#?}"
        );
    }
    assert!(notices.len() <= 2 * churned.admitted + 2, "{notices:#?}");
    assert!(newcomer.is_some());
    assert!(
        connections.contains(&format!(
            "{} per-address limit, {} connect rate",
            flood.per_address + churned.per_address,
            flood.rate + churned.rate
        )),
        "{connections}"
    );
    drop(held);
    server.stop().await;
}
