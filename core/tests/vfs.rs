//! The block-cache VFS end to end on the local-directory store: SQLite reads and writes through `/ALIAS/DB`,
//! upload, poll by a second client, conflicts, the fixture written by CBS, the cache's behaviour.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{AttachOptions, BlockVfs, ContainerTools, UploadOptions, VfsConfig, VfsError};
use rusqlite::{Connection, OpenFlags};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh VFS name per test (SQLite's registry is process-wide).
fn vfs_name() -> String {
    format!("bcvtest{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn open_vfs(cache: &Path, cache_size: u64) -> BlockVfs {
    let mut config = VfsConfig::new(cache);
    config.name = vfs_name();
    config.cache_size = cache_size;
    BlockVfs::create(config).expect("create vfs")
}

fn connect(vfs: &BlockVfs, alias: &str, db: &str) -> Connection {
    Connection::open_with_flags_and_vfs(
        vfs.path(alias, db),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        vfs.name(),
    )
    .unwrap_or_else(|e| panic!("open through the vfs: {e}: {}", bcv_core::vfs::last_error()))
}

fn tools(dir: &Path) -> ContainerTools {
    let store = ContainerStore::open(dir.to_str().unwrap(), &StoreOptions::default()).unwrap();
    ContainerTools::new(store, 4)
}

/// A local SQLite file with `rows` rows in t(id, k, v) and an index on k.
fn make_db(path: &Path, rows: i64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT); CREATE INDEX t_k ON t(k);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO t VALUES (?1, ?2, ?3)").unwrap();
        for id in 1..=rows {
            ins.execute(rusqlite::params![id, (id * 7919) % 100003, format!("row-{id:08}-{}", "x".repeat(80))])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn figures(c: &Connection) -> (i64, i64, i64) {
    c.query_row("SELECT count(*), sum(k), sum(length(v)) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    bucket: PathBuf,
    root: PathBuf,
}

/// A container with block size `bs` holding main.db of `rows` rows.
fn setup(bs: u32, rows: i64) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let t = tools(&bucket);
    t.create(bs, 16, false).unwrap();
    let local = tmp.path().join("main.db");
    make_db(&local, rows);
    t.upload_file(&local, "main.db", &|_| {}).unwrap();
    Setup { root: tmp.path().to_path_buf(), _tmp: tmp, bucket }
}

fn attach(vfs: &BlockVfs, bucket: &Path) -> String {
    vfs.attach(
        bucket.to_str().unwrap(),
        &AttachOptions { alias: Some("c".into()), if_not_attached: false, ..AttachOptions::default() },
    )
    .unwrap()
}

#[test]
fn reads_an_uploaded_database_through_sqlite() {
    let s = setup(65536, 2000);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    let c = connect(&vfs, "c", "main.db");
    let expect = figures(&Connection::open(s.root.join("main.db")).unwrap());
    assert_eq!(figures(&c), expect);
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn opening_an_unknown_alias_or_path_fails_clearly() {
    let s = setup(65536, 10);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    let r = Connection::open_with_flags_and_vfs("/nope/main.db", OpenFlags::SQLITE_OPEN_READ_WRITE, vfs.name());
    assert!(r.is_err());
    assert!(bcv_core::vfs::last_error().contains("nope"), "{}", bcv_core::vfs::last_error());
    let r = Connection::open_with_flags_and_vfs("/c/missing.db", OpenFlags::SQLITE_OPEN_READ_WRITE, vfs.name());
    assert!(r.is_err(), "a missing database is not created without SQLITE_OPEN_CREATE");
}

fn write_upload_and_poll(journal_mode: &str) {
    let s = setup(65536, 3000);
    let writer = open_vfs(&s.root.join("cache-w"), 1 << 30);
    let reader = open_vfs(&s.root.join("cache-r"), 1 << 30);
    attach(&writer, &s.bucket);
    attach(&reader, &s.bucket);
    let rc = connect(&reader, "c", "main.db");
    let before = figures(&rc);

    let wc = connect(&writer, "c", "main.db");
    let mode: String = wc.query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| r.get(0)).unwrap();
    assert_eq!(mode, journal_mode.to_lowercase());
    wc.execute("UPDATE t SET v = v || '-upd' WHERE id BETWEEN 100 AND 300", []).unwrap();
    wc.execute("INSERT INTO t VALUES (100000, 1, 'new row')", []).unwrap();
    let after = figures(&wc);
    assert_ne!(before, after);

    // Nothing is visible to the reader before the upload, even after a poll.
    let report = reader.poll("c").unwrap();
    assert!(!report.manifest_changed);
    assert_eq!(figures(&rc), before);

    let up = writer.upload("c", &UploadOptions::default()).unwrap();
    assert_eq!(up.databases.len(), 1);
    assert_eq!(up.databases[0].0, "main.db");
    assert!(up.blocks_written >= 1);
    assert!(!writer.databases("c").unwrap()[0].has_local_changes);

    // The reader's open connection sees the new version after a poll.
    let report = reader.poll("c").unwrap();
    assert!(report.manifest_changed);
    assert_eq!(report.updated, vec!["main.db".to_string()]);
    assert_eq!(figures(&rc), after);
    let ok: String = rc.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");

    // And the uploaded container downloads to the same database.
    let out = s.root.join("download.db");
    tools(&s.bucket).download_file("main.db", &out, &|_| {}).unwrap();
    assert_eq!(figures(&Connection::open(&out).unwrap()), after);
}

#[test]
fn write_upload_poll_rollback_journal() {
    write_upload_and_poll("DELETE");
}

#[test]
fn write_upload_poll_wal() {
    write_upload_and_poll("WAL");
}

#[test]
fn a_second_vfs_on_the_same_cache_directory_is_refused() {
    let s = setup(65536, 10);
    let _vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    let mut config = VfsConfig::new(s.root.join("cache"));
    config.name = vfs_name();
    let err = BlockVfs::create(config).unwrap_err();
    assert!(matches!(err, VfsError::CacheBusy { .. }), "{err}");
    assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
}

#[test]
fn warm_restart_makes_no_request() {
    let s = setup(65536, 2000);
    let cache = s.root.join("cache");
    let expect;
    {
        let vfs = open_vfs(&cache, 1 << 30);
        attach(&vfs, &s.bucket);
        let c = connect(&vfs, "c", "main.db");
        expect = figures(&c);
    }
    let vfs = open_vfs(&cache, 1 << 30);
    assert_eq!(vfs.attached().len(), 1, "the container is re-attached from the cache index");
    let c = connect(&vfs, "c", "main.db");
    assert_eq!(figures(&c), expect);
    let meter = vfs.store("c").unwrap().meter().snapshot();
    assert_eq!(meter.total.requests, 0, "warm restart: {meter:?}");
}

#[test]
fn a_point_query_fetches_only_the_ranges_it_needs() {
    let s = setup(1 << 20, 20000);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    let c = connect(&vfs, "c", "main.db");
    let v: String = c.query_row("SELECT v FROM t WHERE k = ?1", [(777 * 7919) % 100003], |r| r.get(0)).unwrap();
    assert!(v.starts_with("row-00000777-"));
    let meter = vfs.store("c").unwrap().meter().snapshot();
    let size = std::fs::metadata(s.root.join("main.db")).unwrap().len();
    assert!(
        meter.total.bytes_down < size / 4,
        "a point query downloaded {} of a {size}-byte database",
        meter.total.bytes_down
    );
}

#[test]
fn conflicting_uploads_lose_nothing() {
    let s = setup(65536, 500);
    let a = open_vfs(&s.root.join("cache-a"), 1 << 30);
    let b = open_vfs(&s.root.join("cache-b"), 1 << 30);
    attach(&a, &s.bucket);
    attach(&b, &s.bucket);
    let ca = connect(&a, "c", "main.db");
    let cb = connect(&b, "c", "main.db");
    ca.execute("UPDATE t SET k = -1 WHERE id = 1", []).unwrap();
    cb.execute("UPDATE t SET k = -2 WHERE id = 2", []).unwrap();
    a.upload("c", &UploadOptions::default()).unwrap();
    let err = b.upload("c", &UploadOptions::default()).unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("main.db"), "{err}");
    // b's change is still there locally, and can be dropped to follow a.
    let k: i64 = cb.query_row("SELECT k FROM t WHERE id = 2", [], |r| r.get(0)).unwrap();
    assert_eq!(k, -2);
    drop(cb);
    assert_eq!(b.revert("c", None).unwrap(), vec!["main.db".to_string()]);
    b.poll("c").unwrap();
    let cb = connect(&b, "c", "main.db");
    let (k1, k2): (i64, i64) = cb
        .query_row("SELECT (SELECT k FROM t WHERE id = 1), (SELECT k FROM t WHERE id = 2)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((k1, k2), (-1, 2 * 7919));
}

#[test]
fn uploads_of_different_databases_rebase_onto_each_other() {
    let s = setup(65536, 200);
    tools(&s.bucket).copy("main.db", "other.db").unwrap();
    let a = open_vfs(&s.root.join("cache-a"), 1 << 30);
    let b = open_vfs(&s.root.join("cache-b"), 1 << 30);
    attach(&a, &s.bucket);
    attach(&b, &s.bucket);
    connect(&a, "c", "main.db").execute("DELETE FROM t WHERE id > 100", []).unwrap();
    connect(&b, "c", "other.db").execute("DELETE FROM t WHERE id <= 100", []).unwrap();
    a.upload("c", &UploadOptions::default()).unwrap();
    let report = b.upload("c", &UploadOptions::default()).unwrap();
    assert_eq!(report.rebases, 1);
    let list = tools(&s.bucket).list().unwrap();
    assert_eq!(list.len(), 2);
    let main = tools(&s.bucket);
    let out = s.root.join("m.db");
    main.download_file("main.db", &out, &|_| {}).unwrap();
    assert_eq!(figures(&Connection::open(&out).unwrap()).0, 100);
    main.download_file("other.db", &out, &|_| {}).unwrap();
    assert_eq!(figures(&Connection::open(&out).unwrap()).0, 100);
}

#[test]
fn new_databases_are_created_locally_and_uploaded() {
    let s = setup(65536, 10);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    {
        let c = connect(&vfs, "c", "fresh.db");
        c.execute_batch("CREATE TABLE x(a); INSERT INTO x VALUES (42);").unwrap();
    }
    vfs.upload("c", &UploadOptions::default()).unwrap();
    let names: Vec<String> = tools(&s.bucket).list().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["main.db".to_string(), "fresh.db".to_string()]);
    let other = open_vfs(&s.root.join("cache2"), 1 << 30);
    attach(&other, &s.bucket);
    let a: i64 = connect(&other, "c", "fresh.db").query_row("SELECT a FROM x", [], |r| r.get(0)).unwrap();
    assert_eq!(a, 42);
}

#[test]
fn a_small_cache_evicts_clean_blocks_and_still_reads_correctly() {
    let s = setup(65536, 5000);
    // Room for 4 blocks of a ~40-block database.
    let vfs = open_vfs(&s.root.join("cache"), 4 * 65536);
    attach(&vfs, &s.bucket);
    let c = connect(&vfs, "c", "main.db");
    let expect = figures(&Connection::open(s.root.join("main.db")).unwrap());
    assert_eq!(figures(&c), expect);
    assert_eq!(figures(&c), expect);
    let usage = vfs.cache_usage();
    assert!(usage.clean_slots <= 4, "{usage:?}");
    assert!(vfs.cache_stats().evictions > 0);
}

#[test]
fn copy_delete_and_cleanup() {
    let s = setup(65536, 300);
    let t = tools(&s.bucket);
    t.copy("main.db", "copy.db").unwrap();
    let list = t.list().unwrap();
    assert_eq!(list[1].parent, list[0].id);
    let objects_before = std::fs::read_dir(&s.bucket).unwrap().count();
    t.delete("main.db").unwrap();
    // copy.db still reads the same (its blocks stay referenced).
    let out = s.root.join("copy.db");
    t.download_file("copy.db", &out, &|_| {}).unwrap();
    assert_eq!(figures(&Connection::open(&out).unwrap()).0, 300);
    let r = t.cleanup(std::time::Duration::ZERO, true).unwrap();
    assert_eq!(r.deleted, 0, "no block became garbage: copy.db references them all");
    assert_eq!(std::fs::read_dir(&s.bucket).unwrap().count(), objects_before);
    t.delete("copy.db").unwrap();
    let r = t.cleanup(std::time::Duration::ZERO, true).unwrap();
    assert!(r.deleted > 0);
    let left: Vec<String> =
        std::fs::read_dir(&s.bucket).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, vec!["manifest.bcv".to_string()]);
}

#[test]
fn the_cbs_fixture_reproduces_its_figures_through_the_vfs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cbs-v4-a");
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "EXPECTED.md" {
            std::fs::copy(e.path(), bucket.join(e.file_name())).unwrap();
        }
    }
    let vfs = open_vfs(&tmp.path().join("cache"), 1 << 30);
    attach(&vfs, &bucket);
    let main = connect(&vfs, "c", "main.db");
    assert_eq!(figures(&main), (20000, 1000005049, 1860804));
    let copy = connect(&vfs, "c", "copy.db");
    assert_eq!(figures(&copy), (19000, 949976643, 1767804));
    for c in [&main, &copy] {
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }
    // A write and upload keeps the container readable by the format reader (and so by CBS).
    main.execute("UPDATE t SET v = 'changed' WHERE id = 1", []).unwrap();
    drop(main);
    drop(copy);
    vfs.upload("c", &UploadOptions::default()).unwrap();
    let out = tmp.path().join("main-after.db");
    tools(&bucket).download_file("main.db", &out, &|_| {}).unwrap();
    let c = Connection::open(&out).unwrap();
    let v: String = c.query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(v, "changed");
    let copy_out = tmp.path().join("copy-after.db");
    tools(&bucket).download_file("copy.db", &copy_out, &|_| {}).unwrap();
    assert_eq!(figures(&Connection::open(&copy_out).unwrap()), (19000, 949976643, 1767804));
}

