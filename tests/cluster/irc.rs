//! IRC on a cluster: IRC clients (raw TCP) on one node see, reach and are told what the
//! other nodes' people do, as line users are (docs/CLUSTER.md, "What listings show").

use std::net::SocketAddr;

use linechat::proto::web::frame;

use crate::broker::{self, Broker};
use crate::proc::Server;
use crate::support::{irc_command, Client, IrcClient, WAIT};

/// A node of the cluster on `broker` named `name`, with an IRC listener besides the line one;
/// the IRC listener's address.
pub async fn irc_node(broker: &Broker, name: &str) -> (Server, SocketAddr) {
    node_with(broker, name, "irc").await
}

/// A node of the cluster on `broker` named `name`, with a `scheme` listener besides the line
/// one; that listener's address, read from the log.
async fn node_with(broker: &Broker, name: &str, scheme: &str) -> (Server, SocketAddr) {
    let listen = format!("{scheme}://127.0.0.1:0");
    let server = crate::node_with(broker, name, &["--listen", &listen]).await;
    let logged = format!("protocol=\"{scheme}\"");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let addr = server.log.lock().unwrap().iter().find_map(|l| {
            l.contains(&logged)
                .then(|| crate::support::listening_addr(l))
                .flatten()
        });
        if let Some(addr) = addr {
            return (server, addr);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {scheme} listener logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends `command` until one line of its reply satisfies `want` (within WAIT): for what the
/// other nodes' heartbeats bring, every 2 s. Returns the whole reply.
async fn irc_until(irc: &mut IrcClient, command: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
    irc_until_reply(irc, command, |got| got.iter().any(|l| want(l))).await
}

/// A node listed but never answering (it died and is not swept yet): b asks it for its
/// records of every room of a JOIN and waits for it once, not once per channel, so a JOIN of
/// six channels still reads all six histories within the JOIN's bound (no "could not be
/// read" notice), and CHATHISTORY of each holds what alice said on node a before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_of_many_channels_waits_once_for_a_node_that_never_answers() {
    if !broker::available() {
        return;
    }
    const ROOMS: usize = 6;
    let broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut alice = Client::join(a.addr, "alice").await;
    for i in 1..=ROOMS {
        alice.command(&format!("/join r{i}")).await;
        alice.send(&format!("before r{i}")).await;
    }
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    let nodes = async_nats::jetstream::new(nats)
        .get_key_value("lc_nodes")
        .await
        .expect("the nodes bucket");
    let beat = serde_json::json!({
        "seq": 1, "people": [{"nick": "ghost", "proto": "line", "rooms": ["lobby"]}],
    });
    nodes
        .put("z.1", beat.to_string().into())
        .await
        .expect("z's heartbeat");
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    // b lists z (and so waits for its answers) from its next look at the heartbeats.
    irc_until(&mut bob, "WHOIS ghost", |l| irc_command(l) == "311").await;
    let channels: Vec<String> = (1..=ROOMS).map(|i| format!("#r{i}")).collect();
    bob.send(&format!("JOIN {}", channels.join(","))).await;
    let mut joined = Vec::new();
    for _ in 0..ROOMS {
        joined.extend(bob.until(|l| irc_command(l) == "366").await);
    }
    let unread: Vec<&String> = joined
        .iter()
        .filter(|l| l.contains("could not be read"))
        .collect();
    assert!(unread.is_empty(), "{unread:?}");
    for i in 1..=ROOMS {
        bob.send(&format!("CHATHISTORY LATEST #r{i} * 10")).await;
        assert_eq!(
            bob.sync().await,
            [format!(":alice!alice@a PRIVMSG #r{i} :before r{i}")]
        );
    }
}

/// An IRC client on node b and a netcat user on node a share the lobby: what alice said
/// before bob's node had anyone there is in CHATHISTORY; NAMES, WHO, WHOIS and LIST show her
/// with node a as her host; her lines reach bob and his PRIVMSG reaches her; a nick nobody
/// has anywhere is 401, and NICK goes through the broker (433 for a name held elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irc_user_sees_and_reaches_the_whole_cluster() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut alice = Client::join(a.addr, "alice").await;
    alice
        .send("said before bob's node followed the lobby")
        .await;
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    let joined = bob.until(|l| irc_command(l) == "366").await;
    assert!(
        joined[0].starts_with(":bob!~bob@") && joined[0].ends_with(" JOIN #lobby"),
        "{joined:?}"
    );
    alice.expect("bob has joined the room.").await;
    // CHATHISTORY reads the room's history here, which the JOIN read from the stream.
    bob.send("CHATHISTORY LATEST #lobby * 10").await;
    let history = bob.sync().await;
    assert_eq!(
        history,
        [":alice!alice@a PRIVMSG #lobby :said before bob's node followed the lobby"],
        "{history:?}"
    );
    // b knows of alice from a's heartbeat (within 2 s of her arrival).
    let names = irc_until(&mut bob, "NAMES #lobby", |l| {
        irc_command(l) == "353" && l.contains("alice")
    })
    .await;
    let listed = names.iter().find(|l| irc_command(l) == "353").unwrap();
    let mut nicks: Vec<&str> = listed.rsplit(':').next().unwrap().split(' ').collect();
    nicks.sort();
    assert_eq!(nicks, ["alice", "bob"], "{names:?}");
    bob.send("WHO #lobby").await;
    let who = bob.sync().await;
    assert!(
        who.iter()
            .any(|l| l.ends_with(" 352 bob #lobby alice a a alice H :0 ")),
        "{who:?}"
    );
    assert!(
        who.iter()
            .any(|l| irc_command(l) == "352" && l.contains(" bob H")),
        "{who:?}"
    );
    // A search matches everyone on every node (bob here, alice on a).
    bob.send("WHO *").await;
    let everyone = bob.sync().await;
    assert!(
        everyone
            .iter()
            .any(|l| l.ends_with(" 352 bob * alice a a alice H :0 ")),
        "{everyone:?}"
    );
    assert!(
        everyone
            .iter()
            .any(|l| irc_command(l) == "352" && l.contains(" bob H")),
        "{everyone:?}"
    );
    bob.send("WHO alice %nhs").await;
    let whox = bob.sync().await;
    assert!(
        whox.iter().any(|l| l.ends_with(" 354 bob a a alice")),
        "{whox:?}"
    );
    bob.send("WHOIS alice").await;
    let whois = bob.sync().await;
    assert!(
        whois
            .iter()
            .any(|l| l.ends_with(" 311 bob alice alice a * :")),
        "{whois:?}"
    );
    assert!(
        whois.iter().any(|l| l.ends_with(" 319 bob alice #lobby")),
        "{whois:?}"
    );
    assert!(
        whois
            .iter()
            .any(|l| irc_command(l) == "312" && l.contains(" alice a ")),
        "{whois:?}"
    );
    bob.send("LIST").await;
    let list = bob.sync().await;
    assert!(
        list.iter().any(|l| l.ends_with(" 322 bob #lobby 2 :")),
        "{list:?}"
    );
    bob.send("ISON alice nobody").await;
    assert!(bob
        .sync()
        .await
        .iter()
        .any(|l| l.ends_with(" 303 bob alice")));
    bob.send("USERHOST alice").await;
    let userhost = bob.sync().await;
    assert!(
        userhost
            .iter()
            .any(|l| l.ends_with(" 302 bob alice=+alice@a")),
        "{userhost:?}"
    );
    // Live, both ways.
    alice.send("hi bob").await;
    bob.expect(":alice!alice@a PRIVMSG #lobby :hi bob").await;
    bob.send("PRIVMSG #lobby :hi alice").await;
    alice.expect("bob: hi alice").await;
    bob.send("PRIVMSG alice :psst").await;
    alice.expect("[private] bob: psst").await;
    bob.send("PRIVMSG nobody :hello?").await;
    let missing = bob.sync().await;
    assert!(
        missing
            .iter()
            .any(|l| l.ends_with(" 401 bob nobody :No such nick/channel")),
        "{missing:?}"
    );
    // How bob came is in b's next heartbeat.
    crate::until(
        &mut alice,
        "/who",
        "In lobby (2): alice (on a), bob (irc, on b)",
    )
    .await;
    // NICK goes through the broker like /nick: a name held on another node is 433, a free
    // one is bob's on every node, and his old one is free again.
    bob.send("NICK alice").await;
    let taken = bob.sync().await;
    assert!(
        taken
            .iter()
            .any(|l| l.ends_with(" 433 bob alice :Nickname is already in use")),
        "{taken:?}"
    );
    bob.send("NICK robert").await;
    bob.expect_command("NICK").await;
    alice.expect("bob changed nickname to robert").await;
    // The old name is free on every node once the rename is answered.
    let _bob_again = Client::join(a.addr, "bob").await;
}

