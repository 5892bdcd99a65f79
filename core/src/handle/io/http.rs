//! HTTP/1.1 on hyper: incoming requests (server) and incoming responses (client) as resources whose body
//! is a read stream and whose trailers are a future, both dependent children; outgoing bodies are write
//! ends.
//!
//! The motivating case of LIFETIMES.md: take the body of a request, release the request, keep reading.
//! Releasing the message leaves the body and trailers working (option 2); closing it ends them with
//! `Closed{PARENT}`; closing or releasing the body first abandons it (the connection is not reused) and
//! the trailers resolve `Closed{ABANDONED}`.

use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

use crate::handle::future::{FutureReader, FutureWriter, future_with_parents};
use crate::handle::node::{Node, NodeHooks, lock};
use crate::handle::reason::{CloseReason, Closed, Error, Result};
use crate::handle::resource::TaskResource;
use crate::handle::runtime::Runtime;
use crate::handle::stream::{DEFAULT_CAPACITY, Failure, ReadStream, WriteStream, pipe_with_parents};

/// Header or trailer fields, in order, as (name, value) pairs.
pub type HttpFields = Vec<(String, String)>;

/// A detached snapshot of a message head: keeps working whatever happens to the message (CR-det).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpHead {
    /// Request method (`GET`…); `None` for a response.
    pub method: Option<String>,
    /// Request target (`/path?query`); `None` for a response.
    pub uri: Option<String>,
    /// Response status; `None` for a request.
    pub status: Option<u16>,
    /// The header fields.
    pub headers: HttpFields,
}

