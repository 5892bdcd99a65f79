//! TLS over a TCP socket (rustls): a session is a dependent child of its socket (CR-dep). Closing the
//! socket ends the session's streams with `Closed{PARENT}`; a session stream cut short below (a reset, a
//! peer that vanished without `close_notify`) never looks like a clean end.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::adapter::{StreamIo, bcv_error};
use super::pump::send_all;
use super::tcp::TcpSocket;
use crate::handle::node::{Node, lock};
use crate::handle::reason::{CloseReason, Closed, Error, Result};
use crate::handle::resource::TaskResource;
use crate::handle::runtime::Runtime;
use crate::handle::stream::{DEFAULT_CAPACITY, Failure, ReadStream, WriteStream, pipe_with_parents};

/// A TLS session over a [`TcpSocket`], with its own plaintext receive and send streams (each taken once).
pub struct TlsSession {
    node: Node,
    receive: Mutex<Option<ReadStream>>,
    send: Mutex<Option<WriteStream>>,
    peer: std::net::SocketAddr,
}

/// A self-signed certificate and its private key, both PEM: for tests and development servers.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    /// The certificate (PEM), also usable as the client's trusted root.
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// Makes a self-signed certificate for `names` (DNS names or IP addresses).
/// Errors: `InvalidArgument` for a name that cannot go in a certificate.
pub fn self_signed_certificate(names: &[String]) -> Result<SelfSigned> {
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| Error::InvalidArgument(format!("cannot make a certificate for {names:?}: {e}")))?;
    Ok(SelfSigned { cert_pem: made.cert.pem(), key_pem: made.signing_key.serialize_pem() })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::InvalidArgument(format!("{what}: not PEM certificates ({e:?})")))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

fn tls_error(peer: std::net::SocketAddr, e: std::io::Error) -> Error {
    match bcv_error(&e) {
        Some(Error::Closed(c)) => Error::Closed(*c),
        _ => Error::Authentication(format!("TLS handshake with {peer} failed: {e}")),
    }
}

enum Side {
    Client { name: ServerName<'static>, config: Arc<ClientConfig> },
    Server { config: Arc<ServerConfig> },
}

impl TcpSocket {
    /// Starts TLS as a client: verifies the server's certificate for `server_name` against the PEM roots in
    /// `trusted_roots_pem`. Takes the socket's receive and send streams; the session is a dependent child
    /// of the socket. Errors: `AlreadyTaken` if a stream was taken, `InvalidArgument` for a bad name or
    /// PEM, `Authentication` when the handshake fails (untrusted certificate, wrong name), `Closed{…}`.
    pub async fn start_tls_client(&self, server_name: &str, trusted_roots_pem: &[u8]) -> Result<TlsSession> {
        let mut roots = RootCertStore::empty();
        for cert in certs(trusted_roots_pem, "trusted roots")? {
            roots.add(cert).map_err(|e| Error::InvalidArgument(format!("trusted root rejected: {e}")))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| Error::InvalidArgument(format!("invalid TLS server name {server_name:?}")))?;
        self.start_tls(Side::Client { name, config: Arc::new(config) }).await
    }

    /// Starts TLS as a server with a PEM certificate chain and private key. Errors as
    /// [`start_tls_client`](Self::start_tls_client).
    pub async fn start_tls_server(&self, cert_chain_pem: &[u8], private_key_pem: &[u8]) -> Result<TlsSession> {
        let chain = certs(cert_chain_pem, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(private_key_pem)
            .map_err(|e| Error::InvalidArgument(format!("private key: not PEM ({e:?})")))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::InvalidArgument(format!("certificate and key do not match: {e}")))?;
        self.start_tls(Side::Server { config: Arc::new(config) }).await
    }

    /// Blocking form of [`start_tls_client`](Self::start_tls_client).
    pub fn start_tls_client_blocking(&self, server_name: &str, trusted_roots_pem: &[u8]) -> Result<TlsSession> {
        self.runtime().block_on(self.start_tls_client(server_name, trusted_roots_pem))?
    }

