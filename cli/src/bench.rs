//! `bcv bench streams`: throughput and cost figures of the handle runtime, each printed next to a baseline
//! measured in the same run (raw `flate2`, raw `aes-gcm`, plain `memcpy`), so the ratios mean something on
//! whatever machine runs them. Build with `--release`.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Result;
use bcv_core::handle::Runtime;
use bytes::Bytes;

/// Options of `bcv bench`.
#[derive(clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "streams")]
    pub suite: Suite,
    /// MiB pushed through each pipe measurement.
    #[arg(long, default_value_t = 1024)]
    pub pipe_mib: usize,
    /// MiB pushed through each transformer measurement.
    #[arg(long, default_value_t = 128)]
    pub transform_mib: usize,
    /// `vfs`: the container URL to use (it is destroyed and re-created); default a temporary directory.
    #[arg(long, env = "BCV_BENCH_URL")]
    pub url: Option<String>,
    /// `vfs`: rows in the benchmark table.
    #[arg(long, default_value_t = 200_000)]
    pub rows: i64,
    /// `vfs`: point queries per warm measurement.
    #[arg(long, default_value_t = 20_000)]
    pub point_queries: usize,
    /// `vfs`: full scans per warm measurement.
    #[arg(long, default_value_t = 10)]
    pub scans: usize,
}

/// Benchmark suites.
#[derive(clap::ValueEnum, Clone, Copy)]
pub enum Suite {
    /// Pipes, handle cost, gzip and AES-GCM streams.
    Streams,
    /// The block-cache VFS: cold and warm queries against plain SQLite, upload (`--url` picks the store).
    Vfs,
    /// Internal: the second process of `bench vfs`, reading through the daemon of `BCV_BENCH_DAEMON_DIR`.
    #[value(hide = true)]
    VfsDaemonClient,
}

const CHUNK: usize = 64 * 1024;

/// One measured figure, with the baseline it is compared to when there is one.
pub(crate) struct Figure {
    pub(crate) name: &'static str,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    /// The baseline's name and value; the ratio printed is `value / baseline` (lower is better for times).
    pub(crate) baseline: Option<(&'static str, f64)>,
    pub(crate) goal: &'static str,
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn data(len: usize) -> Vec<u8> {
    // Text-like, compressible about 3:1, like logs or JSON.
    let mut v = Vec::with_capacity(len);
    let mut x = 0x2545_f491u32;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let word = (x % 64) as u8;
        v.extend_from_slice(&[b'a' + word % 26, b'a' + (word / 3) % 26, b' ', b'a' + (word / 7) % 26]);
    }
    v.truncate(len);
    v
}

fn pipe_zero_copy(rt: &Runtime, total: usize) -> Result<Duration> {
    let (w, r) = rt.pipe(4 * CHUNK)?;
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> Result<()> {
        for _ in 0..total / CHUNK {
            w.write_bytes_blocking(chunk.clone(), None).map_err(|e| e.error)?;
        }
        w.finish()?;
        Ok(())
    });
    let mut got = 0;
    while let Some(c) = r.read_chunk_blocking(CHUNK, None)? {
        got += c.len();
    }
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    anyhow::ensure!(got == total / CHUNK * CHUNK, "pipe lost bytes");
    Ok(start.elapsed())
}