impl HttpHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn fields(map: &http::HeaderMap) -> HttpFields {
    map.iter().map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

fn header_map(fields: &[(String, String)]) -> Result<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for (n, v) in fields {
        let name = http::HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| Error::InvalidArgument(format!("invalid header name {n:?}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| Error::InvalidArgument(format!("invalid value for header {n}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// An outgoing body: a read end polled by hyper. A cut-short stream becomes a body error, so hyper aborts
/// the message instead of ending it cleanly.
struct OutBody {
    reader: Option<ReadStream>,
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        let Some(reader) = &this.reader else { return Poll::Ready(None) };
        match reader.poll_read_chunk(cx, DEFAULT_CAPACITY) {
            Poll::Ready(Ok(Some(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Ok(None)) => {
                this.reader = None;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.reader = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// What `respond` hands to the connection task.
struct OutgoingResponse {
    status: u16,
    headers: http::HeaderMap,
    body: OutBody,
}

struct MessageShared {
    head: OnceLock<HttpHead>,
    /// The body and trailers until taken; dropped when the message is released or closed untaken (O2).
    body: Mutex<Option<(ReadStream, FutureReader<Option<HttpFields>>)>>,
    /// Server side: where the response goes. Lives as long as the message node (so as long as its
    /// body is being read), and is dropped on close, which aborts the exchange.
    responder: Mutex<Option<oneshot::Sender<OutgoingResponse>>>,
}

struct MessageHooks(Arc<MessageShared>);

impl NodeHooks for MessageHooks {
    fn on_close(&self, _closed: Closed) {
        drop(lock(&self.0.body).take());
        drop(lock(&self.0.responder).take());
    }
    fn on_last_release(&self) {
        // O2: an untaken body is dropped with its parent; its producer sees PEER_DROPPED.
        drop(lock(&self.0.body).take());
    }
    fn on_teardown(&self) {
        drop(lock(&self.0.body).take());
        drop(lock(&self.0.responder).take());
    }
}

/// An incoming HTTP message: a request received by an [`HttpServer`], or a response received by
/// [`Runtime::http_request`]. A resource; its body and trailers are dependent children.
pub struct IncomingMessage {
    node: Node,
    shared: Arc<MessageShared>,
    rt: Runtime,
}

/// Feeds an incoming body into the body pipe and the trailers future. Stops (dropping the body, so the
/// connection is not reused) as soon as the body's reader goes away.
async fn pump_body(mut body: Incoming, writer: WriteStream, trailers: FutureWriter<Option<HttpFields>>, peer: String) {
    let mut got_trailers = None;
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = writer.peer_gone() => {
                trailers.fail(Closed::new(CloseReason::Abandoned));
                return;
            }
        };
        match frame {
            None => {
                if writer.finish().is_ok() {
                    let _ = trailers.write(got_trailers);
                } else {
                    trailers.fail(Closed::new(CloseReason::Abandoned));
                }
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if writer.write_bytes(data).await.is_err() {
                        trailers.fail(Closed::new(CloseReason::Abandoned));
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        got_trailers = Some(fields(&t));
                    }
                }
            },
            Some(Err(e)) => {
                tracing::debug!(target: "bcv::http", %peer, error = %e, "body cut short");
                writer.fail(Failure::Closed(Closed::new(CloseReason::PeerDropped)));
                trailers.fail(Closed::new(CloseReason::PeerDropped));
                return;
            }
        }
    }
}

impl IncomingMessage {
    /// Creates the message resource and starts pumping `body` into its body stream.
    fn start(
        rt: &Runtime,
        label: &'static str,
        head: Option<HttpHead>,
        responder: Option<oneshot::Sender<OutgoingResponse>>,
    ) -> Result<(IncomingMessage, TaskResource, WriteStream, FutureWriter<Option<HttpFields>>)> {
        let shared =
            Arc::new(MessageShared { head: OnceLock::new(), body: Mutex::new(None), responder: Mutex::new(responder) });
        if let Some(head) = head {
            let _ = shared.head.set(head);
        }
        let (res, node) = TaskResource::create_with(rt, label, None, Some(Box::new(MessageHooks(shared.clone()))))?;
        let (writer, reader) =
            pipe_with_parents(rt, DEFAULT_CAPACITY, Some(&res.core), Some(&res.core), ("http body pump", "http body"))?;
        let writer = writer.internal();
        let (trailers_w, trailers_r) =
            future_with_parents(rt, Some(&res.core), Some(&res.core), ("http trailers pump", "http trailers"))?;
        let trailers_w = trailers_w.internal();
        *lock(&shared.body) = Some((reader, trailers_r));
        Ok((IncomingMessage { node, shared, rt: rt.clone() }, res, writer, trailers_w))
    }

    fn check_open(&self) -> Result<()> {
        match self.node.close_reason() {
            Some(c) => Err(c.into()),
            None => Ok(()),
        }
    }

    /// A detached snapshot of the head (method, target or status, headers): it keeps working after the
    /// message is closed or released. Errors: `Closed{…}` once this message is closed.
    pub fn head(&self) -> Result<HttpHead> {
        self.check_open()?;
        self.shared.head.get().cloned().ok_or(Error::InvalidArgument("the message head is not known yet".into()))
    }

    /// The first value of header `name`. Errors: `Closed{…}` once closed.
    pub fn header(&self, name: &str) -> Result<Option<String>> {
        Ok(self.head()?.header(name).map(str::to_owned))
    }

    /// Takes the body stream and the trailers future (once). Both are dependent children: they keep
    /// working after this message is released, and end with `Closed{PARENT}` if it is closed. The trailers
    /// resolve to `None` when the message had none, and to `Closed{ABANDONED}` if the body is released or
    /// closed before its end. Errors: `AlreadyTaken`, `Closed{…}`.
    pub fn take_body(&self) -> Result<(ReadStream, FutureReader<Option<HttpFields>>)> {
        self.check_open()?;
        lock(&self.shared.body).take().ok_or(Error::AlreadyTaken("the body"))
    }

    /// Server side: starts the response with `status` and `headers` and returns its body's write end
    /// (`finish()` completes the response; releasing it unfinished aborts the connection). The writer is a
    /// dependent child of this request. Errors: `AlreadyTaken` on a second call or on a response,
    /// `InvalidArgument` for a bad status or header, `Closed{…}`.
    pub fn respond(&self, status: u16, headers: &[(String, String)]) -> Result<WriteStream> {
        self.check_open()?;
        let headers = header_map(headers)?;
        http::StatusCode::from_u16(status).map_err(|_| Error::InvalidArgument(format!("invalid status {status}")))?;
        let responder = lock(&self.shared.responder).take().ok_or(Error::AlreadyTaken("the response"))?;
        let (writer, reader) = pipe_with_parents(
            &self.rt,
            DEFAULT_CAPACITY,
            Some(&self.node.core),
            None,
            ("http response body", "http response body pump"),
        )?;
        let reader = reader.internal();
        responder
            .send(OutgoingResponse { status, headers, body: OutBody { reader: Some(reader) } })
            .map_err(|_| Error::Closed(Closed::new(CloseReason::PeerDropped)))?;
        Ok(writer)
    }

    /// Server side: responds with a complete body. Errors as [`respond`](Self::respond).
    pub fn respond_with(&self, status: u16, headers: &[(String, String)], body: impl Into<Bytes>) -> Result<()> {
        let writer = self.respond(status, headers)?;
        writer.write_bytes_blocking(body.into(), None).map_err(|e| e.error)?;
        writer.finish()
    }
}

impl Deref for IncomingMessage {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingMessage").field("node", &self.node).field("head", &self.shared.head.get()).finish()
    }
}

/// When the last server handle goes, nobody can take requests any more: stop accepting (and free the
/// port), while exchanges already in flight finish on their own.
struct ServerHooks {
    accept_task: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

impl NodeHooks for ServerHooks {
    fn on_last_release(&self) {
        if let Some(task) = lock(&self.accept_task).take() {
            task.abort();
        }
    }
}

/// An HTTP/1.1 server: a resource that accepts connections and hands out incoming requests.
pub struct HttpServer {
    node: Node,
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<IncomingMessage>>,
    local: SocketAddr,
    rt: Runtime,
}

impl Runtime {
    /// Serves HTTP/1.1 on `addr`; requests arrive through [`HttpServer::next_request`]. Closing the server
    /// stops accepting and aborts its connections. Errors: [`Error::Io`] naming the address.
    pub fn http_serve(&self, addr: SocketAddr) -> Result<HttpServer> {
        let std_listener = std::net::TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
        std_listener.set_nonblocking(true).map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let local = std_listener.local_addr().map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let listener = {
            let _enter = self.tokio_handle().enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(|e| Error::io(format!("binding {addr}"), e))?
        };
        let accept_task = Arc::new(Mutex::new(None));
        let hooks = ServerHooks { accept_task: accept_task.clone() };
        let (res, node) = TaskResource::create_with(self, "http server", None, Some(Box::new(hooks)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = self.clone();
        let res = Arc::new(res);
        let conns = res.clone();
        *lock(&accept_task) = res.spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of fds or similar: back off instead of spinning.
                        tracing::warn!(target: "bcv::http", %local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let tx = tx.clone();
                let rt = rt.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let tx = tx.clone();
                        let rt = rt.clone();
                        async move { serve_one(&rt, req, peer, &tx).await }
                    });
                    if let Err(e) =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                    {
                        tracing::debug!(target: "bcv::http", %peer, error = %e, "connection ended with an error");
                    }
                });
            }
        });
        Ok(HttpServer { node, requests: tokio::sync::Mutex::new(rx), local, rt: self.clone() })
    }

    /// Sends a request and waits for the response head. `body`, when given, is consumed and streamed as the
    /// request body (a cut-short stream aborts the request). The response's body is read through
    /// [`IncomingMessage::take_body`]. Each request uses its own connection. Errors: `InvalidArgument` for
    /// a bad URL, method or header; [`Error::Io`] naming the URL when the exchange fails.
    pub async fn http_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<ReadStream>,
    ) -> Result<IncomingMessage> {
        let uri: http::Uri = url.parse().map_err(|_| Error::InvalidArgument(format!("invalid URL {url:?}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::InvalidArgument(format!("only http:// URLs are supported, got {url:?}")));
        }
        let host = uri.host().ok_or_else(|| Error::InvalidArgument(format!("no host in {url:?}")))?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::InvalidArgument(format!("invalid method {method:?}")))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .body(OutBody { reader: body })
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        *request.headers_mut() = header_map(headers)?;
        if !request.headers().contains_key(http::header::HOST) {
            let value = http::HeaderValue::from_str(&format!("{host}:{port}"))
                .map_err(|_| Error::InvalidArgument(format!("invalid host in {url:?}")))?;
            request.headers_mut().insert(http::header::HOST, value);
        }
        let (message, res, writer, trailers) = IncomingMessage::start(self, "http response", None, None)?;
        let url_owned = url.to_owned();
        let (head_tx, head_rx) = oneshot::channel::<Result<()>>();
        let shared = message.shared.clone();
        res.spawn(async move {
            let io_err = |e: std::io::Error| Error::io(format!("request to {url_owned}"), e);
            let exchange = async {
                let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(io_err)?;
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| io_err(std::io::Error::other(e)))?;
                Ok::<_, Error>((sender.send_request(request), conn))
            };
            let (response, conn) = match exchange.await {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = head_tx.send(Err(e));
                    return;
                }
            };
            // The connection is driven here, inside the message's own task, so closing the message
            // cancels it and frees the socket.
            let mut conn = std::pin::pin!(conn);
            let mut response = std::pin::pin!(response);
            // The response first: a connection that ends right after a complete (even empty) response must
            // not hide it. If the connection ends first, the response future still settles.
            let mut conn_done = false;
            let response = tokio::select! {
                biased;
                r = &mut response => r,
                _ = &mut conn => {
                    conn_done = true;
                    (&mut response).await
                }
            };
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    let _ = head_tx.send(Err(io_err(std::io::Error::other(e))));
                    return;
                }
            };
            let _ = shared.head.set(HttpHead {
                method: None,
                uri: None,
                status: Some(response.status().as_u16()),
                headers: fields(response.headers()),
            });
            let _ = head_tx.send(Ok(()));
            let body = response.into_body();
            tokio::join!(pump_body(body, writer, trailers, url_owned), async {
                if !conn_done {
                    let _ = conn.await;
                }
            });
        });
        match head_rx.await {
            Ok(Ok(())) => Ok(message),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(message.node.close_reason().unwrap_or(Closed::new(CloseReason::PeerDropped)).into()),
        }
    }

    /// Blocking form of [`http_request`](Self::http_request). Errors also: `WouldDeadlock` on a runtime
    /// worker.
    pub fn http_request_blocking(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<ReadStream>,
    ) -> Result<IncomingMessage> {
        self.block_on(self.http_request(method, url, headers, body))?
    }
}

