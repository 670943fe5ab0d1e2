//! IRC (in progress).
use crate::context::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
pub async fn run(
    _s: Arc<Shared>,
    _t: TcpStream,
    _p: SocketAddr,
    _i: u64,
    _permit: OwnedSemaphorePermit,
) {
}
