//! Free loopback ports for servers the tests start.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago. The OS may hand it to
/// someone else before the caller binds it; servers that can bind port 0 and
/// report their port are preferred where they exist.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}