#[test]
fn prefetch_fills_the_cache_so_reads_make_no_request() {
    let s = setup(65536, 3000);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    let calls = std::sync::atomic::AtomicU64::new(0);
    let report = vfs
        .prefetch("c", "main.db", &|p| {
            calls.fetch_add(1, Ordering::Relaxed);
            assert!(p.done <= p.total);
        })
        .unwrap();
    assert!(report.blocks > 1);
    assert_eq!(calls.load(Ordering::Relaxed), report.blocks);
    assert_eq!(report.bytes_fetched, report.blocks * 65536);
    let store = vfs.store("c").unwrap();
    store.meter().reset();
    let c = connect(&vfs, "c", "main.db");
    assert_eq!(figures(&c), figures(&Connection::open(s.root.join("main.db")).unwrap()));
    assert_eq!(store.meter().snapshot().total.requests, 0);
    let again = vfs.prefetch("c", "main.db", &|_| {}).unwrap();
    assert_eq!(again.bytes_fetched, 0);
}

fn faulty(
    bucket: &Path,
    plan: bcv_core::vfs::store::FaultPlan,
) -> (ContainerStore, std::sync::Arc<bcv_core::vfs::store::FaultStore>) {
    use bcv_core::vfs::store::{FaultStore, LocalCas};
    let local = std::sync::Arc::new(LocalCas::new(bucket).unwrap());
    let faults = std::sync::Arc::new(FaultStore::new(local, plan));
    let options =
        StoreOptions { retry_base_delay: std::time::Duration::from_millis(1), retries: 8, ..Default::default() };
    (ContainerStore::from_object_store(faults.clone(), "faulty", &options), faults)
}

