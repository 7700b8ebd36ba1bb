//! The TCP proxy in front of the Kubernetes API emulator: the services'
//! kubeconfig points at it (the checker's does not). [`TcpFault::Blackhole`]
//! stops forwarding bytes both ways and holds every connection, new ones
//! included, as a network partition does; [`TcpFault::Reset`] resets every
//! connection (RST) and refuses new ones the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::prefect_proxy::reset_on_close;

/// What the proxy does with bytes and connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFault {
    Pass,
    Blackhole,
    Reset,
}

/// What the proxy did, for the report.
#[derive(Debug, Default)]
pub struct TcpCounters {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<TcpFault>,
    counters: Arc<TcpCounters>,
    shutdown: CancellationToken,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, receiver) = watch::channel(TcpFault::Pass);
        let counters = Arc::new(TcpCounters::default());
        let shutdown = CancellationToken::new();
        let link = Link {
            upstream,
            mode: receiver,
            counters: counters.clone(),
        };
        tokio::spawn(accept_loop(listener, link, shutdown.clone()));
        Ok(TcpProxy {
            addr,
            mode,
            counters,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, fault: TcpFault) {
        self.mode.send_replace(fault);
    }

    pub fn counters(&self) -> &TcpCounters {
        &self.counters
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct Link {
    upstream: SocketAddr,
    mode: watch::Receiver<TcpFault>,
    counters: Arc<TcpCounters>,
}

async fn accept_loop(listener: TcpListener, link: Link, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                link.counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(client, link.clone()));
            }
            Err(error) => tracing::warn!(%error, "tcp proxy: accept failed"),
        }
    }
}

/// One client connection, from accept to close.
async fn serve(client: TcpStream, link: Link) {
    let mut mode = link.mode.clone();
    if !passable(&mut mode).await {
        return reset(&link, [Some(client), None]);
    }
    let Ok(upstream) = TcpStream::connect(link.upstream).await else {
        return reset(&link, [Some(client), None]);
    };
    let (mut client, mut upstream) = (client, upstream);
    let was_reset = relay(&mut client, &mut upstream, link.mode.clone()).await;
    if was_reset {
        reset(&link, [Some(client), Some(upstream)]);
    }
}

/// Copies both ways until either side closes (false) or a reset (true).
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    mode: watch::Receiver<TcpFault>,
) -> bool {
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let mut watcher = mode.clone();
    tokio::select! {
        _ = pump(&mut client_read, &mut upstream_write, mode.clone()) => false,
        _ = pump(&mut upstream_read, &mut client_write, mode) => false,
        _ = watcher.wait_for(|fault| *fault == TcpFault::Reset) => true,
    }
}

/// Copies one direction, pausing while blackholed; ends on EOF, error or reset.
async fn pump<R, W>(read: &mut R, write: &mut W, mut mode: watch::Receiver<TcpFault>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if !passable(&mut mode).await {
            return;
        }
        let read_bytes = match read.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !passable(&mut mode).await || write.write_all(&buffer[..read_bytes]).await.is_err() {
            return;
        }
    }
}

/// Waits out a blackhole; false when the mode is (or becomes) Reset.
async fn passable(mode: &mut watch::Receiver<TcpFault>) -> bool {
    match mode.wait_for(|fault| *fault != TcpFault::Blackhole).await {
        Ok(fault) => *fault == TcpFault::Pass,
        Err(_) => false,
    }
}

fn reset<const N: usize>(link: &Link, streams: [Option<TcpStream>; N]) {
    link.counters.resets.fetch_add(1, Ordering::Relaxed);
    for stream in streams.into_iter().flatten() {
        reset_on_close(&stream);
    }
}
