//! TCP: `tcpListen`, `tcpConnect`, `TcpListener`, `TcpSocket`.

use std::net::SocketAddr;
use std::sync::Arc;

use bcv_core::handle as core;

use crate::error::{BcvError, opt_millis};
use crate::node::{AsNode, HasNode, node_methods};
use crate::stream::{ReadStream, WriteStream};

fn parse_addr(addr: &str) -> Result<SocketAddr, BcvError> {
    addr.parse().map_err(|e| BcvError::InvalidArgument { message: format!("bad socket address {addr:?}: {e}") })
}

/// A listening TCP socket.
///
/// Ownership: the Swift object holds one reference; `close()` (or releasing it) frees the port once
/// pending accepts are cancelled; `closeAndWait` returns after that.
#[derive(uniffi::Object)]
pub struct TcpListener {
    inner: Arc<core::TcpListener>,
}

impl HasNode for TcpListener {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

#[uniffi::export]
impl TcpListener {
    /// The bound address, e.g. `"127.0.0.1:40123"` (the real port when bound to port 0).
    pub fn local_addr(&self) -> String {
        self.inner.local_addr().to_string()
    }

    /// Accepts the next connection. Errors: `Closed` once the listener is closed; `Io`.
    pub async fn accept(&self) -> Result<Arc<TcpSocket>, BcvError> {
        let socket = self.inner.accept().await?;
        Ok(Arc::new(TcpSocket { inner: Arc::new(socket) }))
    }
}

#[uniffi::export]
impl TcpListener {
    /// Blocking form of `accept`; `Timeout` after `timeout_ms`. Never call it on an SDK thread.
    #[uniffi::method(default(timeout_ms = None))]
    pub fn accept_blocking(&self, timeout_ms: Option<u64>) -> Result<Arc<TcpSocket>, BcvError> {
        let socket = self.inner.accept_blocking(opt_millis(timeout_ms))?;
        Ok(Arc::new(TcpSocket { inner: Arc::new(socket) }))
    }
}

node_methods!(TcpListener);

/// A connected TCP socket with a receive stream and a send stream (dependent children, each taken once).
///
/// Ownership: releasing the socket leaves both streams working; the fd is closed once both have ended.
/// `close()` ends both streams with `Closed(PARENT)`. Releasing the send stream without `finish()`
/// resets the connection, so the peer never sees a clean end.
#[derive(uniffi::Object)]
pub struct TcpSocket {
    inner: Arc<core::TcpSocket>,
}

impl HasNode for TcpSocket {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

#[uniffi::export]
impl TcpSocket {
    /// Takes the receive stream. Errors: `AlreadyTaken` on the second call.
    pub fn take_receive(&self) -> Result<Arc<ReadStream>, BcvError> {
        Ok(ReadStream::wrap(self.inner.take_receive()?))
    }

    /// Takes the send stream: `finish()` sends FIN. Errors: `AlreadyTaken` on the second call.
    pub fn take_send(&self) -> Result<Arc<WriteStream>, BcvError> {
        Ok(WriteStream::wrap(self.inner.take_send()?))
    }

    /// The peer's address: a detached snapshot, readable even after `close()`.
    pub fn peer_addr(&self) -> String {
        self.inner.peer_addr().to_string()
    }

    /// The local address: a detached snapshot.
    pub fn local_addr(&self) -> String {
        self.inner.local_addr().to_string()
    }
}

node_methods!(TcpSocket);

/// Binds a listener on `addr` (e.g. `"127.0.0.1:0"`).
/// Errors: `InvalidArgument` for a malformed address; `Io` naming the address.
#[uniffi::export]
pub fn tcp_listen(addr: String) -> Result<Arc<TcpListener>, BcvError> {
    let listener = core::Runtime::global().tcp_listen(parse_addr(&addr)?)?;
    Ok(Arc::new(TcpListener { inner: Arc::new(listener) }))
}

/// Connects to `addr` (e.g. `"127.0.0.1:8080"`). The connect runs on the SDK's executor; this call only
/// awaits it. Errors: `InvalidArgument` for a malformed address; `Io` naming the address.
#[uniffi::export]
pub async fn tcp_connect(addr: String) -> Result<Arc<TcpSocket>, BcvError> {
    let socket = core::Runtime::global().tcp_connect(parse_addr(&addr)?).await?;
    Ok(Arc::new(TcpSocket { inner: Arc::new(socket) }))
}
