//! Real I/O resources as nodes: byte sources and sinks, files, TCP sockets.

mod file;
mod tcp;

pub use file::FileSink;
pub use tcp::{TcpListener, TcpSocket};
