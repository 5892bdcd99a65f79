//! TCP sockets: a listener, and per connection a receive stream and a send stream (dependent children).
//!
//! Releasing the socket handle leaves both streams working (option 2). Dropping the send stream without
//! `finish()` resets the connection (RST), so the peer never mistakes it for a clean end. Once the receive
//! stream has ended and the send stream has finished (or both were released), the fd is closed even if the
//! socket handle is still alive (auto-close on quiescence, S7).

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::pump::{SendEnd, send_all};
use crate::handle::node::{Node, lock};
use crate::handle::reason::{CloseReason, Closed, Error, Result};
use crate::handle::resource::TaskResource;
use crate::handle::runtime::{Runtime, in_context};
use crate::handle::stream::{DEFAULT_CAPACITY, Failure, ReadStream, WriteStream, pipe_with_parents};

/// A listening TCP socket.
pub struct TcpListener {
    node: Node,
    listener: Weak<tokio::net::TcpListener>,
    local: SocketAddr,
    rt: Runtime,
}

impl Runtime {
    /// Binds a listener on `addr` (e.g. `127.0.0.1:0`). Errors: [`Error::Io`] naming the address.
    pub fn tcp_listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        let std_listener = std::net::TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
        std_listener.set_nonblocking(true).map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let local = std_listener.local_addr().map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let listener = {
            let _enter = self.tokio_handle().enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(|e| Error::io(format!("binding {addr}"), e))?
        };
        let (res, node) = TaskResource::create(self, "tcp listener", None)?;
        let listener = Arc::new(listener);
        let weak = Arc::downgrade(&listener);
        // The resource owns the socket, so close() frees the port once pending accepts are cancelled.
        res.own(listener);
        Ok(TcpListener { node, listener: weak, local, rt: self.clone() })
    }

    /// Connects to `addr`. Errors: [`Error::Io`] naming the address.
    pub async fn tcp_connect(&self, addr: SocketAddr) -> Result<TcpSocket> {
        let rt = self.clone();
        let stream = self
            .tokio_handle()
            .spawn(async move { tokio::net::TcpStream::connect(addr).await })
            .await
            .map_err(|e| Error::io(format!("connecting to {addr}"), std::io::Error::other(e.to_string())))?
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        TcpSocket::from_stream(&rt, stream)
    }

    /// Blocking form of [`tcp_connect`](Self::tcp_connect). Errors also: `WouldDeadlock` on a runtime worker.
    pub fn tcp_connect_blocking(&self, addr: SocketAddr) -> Result<TcpSocket> {
        self.block_on(self.tcp_connect(addr))?
    }
}

impl TcpListener {
    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts the next connection. Cancel-safe: dropping the future (a timeout) loses no connection.
    /// Errors: `Closed{…}` once the listener is closed; [`Error::Io`].
    pub async fn accept(&self) -> Result<TcpSocket> {
        let _op = self.node.core.begin_op()?;
        let closed = || Error::from(self.node.core.closed_error().unwrap_or(Closed::new(CloseReason::SelfClosed)));
        let listener = self.listener.upgrade().ok_or_else(closed)?;
        // The wait runs on the runtime's executor (the caller may be on another one); close() ends it, and
        // the in-flight guard keeps the fd open until it has returned (S4).
        let accept = in_context(self.rt.tokio_handle().clone(), listener.accept());
        let accepted = tokio::select! {
            accepted = accept => accepted,
            c = self.node.core.closed_wait() => return Err(c.into()),
        };
        drop(listener);
        match accepted {
            Ok((stream, _)) => TcpSocket::from_stream(&self.rt, stream),
            Err(e) => Err(Error::io(format!("accepting on {}", self.local), e)),
        }
    }

    /// Blocking form of [`accept`](Self::accept), with an optional time limit.
    pub fn accept_blocking(&self, timeout: Option<Duration>) -> Result<TcpSocket> {
        self.rt.shared.block_on_timeout(self.accept(), timeout)
    }
}

