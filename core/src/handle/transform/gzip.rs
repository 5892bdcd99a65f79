//! Gzip codecs over `flate2`.

use std::io::Write;

use flate2::Compression;
use flate2::write::{GzEncoder, MultiGzDecoder};

use super::Codec;
use crate::handle::reason::{Error, Result};

pub(crate) struct Compress {
    encoder: GzEncoder<Vec<u8>>,
}

impl Compress {
    pub(crate) fn new(level: u32) -> Compress {
        Compress { encoder: GzEncoder::new(Vec::new(), Compression::new(level)) }
    }
}

impl Codec for Compress {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.encoder.write_all(input).map_err(|e| Error::io("gzip compress", e))?;
        out.append(self.encoder.get_mut());
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.encoder.try_finish().map_err(|e| Error::io("gzip compress", e))?;
        out.append(self.encoder.get_mut());
        Ok(())
    }
}

pub(crate) struct Decompress {
    decoder: MultiGzDecoder<Vec<u8>>,
    seen_input: bool,
}

impl Decompress {
    pub(crate) fn new() -> Decompress {
        Decompress { decoder: MultiGzDecoder::new(Vec::new()), seen_input: false }
    }
}

fn corrupt(e: std::io::Error) -> Error {
    Error::Corrupt(format!("gzip stream: {e}"))
}

impl Codec for Decompress {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.seen_input |= !input.is_empty();
        self.decoder.write_all(input).map_err(corrupt)?;
        out.append(self.decoder.get_mut());
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.seen_input {
            return Err(Error::Corrupt("gzip stream: empty input (no gzip header)".into()));
        }
        self.decoder.try_finish().map_err(corrupt)?;
        out.append(self.decoder.get_mut());
        Ok(())
    }
}