async fn serve_one(
    rt: &Runtime,
    req: http::Request<Incoming>,
    peer: SocketAddr,
    tx: &mpsc::UnboundedSender<IncomingMessage>,
) -> std::result::Result<http::Response<OutBody>, Error> {
    let (parts, body) = req.into_parts();
    let head = HttpHead {
        method: Some(parts.method.as_str().to_owned()),
        uri: Some(parts.uri.to_string()),
        status: None,
        headers: fields(&parts.headers),
    };
    let (resp_tx, resp_rx) = oneshot::channel();
    let (message, res, writer, trailers) = IncomingMessage::start(rt, "http request", Some(head), Some(resp_tx))?;
    res.spawn(pump_body(body, writer, trailers, peer.to_string()));
    tx.send(message).map_err(|_| Error::Closed(Closed::new(CloseReason::PeerDropped)))?;
    match resp_rx.await {
        Ok(out) => {
            let mut response = http::Response::new(out.body);
            *response.status_mut() = http::StatusCode::from_u16(out.status).unwrap_or(http::StatusCode::OK);
            *response.headers_mut() = out.headers;
            Ok(response)
        }
        // The request was closed, or released with nothing left reading it: abort the exchange.
        Err(_) => Err(Error::Closed(Closed::new(CloseReason::Abandoned))),
    }
}

impl HttpServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the next request. Errors: `Closed{…}` once the server is closed.
    pub async fn next_request(&self) -> Result<IncomingMessage> {
        let _op = self.node.core.begin_op()?;
        let mut rx = self.requests.lock().await;
        let closed = self.node.core.closed_wait();
        tokio::select! {
            msg = rx.recv() => msg.ok_or_else(|| Error::Closed(self.node.close_reason().unwrap_or(Closed::new(CloseReason::SelfClosed)))),
            c = closed => Err(c.into()),
        }
    }

    /// Blocking form of [`next_request`](Self::next_request), with an optional time limit.
    pub fn next_request_blocking(&self, timeout: Option<Duration>) -> Result<IncomingMessage> {
        self.rt.shared.block_on_timeout(self.next_request(), timeout)
    }
}

impl Deref for HttpServer {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