/// A nickname held on another node is 433 at registration, and two IRC clients taking the
/// same name on two nodes at the same instant: exactly one gets it, each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irc_nick_is_unique_across_the_cluster() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (a, a_irc) = irc_node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let _alice = Client::join(a.addr, "alice").await;
    let mut other = IrcClient::connect(b_irc).await;
    other.send("NICK alice").await;
    other.send("USER alice 0 * :Alice").await;
    let refused = other
        .until(|l| matches!(irc_command(l), "001" | "433"))
        .await;
    assert!(
        refused
            .last()
            .unwrap()
            .ends_with(" 433 * alice :Nickname is already in use"),
        "{refused:?}"
    );
    // The name is free to choose again: another is taken, and registration completes.
    other.send("NICK alicia").await;
    other.expect_command("001").await;
    drop(other);
    let mut keep = Vec::new();
    for round in 0..10 {
        let name = format!("Racer{round}");
        let (mut x, mut y) = (
            IrcClient::connect(a_irc).await,
            IrcClient::connect(b_irc).await,
        );
        // Case differs on the second node: names are compared case-blind across the cluster.
        let lower = name.to_ascii_lowercase();
        let (nx, ny) = (
            format!("NICK {name}\r\nUSER x 0 * :x"),
            format!("NICK {lower}\r\nUSER y 0 * :y"),
        );
        tokio::join!(x.send(&nx), y.send(&ny));
        let done = |l: &str| matches!(irc_command(l), "001" | "433");
        let (rx, ry) = tokio::join!(x.until(done), y.until(done));
        let outcome = |lines: &[String]| irc_command(lines.last().unwrap()).to_owned();
        let mut got = [outcome(&rx), outcome(&ry)];
        got.sort();
        assert_eq!(got, ["001", "433"], "round {round}: {rx:?} / {ry:?}");
        keep.push((x, y));
    }
}