#[test]
fn store_faults_during_reads_are_retried_or_reported_never_corrupt() {
    use bcv_core::vfs::store::{FaultAction, FaultPlan, FaultRule, OpKind};
    let s = setup(65536, 3000);
    let expect = figures(&Connection::open(s.root.join("main.db")).unwrap());
    // Transient 503s and short reads on a third of the block reads: retried, results exact.
    let plan = FaultPlan::new()
        .seed(7)
        .rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::RangedGet).probability(0.1))
        .rule(FaultRule::new(FaultAction::ShortRead).op(OpKind::RangedGet).probability(0.1));
    let (store, faults) = faulty(&s.bucket, plan);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    vfs.attach_store(store, "c").unwrap();
    let c = Connection::open_with_flags_and_vfs("/c/main.db", OpenFlags::SQLITE_OPEN_READ_WRITE, vfs.name())
        .unwrap_or_else(|e| {
            panic!("{e}: {} {:?}", bcv_core::vfs::last_error(), vfs.store("c").unwrap().meter().snapshot())
        });
    assert_eq!(figures(&c), expect);
    assert!(faults.injected() > 0);
    assert!(vfs.store("c").unwrap().meter().snapshot().total.retries > 0);
    drop(c);
    drop(vfs);

    // A store that keeps failing: the query fails with an I/O error that names the block, and nothing bad is
    // cached: once the store recovers, the same cache reads correctly.
    let plan = FaultPlan::new().rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::RangedGet));
    let (store, faults) = faulty(&s.bucket, plan);
    let vfs = open_vfs(&s.root.join("cache2"), 1 << 30);
    vfs.attach_store(store, "c").unwrap();
    let opened = Connection::open_with_flags_and_vfs("/c/main.db", OpenFlags::SQLITE_OPEN_READ_WRITE, vfs.name());
    let err = match &opened {
        Ok(c) => c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap_err(),
        Err(e) => rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(1), Some(e.to_string())),
    };
    assert!(err.to_string().contains("I/O") || err.to_string().contains("disk"), "{err}");
    let why = bcv_core::vfs::last_error();
    assert!(why.contains(".bcv") && why.contains("faulty"), "{why}");
    drop(opened);
    faults.set_plan(FaultPlan::new());
    assert_eq!(figures(&connect(&vfs, "c", "main.db")), expect);
}

