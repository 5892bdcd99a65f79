//! `Connection` (the SQL API the language packages use) and the virtual tables `bcv_container`,
//! `bcv_database`, `bcv_block` and `bcv_kv` (transactional against the container's copy).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bcv_core::handle::NodeState;
use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{
    AttachOptions, BlockVfs, ConnectOptions, Connection, ContainerTools, UploadOptions, Value, VfsConfig, VfsError,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn vfs(cache: &Path) -> BlockVfs {
    let mut config = VfsConfig::new(cache);
    config.name = format!("bcvsql{}", NEXT.fetch_add(1, Ordering::Relaxed));
    BlockVfs::create(config).expect("create vfs")
}

/// An empty container in `dir/bucket`, attached as `c` to a fresh VFS on `dir/cache{n}`.
fn attached(dir: &Path, n: u32) -> BlockVfs {
    let bucket = dir.join("bucket");
    if !bucket.join("manifest.bcv").exists() {
        let store = ContainerStore::open(bucket.to_str().unwrap(), &StoreOptions::default()).unwrap();
        ContainerTools::new(store, 4).create(65536, 16, false).unwrap();
    }
    let v = vfs(&dir.join(format!("cache{n}")));
    v.attach(
        bucket.to_str().unwrap(),
        &AttachOptions { alias: Some("c".into()), if_not_attached: false, ..AttachOptions::default() },
    )
    .unwrap();
    v
}

fn connect(v: &BlockVfs, db: &str) -> Connection {
    Connection::open(v, &format!("/c/{db}"), &ConnectOptions::default()).unwrap()
}

fn one(c: &Connection, sql: &str) -> Value {
    c.query(sql, &[]).unwrap().into_iter().next().and_then(|r| r.into_iter().next()).unwrap_or(Value::Null)
}

#[test]
fn connection_binds_and_reads_every_type_and_reports_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let v = attached(tmp.path(), 0);
    let c = connect(&v, "types.db");
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n)").unwrap();
    let values = vec![
        Value::Integer(i64::MIN),
        Value::Real(2.5),
        Value::Text("héllo\u{0}tail".into()),
        Value::Blob(vec![0, 255, 7]),
        Value::Null,
    ];
    assert_eq!(c.execute("INSERT INTO t(i, r, s, b, n) VALUES (?, ?, ?, ?, ?)", &values).unwrap(), 1);
    assert_eq!(c.last_insert_rowid(), 1);
    let rows = c.query("SELECT i, r, s, b, n FROM t", &[]).unwrap();
    assert_eq!(rows, vec![values]);
    let st = c.prepare("SELECT id AS ident, s FROM t WHERE id = :id").unwrap();
    assert_eq!(st.columns().unwrap(), vec!["ident".to_string(), "s".to_string()]);
    assert_eq!(st.column_decltypes().unwrap(), vec![Some("INTEGER".to_string()), Some("TEXT".to_string())]);
    assert_eq!(st.parameter_count().unwrap(), 1);
    assert_eq!(st.parameter_name(1).unwrap().as_deref(), Some(":id"));
    assert!(st.is_readonly().unwrap());
    assert!(st.bind(&[]).is_err(), "a missing parameter is an error, not NULL");
    st.bind(&[Value::Integer(1)]).unwrap();
    assert_eq!(st.step().unwrap().unwrap()[0], Value::Integer(1));
    assert_eq!(st.step().unwrap(), None);
    // Only one statement per prepare; comments and semicolons after it are fine.
    assert!(c.prepare("SELECT 1; SELECT 2").is_err());
    c.prepare("SELECT 1; -- done\n").unwrap();
    c.execute_batch("BEGIN").unwrap();
    assert!(c.in_transaction());
    c.execute_batch("ROLLBACK").unwrap();
    assert!(!c.in_transaction());
    // SQL errors carry SQLite's message.
    let err = c.execute("INSERT INTO nope VALUES (1)", &[]).unwrap_err();
    assert!(err.to_string().contains("no such table: nope"), "{err}");
}

#[test]
fn closing_the_connection_or_the_vfs_finalizes_statements_and_refuses_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let v = attached(tmp.path(), 0);
    let c = connect(&v, "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)").unwrap();
    let st = c.prepare("SELECT x FROM t").unwrap();
    assert!(st.step().unwrap().is_some());
    c.close();
    assert!(!c.is_open());
    assert!(matches!(st.step(), Err(VfsError::Closed(_))));
    assert!(matches!(c.query("SELECT 1", &[]), Err(VfsError::Closed(_))));
    drop(st);

    // Closing the VFS cascades to its connections.
    let c = connect(&v, "a.db");
    let st = c.prepare("SELECT count(*) FROM t").unwrap();
    v.node().close();
    c.node().close_and_wait_blocking(Duration::from_secs(10)).unwrap();
    assert_eq!(c.node().state(), NodeState::Closed);
    assert!(!c.is_open());
    assert!(matches!(st.step(), Err(VfsError::Closed(_))));
    assert!(Connection::open(&v, "/c/a.db", &ConnectOptions::default()).is_err());
}

