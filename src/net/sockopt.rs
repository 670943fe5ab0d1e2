//! Dead-peer detection in the kernel: TCP keepalive and `TCP_USER_TIMEOUT`.
//!
//! A peer that vanishes without a FIN or RST (its machine lost power, a NAT forgot the flow, a
//! firewall started dropping) looks, from here, exactly like a quiet one. Only the kernel can
//! tell the difference, by probing an idle connection (keepalive) and by giving up on data that
//! is never acknowledged (`TCP_USER_TIMEOUT`); either way the socket then fails with
//! `ETIMEDOUT`, which wakes the session and ends it as "connection timed out".

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use socket2::{SockRef, TcpKeepalive};

use tokio::net::TcpStream;

use crate::config::Config;
use crate::core::member::Probe;
use crate::core::stats::TcpInfo;

/// Applies the configured dead-peer bounds to an accepted connection.
pub fn tune(socket: &impl AsFd, config: &Config) -> io::Result<()> {
    let socket = SockRef::from(socket);
    if let Some(idle) = config.keepalive {
        // Three probes spread over a third of the idle time: the peer has that long to answer
        // one before the connection is declared dead. The kernel counts whole seconds.
        let idle = idle.max(std::time::Duration::from_secs(1));
        let interval = (idle / 9).max(std::time::Duration::from_secs(1));
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(3);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(timeout) = config.write_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

/// A TCP connection as a member's [`Probe`]: its `TCP_INFO`. The `Arc` keeps the descriptor
/// from being closed and reused while a sample is taken.
#[derive(Debug)]
pub struct TcpProbe(pub Arc<TcpStream>);

impl Probe for TcpProbe {
    fn tcp_info(&self) -> Option<TcpInfo> {
        tcp_info(&*self.0)
    }
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
    use std::time::Duration;

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
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(12))
        );
    }
}