#[test]
fn an_upload_that_fails_keeps_local_changes_and_can_be_retried() {
    use bcv_core::vfs::store::{FaultAction, FaultPlan, FaultRule, OpKind};
    let s = setup(65536, 500);
    let (store, faults) = faulty(&s.bucket, FaultPlan::new());
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    vfs.attach_store(store, "c").unwrap();
    let c = connect(&vfs, "c", "main.db");
    c.execute("DELETE FROM t WHERE id > 100", []).unwrap();
    faults.set_plan(
        FaultPlan::new()
            .rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::ConditionalPut).object("manifest.bcv")),
    );
    let err = vfs.upload("c", &UploadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("manifest.bcv"), "{err}");
    assert!(vfs.databases("c").unwrap()[0].has_local_changes);
    assert_eq!(figures(&c).0, 100);
    faults.set_plan(FaultPlan::new());
    vfs.upload("c", &UploadOptions::default()).unwrap();
    let out = s.root.join("after.db");
    tools(&s.bucket).download_file("main.db", &out, &|_| {}).unwrap();
    assert_eq!(figures(&Connection::open(&out).unwrap()).0, 100);
}

#[test]
fn pragmas_poll_and_upload_from_inside_a_connection() {
    let s = setup(65536, 300);
    let writer = open_vfs(&s.root.join("cache-w"), 1 << 30);
    let reader = open_vfs(&s.root.join("cache-r"), 1 << 30);
    attach(&writer, &s.bucket);
    attach(&reader, &s.bucket);
    let wc = connect(&writer, "c", "main.db");
    let rc = connect(&reader, "c", "main.db");
    wc.execute("DELETE FROM t WHERE id > 10", []).unwrap();
    let up: String = wc.query_row("PRAGMA bcv_upload", [], |r| r.get(0)).unwrap();
    let up: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["databases"][0][0], "main.db", "{up}");
    let polled: String = rc.query_row("PRAGMA bcv_poll", [], |r| r.get(0)).unwrap();
    let polled: serde_json::Value = serde_json::from_str(&polled).unwrap();
    assert_eq!(polled["updated"][0], "main.db", "{polled}");
    assert_eq!(figures(&rc).0, 10);
}

