//! The daemon protocol: request/response frames over a unix domain socket.
//!
//! ```text
//! frame = header length (u32 LE) | header (JSON) | payload length (u32 LE) | payload (bytes)
//! ```
//!
//! The header is a [`Request`] or a [`Response`]; the payload carries bulk bytes (a manifest). A client sends
//! one request and reads its response before the next. Sizes are bounded so a bad peer cannot make the other
//! side allocate without limit.

use std::io::{Read, Write};

use crate::vfs::store::ObjectVersion;

/// Protocol version; a daemon refuses clients of another one.
pub(crate) const PROTOCOL: u32 = 1;
/// Largest header accepted.
const MAX_HEADER: u32 = 1 << 20;
/// Largest payload accepted (a manifest of a very large container).
const MAX_PAYLOAD: u32 = 256 << 20;

/// What a client asks.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// First message: the client's protocol and process id.
    Hello { protocol: u32, pid: u32 },
    /// Attach `url` under this connection's `alias`, proving access with the client's store options (the daemon
    /// fetches the manifest with them).
    Attach { alias: String, url: String, options: Vec<(String, String)> },
    /// Fetch the manifest of `alias` if it changed since `known`.
    Poll { alias: String, known: ObjectVersion },
    /// Make chunks of block `block` (hex id) of `alias` present and pin its slot for this connection.
    Fetch { alias: String, block: String, chunks: Vec<u32>, sealed: bool },
    /// Release this connection's pins on these blocks (hex ids).
    Unpin { blocks: Vec<String> },
    /// Hand over the key of the secure container attached as `alias` (after a successful attach).
    Key { alias: String },
}

/// What the daemon answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Response {
    /// The daemon's protocol and cache size limit.
    Hello { protocol: u32, capacity: u64 },
    /// Attached: the geometry of the cache, the manifest's version, the secure marker (JSON) if any; the payload
    /// is the manifest.
    Attached { block_size: u32, stride: u64, version: ObjectVersion, marker: Option<String> },
    /// Polled: the new version (payload: the manifest), or `None` when unchanged.
    Polled { version: Option<ObjectVersion> },
    /// The block's slot in the shared slot file, pinned for this connection.
    Fetched { slot: u32 },
    /// Done.
    Done,
    /// The AES-256 keys of a secure container (hex) and the current key id.
    Key { current: u32, keys: Vec<(u32, String)> },
    /// The request failed; `not_found` for a missing object.
    Error { message: String, not_found: bool },
}

/// Writes one frame.
pub(crate) fn write_frame(w: &mut impl Write, header: &impl serde::Serialize, payload: &[u8]) -> std::io::Result<()> {
    let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(8 + json.len() + payload.len());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

fn read_len(r: &mut impl Read, max: u32, what: &str) -> std::io::Result<usize> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} of {len} bytes is too large"),
        ));
    }
    Ok(len as usize)
}

/// Reads one frame. Errors: I/O (`UnexpectedEof` when the peer went away), or `InvalidData` for an oversized or
/// unparsable frame.
pub(crate) fn read_frame<T: serde::de::DeserializeOwned>(r: &mut impl Read) -> std::io::Result<(T, Vec<u8>)> {
    let n = read_len(r, MAX_HEADER, "a header")?;
    let mut json = vec![0u8; n];
    r.read_exact(&mut json)?;
    let header = serde_json::from_slice(&json)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad frame: {e}")))?;
    let n = read_len(r, MAX_PAYLOAD, "a payload")?;
    let mut payload = vec![0u8; n];
    r.read_exact(&mut payload)?;
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Unpin { blocks: vec!["AB".into()] }, b"payload").unwrap();
        let (req, payload): (Request, Vec<u8>) = read_frame(&mut buf.as_slice()).unwrap();
        assert!(matches!(req, Request::Unpin { blocks } if blocks == ["AB"]));
        assert_eq!(payload, b"payload");
        let mut bad = (MAX_HEADER + 1).to_le_bytes().to_vec();
        bad.extend_from_slice(&[0; 16]);
        let err = read_frame::<Request>(&mut bad.as_slice()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let truncated = &buf[..buf.len() - 3];
        assert_eq!(read_frame::<Request>(&mut &truncated[..]).unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
