//! File-to-file stream commands: gzip, gunzip, encrypt, decrypt.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bcv_core::handle::{ReadStream, Resource, Runtime};
use indicatif::{ProgressBar, ProgressStyle};

/// Input and output files.
#[derive(clap::Args)]
pub struct FileArgs {
    /// The file to read.
    pub input: PathBuf,
    /// The file to write (replaced only when the whole stream succeeded).
    pub output: PathBuf,
    /// Gzip level 0–9 (gzip only).
    #[arg(long, default_value_t = 6)]
    pub level: u32,
}

/// Input and output files plus a key.
#[derive(clap::Args)]
pub struct KeyedFileArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// The 32-byte key as 64 hex digits (or set BCV_KEY_HEX).
    #[arg(long, env = "BCV_KEY_HEX", hide_env_values = true)]
    pub key_hex: String,
}

/// Which transformation a command applies.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Gzip,
    Gunzip,
    Encrypt,
    Decrypt,
}

/// Parses a 64-hex-digit key.
pub fn parse_key(hex_key: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).context("the key is not hex")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("the key must be 32 bytes (64 hex digits), got {} bytes", b.len()))
}

/// Applies `op` to `input` on `rt`.
pub fn transform(
    rt: &Runtime,
    op: Op,
    input: ReadStream,
    level: u32,
    key: Option<&[u8; 32]>,
) -> Result<(Resource, ReadStream)> {
    let need_key = || key.context("this operation needs a key");
    Ok(match op {
        Op::Gzip => rt.gzip_compress(input, level)?,
        Op::Gunzip => rt.gzip_decompress(input)?,
        Op::Encrypt => rt.aead_encrypt(input, need_key()?)?,
        Op::Decrypt => rt.aead_decrypt(input, need_key()?)?,
    })
}

/// Streams `input` through `op` into `output` with a progress bar; the output file appears only on success.
/// Returns (bytes in, bytes out).
pub fn file_to_file(
    rt: &Runtime,
    op: Op,
    input: &Path,
    output: &Path,
    level: u32,
    key: Option<&[u8; 32]>,
    quiet: bool,
) -> Result<(u64, u64)> {
    let size_in = std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?.len();
    let (_file, stream) = rt.read_file(input)?;
    let (_transformer, out) = transform(rt, op, stream, level, key)?;
    let partial = output.with_extension("bcv-partial");
    let sink = rt.write_file(&partial)?;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {bytes} written ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("{op:?} {}", input.display()));
    let mut written = 0u64;
    let copy = (|| -> Result<()> {
        while let Some(chunk) = out.read_chunk_blocking(usize::MAX, None)? {
            written += chunk.len() as u64;
            bar.set_position(written);
            sink.writer.write_bytes_blocking(chunk, None).map_err(|e| e.error)?;
        }
        sink.writer.finish()?;
        Ok(())
    })();
    bar.finish_and_clear();
    if let Err(e) = copy {
        sink.writer.close();
        let _ = std::fs::remove_file(&partial);
        return Err(e)
            .with_context(|| format!("{op:?} of {} failed; {} was not written", input.display(), output.display()));
    }
    let n = sink.done.wait_blocking(Some(Duration::from_secs(600)))?.map_err(anyhow::Error::msg)?;
    std::fs::rename(&partial, output).with_context(|| format!("renaming into {}", output.display()))?;
    Ok((size_in, n))
}

/// Runs gzip or gunzip.
pub fn run(op: Op, args: FileArgs, key: Option<[u8; 32]>, json: bool) -> Result<()> {
    if args.level > 9 {
        bail!("--level must be 0..=9");
    }
    let rt = Runtime::new()?;
    let start = Instant::now();
    let (n_in, n_out) = file_to_file(&rt, op, &args.input, &args.output, args.level, key.as_ref(), json)?;
    let secs = start.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"op": format!("{op:?}").to_lowercase(), "input": args.input, "output": args.output, "bytes_in": n_in, "bytes_out": n_out, "seconds": secs})
        );
    } else {
        println!(
            "{op:?}: {} ({n_in} bytes) -> {} ({n_out} bytes) in {secs:.3} s",
            args.input.display(),
            args.output.display()
        );
    }
    let _ = rt.shutdown(Duration::from_secs(2));
    Ok(())
}

/// Runs encrypt or decrypt.
pub fn run_keyed(op: Op, args: KeyedFileArgs, json: bool) -> Result<()> {
    let key = parse_key(&args.key_hex)?;
    run(op, args.files, Some(key), json)
}
