//! One server per data directory: an exclusive `flock` on `DIR/lock`, which holds the PID of
//! the server that has it. The kernel lets go of the lock when the process ends, however it
//! ends, so a crashed server never leaves a stale lock behind (unlike a PID file alone).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::OpenError;

pub fn acquire(dir: &Path) -> Result<File, OpenError> {
    let io_err = |cause| OpenError::Io {
        dir: dir.to_owned(),
        cause,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .map_err(io_err)?;
    // SAFETY: flock on a descriptor we own; it touches nothing in our memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io_err(e));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(OpenError::Locked {
            dir: dir.to_owned(),
            pid: if pid.is_empty() {
                "unknown".into()
            } else {
                pid.to_owned()
            },
        });
    }
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}
