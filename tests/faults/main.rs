//! The fault suite: linechat under lossy and slow links, vanished peers, connection storms,
//! descriptor exhaustion, shutdown under load, garbage input and a short soak. Run it alone
//! with `cargo test --test faults`; TESTING.md says what each test proves and what it needs.
//! Tests that need root (network namespaces, nftables) skip with a message outside CI and fail
//! in CI when they cannot run.

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

#[allow(dead_code)]
mod lab;
#[allow(dead_code)]
mod load;
#[allow(dead_code)]
mod proc;
#[allow(dead_code)]
mod proxy;

mod abuse;
mod dead_peers;
mod emfile;
mod garbage;
mod history_memory;
mod lossy;
mod presence_churn;
mod report_flood;
mod shutdown_load;
mod slow_link;
mod soak;
mod store;
mod storm;
