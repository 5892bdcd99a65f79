//! The block-cache VFS against real object-store servers started by `scripts/servers.sh`: Azurite (Azure Blob)
//! and moto (S3). Each test owns a whole container (`BCV_TEST_AZURE_VFS_URL`, `BCV_TEST_S3_VFS_URL`). Without
//! the variables the tests pass only when `BCV_REQUIRE_SERVERS` is not 1 (they then check nothing, and say so).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{AttachOptions, BlockVfs, ContainerTools, UploadOptions, VfsConfig};
use rusqlite::{Connection, OpenFlags};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("BCV_REQUIRE_SERVERS").as_deref(),
                Ok("1"),
                "{var} is not set but BCV_REQUIRE_SERVERS=1: start the servers with scripts/servers.sh"
            );
            eprintln!("{var} not set: this test checked nothing (run it through scripts/servers.sh)");
            None
        }
    }
}

fn open_vfs(cache: &Path) -> BlockVfs {
    let mut config = VfsConfig::new(cache);
    config.name = format!("bcvsrv{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    BlockVfs::create(config).unwrap()
}

fn connect(vfs: &BlockVfs, db: &str) -> Connection {
    Connection::open_with_flags_and_vfs(
        vfs.path("c", db),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        vfs.name(),
    )
    .unwrap()
}

fn count(c: &Connection) -> i64 {
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
}

fn full_cycle(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContainerStore::open(url, &StoreOptions::default()).unwrap();
    let tools = ContainerTools::new(store, 8);
    let _ = tools.destroy();
    tools.create(65536, 16, false).unwrap();

    let local = tmp.path().join("main.db");
    {
        let c = Connection::open(&local).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t SELECT i, printf('%090d', i) FROM n;",
        )
        .unwrap();
    }
    tools.upload_file(&local, "main.db", &|_| {}).unwrap();

    let writer = open_vfs(&tmp.path().join("cache-w"));
    let reader = open_vfs(&tmp.path().join("cache-r"));
    let attach = AttachOptions { alias: Some("c".into()), if_not_attached: false, ..AttachOptions::default() };
    writer.attach(url, &attach).unwrap();
    reader.attach(url, &attach).unwrap();
    let rc = connect(&reader, "main.db");
    assert_eq!(count(&rc), 3000);

    let wc = connect(&writer, "main.db");
    wc.execute("DELETE FROM t WHERE id > 2000", []).unwrap();
    let report = writer.upload("c", &UploadOptions::default()).unwrap();
    assert_eq!(report.databases, vec![("main.db".to_string(), 2)]);

    let poll = reader.poll("c").unwrap();
    assert_eq!(poll.updated, vec!["main.db".to_string()]);
    assert_eq!(count(&rc), 2000);

    tools.copy("main.db", "copy.db").unwrap();
    let names: Vec<String> = tools.list().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["main.db".to_string(), "copy.db".to_string()]);
    let out = tmp.path().join("copy.db");
    tools.download_file("copy.db", &out, &|_| {}).unwrap();
    assert_eq!(count(&Connection::open(&out).unwrap()), 2000);
    let cleanup = tools.cleanup(std::time::Duration::ZERO, true).unwrap();
    assert!(cleanup.deleted >= 1, "the upload replaced blocks: {cleanup:?}");
    // Still readable after cleanup, cold, through a third cache.
    let third = open_vfs(&tmp.path().join("cache-3"));
    third.attach(url, &attach).unwrap();
    assert_eq!(count(&connect(&third, "main.db")), 2000);
    let meter = third.store("c").unwrap().meter().snapshot();
    assert!(meter.total.requests > 0);
}

#[test]
fn vfs_on_azurite() {
    if let Some(url) = server_url("BCV_TEST_AZURE_VFS_URL") {
        full_cycle(&url);
    }
}

#[test]
fn vfs_on_moto_s3() {
    if let Some(url) = server_url("BCV_TEST_S3_VFS_URL") {
        full_cycle(&url);
    }
}
