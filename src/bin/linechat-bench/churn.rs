//! `--churn`: connection setup as the workload. Each of `--connect-concurrency` workers
//! connects, shakes hands when `--tls`, reads the nickname prompt and closes, over and over for
//! `--duration` seconds. What it reports is the rate of completed connections and, with
//! `--server-pid`, how many one server CPU-second pays for: with `--tls` that is the full
//! handshake rate per core (the server runs on one thread by default).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::plan::{Endpoint, Plan};
use crate::proto::Handshake;
use crate::scenario::Report;
use crate::stats::{new_histogram, sample};
use crate::Args;

/// What linechat sends first on a line-protocol connection.
const PROMPT: &[u8] = b"Please enter your nickname: ";

pub async fn run(args: Args, plan: Plan) -> Result<Report> {
    let ep = plan.endpoint(0).clone();
    let duration = Duration::from_secs_f64(args.duration);
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let setup_us = Arc::new(Mutex::new(new_histogram()));
    let before = sample(&args.server_pid);
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = (0..args.connect_concurrency)
        .map(|_| {
            let (ep, done, failed, first_error, setup_us) = (
                ep.clone(),
                done.clone(),
                failed.clone(),
                first_error.clone(),
                setup_us.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < end {
                    let t0 = Instant::now();
                    match tokio::time::timeout(connect_timeout, once(&ep)).await {
                        Ok(Ok(())) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            let us = t0.elapsed().as_micros() as u64;
                            let mut h = setup_us.lock().unwrap_or_else(|e| e.into_inner());
                            h.saturating_record(us.max(1));
                        }
                        outcome => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let why = match outcome {
                                Ok(Err(e)) => format!("{e:#}"),
                                _ => "timed out".to_owned(),
                            };
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(why);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = sample(&args.server_pid);
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    if done == 0 {
        let why = first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        bail!(
            "no connection completed in {elapsed:.1} s: {}",
            why.unwrap_or_default()
        );
    }
    let server_cpu = before.server_cpu.zip(after.server_cpu).map(|(b, a)| a - b);
    let per_sec = done as f64 / elapsed;
    let per_server_cpu_s = server_cpu.filter(|&c| c > 0.0).map(|c| done as f64 / c);
    let h = setup_us.lock().unwrap_or_else(|e| e.into_inner());
    let (p50, p99) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
    let value = json!({
        "mode": "churn",
        "proto": plan.name,
        "tls": args.tls,
        "addr": plan.addrs(),
        "concurrency": args.connect_concurrency,
        "seconds": elapsed,
        "connections": done,
        "connections_failed": failed,
        "first_error": *first_error.lock().unwrap_or_else(|e| e.into_inner()),
        "connections_per_sec": per_sec,
        "server_cpu_s": server_cpu,
        "connections_per_server_cpu_s": per_server_cpu_s,
        "setup_us_p50": p50,
        "setup_us_p99": p99,
    });
    let table = format!(
        "churn: {} connections{} to {} in {elapsed:.1} s ({failed} failed), {} at once\n\
         rate: {per_sec:.0} connections/s; setup (connect{}, prompt) p50 {:.2} ms, p99 {:.2} ms\n\
         server CPU: {}\n",
        done,
        if args.tls { " over TLS" } else { "" },
        plan.addrs(),
        args.connect_concurrency,
        if args.tls { ", TLS handshake" } else { "" },
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        match (server_cpu, per_server_cpu_s) {
            (Some(c), Some(r)) => format!("{c:.2} s, {r:.0} connections per server CPU-second"),
            _ => "not measured (give --server-pid)".to_owned(),
        }
    );
    Ok(Report {
        json: args.json,
        value,
        table,
    })
}

/// One connection: connect (and shake hands), read the prompt, close.
async fn once(ep: &Endpoint) -> Result<()> {
    let mut c = Handshake::connect(ep.addr, ep.tls.clone()).await?;
    c.read_until("the nickname prompt", |buf| {
        Ok(memchr::memmem::find(buf, PROMPT).map(|at| at + PROMPT.len()))
    })
    .await
}
