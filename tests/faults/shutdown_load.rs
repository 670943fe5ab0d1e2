//! SIGTERM while messages flow: everything the server accepted before the signal reaches every
//! client still connected, each client's last line is the shutdown notice, and the process
//! exits 0 within the flush deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proc::{Options, Server};
use crate::support::Client;

const CLIENTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_accepted_and_exits_zero() {
    let server = Server::start(Options {
        args: &["--rate-limit", "0", "--shutdown-grace", "5"],
        ..Options::default()
    })
    .await;
    let nicks: Vec<String> = (0..CLIENTS).map(|i| format!("talker{i}")).collect();
    let mut clients = Vec::new();
    for nick in &nicks {
        let mut c = Client::join(server.addr, nick).await;
        c.wait = Duration::from_secs(30);
        clients.push(c);
    }
    // Per sender: messages confirmed taken by the server (an /echo round trip after them).
    let confirmed: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());

    let mut tasks = Vec::new();
    for (me, mut c) in clients.into_iter().enumerate() {
        let nicks = nicks.clone();
        let confirmed = confirmed.clone();
        tasks.push(tokio::spawn(async move {
            // Join notices of later joiners come first.
            for later in &nicks[me + 1..] {
                c.expect(&format!("{later} has joined the chat.")).await;
            }
            let mut next = vec![0usize; CLIENTS];
            let mut sent = 0;
            let mut last = String::new();
            // Send batches of 20 messages, each batch confirmed by an echo, until the server
            // goes away; every line read is checked for order as it comes.
            'outer: loop {
                let mut batch = String::new();
                for _ in 0..20 {
                    batch.push_str(&format!("{sent} load\n"));
                    sent += 1;
                }
                batch.push_str(&format!("/echo confirm {sent}\n"));
                if c.try_send_raw(batch.as_bytes()).await.is_err() {
                    break;
                }
                loop {
                    let Some(line) = c.try_line().await else {
                        break 'outer;
                    };
                    last.clone_from(&line);
                    if let Some(n) = line.strip_prefix("confirm ") {
                        confirmed[me].store(n.parse().unwrap(), Ordering::SeqCst);
                        break;
                    }
                    if let Some((from, text)) = line.split_once(": ") {
                        let idx = nicks.iter().position(|n| n == from).expect(&line);
                        let seq: usize = text.split(' ').next().unwrap().parse().expect(&line);
                        assert_eq!(seq, next[idx], "{} lost or reordered {line:?}", nicks[me]);
                        next[idx] += 1;
                    }
                }
            }
            // The rest, up to the close.
            while let Some(line) = c.try_line().await {
                last.clone_from(&line);
                if let Some((from, text)) = line.split_once(": ") {
                    let idx = nicks.iter().position(|n| n == from).expect(&line);
                    let seq: usize = text.split(' ').next().unwrap().parse().expect(&line);
                    assert_eq!(seq, next[idx], "{} lost or reordered {line:?}", nicks[me]);
                    next[idx] += 1;
                }
            }
            (next, last)
        }));
    }

    // Let the load run, then signal and note what each sender had confirmed by then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: Vec<usize> = confirmed.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    // Without confirmed lines the "nothing accepted is lost" check below would hold vacuously.
    assert!(
        before.iter().all(|&n| n > 0),
        "load never got going before SIGTERM: {before:?}"
    );
    server.sigterm();
    let signal_at = Instant::now();
    let mut child = server.child;
    let status = tokio::time::timeout(Duration::from_secs(5 + 3), child.wait())
        .await
        .expect("exited within the flush deadline")
        .unwrap();
    let exit_took = signal_at.elapsed();
    assert!(status.success(), "{status}");

    let mut delivered = 0;
    for (me, task) in tasks.into_iter().enumerate() {
        let (next, last) = task.await.expect("a client saw loss or reordering");
        assert_eq!(last, "Server is shutting down.", "talker{me}'s last line");
        for (from, &got) in next.iter().enumerate() {
            if from != me {
                assert!(
                    got >= before[from],
                    "talker{me} got {got} of talker{from}'s lines; {} were confirmed before SIGTERM",
                    before[from]
                );
                delivered += got;
            }
        }
    }
    let confirmed_total: usize = before.iter().sum();
    eprintln!(
        "shutdown under load: {confirmed_total} lines confirmed before SIGTERM, {delivered} \
         deliveries (each line to {} others), 0 lost; exit 0 after {exit_took:?}",
        CLIENTS - 1
    );
}