/// The server's own notices reach an IRC user in IRC terms: the link down and back as a
/// NOTICE from the server, and the conflict rule's rename (their node was silent past the
/// liveness bound, and someone on another node took the name meanwhile) as a NICK to
/// themselves, then a NOTICE saying why; replies follow the new name, and they chat on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irc_user_is_told_of_the_link_and_a_lost_name_in_irc_terms() {
    if !broker::available() {
        return;
    }
    let mut broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (b, b_irc) = irc_node(&broker, "b").await;
    let mut carol = Client::join(a.addr, "carol").await;
    let mut alice = IrcClient::connect(b_irc).await;
    let welcome = alice.register("alice", &[]).await;
    let server = welcome[0].split(' ').next().unwrap().to_owned();
    alice.send("JOIN #lobby").await;
    alice.expect_command("366").await;
    carol.expect("alice has joined the room.").await;

    broker.restart(std::time::Duration::from_millis(500)).await;
    alice
        .expect(&format!(
            "{server} NOTICE alice :the cluster link is down; chat goes on among the people on this server."
        ))
        .await;
    alice
        .expect(&format!(
            "{server} NOTICE alice :the cluster link is back; you are chatting with every server again."
        ))
        .await;

    carol
        .expect("Server: the cluster link is down; chat goes on among the people on this server.")
        .await;
    carol
        .expect("Server: the cluster link is back; you are chatting with every server again.")
        .await;

    crate::signal(b.pid, "-STOP");
    carol.wait = std::time::Duration::from_secs(20);
    carol
        .expect("alice has left the chat (connection to their server lost).")
        .await;
    let mut other = Client::connect(a.addr).await;
    other.expect_prompt().await;
    crate::take_when_free(&mut other, "alice", tokio::time::Instant::now() + WAIT).await;
    carol.expect("alice has joined the chat.").await;
    crate::signal(b.pid, "-CONT");
    alice.wait = std::time::Duration::from_secs(10);
    // What b missed while stopped may come first: the other alice's arrival.
    let got = alice.until(|l| irc_command(l) == "NICK").await;
    let (nick, before) = got.split_last().unwrap();
    assert!(
        before.iter().all(|l| l.ends_with(" JOIN #lobby")),
        "{before:?}"
    );
    assert_eq!(nick, ":alice!~alice@127.0.0.1 NICK guest-1");
    alice
        .expect(&format!(
            "{server} NOTICE guest-1 :while this server was cut off from the cluster, someone on a took the nickname alice; you are now guest-1."
        ))
        .await;
    alice.send("TIME").await;
    assert!(
        alice
            .sync()
            .await
            .iter()
            .any(|l| l.starts_with(&format!("{server} 391 guest-1 "))),
        "replies are addressed to the new name"
    );
    alice.send("PRIVMSG #lobby :still here").await;
    // The rename is told on a too, in the room's order: before what the new name says.
    carol.expect("alice changed nickname to guest-1").await;
    carol.expect("guest-1: still here").await;
}

