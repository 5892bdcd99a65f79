//! Real I/O resources as nodes: byte sources and sinks, files, TCP sockets.

mod adapter;
mod file;
mod http;
mod pump;
mod tcp;
mod tls;

pub use file::FileSink;
pub use http::{HttpFields, HttpHead, HttpServer, IncomingMessage};
pub use tcp::{TcpListener, TcpSocket};
pub use tls::{SelfSigned, TlsSession, self_signed_certificate};
