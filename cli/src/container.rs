//! Container commands: create, destroy, upload, download, list, copy, delete, cleanup, manifest (no cache),
//! `lease` (the single-writer lease lock), and `sql`, which runs SQL through the block-cache VFS on a cache
//! directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{
    AttachOptions, BlockVfs, ContainerTools, DEFAULT_BLOCK_SIZE, DEFAULT_NAME_BYTES, Daemon, DaemonConfig, Keyring,
    LeaseInfo, LeaseOptions, Progress, SecureOptions, UploadOptions, VfsConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// The container every command works on.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The container: a directory, file:///dir, memory://name, s3://bucket?…, az://container?…, gs://bucket?…
    #[arg(long, short = 'c', env = "BCV_CONTAINER")]
    pub container: String,
    /// Parallel requests.
    #[arg(long, default_value_t = 8)]
    pub nrequest: usize,
    /// A secure container's AES-256 key: a file holding 64 hex digits (see `bcv keygen`).
    #[arg(long, env = "BCV_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The id of that key (recorded with every block it seals). Default 1.
    #[arg(long, default_value_t = 1)]
    pub key_id: u32,
    /// Older keys that still open existing blocks after a rotation: ID=FILE, repeatable.
    #[arg(long = "old-key", value_name = "ID=FILE")]
    pub old_keys: Vec<String>,
    /// Write as the holder of this lease (a token printed by `bcv lease obtain`): the manifest write renews it
    /// instead of being refused while the lease is held. Only commands that write use it.
    #[arg(long, env = "BCV_LEASE_TOKEN")]
    pub lease_token: Option<String>,
}

impl Target {
    fn tools(&self) -> Result<ContainerTools> {
        let store = ContainerStore::open(&self.container, &StoreOptions::default())?;
        let tools = ContainerTools::new(store, self.nrequest);
        Ok(match self.secure()? {
            Some(s) => tools.with_secure(s),
            None => tools,
        })
    }

    /// The cipher for a secure container, when a key file is given.
    pub fn secure(&self) -> Result<Option<SecureOptions>> {
        let Some(file) = &self.key_file else {
            anyhow::ensure!(self.old_keys.is_empty(), "--old-key needs --key-file (the current key)");
            return Ok(None);
        };
        let mut ring = Keyring::new(self.key_id, read_key(file)?);
        for spec in &self.old_keys {
            let (id, path) = spec.split_once('=').context("--old-key takes ID=FILE")?;
            let id: u32 = id.parse().with_context(|| format!("--old-key {spec}: the id is not a number"))?;
            ring.add(id, read_key(std::path::Path::new(path))?);
        }
        Ok(Some(SecureOptions::aes_gcm(&ring)))
    }

    /// The tools for a command that writes the manifest: holding the lease `--lease-token` names, if any.
    fn writer(&self) -> Result<ContainerTools> {
        let tools = self.tools()?;
        if let Some(token) = &self.lease_token {
            tools.lease_adopt(token).context("--lease-token")?;
        }
        Ok(tools)
    }
}

/// Reads a key file: 64 hex digits.
pub fn read_key(path: &std::path::Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    Keyring::parse_hex_key(&text).with_context(|| format!("key file {}", path.display()))
}

/// The container a lease command works on, and how it treats clocks.
#[derive(clap::Args, Clone)]
pub struct LeaseTarget {
    /// The container: a directory, file:///dir, memory://name, s3://bucket?…, az://container?…, gs://bucket?…
    #[arg(long, short = 'c', env = "BCV_CONTAINER")]
    pub container: String,
    /// How far clocks of lease users may disagree: an expired lease is taken over only this long after its
    /// expiry (e.g. 5s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub max_skew: Duration,
    /// The lease time that must be left when a holder writes the manifest; durations must be longer.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub safety_margin: Duration,
}

impl LeaseTarget {
    fn tools(&self) -> Result<ContainerTools> {
        let store = ContainerStore::open(&self.container, &StoreOptions::default())?;
        let options = LeaseOptions { max_skew: self.max_skew, safety_margin: self.safety_margin };
        Ok(ContainerTools::new(store, 1).with_lease_options(options))
    }
}