fn pipe_copying(rt: &Runtime, total: usize) -> Result<Duration> {
    let (w, r) = rt.pipe(4 * CHUNK)?;
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> Result<()> {
        let buf = vec![7u8; CHUNK];
        for _ in 0..total / CHUNK {
            w.write_blocking(&buf, None).map_err(|e| e.error)?;
        }
        w.finish()?;
        Ok(())
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        let n = r.read_blocking(&mut buf, None)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    anyhow::ensure!(got == total / CHUNK * CHUNK, "pipe lost bytes");
    Ok(start.elapsed())
}

fn memcpy_twice(total: usize) -> Duration {
    // The copying pipe copies each byte twice (into the pipe, out of it); this is the floor for that.
    let src = vec![7u8; CHUNK];
    let mut mid = vec![0u8; CHUNK];
    let mut dst = vec![0u8; CHUNK];
    let start = Instant::now();
    for _ in 0..total / CHUNK {
        mid.copy_from_slice(black_box(&src));
        dst.copy_from_slice(black_box(&mid));
        black_box(&dst);
    }
    start.elapsed()
}

fn stream_through(
    rt: &Runtime,
    input: &[u8],
    f: impl FnOnce(
        &Runtime,
        bcv_core::handle::ReadStream,
    ) -> Result<(bcv_core::handle::Resource, bcv_core::handle::ReadStream)>,
) -> Result<(Duration, usize)> {
    let (w, r) = rt.pipe(4 * CHUNK)?;
    // The producer hands over 64 KiB slices of one buffer without copying, as a server streaming data it
    // already holds would; what is measured is the transformer stream itself.
    let owned = Bytes::copy_from_slice(input);
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> Result<()> {
        let mut at = 0;
        while at < owned.len() {
            let end = (at + CHUNK).min(owned.len());
            w.write_bytes_blocking(owned.slice(at..end), None).map_err(|e| e.error)?;
            at = end;
        }
        w.finish()?;
        Ok(())
    });
    let (_t, out) = f(rt, r)?;
    let mut n = 0;
    while let Some(c) = out.read_chunk_blocking(usize::MAX, None)? {
        n += c.len();
    }
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok((start.elapsed(), n))
}

fn raw_gzip(input: &[u8]) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    for c in input.chunks(CHUNK) {
        enc.write_all(c)?;
    }
    let out = enc.finish()?;
    Ok((start.elapsed(), out.len()))
}

fn raw_aes(input: &[u8], key: &[u8; 32]) -> Result<Duration> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| anyhow::anyhow!("key"))?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    for (i, c) in input.chunks(CHUNK).enumerate() {
        buf.truncate(0);
        buf.extend_from_slice(c);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf)
            .map_err(|_| anyhow::anyhow!("encrypt"))?;
        black_box((&buf, tag));
    }
    Ok(start.elapsed())
}

fn handle_cost(rt: &Runtime, n: usize) -> Result<(f64, f64)> {
    let start = Instant::now();
    for _ in 0..n {
        let (w, r) = rt.pipe(64)?;
        w.finish()?;
        drop((w, r));
    }
    let pipe_ns = start.elapsed().as_nanos() as f64 / n as f64;
    rt.wait_idle(Duration::from_secs(30));
    let start = Instant::now();
    for _ in 0..n {
        let (w, r) = rt.future::<u64>()?;
        let _ = w.write(1);
        drop((w, r));
    }
    let fut_ns = start.elapsed().as_nanos() as f64 / n as f64;
    rt.wait_idle(Duration::from_secs(30));
    Ok((pipe_ns, fut_ns))
}