    /// Blocking form of [`start_tls_server`](Self::start_tls_server).
    pub fn start_tls_server_blocking(&self, cert_chain_pem: &[u8], private_key_pem: &[u8]) -> Result<TlsSession> {
        self.runtime().block_on(self.start_tls_server(cert_chain_pem, private_key_pem))?
    }

    async fn start_tls(&self, side: Side) -> Result<TlsSession> {
        let (rx, tx) = self.take_both()?;
        let rt = self.runtime();
        let peer = self.peer_addr();
        let io = StreamIo::new(rx, tx);
        let session = match side {
            Side::Client { name, config } => {
                let stream = TlsConnector::from(config).connect(name, io).await.map_err(|e| tls_error(peer, e))?;
                start_pumps(&rt, &self.node_core(), tokio_rustls::TlsStream::from(stream), peer)?
            }
            Side::Server { config } => {
                let stream = TlsAcceptor::from(config).accept(io).await.map_err(|e| tls_error(peer, e))?;
                start_pumps(&rt, &self.node_core(), tokio_rustls::TlsStream::from(stream), peer)?
            }
        };
        Ok(session)
    }
}

fn start_pumps<S>(
    rt: &Runtime,
    socket: &Arc<crate::handle::node::NodeCore>,
    stream: S,
    peer: std::net::SocketAddr,
) -> Result<TlsSession>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (res, node) = TaskResource::create(rt, "tls session", Some(socket))?;
    let (recv_w, recv_r) = pipe_with_parents(
        rt,
        DEFAULT_CAPACITY,
        Some(&res.core),
        Some(&res.core),
        ("tls receive pump", "tls receive stream"),
    )?;
    let recv_w = recv_w.internal();
    let (send_w, send_r) = pipe_with_parents(
        rt,
        DEFAULT_CAPACITY,
        Some(&res.core),
        Some(&res.core),
        ("tls send stream", "tls send pump"),
    )?;
    let send_r = send_r.internal();
    let (mut rd, mut wr) = tokio::io::split(stream);
    res.spawn(async move {
        loop {
            let mut buf = vec![0u8; 16 * 1024];
            let got = tokio::select! {
                got = rd.read(&mut buf) => got,
                _ = recv_w.peer_gone() => return,
            };
            match got {
                Ok(0) => {
                    let _ = recv_w.finish();
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if recv_w.write_bytes(Bytes::from(buf)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Below was cut short (reset, or a peer gone without close_notify): never a clean end.
                    let failure = match bcv_error(&e) {
                        Some(Error::Closed(c)) => Failure::Closed(Closed::upstream(*c)),
                        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            Failure::Closed(Closed::new(CloseReason::PeerDropped))
                        }
                        _ => Failure::Corrupt(format!("TLS from {peer}: {e}").into()),
                    };
                    recv_w.fail(failure);
                    return;
                }
            }
        }
    });
    // A clean end sends close_notify, then FIN below. Cut short, the session is dropped without
    // close_notify and the socket's send stream is released unfinished, which resets the connection.
    res.spawn(async move {
        let _ = send_all(&send_r, &mut wr).await;
    });
    Ok(TlsSession { node, receive: Mutex::new(Some(recv_r)), send: Mutex::new(Some(send_w)), peer })
}

impl TlsSession {
    /// Takes the plaintext receive stream (once). Errors: `AlreadyTaken`.
    pub fn take_receive(&self) -> Result<ReadStream> {
        lock(&self.receive).take().ok_or(Error::AlreadyTaken("the TLS receive stream"))
    }

    /// Takes the plaintext send stream (once): `finish()` sends close_notify then FIN; releasing it
    /// unfinished resets the connection. Errors: `AlreadyTaken`.
    pub fn take_send(&self) -> Result<WriteStream> {
        lock(&self.send).take().ok_or(Error::AlreadyTaken("the TLS send stream"))
    }

    /// The peer's address (a detached snapshot).
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.peer
    }
}

impl Deref for TlsSession {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
