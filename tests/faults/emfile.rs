//! Out of file descriptors: accepting fails with EMFILE; the server logs it (once, not in a
//! loop), keeps serving the clients it has, and accepts again once descriptors are free.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::proc::{Options, Server};
use crate::support::Client;

#[tokio::test]
async fn out_of_descriptors_the_server_backs_off_keeps_serving_and_recovers() {
    // Measure what the server needs idle, then allow room for a handful of clients only.
    let probe = Server::start(Options::default()).await;
    let idle_fds = probe.fds() as u64;
    drop(probe);
    const ROOM: u64 = 4;
    let server = Server::start(Options {
        max_fds: Some(idle_fds + ROOM),
        ..Options::default()
    })
    .await;
    let mut joined = Vec::new();
    for i in 0..ROOM {
        joined.push(Client::join(server.addr, &format!("early{i}")).await);
    }
    // These connect (the kernel completes the handshake) but cannot be accepted.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.logged("cannot accept") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "EMFILE was never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Existing clients are served meanwhile.
    joined[0].send("still talking").await;
    for c in &mut joined[1..] {
        c.skip_until("early0: still talking").await;
    }
    // Let the back-off loop run a while: it must not log on every retry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let errors = server.logged("cannot accept");
    assert!(
        errors <= 2,
        "logged {errors} accept errors in 1.5 s: a log flood"
    );

    // Two leave; two waiting connections are accepted and get the prompt.
    for mut c in joined.drain(..2) {
        c.send("/quit").await;
        c.expect_closed().await;
    }
    let mut later = Vec::new();
    for stream in waiting.drain(..2) {
        let std = stream.into_std().unwrap();
        let mut c = Client::from_std(std);
        c.register(&format!("later{}", later.len())).await;
        later.push(c);
    }
    later[0].send("accepted again").await;
    joined[0].skip_until("later0: accepted again").await;
    assert!(
        server.logged("accepting again") >= 1,
        "recovery was not logged"
    );
}