/// Prints `figures` under `title`, or as a JSON array.
pub(crate) fn print(title: &str, figures: &[Figure], json: bool) {
    if json {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name, "value": f.value, "unit": f.unit, "goal": f.goal,
                    "baseline": f.baseline.map(|(n, v)| serde_json::json!({"name": n, "value": v})),
                    "ratio": f.baseline.map(|(_, v)| f.value / v),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!("{title}");
    for f in figures {
        match f.baseline {
            Some((bn, bv)) => println!(
                "  {:<58} {:>10.2} {:<5} baseline {bn}: {bv:.2} {}  ratio {:.2}x  {}",
                f.name,
                f.value,
                f.unit,
                f.unit,
                f.value / bv,
                f.goal
            ),
            None => println!("  {:<58} {:>10.2} {:<5} {}", f.name, f.value, f.unit, f.goal),
        }
    }
}

/// Runs the benchmark and prints its figures.
pub fn run(args: Args, json: bool) -> Result<()> {
    if let Suite::VfsDaemonClient = args.suite {
        return crate::bench_vfs::daemon_client(&args);
    }
    if let Suite::Vfs = args.suite {
        return crate::bench_vfs::run(&args, json);
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run `cargo run --release -p bcv-cli -- bench` for real figures");
    }
    let rt = Runtime::new()?;
    let pipe_total = args.pipe_mib << 20;
    let xf_total = args.transform_mib << 20;
    let mut figures = Vec::new();

    // Warm up the executor and the allocator.
    let _ = pipe_zero_copy(&rt, 64 << 20)?;
    let zc = pipe_zero_copy(&rt, pipe_total)?;
    let cp = pipe_copying(&rt, pipe_total)?;
    let mc = memcpy_twice(pipe_total);
    figures.push(Figure {
        name: "pipe, 64 KiB chunks, zero-copy (write_bytes/read_chunk)",
        value: gbps(pipe_total, zc),
        unit: "GB/s",
        baseline: None,
        goal: ">= 4 GB/s",
    });
    figures.push(Figure {
        name: "pipe, 64 KiB chunks, copying (write/read into buffers)",
        value: gbps(pipe_total, cp),
        unit: "GB/s",
        baseline: Some(("two memcpy of the same bytes", gbps(pipe_total, mc))),
        goal: "",
    });

    let (pipe_ns, fut_ns) = handle_cost(&rt, 200_000)?;
    figures.push(Figure {
        name: "create + finish + release a pipe (2 nodes)",
        value: pipe_ns,
        unit: "ns",
        baseline: None,
        goal: "",
    });
    figures.push(Figure {
        name: "create + write + release a future (2 nodes)",
        value: fut_ns,
        unit: "ns",
        baseline: None,
        goal: "",
    });

    let input = data(xf_total);
    let (raw_gz, raw_len) = raw_gzip(&input)?;
    let (bcv_gz, bcv_len) = stream_through(&rt, &input, |rt, r| Ok(rt.gzip_compress(r, 1)?))?;
    anyhow::ensure!(bcv_len > 0 && raw_len > 0);
    figures.push(Figure {
        name: "gzip level 1 stream",
        value: gbps(xf_total, bcv_gz),
        unit: "GB/s",
        baseline: Some(("raw flate2 GzEncoder", gbps(xf_total, raw_gz))),
        goal: ">= 0.9x raw",
    });

    let key = [9u8; 32];
    let raw_enc = raw_aes(&input, &key)?;
    let (bcv_enc, _) = stream_through(&rt, &input, |rt, r| Ok(rt.aead_encrypt(r, &key)?))?;
    figures.push(Figure {
        name: "AES-256-GCM encrypt stream",
        value: gbps(xf_total, bcv_enc),
        unit: "GB/s",
        baseline: Some(("raw aes-gcm, 64 KiB chunks", gbps(xf_total, raw_enc))),
        goal: ">= 0.9x raw",
    });
    let ciphertext = {
        let src = rt.stream_from_bytes(input.clone())?;
        let (_e, ct) = rt.aead_encrypt(src, &key)?;
        ct.read_to_end_blocking()?
    };
    let (bcv_dec, n) = stream_through(&rt, &ciphertext, |rt, r| Ok(rt.aead_decrypt(r, &key)?))?;
    anyhow::ensure!(n == input.len(), "decrypt lost bytes");
    figures.push(Figure {
        name: "AES-256-GCM decrypt stream",
        value: gbps(xf_total, bcv_dec),
        unit: "GB/s",
        baseline: Some(("raw aes-gcm, 64 KiB chunks", gbps(xf_total, raw_enc))),
        goal: ">= 0.9x raw",
    });

    print(
        &format!(
            "bcv bench streams ({} MiB per pipe run, {} MiB per transformer run)",
            args.pipe_mib, args.transform_mib
        ),
        &figures,
        json,
    );
    rt.shutdown(Duration::from_secs(5)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
