//! `bcv bench vfs`: the block-cache VFS against plain SQLite on a local copy, measured in the same run.
//!
//! The table is `t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)` with an index on `k`, `v` 89 bytes, in a
//! container with 4 MiB blocks. Figures: a cold open + point query (bytes down, requests, time), warm point
//! queries and warm full scans against plain SQLite on the same file, a cold full scan against downloading the
//! whole file, and an upload after updating about 1 MB of rows against uploading the whole file. Every result
//! read through the VFS is checked against plain SQLite's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bcv_core::vfs::store::{ContainerStore, MeterSnapshot, StoreOptions};
use bcv_core::vfs::{AttachOptions, BlockVfs, ContainerTools, Daemon, DaemonConfig, UploadOptions, VfsConfig};
use rusqlite::{Connection, OpenFlags};

use crate::bench::{Args, Figure, print};

const BLOCK_SIZE: u32 = 4 << 20;
const DB: &str = "bench.db";

/// A deterministic xorshift generator: the same keys in every run.
struct Keys(u64);

impl Keys {
    fn next(&mut self, below: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as i64
    }
}

fn key_of(id: i64) -> i64 {
    (id * 7919) % 100_003
}

fn value_of(id: i64, generation: u32) -> String {
    // 89 bytes: "r" + generation + id, padded with a pattern that does not compress to nothing.
    let head = format!("r{generation}-{id:08}-");
    let mut v = head.clone();
    let mut x = id as u64 ^ 0x9e37_79b9_7f4a_7c15;
    while v.len() < 89 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((b'a' + (x % 26) as u8) as char);
    }
    v
}

fn build(path: &Path, rows: i64) -> Result<()> {
    let c = Connection::open(path)?;
    c.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=OFF; CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);",
    )?;
    let tx = c.unchecked_transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO t VALUES (?1, ?2, ?3)")?;
        for id in 1..=rows {
            ins.execute(rusqlite::params![id, key_of(id), value_of(id, 0)])?;
        }
    }
    tx.commit()?;
    c.execute_batch("CREATE INDEX t_k ON t(k); VACUUM;")?;
    Ok(())
}

fn client(dir: &Path, name: &str, url: &str) -> Result<BlockVfs> {
    let mut config = VfsConfig::new(dir);
    config.name = name.to_string();
    let vfs = BlockVfs::create(config)?;
    vfs.attach(url, &AttachOptions { alias: Some("b".into()), if_not_attached: false, ..AttachOptions::default() })?;
    Ok(vfs)
}

fn open(vfs: &BlockVfs) -> Result<Connection> {
    Ok(Connection::open_with_flags_and_vfs(vfs.path("b", DB), OpenFlags::SQLITE_OPEN_READ_WRITE, vfs.name())?)
}

/// Runs `n` point queries through the index and returns the time and a checksum of the rows read.
fn point_queries(c: &Connection, n: usize) -> Result<(Duration, i64)> {
    let mut st = c.prepare_cached("SELECT id, length(v) FROM t WHERE k = ?1")?;
    let mut keys = Keys(0x2545_f491_4f6c_dd1d);
    let mut sum = 0i64;
    let start = Instant::now();
    for _ in 0..n {
        let mut rows = st.query([keys.next(100_003)])?;
        while let Some(r) = rows.next()? {
            sum += r.get::<_, i64>(0)? + r.get::<_, i64>(1)?;
        }
    }
    Ok((start.elapsed(), sum))
}

fn full_scans(c: &Connection, n: usize) -> Result<(Duration, i64)> {
    let start = Instant::now();
    let mut sum = 0;
    for _ in 0..n {
        sum += c.query_row("SELECT sum(k) + sum(length(v)) FROM t", [], |r| r.get::<_, i64>(0))?;
    }
    Ok((start.elapsed(), sum))
}

/// The best of three alternating runs of `bcv` and `plain` (less noise on a shared machine).
fn best_of_three(
    mut bcv: impl FnMut() -> Result<(Duration, i64)>,
    mut plain: impl FnMut() -> Result<(Duration, i64)>,
) -> Result<(Duration, Duration)> {
    let (mut b, mut p) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let (tb, sb) = bcv()?;
        let (tp, sp) = plain()?;
        ensure!(sb == sp, "the VFS read {sb}, plain SQLite {sp}: results differ");
        b = b.min(tb);
        p = p.min(tp);
    }
    Ok((b, p))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn down(m: &MeterSnapshot) -> (f64, f64) {
    (m.total.bytes_down as f64 / 1e6, m.total.requests as f64)
}