#[test]
fn releasing_handles_in_any_order_is_safe_and_closes_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let v = attached(tmp.path(), 0);
    let c = connect(&v, "a.db");
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
    let st = c.prepare("SELECT x FROM t").unwrap();
    // The connection goes first, its statement after: the database closes on the reaper once released.
    drop(c);
    let _ = st.step();
    drop(st);
    v.runtime().reaper_flush().unwrap();
    // The database is closed, so the container has no open handle and can be detached after an upload.
    v.upload("c", &UploadOptions::default()).unwrap();
    v.detach("c").unwrap();
}

#[test]
fn status_tables_describe_containers_databases_and_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let v = attached(tmp.path(), 0);
    let c = connect(&v, "main.db");
    c.execute_batch(
        "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
         INSERT INTO t SELECT zeroblob(1000) FROM n",
    )
    .unwrap();
    let row = c.query("SELECT container, database, id, state, ndirty > 0, nblock FROM bcv_database", &[]).unwrap();
    assert_eq!(row.len(), 1);
    assert_eq!(row[0][0], Value::Text("c".into()));
    assert_eq!(row[0][1], Value::Text("main.db".into()));
    assert_eq!(row[0][2], Value::Integer(0));
    assert_eq!(row[0][3], Value::Text("local".into()));
    assert_eq!(row[0][4], Value::Integer(1));
    let Value::Integer(nblock) = row[0][5] else { panic!("nblock {:?}", row[0][5]) };
    assert!(nblock >= 3, "about 200 KB in 64 KiB blocks: {nblock}");
    v.upload("c", &UploadOptions::default()).unwrap();
    let row = c.query("SELECT id > 0, version, state, ndirty, ncache FROM bcv_database", &[]).unwrap();
    assert_eq!(row[0][..4], [Value::Integer(1), Value::Integer(1), Value::Text(String::new()), Value::Integer(0)]);
    assert_eq!(row[0][4], Value::Integer(nblock), "every uploaded block is still cached");
    let blocks = c.query("SELECT blockno, length(blockid), cache, dirty FROM bcv_block ORDER BY blockno", &[]).unwrap();
    assert_eq!(blocks.len() as i64, nblock);
    assert!(
        blocks.iter().enumerate().all(
            |(i, b)| b == &vec![Value::Integer(i as i64), Value::Integer(32), Value::Integer(1), Value::Integer(0)]
        )
    );
    let container =
        c.query("SELECT name, block_size, name_bytes, ndatabase, etag IS NOT NULL FROM bcv_container", &[]).unwrap();
    assert_eq!(
        container,
        vec![vec![
            Value::Text("c".into()),
            Value::Integer(65536),
            Value::Integer(16),
            Value::Integer(1),
            Value::Integer(1)
        ]]
    );
    // A second client sees the uploaded database with nothing cached.
    let reader = attached(tmp.path(), 1);
    let r = connect(&reader, "main.db");
    // Opening read page 1 only: one block of the database is cached, the rest are not.
    assert_eq!(one(&r, "SELECT ncache FROM bcv_database WHERE database = 'main.db'"), Value::Integer(1));
    assert_eq!(one(&r, "SELECT sum(cache) FROM bcv_block"), Value::Integer(1));
    assert!(r.execute("DELETE FROM bcv_block", &[]).is_err(), "status tables are read-only");
}