/// A rename on another node reaches an IRC user sharing the channel as IRC tells one, a
/// NICK from the old name, between the lines said before and after it, and NAMES lists the
/// new name at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_on_another_node_reaches_irc_as_a_nick() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    alice.expect("bob has joined the room.").await;
    alice.send("before").await;
    alice.send("/nick alice2").await;
    alice.send("after").await;
    for want in [
        ":alice!alice@a PRIVMSG #lobby :before",
        ":alice!alice@a NICK alice2",
        ":alice2!alice2@a PRIVMSG #lobby :after",
    ] {
        bob.expect(want).await;
    }
    bob.send("NAMES #lobby").await;
    let names = bob.sync().await;
    let listed = names.iter().find(|l| irc_command(l) == "353").unwrap();
    let mut nicks: Vec<&str> = listed.rsplit(':').next().unwrap().split(' ').collect();
    nicks.sort();
    assert_eq!(nicks, ["alice2", "bob"], "{names:?}");
}

/// The web listener on a cluster: a page speaking IRC (`text.ircv3.net`) and one speaking the
/// line protocol, both on node b, each get what the cluster does in its own protocol: the
/// IRC one a 433 for a name held on a, then a's lines and PRIVMSG across; both the link
/// notices in their own words, since the format decides, not the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_on_a_cluster_get_it_in_the_protocol_they_speak() {
    if !broker::available() {
        return;
    }
    let mut broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (_b, web) = node_with(&broker, "b", "http").await;
    let mut alice = Client::join(a.addr, "alice").await;
    let mut carol = Ws::open(web, "Sec-WebSocket-Protocol: text.ircv3.net\r\n").await;
    carol.send("NICK alice").await;
    carol.send("USER carol 0 * :Carol").await;
    let taken = carol.until(" 433 ").await;
    assert!(
        taken.ends_with(" 433 * alice :Nickname is already in use"),
        "{taken}"
    );
    carol.send("NICK carol").await;
    let welcome = carol.until(" 001 carol ").await;
    let server = welcome.split(' ').next().unwrap().to_owned();
    carol.send("JOIN #lobby").await;
    carol.until(" 366 carol #lobby ").await;
    alice.expect("carol has joined the room.").await;
    alice.send("hi carol").await;
    assert_eq!(
        carol.until("PRIVMSG #lobby").await,
        ":alice!alice@a PRIVMSG #lobby :hi carol"
    );
    // b lists alice once a's heartbeat says where she is (within 2 s).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        carol.send("ISON alice").await;
        if carol.until(" 303 carol ").await.ends_with(" alice") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never listed alice"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    carol.send("PRIVMSG alice :psst").await;
    alice.expect("[private] carol: psst").await;

    let mut dave = Ws::open(web, "").await;
    assert_eq!(dave.text().await, "Please enter your nickname: ");
    dave.send("dave").await;
    dave.until("You are in lobby").await;
    alice.expect("dave has joined the chat.").await;
    broker.restart(std::time::Duration::from_millis(500)).await;
    let down = "the cluster link is down; chat goes on among the people on this server.";
    assert_eq!(
        carol.until(" NOTICE ").await,
        format!("{server} NOTICE carol :{down}")
    );
    dave.until("cluster link is down").await;
    assert_eq!(dave.last, format!("Server: {down}"));
}

