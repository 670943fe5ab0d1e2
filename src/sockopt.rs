//! Dead-peer detection in the kernel: TCP keepalive and `TCP_USER_TIMEOUT`.
//!
//! A peer that vanishes without a FIN or RST (its machine lost power, a NAT forgot the flow, a
//! firewall started dropping) looks, from here, exactly like a quiet one. Only the kernel can
//! tell the difference, by probing an idle connection (keepalive) and by giving up on data that
//! is never acknowledged (`TCP_USER_TIMEOUT`); either way the socket then fails with
//! `ETIMEDOUT`, which wakes the session and ends it as "connection timed out".

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::config::Config;

/// Applies the configured dead-peer bounds to an accepted connection.
pub fn tune(socket: &impl AsRawFd, config: &Config) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    if let Some(idle) = config.keepalive {
        let idle_secs = secs(idle);
        // Three probes spread over a third of the idle time: the peer has that long to answer
        // one before the connection is declared dead.
        let interval = (idle_secs / 9).max(1);
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
    }
    if let Some(timeout) = config.write_timeout {
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
    }
    Ok(())
}

/// Whole seconds, at least 1 (the kernel's keepalive knobs count seconds, and 0 is invalid).
fn secs(d: Duration) -> libc::c_int {
    d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int
}

fn setsockopt(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed with it; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
