//! Crash safety: a writer process is killed with SIGKILL at random points while it writes and uploads. After
//! each kill the cache directory and the container reopen consistent, and no acknowledged upload is lost.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{AttachOptions, BlockVfs, ContainerTools, UploadOptions, VfsConfig};
use rusqlite::{Connection, OpenFlags};

fn open_vfs(cache: &Path, name: &str) -> BlockVfs {
    let mut config = VfsConfig::new(cache);
    config.name = name.to_string();
    BlockVfs::create(config).unwrap()
}

fn connect(vfs: &BlockVfs) -> Connection {
    Connection::open_with_flags_and_vfs(vfs.path("c", "main.db"), OpenFlags::SQLITE_OPEN_READ_WRITE, vfs.name())
        .unwrap()
}

/// The number acknowledged on a child's output line (libtest may print its own text before it on that line).
fn ack(line: &str) -> Option<&str> {
    line.find("ACK ").map(|i| &line[i + 4..])
}

/// The child: insert a row, upload, acknowledge on stdout, forever (until killed).
#[test]
fn crash_child() {
    let (Ok(cache), Ok(bucket)) = (std::env::var("BCV_CRASH_CACHE"), std::env::var("BCV_CRASH_BUCKET")) else {
        return;
    };
    let vfs = open_vfs(Path::new(&cache), "bcvcrashchild");
    vfs.attach(&bucket, &AttachOptions { alias: Some("c".into()), if_not_attached: true, ..AttachOptions::default() })
        .unwrap();
    let c = connect(&vfs);
    let mut next: i64 = c.query_row("SELECT coalesce(max(id), 0) + 1 FROM t", [], |r| r.get(0)).unwrap();
    loop {
        c.execute("INSERT INTO t VALUES (?1, randomblob(3000))", [next]).unwrap();
        match vfs.upload("c", &UploadOptions::default()) {
            Ok(_) => println!("ACK {next}"),
            Err(e) => println!("ERR {e}"),
        }
        next += 1;
    }
}

#[test]
fn killed_writers_lose_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let cache = tmp.path().join("cache");
    let tools =
        ContainerTools::new(ContainerStore::open(bucket.to_str().unwrap(), &StoreOptions::default()).unwrap(), 4);
    tools.create(8192, 16, false).unwrap();
    let seed = tmp.path().join("seed.db");
    Connection::open(&seed).unwrap().execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);").unwrap();
    tools.upload_file(&seed, "main.db", &|_| {}).unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut acked = 0i64;
    for round in 0..24u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env("BCV_CRASH_CACHE", &cache)
            .env("BCV_CRASH_BUCKET", &bucket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let want = 2 + round % 3;
        let mut seen = 0;
        while seen < want {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(n) = ack(&line) {
                acked = acked.max(n.trim().parse().unwrap());
                seen += 1;
            }
        }
        // Kill at a varying point of the next write/upload.
        std::thread::sleep(Duration::from_micros((round * 7919) % 6000));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(n) = ack(&line) {
                acked = acked.max(n.trim().parse().unwrap());
            }
        }

        // The container: every database downloads and is intact, with every acknowledged row.
        let out = tmp.path().join(format!("round{round}.db"));
        tools.download_file("main.db", &out, &|_| {}).unwrap();
        let d = Connection::open(&out).unwrap();
        let ok: String = d.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok", "round {round}: container image");
        let max: i64 = d.query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0)).unwrap();
        assert!(max >= acked, "round {round}: container has up to {max}, {acked} was acknowledged");

        // The cache: reopens (recovering an interrupted upload or transaction) and reads consistently.
        let vfs = open_vfs(&cache, &format!("bcvcrashparent{round}"));
        let c = connect(&vfs);
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok", "round {round}: cache image");
        let local_max: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0)).unwrap();
        assert!(local_max >= acked, "round {round}: cache has up to {local_max}, {acked} was acknowledged");
    }
    assert!(acked >= 48, "the child acknowledged {acked} uploads");
}

/// The writer of the two-process test: `BCV_TWO_PROC_ROWS` uploads of one row each, acknowledged on stdout.
#[test]
fn two_process_writer() {
    let (Ok(cache), Ok(bucket), Ok(rows)) =
        (std::env::var("BCV_TWO_CACHE"), std::env::var("BCV_TWO_BUCKET"), std::env::var("BCV_TWO_ROWS"))
    else {
        return;
    };
    let vfs = open_vfs(Path::new(&cache), "bcvtwowriter");
    vfs.attach(&bucket, &AttachOptions { alias: Some("c".into()), if_not_attached: true, ..AttachOptions::default() })
        .unwrap();
    let c = connect(&vfs);
    let mut line = String::new();
    for n in 1..=rows.parse::<i64>().unwrap() {
        c.execute("INSERT INTO t VALUES (?1, zeroblob(5000))", [n]).unwrap();
        vfs.upload("c", &UploadOptions::default()).unwrap();
        println!("ACK {n}");
        // Wait until the reader has checked this version.
        line.clear();
        std::io::stdin().read_line(&mut line).unwrap();
    }
}

#[test]
fn a_reader_process_polls_and_sees_each_upload_of_a_writer_process() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let tools =
        ContainerTools::new(ContainerStore::open(bucket.to_str().unwrap(), &StoreOptions::default()).unwrap(), 4);
    tools.create(16384, 16, false).unwrap();
    let seed = tmp.path().join("seed.db");
    Connection::open(&seed).unwrap().execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);").unwrap();
    tools.upload_file(&seed, "main.db", &|_| {}).unwrap();

    let reader = open_vfs(&tmp.path().join("cache-reader"), "bcvtworeader");
    reader
        .attach(
            bucket.to_str().unwrap(),
            &AttachOptions { alias: Some("c".into()), if_not_attached: false, ..AttachOptions::default() },
        )
        .unwrap();
    let rc = connect(&reader);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "two_process_writer", "--nocapture", "--test-threads", "1"])
        .env("BCV_TWO_CACHE", tmp.path().join("cache-writer"))
        .env("BCV_TWO_BUCKET", &bucket)
        .env("BCV_TWO_ROWS", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0;
    for line in lines {
        let line = line.unwrap();
        let Some(n) = ack(&line) else { continue };
        let n: i64 = n.trim().parse().unwrap();
        let report = reader.poll("c").unwrap();
        assert_eq!(report.updated, vec!["main.db".to_string()]);
        let count: i64 = rc.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, n, "the reader sees exactly the writer's acknowledged uploads");
        seen += 1;
        writeln!(stdin, "next").unwrap();
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(seen, 10);
}
