//! Dead-peer detection in the kernel: TCP keepalive and `TCP_USER_TIMEOUT`.
//!
//! A peer that vanishes without a FIN or RST (its machine lost power, a NAT forgot the flow, a
//! firewall started dropping) looks, from here, exactly like a quiet one. Only the kernel can
//! tell the difference, by probing an idle connection (keepalive) and by giving up on data that
//! is never acknowledged (`TCP_USER_TIMEOUT`); either way the socket then fails with
//! `ETIMEDOUT`, which wakes the session and ends it as "connection timed out".

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::Config;
use crate::core::stats::TcpInfo;

/// Keepalive probes the kernel sends before it gives up on a silent peer.
const PROBES: u32 = 3;

/// The keepalive settings the kernel gets for `--keepalive`: (idle time, probe interval), in
/// the whole seconds it counts. Three probes spread over a third of the idle time: the peer
/// has that long to answer one before the connection is declared dead.
pub fn keepalive_timing(keepalive: Duration) -> (Duration, Duration) {
    let idle = keepalive.as_secs().max(1);
    let interval = (idle / 9).max(1);
    (Duration::from_secs(idle), Duration::from_secs(interval))
}

/// The `TCP_USER_TIMEOUT` for `config`, and so the longest a dead peer keeps its connection.
///
/// On Linux the user timeout governs keepalive too: once a connection has been silent longer
/// than it, the first unanswered probe ends the connection, and the probe count no longer
/// counts. With the user timeout at or below the keepalive idle time (the defaults had both
/// at 30 s), one lost probe dropped a healthy idle client. So the user timeout is at least the
/// keepalive's own bound plus one interval, idle + (probes + 1) × interval: a peer then has
/// every probe's interval to answer, and keepalive gives up on an idle peer after the fourth
/// unanswered probe (30 s + 4 × 3 s = 42 s with the defaults). Pending output that is never
/// acknowledged is given up on after the same time, and the writer's own deadline still ends
/// a send buffer that does not drain for `--write-timeout`.
pub fn user_timeout(config: &Config) -> Option<Duration> {
    let write = config.write_timeout?;
    Some(match config.keepalive {
        Some(keepalive) => {
            let (idle, interval) = keepalive_timing(keepalive);
            write.max(idle + interval * (PROBES + 1))
        }
        None => write,
    })
}

/// Applies the configured dead-peer bounds to an accepted connection.
pub fn tune(socket: &impl AsFd, config: &Config) -> io::Result<()> {
    let socket = SockRef::from(socket);
    if let Some(keepalive) = config.keepalive {
        let (idle, interval) = keepalive_timing(keepalive);
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(PROBES);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(timeout) = user_timeout(config) {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

/// `getsockopt(TCP_INFO)`. `None` where the platform has no `TCP_INFO` or the call fails, which
/// the reports show as "unavailable" rather than as zero.
#[cfg(target_os = "linux")]
pub fn tcp_info(socket: &impl AsRawFd) -> Option<TcpInfo> {
    // SAFETY: tcp_info is plain old data, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call; the kernel
    // writes at most `len` bytes and reports how many it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let has = |end: usize| len as usize >= end;
    if !has(std::mem::offset_of!(libc::tcp_info, tcpi_total_retrans) + 4) {
        return None;
    }
    let segs_end = std::mem::offset_of!(libc::tcp_info, tcpi_segs_out) + 4;
    Some(TcpInfo {
        rtt_us: info.tcpi_rtt,
        rttvar_us: info.tcpi_rttvar,
        total_retrans: info.tcpi_total_retrans,
        segs_out: has(segs_end).then_some(info.tcpi_segs_out),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_info(_socket: &impl AsRawFd) -> Option<TcpInfo> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_gets_the_configured_bounds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let config = Config {
            keepalive: Some(Duration::from_secs(27)),
            write_timeout: Some(Duration::from_secs(12)),
            ..Config::default()
        };
        tune(&client, &config).unwrap();
        let socket = SockRef::from(&client);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(27)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        // Longer than keepalive's 27 s + 4 × 3 s, which it would otherwise cut short.
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(39))
        );
    }

    #[test]
    fn the_user_timeout_never_cuts_keepalive_short() {
        let secs = Duration::from_secs;
        let with = |keepalive: Option<u64>, write: Option<u64>| {
            user_timeout(&Config {
                keepalive: keepalive.map(secs),
                write_timeout: write.map(secs),
                ..Config::default()
            })
        };
        // The defaults: 30 s idle, probes 3 s apart.
        assert_eq!(with(Some(30), Some(30)), Some(secs(42)));
        assert_eq!(with(Some(2), Some(2)), Some(secs(6)));
        assert_eq!(with(Some(2), Some(60)), Some(secs(60)));
        assert_eq!(with(None, Some(2)), Some(secs(2)));
        assert_eq!(with(Some(30), None), None);
        for keepalive in 1..200 {
            let (idle, interval) = keepalive_timing(secs(keepalive));
            let timeout = with(Some(keepalive), Some(1)).unwrap();
            assert!(timeout > idle + interval * PROBES, "{keepalive}");
        }
    }
}