#[test]
fn bcv_kv_is_transactional_against_the_container_and_reports_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = attached(tmp.path(), 0);
    let b = attached(tmp.path(), 1);
    let ca = connect(&a, "x.db");
    let cb = connect(&b, "x.db");
    assert_eq!(one(&ca, "SELECT count(*) FROM bcv_kv"), Value::Integer(0));
    ca.execute("INSERT INTO bcv_kv(name, value) VALUES ('owner', 'a')", &[]).unwrap();
    // The other client sees it at once: the object is in the container.
    assert_eq!(one(&cb, "SELECT value FROM bcv_kv WHERE name = 'owner'"), Value::Text("a".into()));
    assert!(tmp.path().join("bucket/bcv_kv.bcv").exists());

    // Both read in a transaction; a commits first; b's commit fails and changes nothing.
    ca.execute_batch("BEGIN").unwrap();
    cb.execute_batch("BEGIN").unwrap();
    assert_eq!(one(&ca, "SELECT value FROM bcv_kv WHERE name = 'owner'"), Value::Text("a".into()));
    assert_eq!(one(&cb, "SELECT value FROM bcv_kv WHERE name = 'owner'"), Value::Text("a".into()));
    ca.execute("UPDATE bcv_kv SET value = 'a2' WHERE name = 'owner'", &[]).unwrap();
    ca.execute_batch("COMMIT").unwrap();
    cb.execute("UPDATE bcv_kv SET value = 'b' WHERE name = 'owner'", &[]).unwrap();
    let err = cb.execute_batch("COMMIT").unwrap_err();
    assert!(err.to_string().contains("changed by another client"), "{err}");
    let VfsError::Sqlite { source, .. } = &err else { panic!("{err:?}") };
    assert_eq!(source.code, 517, "SQLITE_BUSY_SNAPSHOT");
    if cb.in_transaction() {
        cb.execute_batch("ROLLBACK").unwrap();
    }
    assert_eq!(one(&ca, "SELECT value FROM bcv_kv WHERE name = 'owner'"), Value::Text("a2".into()));
    // Retrying from a fresh read succeeds.
    cb.execute("UPDATE bcv_kv SET value = 'b' WHERE name = 'owner'", &[]).unwrap();
    assert_eq!(one(&ca, "SELECT value FROM bcv_kv WHERE name = 'owner'"), Value::Text("b".into()));

    // A rolled-back transaction writes nothing; values keep their types; names are unique keys.
    ca.execute_batch(
        "BEGIN; INSERT INTO bcv_kv VALUES ('n', 42); INSERT INTO bcv_kv VALUES ('blob', x'00ff'); ROLLBACK",
    )
    .unwrap();
    assert_eq!(one(&cb, "SELECT count(*) FROM bcv_kv"), Value::Integer(1));
    ca.execute_batch("INSERT INTO bcv_kv VALUES ('n', 42); INSERT INTO bcv_kv VALUES ('n', 43.5)").unwrap();
    assert_eq!(cb.query("SELECT value FROM bcv_kv WHERE name = 'n'", &[]).unwrap(), vec![vec![Value::Real(43.5)]]);
    ca.execute("DELETE FROM bcv_kv WHERE name = 'owner'", &[]).unwrap();
    assert_eq!(one(&cb, "SELECT group_concat(name) FROM bcv_kv"), Value::Text("n".into()));
}

#[test]
fn bcv_kv_reads_the_object_cbs_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cbs-v4-a");
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "EXPECTED.md" {
            std::fs::copy(entry.path(), bucket.join(entry.file_name())).unwrap();
        }
    }
    let v = attached(tmp.path(), 0);
    let c = connect(&v, "kvtest.db");
    // EXPECTED.md: the fixture's kv holds one row, owner = fixture-a.
    let rows = c.query("SELECT name || '|' || value FROM bcv_kv ORDER BY rowid", &[]).unwrap();
    assert_eq!(rows, vec![vec![Value::Text("owner|fixture-a".into())]]);
    // Writing keeps it readable as CBS's format: a plain SQLite image with the kv table.
    c.execute("INSERT INTO bcv_kv VALUES ('writer', 'bcv')", &[]).unwrap();
    let image = std::fs::read(bucket.join("bcv_kv.bcv")).unwrap();
    assert_eq!(&image[..16], b"SQLite format 3\0");
    let copy = tmp.path().join("kv-copy.db");
    std::fs::write(&copy, &image).unwrap();
    let plain = rusqlite::Connection::open(&copy).unwrap();
    let rows: Vec<String> = plain
        .prepare("SELECT k || '|' || v FROM kv ORDER BY i")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec!["owner|fixture-a".to_string(), "writer|bcv".to_string()]);
}

/// Regression: an upload turns dirty blocks into clean ones in two steps (cache slots, then the database's
/// block list). A read in between used to find neither (zeros: "file is not a database") or the old block.
/// Here another thread reads all the time while rounds of writes are uploaded; every read must succeed and
/// see a committed state.
#[test]
fn reads_overlapping_uploads_see_committed_states_only() {
    let tmp = tempfile::tempdir().unwrap();
    let v = attached(tmp.path(), 0);
    let w = connect(&v, "race.db");
    w.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rounds = 40i64;
    let per_round = 100i64;
    let reads = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let r = connect(&v, "race.db");
            let (mut reads, mut last) = (0u64, 0i64);
            while !stop.load(Ordering::Relaxed) {
                let Value::Integer(n) = one(&r, "SELECT count(*) FROM t") else { panic!("count(*) is not an integer") };
                assert!(n >= last && n % per_round == 0, "read {n} rows after {last}");
                last = n;
                reads += 1;
            }
            reads
        });
        for round in 0..rounds {
            let start = round * per_round;
            w.execute_batch(&format!(
                "BEGIN; WITH RECURSIVE n(i) AS (SELECT {start} + 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
                 INSERT INTO t SELECT i, printf('%0300d', i) FROM n; COMMIT;",
                start + per_round
            ))
            .unwrap();
            v.upload("c", &UploadOptions::default()).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader failed")
    });
    assert!(reads > 0);
    assert_eq!(one(&w, "SELECT count(*) FROM t"), Value::Integer(rounds * per_round));
}