/// The lease lock of a container: one writer at a time (`bcv_lease.json`, invisible to CBS).
#[derive(clap::Subcommand)]
pub enum LeaseCommand {
    /// Show who holds the lease and until when.
    Status {
        #[command(flatten)]
        target: LeaseTarget,
    },
    /// Obtain the lease; prints JSON with the token that extend, release and --lease-token take.
    Obtain {
        #[command(flatten)]
        target: LeaseTarget,
        /// Who holds it, shown to others (e.g. "host-a deploy job 42").
        #[arg(long)]
        holder: String,
        /// How long it lasts unless extended (e.g. 30s, 5m; a bare number is seconds).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        duration: Duration,
    },
    /// Extend a lease obtained with `bcv lease obtain` to expire DURATION from now.
    Extend {
        #[command(flatten)]
        target: LeaseTarget,
        /// The token printed by obtain.
        #[arg(long, env = "BCV_LEASE_TOKEN")]
        token: String,
        /// The new duration, from now.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        duration: Duration,
    },
    /// Release a lease obtained with `bcv lease obtain`.
    Release {
        #[command(flatten)]
        target: LeaseTarget,
        /// The token printed by obtain.
        #[arg(long, env = "BCV_LEASE_TOKEN")]
        token: String,
    },
}

/// Container commands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create an empty container (a manifest with no database).
    Create {
        #[command(flatten)]
        target: Target,
        /// Block size in bytes (a power of two; fixed for the container's life).
        #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
        block_size: u32,
        /// Block-id length, 12 to 32 bytes; 24 or more makes ids content-addressed (MD5) and deduplicated.
        #[arg(long, default_value_t = DEFAULT_NAME_BYTES)]
        name_bytes: u32,
        /// Overwrite an existing manifest (CBS's create always does).
        #[arg(long)]
        force: bool,
    },
    /// Delete every object of a container.
    Destroy {
        #[command(flatten)]
        target: Target,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Upload a local SQLite file as a database (a new version if it exists).
    Upload {
        #[command(flatten)]
        target: Target,
        /// The local file.
        file: PathBuf,
        /// The database name (default: the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Download a database to a local file.
    Download {
        #[command(flatten)]
        target: Target,
        /// The database name.
        name: String,
        /// The local file to write.
        file: PathBuf,
    },
    /// List the databases of a container.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Copy a database inside the container (sharing blocks).
    Copy {
        #[command(flatten)]
        target: Target,
        /// Source database.
        from: String,
        /// New database.
        to: String,
    },
    /// Delete a database (its blocks go to the delete list).
    Delete {
        #[command(flatten)]
        target: Target,
        /// The database.
        name: String,
    },
    /// Delete garbage blocks listed for at least the grace period, and orphaned blocks.
    Cleanup {
        #[command(flatten)]
        target: Target,
        /// Grace period in seconds.
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Do not list the container to find orphaned blocks.
        #[arg(long)]
        no_orphans: bool,
    },
    /// Print the manifest.
    Manifest {
        #[command(flatten)]
        target: Target,
    },
    /// Write a new random AES-256 key (64 hex digits) to a file readable only by its owner.
    Keygen {
        /// The key file to create (refused if it exists).
        file: PathBuf,
    },
    /// Own a cache directory and serve it to read-only VFSs of other processes over DIR/daemon.sock, until
    /// stopped (SIGINT/SIGTERM).
    Daemon {
        /// The cache directory.
        #[arg(long, env = "BCV_CACHE_DIR")]
        cache: PathBuf,
        /// The one size limit all clients share, in bytes.
        #[arg(long, default_value_t = bcv_core::vfs::DEFAULT_CACHE_SIZE)]
        cache_size: u64,
        /// A secure container's key, handed to clients that prove access to it: URL=KEYFILE, repeatable.
        #[arg(long = "key", value_name = "URL=KEYFILE")]
        keys: Vec<String>,
    },
    /// The single-writer lease lock of a container: status, obtain, extend, release.
    Lease {
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Run SQL on a database through the block-cache VFS (a cache directory; the container is attached).
    Sql {
        #[command(flatten)]
        target: Target,
        /// The cache directory.
        #[arg(long, env = "BCV_CACHE_DIR")]
        cache: PathBuf,
        /// The alias (default: the container's name).
        #[arg(long)]
        alias: Option<String>,
        /// Poll for a new version before running the SQL.
        #[arg(long)]
        poll: bool,
        /// Upload local changes after running the SQL.
        #[arg(long)]
        upload: bool,
        /// Fetch every block of the database into the cache first (with a progress bar).
        #[arg(long)]
        prefetch: bool,
        /// The database. The virtual tables bcv_container, bcv_database, bcv_block and bcv_kv are available.
        database: String,
        /// The SQL.
        sql: String,
    },
}

fn bar(quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_string());
    b
}

fn on_progress(b: &ProgressBar) -> impl Fn(Progress) + '_ {
    move |p: Progress| {
        b.set_length(p.total);
        b.set_position(p.done);
    }
}

