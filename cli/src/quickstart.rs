//! `bcv quickstart`: the block-cache VFS end to end on the embedded local-directory store. Creates a container,
//! uploads a database, attaches it in two clients (two cache directories), queries, writes and uploads in one,
//! and lets the other poll and see the change.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{AttachOptions, BlockVfs, ContainerTools, UploadOptions, VfsConfig};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

/// Options of `bcv quickstart`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to put the container and the two cache directories (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rows in the sample database.
    #[arg(long, default_value_t = 50_000)]
    pub rows: i64,
    /// The container's block size.
    #[arg(long, default_value_t = 256 * 1024)]
    pub block_size: u32,
}

fn client(dir: &std::path::Path, name: &str, container: &str) -> Result<BlockVfs> {
    let mut config = VfsConfig::new(dir);
    config.name = name.to_string();
    let vfs = BlockVfs::create(config)?;
    vfs.attach(
        container,
        &AttachOptions { alias: Some("demo".into()), if_not_attached: true, ..AttachOptions::default() },
    )?;
    Ok(vfs)
}

fn connect(vfs: &BlockVfs) -> Result<Connection> {
    Connection::open_with_flags_and_vfs(
        vfs.path("demo", "shop.db"),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        vfs.name(),
    )
    .with_context(|| format!("opening /demo/shop.db: {}", bcv_core::vfs::last_error()))
}

fn summary(c: &Connection) -> Result<(i64, i64)> {
    Ok(c.query_row("SELECT count(*), sum(price) FROM items", [], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Runs the quickstart.
pub fn run(args: Args, as_json: bool) -> Result<()> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("bcv-quickstart-{}", std::process::id())),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let say = |s: String| {
        if !as_json {
            println!("{s}");
        }
    };
    let t = Instant::now();

    // 1. A container on the local-directory store, and a database uploaded into it.
    let container = dir.join("container");
    let container_url = container.to_string_lossy().into_owned();
    let tools = ContainerTools::new(ContainerStore::open(&container_url, &StoreOptions::default())?, 8);
    tools.create(args.block_size, 16, false)?;
    let local = dir.join("shop.db");
    {
        let c = Connection::open(&local)?;
        c.execute_batch(&format!(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO items SELECT i, printf('item-%06d %s', i, hex(randomblob(24))), i % 100 FROM n;
             CREATE INDEX items_price ON items(price);",
            args.rows
        ))?;
    }
    let version = tools.upload_file(&local, "shop.db", &|_| {})?;
    let size = std::fs::metadata(&local)?.len();
    say(format!("1. created container {} and uploaded shop.db ({size} bytes, version {version})", container.display()));

    // 2. Two clients attach it, each with its own cache directory.
    let a = client(&dir.join("cache-a"), "bcv-quickstart-a", &container_url)?;
    let b = client(&dir.join("cache-b"), "bcv-quickstart-b", &container_url)?;
    let ca = connect(&a)?;
    let cb = connect(&b)?;
    let one: String = cb.query_row("SELECT name FROM items WHERE id = 4242", [], |r| r.get(0))?;
    let b_bytes = b.store("demo")?.meter().snapshot().total.bytes_down;
    let before = summary(&cb)?;
    say(format!(
        "2. client B: a cold point query read {b_bytes} bytes of {size} ({one:.11}…); a scan: {} items, total \
         price {}",
        before.0, before.1
    ));

    // 3. Client A writes and uploads.
    ca.execute("UPDATE items SET price = price + 1000 WHERE id <= 100", [])?;
    ca.execute("INSERT INTO items(name, price) VALUES ('added by client A', 7)", [])?;
    let written = summary(&ca)?;
    let upload = a.upload("demo", &UploadOptions::default())?;
    say(format!(
        "3. client A: wrote 101 rows, uploaded {} block(s) ({} bytes); shop.db is now version {}",
        upload.blocks_written,
        upload.bytes_written,
        upload.databases.first().map(|d| d.1).unwrap_or(0)
    ));

    // 4. Client B still sees its snapshot until it polls; then its open connection sees the change.
    ensure!(summary(&cb)? == before, "client B saw a change before polling");
    let poll = b.poll("demo")?;
    let after = summary(&cb)?;
    ensure!(after == written, "client B sees {after:?} after polling, client A wrote {written:?}");
    say(format!(
        "4. client B polled (updated: {:?}) and sees {} items, total price {}",
        poll.updated, after.0, after.1
    ));
    let ok: String = cb.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    ensure!(ok == "ok", "integrity_check: {ok}");
    let meter_a = a.store("demo")?.meter().snapshot();
    let meter_b = b.store("demo")?.meter().snapshot();
    drop((ca, cb));
    if as_json {
        println!(
            "{}",
            json!({
                "container": container, "database_bytes": size, "before": before, "after": after,
                "upload": upload, "poll": poll, "requests": {"a": meter_a.total.requests, "b": meter_b.total.requests},
                "bytes_down": {"a": meter_a.total.bytes_down, "b": meter_b.total.bytes_down},
                "seconds": t.elapsed().as_secs_f64(),
            })
        );
    } else {
        println!(
            "ok: requests A {} / B {}, bytes down A {} / B {}, {:.2} s; files in {}",
            meter_a.total.requests,
            meter_b.total.requests,
            meter_a.total.bytes_down,
            meter_b.total.bytes_down,
            t.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    Ok(())
}