impl Deref for TcpListener {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// A connected TCP socket with a receive stream and a send stream, each taken once.
pub struct TcpSocket {
    node: Node,
    rt: Runtime,
    receive: Mutex<Option<ReadStream>>,
    send: Mutex<Option<WriteStream>>,
    peer: SocketAddr,
    local: SocketAddr,
}

impl TcpSocket {
    fn from_stream(rt: &Runtime, stream: tokio::net::TcpStream) -> Result<TcpSocket> {
        let peer = stream.peer_addr().map_err(|e| Error::io("reading the peer address", e))?;
        let local = stream.local_addr().map_err(|e| Error::io("reading the local address", e))?;
        let _ = stream.set_nodelay(true);
        let (res, node) = TaskResource::create(rt, "tcp socket", None)?;
        let (recv_w, recv_r) = pipe_with_parents(
            rt,
            DEFAULT_CAPACITY,
            Some(&res.core),
            Some(&res.core),
            ("tcp receive pump", "tcp receive stream"),
        )?;
        let recv_w = recv_w.internal();
        let (send_w, send_r) = pipe_with_parents(
            rt,
            DEFAULT_CAPACITY,
            Some(&res.core),
            Some(&res.core),
            ("tcp send stream", "tcp send pump"),
        )?;
        let send_r = send_r.internal();
        let std_stream = stream.into_std().map_err(|e| Error::io(format!("socket to {peer}"), e))?;
        let sock_ref = socket2::SockRef::from(&std_stream);
        let _ = sock_ref.set_nonblocking(true);
        let stream = {
            let _enter = rt.tokio_handle().enter();
            tokio::net::TcpStream::from_std(std_stream).map_err(|e| Error::io(format!("socket to {peer}"), e))?
        };
        let (rd, mut wr) = stream.into_split();
        res.spawn(async move {
            loop {
                // Wait for data before allocating: an idle connection holds no read buffer.
                let ready = tokio::select! {
                    ready = rd.readable() => ready,
                    _ = recv_w.peer_gone() => {
                        // The app released or closed the receive stream: stop reading (SHUT_RD).
                        let _ = socket2::SockRef::from(rd.as_ref()).shutdown(std::net::Shutdown::Read);
                        return;
                    }
                };
                let mut buf = vec![0u8; DEFAULT_CAPACITY];
                let got = match ready {
                    Ok(()) => match rd.try_read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        other => other,
                    },
                    Err(e) => Err(e),
                };
                match got {
                    Ok(0) => {
                        let _ = recv_w.finish();
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        if recv_w.write_bytes(Bytes::from(buf)).await.is_err() {
                            // The app released or closed the receive stream: stop reading (SHUT_RD).
                            let _ = socket2::SockRef::from(rd.as_ref()).shutdown(std::net::Shutdown::Read);
                            return;
                        }
                    }
                    Err(e) => {
                        // A reset or a dead peer: the stream was cut short by the other side.
                        tracing::debug!(target: "bcv::tcp", %peer, error = %e, "receive failed");
                        recv_w.fail(Failure::Closed(Closed::new(CloseReason::PeerDropped)));
                        return;
                    }
                }
            }
        });
        let socket = Arc::downgrade(&res.core);
        res.spawn(async move {
            if let SendEnd::CutShort(e) = send_all(&send_r, &mut wr).await {
                // Reset instead of FIN so the peer never sees a clean end. The whole connection goes: a
                // reset cannot leave the receive direction usable.
                let _ = socket2::SockRef::from(wr.as_ref()).set_linger(Some(Duration::ZERO));
                wr.forget();
                // A shutdown or scope exit closes the socket itself, with its own reason.
                let closing_anyway = e
                    .closed()
                    .is_some_and(|c| matches!(c.reason, CloseReason::RuntimeShutdown | CloseReason::ScopeExited));
                if let Some(socket) = socket.upgrade().filter(|_| !closing_anyway) {
                    socket.close_with(Closed::new(CloseReason::PeerDropped));
                }
            }
        });
        Ok(TcpSocket {
            node,
            rt: rt.clone(),
            receive: Mutex::new(Some(recv_r)),
            send: Mutex::new(Some(send_w)),
            peer,
            local,
        })
    }

    /// Takes both streams at once, or neither (for a layer such as TLS that owns the connection).
    pub(crate) fn take_both(&self) -> Result<(ReadStream, WriteStream)> {
        let mut receive = lock(&self.receive);
        let mut send = lock(&self.send);
        if receive.is_none() || send.is_none() {
            return Err(Error::AlreadyTaken("the socket's streams"));
        }
        match (receive.take(), send.take()) {
            (Some(r), Some(w)) => Ok((r, w)),
            _ => Err(Error::AlreadyTaken("the socket's streams")),
        }
    }

    pub(crate) fn runtime(&self) -> Runtime {
        self.rt.clone()
    }

    pub(crate) fn node_core(&self) -> std::sync::Arc<crate::handle::node::NodeCore> {
        std::sync::Arc::clone(&self.node.core)
    }

    /// Takes the receive stream (once). Errors: `AlreadyTaken`.
    pub fn take_receive(&self) -> Result<ReadStream> {
        lock(&self.receive).take().ok_or(Error::AlreadyTaken("the receive stream"))
    }

    /// Takes the send stream (once). `finish()` sends FIN; dropping it unfinished resets the connection.
    /// Errors: `AlreadyTaken`.
    pub fn take_send(&self) -> Result<WriteStream> {
        lock(&self.send).take().ok_or(Error::AlreadyTaken("the send stream"))
    }

    /// The peer's address: a detached snapshot, readable even after `close()`.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address: a detached snapshot.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Deref for TcpSocket {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