/// Runs the VFS benchmark and prints its figures.
pub fn run(args: &Args, json: bool) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run `cargo run --release -p bcv-cli -- bench vfs` for real figures");
    }
    let tmp = tempfile_dir()?;
    let url = match &args.url {
        Some(u) => u.clone(),
        None => tmp.join("container").to_string_lossy().into_owned(),
    };
    let store = ContainerStore::open(&url, &StoreOptions::default())?;
    let tools = ContainerTools::new(store, 8);
    let _ = tools.destroy();
    tools.create(BLOCK_SIZE, 16, true).with_context(|| format!("create the container {url}"))?;
    let local = tmp.join("local.db");
    build(&local, args.rows)?;
    let size = std::fs::metadata(&local)?.len();
    let whole_up = Instant::now();
    tools.upload_file(&local, DB, &|_| {})?;
    let whole_up = whole_up.elapsed();
    let plain = Connection::open_with_flags(&local, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let mut figures = Vec::new();

    // Cold open + one point query.
    let a = client(&tmp.join("cache-a"), "bcvbench_a", &url)?;
    let store_a = a.store("b")?;
    let meter = store_a.meter();
    meter.reset();
    let start = Instant::now();
    let c = open(&a)?;
    let (_, cold_sum) = point_queries(&c, 1)?;
    let cold_point = start.elapsed();
    ensure!(cold_sum == point_queries(&plain, 1)?.1, "cold point query: results differ");
    let (mb, requests) = down(&meter.snapshot());
    figures.push(Figure {
        name: "cold open + point query: MB downloaded",
        value: mb,
        unit: "MB",
        baseline: None,
        goal: "<= 0.6 MB",
    });
    figures.push(Figure {
        name: "cold open + point query: requests",
        value: requests,
        unit: "",
        baseline: None,
        goal: "",
    });
    figures.push(Figure {
        name: "cold open + point query: time",
        value: ms(cold_point),
        unit: "ms",
        baseline: None,
        goal: "",
    });

    // Warm: every block cached.
    a.prefetch("b", DB, &|_| {})?;
    let n = args.point_queries;
    let (b, p) = best_of_three(|| point_queries(&c, n), || point_queries(&plain, n))?;
    let warm_point_us = us_per(b, n);
    let plain_sum = point_queries(&plain, n)?.1;
    figures.push(Figure {
        name: "warm point query (index + table lookup)",
        value: us_per(b, n),
        unit: "us",
        baseline: Some(("plain SQLite, local file", us_per(p, n))),
        goal: "<= 1.2x",
    });
    let s = args.scans;
    let (b, p) = best_of_three(|| full_scans(&c, s), || full_scans(&plain, s))?;
    figures.push(Figure {
        name: "warm full scan",
        value: ms(b) / s as f64,
        unit: "ms",
        baseline: Some(("plain SQLite, local file", ms(p) / s as f64)),
        goal: "<= 1.05x",
    });

    // Multi-process mode: a second process reads through a daemon owning another cache directory.
    let daemon_dir = tmp.join("cache-daemon");
    let daemon = Daemon::start(DaemonConfig::new(&daemon_dir))?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "vfs-daemon-client", "--url", &url, "--point-queries", &n.to_string()])
        .env("BCV_BENCH_DAEMON_DIR", &daemon_dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("start the daemon's client process")?;
    ensure!(out.status.success(), "the daemon's client process failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the client process printed no {key}: {text}"))
    };
    ensure!(field("sum=")? as i64 == plain_sum, "through the daemon the point queries read other rows");
    figures.push(Figure {
        name: "warm point query, second process through the daemon",
        value: field("us=")?,
        unit: "us",
        baseline: Some(("in-process warm point query", warm_point_us)),
        goal: "<= 2x",
    });
    daemon.stop();

    // Cold full scan, against downloading the whole file and scanning it.
    let cold = client(&tmp.join("cache-b"), "bcvbench_b", &url)?;
    let store_b = cold.store("b")?;
    let cold_meter = store_b.meter();
    cold_meter.reset();
    let start = Instant::now();
    let cc = open(&cold)?;
    let (_, sum) = full_scans(&cc, 1)?;
    let cold_scan = start.elapsed();
    let start = Instant::now();
    let copy = tmp.join("download.db");
    tools.download_file(DB, &copy, &|_| {})?;
    let (_, copy_sum) = full_scans(&Connection::open(&copy)?, 1)?;
    let download_scan = start.elapsed();
    ensure!(sum == copy_sum, "cold scan: results differ");
    figures.push(Figure {
        name: "cold full scan",
        value: ms(cold_scan),
        unit: "ms",
        baseline: Some(("download the whole file, then scan", ms(download_scan))),
        goal: "",
    });
    let (mb, requests) = down(&cold_meter.snapshot());
    figures.push(Figure { name: "cold full scan: MB downloaded", value: mb, unit: "MB", baseline: None, goal: "" });
    figures.push(Figure { name: "cold full scan: requests", value: requests, unit: "", baseline: None, goal: "" });
    drop(cc);
    drop(cold);

    // Update about 1 MB of rows (contiguous ids) and upload.
    let changed = (1_000_000 / 100).min(args.rows);
    let first = args.rows / 2;
    {
        let tx = c.unchecked_transaction()?;
        let mut up = tx.prepare("UPDATE t SET v = ?2 WHERE id = ?1")?;
        for id in first..first + changed {
            up.execute(rusqlite::params![id, value_of(id, 1)])?;
        }
        drop(up);
        tx.commit()?;
    }
    meter.reset();
    let start = Instant::now();
    let report = a.upload("b", &UploadOptions::default())?;
    let upload = start.elapsed();
    let up = meter.snapshot();
    figures.push(Figure {
        name: "upload after updating ~1 MB of rows",
        value: ms(upload),
        unit: "ms",
        baseline: Some(("upload the whole file", ms(whole_up))),
        goal: "",
    });
    figures.push(Figure {
        name: "upload: blocks written",
        value: report.blocks_written as f64,
        unit: "",
        baseline: None,
        goal: "",
    });
    figures.push(Figure {
        name: "upload: MB sent",
        value: up.total.bytes_up as f64 / 1e6,
        unit: "MB",
        baseline: None,
        goal: "",
    });
    figures.push(Figure {
        name: "upload: requests",
        value: up.total.requests as f64,
        unit: "",
        baseline: None,
        goal: "",
    });
    // The uploaded database is what was written.
    let check = tmp.join("check.db");
    tools.download_file(DB, &check, &|_| {})?;
    let got: String = Connection::open(&check)?.query_row("SELECT v FROM t WHERE id = ?1", [first], |r| r.get(0))?;
    ensure!(got == value_of(first, 1), "the uploaded database lacks the update");
    drop(c);
    drop(a);

    let store_kind = if args.url.is_some() { url.split("://").next().unwrap_or("dir") } else { "local directory" };
    print(
        &format!(
            "bcv bench vfs ({} rows, {:.1} MB database, 4 MiB blocks, store: {store_kind})",
            args.rows,
            size as f64 / 1e6
        ),
        &figures,
        json,
    );
    let _ = tools.destroy();
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}

/// The second process of the daemon figure: a client VFS on the daemon's directory, warmed, then timed.
pub fn daemon_client(args: &Args) -> Result<()> {
    let dir = std::env::var_os("BCV_BENCH_DAEMON_DIR").context("BCV_BENCH_DAEMON_DIR is not set")?;
    let url = args.url.as_deref().context("--url is required")?;
    let vfs = client(Path::new(&dir), "bcvbench_daemon_client", url)?;
    ensure!(vfs.is_daemon_client(), "no daemon serves {}", Path::new(&dir).display());
    let c = open(&vfs)?;
    let n = args.point_queries;
    point_queries(&c, n)?; // warm: the daemon fetches and pins what the queries need
    let mut best = Duration::MAX;
    let mut sum = 0;
    for _ in 0..3 {
        let (t, s) = point_queries(&c, n)?;
        best = best.min(t);
        sum = s;
    }
    println!("us={} sum={sum}", us_per(best, n));
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bcv-bench-vfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
