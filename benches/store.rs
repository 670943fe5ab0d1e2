//! The embedded store (`--data-dir`) on its own: what a message costs to keep, what it takes on
//! disk, and how long a restart with a million stored messages takes (opening the log, reading
//! its index, and the hub starting from it). `cargo bench --bench store` (`STORE_MESSAGES`,
//! default 1 000 000, over 1 000 rooms so `--history-retain 1000` keeps them all; the files
//! go under target/).

use std::sync::Arc;
use std::time::Instant;

use linechat::core::event::{Event, Identity, Kind, Target};
use linechat::core::hub::{Hub, Settings};
use linechat::core::store::{Change, Store};
use linechat::store::{Log, Options};
use linechat::Config;

const ROOMS: usize = 1000;

fn main() {
    let messages: usize = std::env::var("STORE_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-store");
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let options = Options::from_config(&config);
    let rooms: Vec<Arc<str>> = (0..ROOMS).map(|i| format!("room-{i}").into()).collect();
    let from = Arc::new(Identity {
        id: 1,
        nick: "alice".into(),
        user: "alice".into(),
        host: "127.0.0.1".into(),
        realname: "".into(),
        account: None,
    });
    // A chat-sized line: the 64 bytes the load benchmarks send.
    let text = "x".repeat(64);
    let (log, _) = Log::open(&dir, options.clone()).expect("open");
    let start = Instant::now();
    for i in 0..messages {
        let event = Event::new(
            i as u64 + 1,
            Target::Room(rooms[i % ROOMS].clone()),
            Some(from.clone()),
            Kind::Message(text.as_str().into()),
        );
        log.append(Change::Said(&event));
        // A delivery every 64 messages: the group a busy server writes at once.
        if i % 64 == 63 {
            log.barrier();
        }
    }
    log.barrier();
    let took = start.elapsed();
    let stats = log.stats();
    log.close();
    println!(
        "kept {} messages in {:.2} s: {:.2} µs each (append + write in groups of 64); \
         {:.0} bytes on disk per message",
        stats.messages,
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / messages as f64,
        stats.disk_bytes as f64 / stats.messages.max(1) as f64,
    );
    drop(log);

    for round in 1..=3 {
        let start = Instant::now();
        let (log, kept) = Log::open(&dir, options.clone()).expect("reopen");
        let opened = start.elapsed();
        let in_memory: usize = kept.rooms.iter().map(|r| r.events.len()).sum();
        let hub = Hub::new(Settings::from_config(&config), &linechat::proto::FORMATS)
            .with_store(log.clone(), kept);
        let total = start.elapsed();
        println!(
            "restart {round}: {} messages in {} rooms: the store opened in {:.3} s, the hub \
             started from it ({in_memory} messages back in memory) at {:.3} s",
            log.stats().messages,
            hub.rooms(None).len(),
            opened.as_secs_f64(),
            total.as_secs_f64(),
        );
        drop(hub);
        log.close();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