#[test]
fn prefetch_job_reports_progress_and_finishes() {
    use bcv_core::vfs::{JobOutcome, JobStatus};
    let s = setup(65536, 3000);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    let job = vfs.prefetch_start("c", "main.db").unwrap();
    let outcome = job.wait(None).unwrap().expect("no timeout was given");
    let JobOutcome::Prefetch(report) = outcome else { panic!("a prefetch job gave {outcome:?}") };
    assert!(report.blocks > 1);
    assert_eq!(job.status(), JobStatus::Done);
    let progress = job.progress();
    assert_eq!((progress.done, progress.total), (report.blocks * 65536, report.blocks * 65536));
    // Waiting again gives the same outcome.
    assert_eq!(job.wait(Some(std::time::Duration::ZERO)).unwrap(), Some(JobOutcome::Prefetch(report)));
    let store = vfs.store("c").unwrap();
    store.meter().reset();
    let c = connect(&vfs, "c", "main.db");
    assert_eq!(figures(&c), figures(&Connection::open(s.root.join("main.db")).unwrap()));
    assert_eq!(store.meter().snapshot().total.requests, 0);
}

#[test]
fn closing_a_job_or_its_vfs_cancels_it_and_closed_vfs_refuses_calls() {
    use bcv_core::handle::NodeState;
    use bcv_core::vfs::JobStatus;
    use bcv_core::vfs::store::{FaultAction, FaultPlan, FaultRule, OpKind};
    use std::time::Duration;
    let s = setup(65536, 3000);
    // Every block read takes 50 ms and one request runs at a time: a prefetch of ~12 blocks takes long enough
    // to be cancelled in the middle.
    let slow =
        || FaultPlan::new().rule(FaultRule::new(FaultAction::Delay(Duration::from_millis(50))).op(OpKind::RangedGet));
    let mut config = VfsConfig::new(s.root.join("cache"));
    config.name = vfs_name();
    config.nrequest = 1;
    let vfs = BlockVfs::create(config).unwrap();
    let (store, _faults) = faulty(&s.bucket, slow());
    vfs.attach_store(store, "c").unwrap();

    let job = vfs.prefetch_start("c", "main.db").unwrap();
    while job.progress().done == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    job.cancel();
    let err = job.wait(None).unwrap_err();
    assert!(matches!(err, VfsError::Closed(_)), "{err}");
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert!(job.progress().done < job.progress().total, "cancelled before the end");
    job.node().close_and_wait_blocking(Duration::from_secs(10)).unwrap();

    // Closing the VFS cascades to the container and the job; later calls are refused.
    let job = vfs.prefetch_start("c", "main.db").unwrap();
    vfs.node().close();
    assert!(matches!(job.wait(Some(Duration::from_secs(10))), Err(VfsError::Closed(_))));
    job.node().close_and_wait_blocking(Duration::from_secs(10)).unwrap();
    assert_eq!(job.node().state(), NodeState::Closed);
    assert!(matches!(vfs.poll("c"), Err(VfsError::Closed(_))));
    assert!(matches!(vfs.prefetch_start("c", "main.db"), Err(VfsError::Closed(_))));
}

