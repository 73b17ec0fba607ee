//! Accept: the listening socket, and the loop that deals accepted connections out to
//! the shards round-robin.
//!
//! The socket is bound through socket2 with a large backlog: std's and tokio's `bind`
//! use 128, which a connect storm overflows (clients then wait for SYN retries, seconds
//! each). A socket for another shard is unregistered here and registered again by that
//! shard's runtime, which then owns it for good.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{error, warn};

use crate::engine::shard::{Incoming, Shard};
use crate::error::Error;

/// Binds a non-blocking listener on `addr` with `backlog`.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket
        .listen(backlog.min(i32::MAX as u32) as i32)
        .map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket.into())
}

/// Accepts connections until shutdown, handing each to the next shard.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "cannot register the listener");
            return;
        }
    };
    let hub = shard.hub.clone();
    let shards = hub.inner.shards.len();
    let mut shutdown = hub.inner.shutdown.subscribe();
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            warn!(error = %e, "cannot configure accepted socket");
            continue;
        }
        let target = next % shards;
        next = next.wrapping_add(1);
        if target == shard.handle.index {
            shard.serve(stream, peer);
            continue;
        }
        // Another shard's runtime will own it: unregister it from ours first.
        match stream.into_std() {
            Ok(std) => hub.inner.shards[target].hand_over(Incoming::Tcp(std, peer)),
            Err(e) => warn!(error = %e, "cannot hand over accepted socket"),
        }
    }
}
