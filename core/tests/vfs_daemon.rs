//! Multi-process mode: a daemon owns the cache directory; VFSs created on it in other processes are its
//! read-only clients, share its blocks and its size limit, survive its restart with a clear error, and the
//! daemon survives crashing clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{
    AttachOptions, BlockVfs, ConnectOptions, Connection, ContainerTools, Daemon, DaemonConfig, Keyring, SecureOptions,
    UploadOptions, Value, VfsConfig, VfsError,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn vfs(cache: &Path) -> BlockVfs {
    let mut config = VfsConfig::new(cache);
    config.name = format!("bcvdaemon{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    BlockVfs::create(config).unwrap()
}

fn attach(v: &BlockVfs, bucket: &str, secure: Option<SecureOptions>) -> Result<String, VfsError> {
    v.attach(bucket, &AttachOptions { alias: Some("c".into()), if_not_attached: false, secure })
}

fn connect(v: &BlockVfs, db: &str) -> Connection {
    Connection::open(v, &format!("/c/{db}"), &ConnectOptions::default()).unwrap()
}

fn int(c: &Connection, sql: &str) -> Result<i64, VfsError> {
    match c.query(sql, &[])?.into_iter().next().and_then(|r| r.into_iter().next()) {
        Some(Value::Integer(n)) => Ok(n),
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// A container in `root/bucket` holding `db.db` with `rows` rows, written by a VFS of its own.
fn container(root: &Path, rows: i64, secure: Option<SecureOptions>) -> String {
    let bucket = root.join("bucket");
    let store = ContainerStore::open(bucket.to_str().unwrap(), &StoreOptions::default()).unwrap();
    let mut tools = ContainerTools::new(store, 4);
    if let Some(s) = &secure {
        tools = tools.with_secure(s.clone());
    }
    tools.create(65536, 16, false).unwrap();
    let url = bucket.to_str().unwrap().to_string();
    write_rows(&root.join("writer-cache"), &url, secure, 0, rows);
    url
}

fn write_rows(cache: &Path, url: &str, secure: Option<SecureOptions>, from: i64, to: i64) {
    let v = vfs(cache);
    v.attach(url, &AttachOptions { alias: Some("c".into()), if_not_attached: true, secure }).unwrap();
    let c = connect(&v, "db.db");
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT); BEGIN").unwrap();
    for i in from..to {
        c.execute("INSERT INTO t VALUES (?, ?)", &[Value::Integer(i), Value::Text(format!("row {i:08}"))]).unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
    drop(c);
    v.runtime().reaper_flush().unwrap();
    v.upload("c", &UploadOptions::default()).unwrap();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts this test binary as a client process running [`child_entry`] in `mode`.
fn child(mode: &str, dir: &Path, url: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("BCV_DAEMON_CHILD", mode)
        .env("BCV_DAEMON_DIR", dir)
        .env("BCV_DAEMON_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The client processes' body (not a test of its own: the tests below run it in child processes).
#[test]
#[ignore = "entry point of the client processes the other tests start"]
fn child_entry() {
    let mode = std::env::var("BCV_DAEMON_CHILD").expect("run by the daemon tests");
    let dir = PathBuf::from(std::env::var("BCV_DAEMON_DIR").unwrap());
    let url = std::env::var("BCV_DAEMON_URL").unwrap();
    let v = vfs(&dir);
    assert!(v.is_daemon_client(), "the VFS must be the daemon's client");
    attach(&v, &url, None).unwrap();
    let c = connect(&v, "db.db");
    let rows = int(&c, "SELECT count(*) FROM t").unwrap();
    let sum = int(&c, "SELECT sum(length(v)) FROM t").unwrap();
    println!("CHILD rows={rows} sum={sum}");
    if mode == "hold" {
        // Keep pins and the connection until the parent kills this process.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[test]
fn several_reader_processes_share_the_daemons_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let url = container(tmp.path(), 3000, None);
    let dir = tmp.path().join("shared");
    let daemon = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    let readers: Vec<_> = (0..3).map(|_| child("read", &dir, &url)).collect();
    for r in readers {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "a reader failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("CHILD rows=3000 sum=36000"), "{text}");
    }
    let stats = daemon.stats();
    assert_eq!(stats.clients_total, 3);
    assert!(stats.cache.bytes_fetched > 0);
    // Three readers of the same blocks: fetched once, then hits.
    assert!(stats.cache.hits > 0, "{stats:?}");
    let fetched = stats.cache.bytes_fetched;
    let again = child("read", &dir, &url).wait_with_output().unwrap();
    assert!(again.status.success());
    assert_eq!(daemon.stats().cache.bytes_fetched, fetched, "a warm reader fetches nothing");
}

#[test]
fn a_client_is_read_only_and_polls_through_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let url = container(tmp.path(), 100, None);
    let dir = tmp.path().join("shared");
    let _daemon = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    let v = vfs(&dir);
    assert!(v.is_daemon_client());
    attach(&v, &url, None).unwrap();
    let c = connect(&v, "db.db");
    assert_eq!(int(&c, "SELECT count(*) FROM t").unwrap(), 100);
    let err = c.execute_batch("INSERT INTO t VALUES (1000, 'x')").unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    let err = v.upload("c", &UploadOptions::default()).unwrap_err();
    assert!(matches!(err, VfsError::ReadOnly { .. }), "{err}");
    assert!(matches!(v.copy("c", "db.db", "copy.db").unwrap_err(), VfsError::ReadOnly { .. }));
    // Another process uploads; the client sees it after a poll made through the daemon.
    write_rows(&tmp.path().join("writer-cache"), &url, None, 100, 150);
    assert_eq!(int(&c, "SELECT count(*) FROM t").unwrap(), 100, "no poll yet");
    let report = v.poll("c").unwrap();
    assert_eq!(report.updated, vec!["db.db".to_string()]);
    assert_eq!(int(&c, "SELECT count(*) FROM t").unwrap(), 150);
}

#[test]
fn clients_of_a_restarted_daemon_get_a_clear_error_then_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let url = container(tmp.path(), 2000, None);
    let dir = tmp.path().join("shared");
    let daemon = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    let v = vfs(&dir);
    attach(&v, &url, None).unwrap();
    let c = connect(&v, "db.db");
    assert_eq!(int(&c, "SELECT count(*) FROM t").unwrap(), 2000);
    daemon.stop();
    let err = v.poll("c").unwrap_err();
    assert!(matches!(err, VfsError::DaemonGone { .. }), "{err}");
    assert!(err.to_string().contains("went away") && err.to_string().contains("reconnects"), "{err}");
    // Calls keep failing clearly while no daemon runs...
    assert!(matches!(v.poll("c").unwrap_err(), VfsError::DaemonGone { .. }));
    // ...and work again once one is back: the client attaches its containers again by itself.
    let _daemon = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    v.poll("c").unwrap();
    let c2 = connect(&v, "db.db");
    assert_eq!(int(&c2, "SELECT count(*) FROM t").unwrap(), 2000);
    assert_eq!(int(&c2, "SELECT sum(id) FROM t").unwrap(), 1999 * 2000 / 2);
}

#[test]
fn the_daemon_survives_a_killed_client_and_releases_its_pins() {
    let tmp = tempfile::tempdir().unwrap();
    let url = container(tmp.path(), 2000, None);
    let dir = tmp.path().join("shared");
    let daemon = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    let mut holder = child("hold", &dir, &url);
    let mut out = holder.stdout.take().unwrap();
    let mut line = String::new();
    use std::io::Read;
    let mut byte = [0u8; 1];
    while !line.contains("CHILD rows=") {
        assert_eq!(out.read(&mut byte).unwrap(), 1, "the holder exited early");
        line.push(byte[0] as char);
    }
    assert_eq!(daemon.stats().clients, 1);
    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_until("the daemon to notice the killed client", || daemon.stats().clients == 0);
    // Still serving.
    let reader = child("read", &dir, &url).wait_with_output().unwrap();
    assert!(reader.status.success());
    assert!(String::from_utf8_lossy(&reader.stdout).contains("CHILD rows=2000"));
}

#[test]
fn a_secure_containers_key_comes_from_the_daemon_after_the_client_proves_access() {
    let tmp = tempfile::tempdir().unwrap();
    let ring = Keyring::new(1, [9; 32]);
    let url = container(tmp.path(), 500, Some(SecureOptions::aes_gcm(&ring)));
    let dir = tmp.path().join("shared");
    // A daemon without the key: a client without one cannot read.
    let daemon = Daemon::start(DaemonConfig::new(&dir)).unwrap();
    let v = vfs(&dir);
    let err = attach(&v, &url, None).unwrap_err();
    assert!(err.to_string().contains("no key"), "{err}");
    drop(v);
    daemon.stop();
    let mut config = DaemonConfig::new(&dir);
    config.keys.insert(url.clone(), ring.clone());
    let _daemon = Daemon::start(config).unwrap();
    let v = vfs(&dir);
    attach(&v, &url, None).unwrap();
    assert_eq!(int(&connect(&v, "db.db"), "SELECT count(*) FROM t").unwrap(), 500);
    // The shared cache holds the blocks sealed.
    let blocks = std::fs::read(dir.join("blocks.bcv")).unwrap();
    assert!(!blocks.windows(12).any(|w| w == b"row 00000001"), "plaintext in the shared cache");
    // A client that cannot read the manifest gets no key.
    let v2 = vfs(&dir);
    let err = attach(&v2, tmp.path().join("elsewhere").to_str().unwrap(), None).unwrap_err();
    assert!(matches!(err, VfsError::Daemon { .. }), "{err}");
}