/// Runs a container command.
pub fn run(cmd: Command, as_json: bool) -> Result<()> {
    match cmd {
        Command::Create { target, block_size, name_bytes, force } => {
            target.writer()?.create(block_size, name_bytes, force)?;
            print(
                as_json,
                json!({"created": target.container, "block_size": block_size, "name_bytes": name_bytes}),
                || format!("created {} (block size {block_size}, namebytes {name_bytes})", target.container),
            );
        }
        Command::Destroy { target, yes } => {
            anyhow::ensure!(yes, "destroy deletes every object of {}: add --yes", target.container);
            let n = target.writer()?.destroy()?;
            print(as_json, json!({"destroyed": target.container, "objects": n}), || {
                format!("destroyed {} ({n} objects deleted)", target.container)
            });
        }
        Command::Upload { target, file, name } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("give --name: the file name is not UTF-8")?
                    .to_string(),
            };
            let b = bar(as_json, "upload");
            let version = target.writer()?.upload_file(&file, &name, &on_progress(&b))?;
            b.finish_and_clear();
            print(as_json, json!({"database": name, "version": version}), || {
                format!("uploaded {} as {name} (version {version})", file.display())
            });
        }
        Command::Download { target, name, file } => {
            let b = bar(as_json, "download");
            let bytes = target.tools()?.download_file(&name, &file, &on_progress(&b))?;
            b.finish_and_clear();
            print(as_json, json!({"database": name, "file": file, "bytes": bytes}), || {
                format!("downloaded {name} to {} ({bytes} bytes)", file.display())
            });
        }
        Command::List { target } => {
            let list = target.tools()?.list()?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<32} {:>5} {:>8} {:>7} {:>12}", "name", "id", "version", "blocks", "bytes");
                for d in list {
                    println!("{:<32} {:>5} {:>8} {:>7} {:>12}", d.name, d.id, d.version, d.blocks, d.size);
                }
            }
        }
        Command::Copy { target, from, to } => {
            target.writer()?.copy(&from, &to)?;
            print(as_json, json!({"copied": from, "to": to}), || format!("copied {from} to {to}"));
        }
        Command::Delete { target, name } => {
            target.writer()?.delete(&name)?;
            print(as_json, json!({"deleted": name}), || format!("deleted {name}"));
        }
        Command::Cleanup { target, grace, no_orphans } => {
            let r = target.writer()?.cleanup(Duration::from_secs(grace), !no_orphans)?;
            print(as_json, serde_json::to_value(&r)?, || {
                format!(
                    "deleted {} garbage blocks and {} orphans; {} wait for their grace period",
                    r.deleted, r.orphans_deleted, r.waiting
                )
            });
        }
        Command::Manifest { target } => {
            let (m, _) = target.tools()?.manifest()?;
            let value = json!({
                "block_size": m.block_size,
                "name_bytes": m.name_bytes,
                "max_db_id": m.max_db_id,
                "databases": bcv_core::vfs::list_of(&m),
                "delete_list": m.delete_list.iter().map(|d| json!({"block": d.id.to_string(), "timestamp_ms": d.timestamp_ms})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Command::Keygen { file } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = Keyring::generate_key()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating key file {}", file.display()))?;
            writeln!(f, "{}", hex::encode(key)).with_context(|| format!("writing {}", file.display()))?;
            print(as_json, json!({"key_file": file}), || format!("wrote a new key to {}", file.display()));
        }
        Command::Daemon { cache, cache_size, keys } => {
            let mut config = DaemonConfig::new(&cache);
            config.cache_size = cache_size;
            for spec in keys {
                let (url, path) = spec.rsplit_once('=').context("--key takes URL=KEYFILE")?;
                config.keys.insert(url.to_string(), Keyring::new(1, read_key(std::path::Path::new(path))?));
            }
            let daemon = Daemon::start(config)?;
            print(as_json, json!({"socket": daemon.socket_path()}), || {
                format!("bcv daemon serving {} on {}", cache.display(), daemon.socket_path().display())
            });
            // Serve until a signal ends the process; the next daemon on the directory clears the socket file.
            loop {
                std::thread::park();
            }
        }
        Command::Lease { command } => run_lease(command, as_json)?,
        Command::Sql { target, cache, alias, poll, upload, prefetch, database, sql } => {
            let mut config = VfsConfig::new(&cache);
            config.nrequest = target.nrequest;
            let vfs = BlockVfs::create(config)?;
            let alias = vfs
                .attach(&target.container, &AttachOptions { alias, if_not_attached: true, secure: target.secure()? })?;
            if let (true, Some(token)) = (upload, &target.lease_token) {
                vfs.lease_adopt(&alias, token).context("--lease-token")?;
            }
            if poll {
                vfs.poll(&alias)?;
            }
            if prefetch {
                let b = bar(as_json, "prefetch");
                vfs.prefetch(&alias, &database, &on_progress(&b))?;
                b.finish_and_clear();
            }
            let rows = {
                let conn = rusqlite::Connection::open_with_flags_and_vfs(
                    vfs.path(&alias, &database),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE,
                    vfs.name(),
                )
                .with_context(|| format!("opening {database}: {}", bcv_core::vfs::last_error()))?;
                // SAFETY: an open connection of the SQLite library bcv-core is linked with (both bundled).
                unsafe { vfs.register_vtabs(conn.handle().cast())? };
                run_sql(&conn, &sql).with_context(bcv_core::vfs::last_error)?
            };
            let uploaded = if upload { Some(vfs.upload(&alias, &UploadOptions::default())?) } else { None };
            if as_json {
                println!("{}", serde_json::to_string_pretty(&json!({"rows": rows, "upload": uploaded}))?);
            } else {
                for row in rows {
                    let cells: Vec<String> = row.iter().map(cell_text).collect();
                    println!("{}", cells.join("|"));
                }
                if let Some(u) = uploaded {
                    println!("uploaded {:?} ({} blocks written)", u.databases, u.blocks_written);
                }
            }
        }
    }
    Ok(())
}

/// Runs a lease command.
fn run_lease(cmd: LeaseCommand, as_json: bool) -> Result<()> {
    match cmd {
        LeaseCommand::Status { target } => match target.tools()?.lease_status()? {
            Some(info) => print(as_json, lease_json(&target.container, &info), || {
                let when = match info.expires_in() {
                    Some(left) => format!("in {} s", left.as_secs()),
                    None => "expired".into(),
                };
                format!(
                    "{}: held by {:?} until {} ({when}), generation {}, token {}",
                    target.container,
                    info.holder,
                    info.expires_utc(),
                    info.generation,
                    info.token
                )
            }),
            None => print(as_json, json!({"container": target.container, "held": false}), || {
                format!("{}: the lease is not held", target.container)
            }),
        },
        LeaseCommand::Obtain { target, holder, duration } => {
            let info = target.tools()?.lease_obtain(&holder, duration)?;
            // Always JSON: the token is meant for scripts.
            println!("{}", lease_json(&target.container, &info));
        }
        LeaseCommand::Extend { target, token, duration } => {
            let info = target.tools()?.lease_extend_with_token(&token, duration)?;
            print(as_json, lease_json(&target.container, &info), || {
                format!("{}: extended until {}", target.container, info.expires_utc())
            });
        }
        LeaseCommand::Release { target, token } => {
            target.tools()?.lease_release_with_token(&token)?;
            print(as_json, json!({"container": target.container, "released": true}), || {
                format!("{}: released", target.container)
            });
        }
    }
    Ok(())
}

fn lease_json(container: &str, info: &LeaseInfo) -> serde_json::Value {
    json!({
        "container": container,
        "held": true,
        "holder": info.holder,
        "token": info.token,
        "generation": info.generation,
        "acquired": info.acquired_utc(),
        "expires": info.expires_utc(),
        "acquired_unix_ms": info.acquired_unix_ms,
        "expires_unix_ms": info.expires_unix_ms,
        "expired": info.is_expired(),
    })
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (`30s`, `500ms`, `2m`); a bare number is seconds.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?}: expected a number with a unit, e.g. 30s"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs every statement of `sql`, returning the rows of the last one that produced any.
pub fn run_sql(conn: &rusqlite::Connection, sql: &str) -> Result<Vec<Vec<serde_json::Value>>> {
    let mut rows_out = Vec::new();
    let mut rest = sql.trim();
    while !rest.is_empty() {
        let (first, tail) = split_first_statement(rest);
        let mut stmt = conn.prepare(first)?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut these = Vec::new();
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                cells.push(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                    rusqlite::types::ValueRef::Integer(i) => json!(i),
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(b) => json!(hex::encode(b)),
                });
            }
            these.push(cells);
        }
        if n > 0 {
            rows_out = these;
        }
        rest = tail.trim();
    }
    Ok(rows_out)
}

/// Splits off the first complete SQL statement (by SQLite's own tokenizer).
fn split_first_statement(sql: &str) -> (&str, &str) {
    for (i, _) in sql.match_indices(';') {
        if is_complete(&sql[..=i]) {
            return (&sql[..=i], &sql[i + 1..]);
        }
    }
    (sql, "")
}

fn is_complete(sql: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(sql) else { return false };
    // SAFETY: sqlite3_complete reads a NUL-terminated string.
    unsafe { libsqlite3_sys::sqlite3_complete(c.as_ptr()) != 0 }
}

fn print(as_json: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    if as_json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