/// A small WebSocket client (RFC 6455, masked text frames out, whole messages in), with the
/// server's own framing functions.
struct Ws {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The last text message [`Ws::until`] or [`Ws::text`] returned.
    last: String,
}

impl Ws {
    /// Opens `/ws` on `addr`; `extra` holds more header lines, each ending in CRLF.
    async fn open(addr: SocketAddr, extra: &str) -> Ws {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
                buf.drain(..end + 4);
                return Ws {
                    stream,
                    buf,
                    last: String::new(),
                };
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("the upgrade in time")
                .unwrap();
            assert!(n > 0, "closed before the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        frame::put_frame(&mut out, frame::TEXT, Some([1, 2, 3, 4]), text.as_bytes());
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next text message (pings are answered, as a browser does).
    async fn text(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((header, at)) = frame::parse_header(&self.buf).unwrap() {
                let end = at + header.len as usize;
                if self.buf.len() >= end {
                    let payload: Vec<u8> = self.buf.drain(..end).skip(at).collect();
                    match header.opcode {
                        frame::TEXT => {
                            self.last = String::from_utf8(payload).expect("UTF-8");
                            return self.last.clone();
                        }
                        frame::PING => {
                            use tokio::io::AsyncWriteExt;
                            let mut out = Vec::new();
                            frame::put_frame(&mut out, frame::PONG, Some([1, 2, 3, 4]), &payload);
                            self.stream.write_all(&out).await.unwrap();
                            continue;
                        }
                        other => panic!("unexpected opcode {other}"),
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a message in time")
                .unwrap();
            assert!(n > 0, "the server closed the WebSocket");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads text messages until one contains `part`; returns it.
    async fn until(&mut self, part: &str) -> String {
        loop {
            let t = self.text().await;
            if t.contains(part) {
                return t;
            }
        }
    }
}

/// With the broker away, IRC is told what the cluster cannot do now rather than given less
/// silently: a nickname nobody can confirm is 433 saying so (nobody is let in under an
/// unconfirmed name), and a JOIN of a channel this node does not follow goes ahead after
/// the bounded wait, with a NOTICE that CHATHISTORY holds this server's lines only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_away_irc_is_told_what_cannot_be_confirmed() {
    if !broker::available() {
        return;
    }
    let mut broker = Broker::start().await;
    let (b, b_irc) = irc_node(&broker, "b").await;
    let mut watch = Client::join(b.addr, "watch").await;
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    let slow = std::time::Duration::from_secs(20);
    (watch.wait, bob.wait) = (slow, slow);
    let during = async {
        watch
            .skip_until(
                "Server: the cluster link is down; chat goes on among the people on this server.",
            )
            .await;
        let mut late = IrcClient::connect(b_irc).await;
        late.wait = slow;
        late.send("NICK late").await;
        late.send("USER late 0 * :Late").await;
        let refused = late
            .until(|l| matches!(irc_command(l), "001" | "433"))
            .await;
        let last = refused.last().unwrap();
        assert!(
            last.contains(" 433 * late :The cluster cannot confirm that nickname now (")
                && last.ends_with("); try again"),
            "{refused:?}"
        );
        bob.send("JOIN #dev").await;
        let joined = bob
            .until(|l| irc_command(l) == "NOTICE" && l.contains("#dev"))
            .await;
        assert!(
            joined.last().unwrap().ends_with(
                " NOTICE bob :the cluster's history of #dev could not be read just now; the \
                 scrollback holds only what this server has."
            ),
            "{joined:?}"
        );
        assert!(
            joined.iter().any(|l| l.ends_with(" JOIN #dev")),
            "{joined:?}"
        );
    };
    tokio::join!(broker.restart(std::time::Duration::from_secs(10)), during);
}

/// An IRC channel operator on b gives a voice to, and kicks, a netcat user on a: `MODE +v`
/// and `KICK` name someone on another node as the line commands do, and that person's own
/// node applies the change; someone elsewhere who is not in the channel is 441.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irc_operator_changes_and_kicks_someone_on_another_node() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    // bob makes #dev, nobody anywhere being in it: he is its operator.
    bob.send("JOIN #dev").await;
    bob.expect_command("366").await;
    let mut alice = Client::join(a.addr, "alice").await;
    let _carol = Client::join(a.addr, "carol").await;
    alice.command("/join dev").await;
    bob.expect(":alice!alice@a JOIN #dev").await;
    // carol is in the lobby: b learns of her from a's heartbeat.
    let not_there = irc_until(&mut bob, "KICK #dev carol", |l| irc_command(l) == "441").await;
    assert!(
        not_there
            .iter()
            .any(|l| l.ends_with(" 441 bob carol #dev :They aren't on that channel")),
        "{not_there:?}"
    );
    bob.send("MODE #dev +m").await;
    alice
        .skip_until("bob moderated dev: only its operators and those with a voice may speak.")
        .await;
    bob.send("MODE #dev +v alice").await;
    bob.until(|l| l.ends_with(" MODE #dev +v alice")).await;
    alice.skip_until("bob gave alice a voice in dev.").await;
    alice.send("heard while moderated").await;
    bob.until(|l| l == ":alice!alice@a PRIVMSG #dev :heard while moderated")
        .await;
    bob.send("KICK #dev alice :enough").await;
    bob.until(|l| l.ends_with(" KICK #dev alice :enough")).await;
    alice
        .skip_until("bob kicked alice out of dev (enough).")
        .await;
    alice
        .skip_until("You are now in lobby (2 people here).")
        .await;
}

/// IRC `INVITE` for someone on another node: 341 to the inviter, an INVITE line to the
/// invited, who may then JOIN the +i channel there; before it, their JOIN is 473, though
/// nobody on their node is in the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irc_invitation_reaches_someone_on_another_node() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_a, a_irc) = irc_node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    bob.send("JOIN #dev").await;
    bob.expect_command("366").await;
    bob.send("MODE #dev +i").await;
    bob.until(|l| l.ends_with(" MODE #dev +i")).await;
    let mut carol = IrcClient::connect(a_irc).await;
    carol.register("carol", &[]).await;
    irc_until(&mut carol, "NAMES #dev", |l| {
        irc_command(l) == "353" && l.contains("bob")
    })
    .await;
    carol.send("JOIN #dev").await;
    carol.until(|l| irc_command(l) == "473").await;
    let invited = irc_until(&mut bob, "INVITE carol #dev", |l| irc_command(l) == "341").await;
    assert!(
        invited.iter().any(|l| l.ends_with(" 341 bob carol #dev")),
        "{invited:?}"
    );
    carol.until(|l| l == ":bob!bob@b INVITE carol #dev").await;
    carol.send("JOIN #dev").await;
    carol.expect_command("366").await;
    bob.until(|l| l.starts_with(":carol!carol@a JOIN #dev"))
        .await;
}

/// Sends `command` until its whole reply satisfies `want` (within WAIT): for what only the
/// next heartbeat changes.
async fn irc_until_reply(
    irc: &mut IrcClient,
    command: &str,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        irc.send(command).await;
        let got = irc.sync().await;
        if want(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {command} says {got:?}",
            irc.nick
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A channel made secret on node a is kept out of LIST, NAMES, WHO and WHOIS (319) for an
/// IRC user on node b who is not in it, though nobody on b is (a's heartbeat marks it);
/// once dave joins it, it and alice in it are listed to him.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_channel_elsewhere_is_kept_out_of_irc_listings() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = crate::node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut alice = Client::join(a.addr, "alice").await;
    let mut dave = IrcClient::connect(b_irc).await;
    dave.register("dave", &[]).await;
    alice.command("/join dev").await;
    let in_dev = |l: &String| l.contains("#dev");
    irc_until_reply(&mut dave, "WHOIS alice", |r| r.iter().any(in_dev)).await;
    alice.command("/mode +s").await;
    irc_until_reply(&mut dave, "WHOIS alice", |r| {
        r.iter().any(|l| irc_command(l) == "311") && !r.iter().any(in_dev)
    })
    .await;
    for command in ["LIST", "NAMES #dev", "WHO #dev", "WHO *"] {
        dave.send(command).await;
        let reply = dave.sync().await;
        assert!(
            !reply
                .iter()
                .any(|l| !["315", "366"].contains(&irc_command(l)) && in_dev(l)),
            "{command}: {reply:?}"
        );
        assert!(!reply.iter().any(|l| l.contains(" 353 ")), "{reply:?}");
    }
    dave.send("JOIN #dev").await;
    dave.until(|l| irc_command(l) == "366").await;
    alice.skip_until("dave has joined the room.").await;
    dave.send("WHOIS alice").await;
    let whois = dave.sync().await;
    assert!(
        whois.iter().any(|l| irc_command(l) == "319" && in_dev(l)),
        "{whois:?}"
    );
    dave.send("LIST").await;
    let list = dave.sync().await;
    assert!(
        list.iter()
            .any(|l| irc_command(l) == "322" && l.contains("#dev 2")),
        "{list:?}"
    );
}

/// An operator on node a shows as `@` in NAMES on node b: the creator's by a's heartbeat,
/// one made by MODE as soon as b tells the MODE, gone with `-o`; AWAY on a shows in WHOIS
/// (301) and WHO (`G`) on b, and is cleared by AWAY alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_and_away_on_another_node_show_in_irc_listings() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_a, a_irc) = irc_node(&broker, "a").await;
    let (_b, b_irc) = irc_node(&broker, "b").await;
    let mut alice = IrcClient::connect(a_irc).await;
    alice.register("alice", &[]).await;
    alice.send("JOIN #dev").await;
    alice.until(|l| irc_command(l) == "366").await;
    let mut bob = IrcClient::connect(b_irc).await;
    bob.register("bob", &[]).await;
    bob.send("JOIN #dev").await;
    bob.until(|l| irc_command(l) == "366").await;
    irc_until(&mut bob, "NAMES #dev", |l| {
        irc_command(l) == "353" && l.contains("@alice")
    })
    .await;
    let mut carol = IrcClient::connect(a_irc).await;
    carol.register("carol", &[]).await;
    carol.send("JOIN #dev").await;
    carol.until(|l| irc_command(l) == "366").await;
    bob.until(|l| l.contains("JOIN") && l.contains("carol"))
        .await;
    alice.send("MODE #dev +o carol").await;
    bob.until(|l| l.contains("MODE #dev +o carol")).await;
    bob.send("NAMES #dev").await;
    let names = bob.sync().await;
    assert!(names.iter().any(|l| l.contains("@carol")), "{names:?}");
    alice.send("MODE #dev -o carol").await;
    bob.until(|l| l.contains("MODE #dev -o carol")).await;
    bob.send("NAMES #dev").await;
    let names = bob.sync().await;
    assert!(
        names
            .iter()
            .any(|l| irc_command(l) == "353" && !l.contains("@carol")),
        "{names:?}"
    );
    carol.send("AWAY :lunch").await;
    irc_until(&mut bob, "WHOIS carol", |l| {
        l.contains(" 301 bob carol ") && l.ends_with("lunch")
    })
    .await;
    bob.send("WHO #dev").await;
    let who = bob.sync().await;
    assert!(who.iter().any(|l| l.contains(" carol G")), "{who:?}");
    bob.send("PRIVMSG carol :hi").await;
    let answer = bob.sync().await;
    assert!(
        answer
            .iter()
            .any(|l| l.contains(" 301 bob carol ") && l.ends_with("lunch")),
        "{answer:?}"
    );
    carol.send("AWAY").await;
    irc_until_reply(&mut bob, "WHOIS carol", |got| {
        !got.iter().any(|l| irc_command(l) == "301")
    })
    .await;
}