#[test]
fn upload_job_uploads_and_a_released_job_runs_to_the_end() {
    use bcv_core::vfs::JobOutcome;
    let s = setup(65536, 3000);
    let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
    attach(&vfs, &s.bucket);
    let c = connect(&vfs, "c", "main.db");
    c.execute("UPDATE t SET v = 'job' WHERE id <= 10", []).unwrap();
    drop(c);
    let job = vfs.upload_start("c", &UploadOptions::default()).unwrap();
    let Some(JobOutcome::Upload(report)) = job.wait(None).unwrap() else { panic!("not an upload outcome") };
    assert_eq!(report.databases.len(), 1);
    assert!(report.blocks_written >= 1);
    // A job whose handle is dropped at once still finishes: the prefetch fills the cache.
    drop(vfs.prefetch_start("c", "main.db").unwrap());
    let reader = open_vfs(&s.root.join("cache2"), 1 << 30);
    attach(&reader, &s.bucket);
    let n: i64 =
        connect(&reader, "c", "main.db").query_row("SELECT count(*) FROM t WHERE v = 'job'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 10);
}

#[test]
fn upload_during_an_open_write_transaction_is_busy_and_uploads_nothing_uncommitted() {
    for journal in ["DELETE", "WAL"] {
        let s = setup(65536, 3000);
        let vfs = open_vfs(&s.root.join("cache"), 1 << 30);
        attach(&vfs, &s.bucket);
        let c = connect(&vfs, "c", "main.db");
        c.execute_batch(&format!("PRAGMA journal_mode={journal}")).unwrap();
        c.execute("UPDATE t SET v = 'committed' WHERE id = 1", []).unwrap();
        c.execute_batch("BEGIN; UPDATE t SET v = 'uncommitted' WHERE id <= 3000;").unwrap();
        let err = vfs.upload("c", &UploadOptions::default()).unwrap_err();
        assert!(matches!(err, VfsError::Busy { .. }), "{journal}: {err}");
        c.execute_batch("ROLLBACK").unwrap();
        vfs.upload("c", &UploadOptions::default()).unwrap();
        let out = s.root.join("after.db");
        tools(&s.bucket).download_file("main.db", &out, &|_| {}).unwrap();
        let plain = Connection::open(&out).unwrap();
        let v: String = plain.query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "committed", "{journal}");
        let n: i64 = plain.query_row("SELECT count(*) FROM t WHERE v = 'uncommitted'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "{journal}");
    }
}
