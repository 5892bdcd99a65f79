//! Real I/O resources as nodes: byte sources and sinks, files, TCP sockets.

mod file;
mod http;
mod tcp;

pub use file::FileSink;
pub use http::{HttpFields, HttpHead, HttpServer, IncomingMessage};
pub use tcp::{TcpListener, TcpSocket};
