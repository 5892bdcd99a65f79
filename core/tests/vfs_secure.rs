//! Secure containers: blocks, the key-value object, journals and WAL files are encrypted in the bucket and in
//! the cache; a wrong key or a tampered block is a clear authentication error; keys rotate; ciphers plug in.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{
    AesGcmCipher, AttachOptions, BlockCipher, BlockVfs, CipherError, ConnectOptions, Connection, ContainerTools,
    Keyring, SecureOptions, UploadOptions, Value, VfsConfig, VfsError,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Text that must never appear in the bucket or the cache.
const CANARY: &str = "CANARY-plaintext-7f3a9c";

fn key(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn secure(ring: &Keyring) -> SecureOptions {
    SecureOptions::aes_gcm(ring)
}

fn store(bucket: &Path) -> ContainerStore {
    ContainerStore::open(bucket.to_str().unwrap(), &StoreOptions::default()).unwrap()
}

fn create_secure(bucket: &Path, options: SecureOptions) {
    ContainerTools::new(store(bucket), 4).with_secure(options).create(65536, 16, false).unwrap();
}

fn vfs(cache: &Path) -> BlockVfs {
    let mut config = VfsConfig::new(cache);
    config.name = format!("bcvsecure{}", NEXT.fetch_add(1, Ordering::Relaxed));
    BlockVfs::create(config).unwrap()
}

fn attach(v: &BlockVfs, bucket: &Path, options: Option<SecureOptions>) -> Result<String, VfsError> {
    v.attach(
        bucket.to_str().unwrap(),
        &AttachOptions { alias: Some("c".into()), if_not_attached: false, secure: options },
    )
}

fn connect(v: &BlockVfs, db: &str) -> Connection {
    Connection::open(v, &format!("/c/{db}"), &ConnectOptions::default()).unwrap()
}

fn count(c: &Connection, sql: &str) -> i64 {
    match c.query(sql, &[]).unwrap().into_iter().next().and_then(|r| r.into_iter().next()) {
        Some(Value::Integer(n)) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // Files come and go while connections run (journals): scan what is there.
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn fill(c: &Connection, from: i64, to: i64) {
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body TEXT)").unwrap();
    c.execute_batch("BEGIN").unwrap();
    for i in from..to {
        c.execute("INSERT INTO t(id, body) VALUES (?, ?)", &[Value::Integer(i), Value::Text(format!("{CANARY} {i}"))])
            .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
}

fn no_plaintext_anywhere(tmp: &Path, when: &str) {
    let found = files_containing(tmp, CANARY.as_bytes());
    assert!(found.is_empty(), "{when}: plaintext found in {found:?}");
}

fn round_trip(journal_mode: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let ring = Keyring::new(1, key(7));
    create_secure(&bucket, secure(&ring));
    let v = vfs(&tmp.path().join("cache"));
    attach(&v, &bucket, Some(secure(&ring))).unwrap();
    let c = connect(&v, "s.db");
    c.execute_batch(&format!("PRAGMA journal_mode={journal_mode}")).unwrap();
    fill(&c, 0, 2000);
    // The data is there and readable through SQLite...
    assert_eq!(count(&c, &format!("SELECT count(*) FROM t WHERE body LIKE '{CANARY}%'")), 2000);
    no_plaintext_anywhere(tmp.path(), "after local writes");
    // ...also while a transaction has old pages in its journal (or new ones in the WAL).
    c.execute_batch("BEGIN; UPDATE t SET body = body || ' changed' WHERE id < 1000").unwrap();
    no_plaintext_anywhere(tmp.path(), "inside a write transaction");
    c.execute_batch("COMMIT").unwrap();
    // The key-value object is sealed too.
    c.execute("INSERT INTO bcv_kv(name, value) VALUES ('k', ?)", &[Value::Text(CANARY.into())]).unwrap();
    drop(c);
    v.runtime().reaper_flush().unwrap();
    let report = v.upload("c", &UploadOptions::default()).unwrap();
    assert!(report.blocks_written > 0);
    no_plaintext_anywhere(tmp.path(), "after upload");
    // A second client with the key reads everything, through its own cache.
    let v2 = vfs(&tmp.path().join("cache2"));
    attach(&v2, &bucket, Some(secure(&ring))).unwrap();
    let c2 = connect(&v2, "s.db");
    assert_eq!(count(&c2, "SELECT count(*) FROM t WHERE body LIKE '%changed'"), 1000);
    assert_eq!(count(&c2, &format!("SELECT count(*) FROM t WHERE body LIKE '{CANARY}%'")), 2000);
    let kv = c2.query("SELECT value FROM bcv_kv WHERE name = 'k'", &[]).unwrap();
    assert_eq!(kv, vec![vec![Value::Text(CANARY.into())]]);
    // Downloading with the tools gives the plaintext image.
    let file = tmp.path().join("out.db");
    ContainerTools::new(store(&bucket), 4).with_secure(secure(&ring)).download_file("s.db", &file, &|_| {}).unwrap();
    let image = std::fs::read(&file).unwrap();
    assert!(image.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "the download is the plaintext image");
    std::fs::remove_file(&file).unwrap();
    drop(c2);
    no_plaintext_anywhere(tmp.path(), "after a second client read it");
}

#[test]
fn nothing_is_stored_in_plaintext_rollback_journal() {
    round_trip("DELETE");
}

#[test]
fn nothing_is_stored_in_plaintext_wal() {
    round_trip("WAL");
}

#[test]
fn a_missing_or_wrong_key_is_refused_at_attach() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    create_secure(&bucket, secure(&Keyring::new(1, key(7))));
    let v = vfs(&tmp.path().join("cache"));
    let err = attach(&v, &bucket, None).unwrap_err();
    assert!(matches!(err, VfsError::Secure { .. }), "{err}");
    assert!(err.to_string().contains("secure"), "{err}");
    let err = attach(&v, &bucket, Some(secure(&Keyring::new(1, key(8))))).unwrap_err();
    assert!(matches!(err, VfsError::Crypto { .. }), "{err}");
    assert!(err.to_string().contains("wrong key") && err.to_string().contains("bcv_secure.json"), "{err}");
    let err = attach(&v, &bucket, Some(secure(&Keyring::new(9, key(7))))).unwrap_err();
    assert!(err.to_string().contains("key 1 is not available"), "{err}");
    // A key for a plaintext container is refused too, and nothing was recorded by the failed attaches.
    let plain = tmp.path().join("plain");
    ContainerTools::new(store(&plain), 4).create(65536, 16, false).unwrap();
    let err = v
        .attach(
            plain.to_str().unwrap(),
            &AttachOptions {
                alias: Some("p".into()),
                if_not_attached: false,
                secure: Some(secure(&Keyring::new(1, key(7)))),
            },
        )
        .unwrap_err();
    assert!(matches!(err, VfsError::Secure { .. }), "{err}");
    assert!(v.attached().is_empty());
    attach(&v, &bucket, Some(secure(&Keyring::new(1, key(7))))).unwrap();
    // Tools without the key refuse to upload plaintext into it.
    let db = tmp.path().join("x.db");
    std::fs::write(&db, vec![0u8; 4096]).unwrap();
    let err = ContainerTools::new(store(&bucket), 4).upload_file(&db, "x.db", &|_| {}).unwrap_err();
    assert!(matches!(err, VfsError::Secure { .. }), "{err}");
}

#[test]
fn a_tampered_block_is_an_authentication_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let ring = Keyring::new(1, key(7));
    create_secure(&bucket, secure(&ring));
    let v = vfs(&tmp.path().join("cache"));
    attach(&v, &bucket, Some(secure(&ring))).unwrap();
    let c = connect(&v, "s.db");
    fill(&c, 0, 500);
    drop(c);
    v.upload("c", &UploadOptions::default()).unwrap();
    // Flip one byte in the middle of every block object.
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(&bucket).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".bcv") && name != "manifest.bcv" && name != "bcv_kv.bcv" {
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 3;
            bytes[mid] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
            blocks.push(name);
        }
    }
    assert!(!blocks.is_empty());
    let err = ContainerTools::new(store(&bucket), 4)
        .with_secure(secure(&ring))
        .download_file("s.db", &tmp.path().join("out.db"), &|_| {})
        .unwrap_err();
    assert!(matches!(err, VfsError::Crypto { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("authentication failed") && blocks.iter().any(|b| msg.contains(b.as_str())), "{msg}");
    // Through SQLite on a fresh cache: the query fails, it never returns garbage.
    let v2 = vfs(&tmp.path().join("cache2"));
    attach(&v2, &bucket, Some(secure(&ring))).unwrap();
    let c2 = connect(&v2, "s.db");
    let err = c2.query("SELECT count(*), sum(length(body)) FROM t", &[]).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

#[test]
fn rotated_keys_seal_new_blocks_and_old_ones_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let mut ring = Keyring::new(1, key(1));
    create_secure(&bucket, secure(&ring));
    let v = vfs(&tmp.path().join("cache"));
    attach(&v, &bucket, Some(secure(&ring))).unwrap();
    let c = connect(&v, "old.db");
    fill(&c, 0, 300);
    drop(c);
    v.upload("c", &UploadOptions::default()).unwrap();
    let before: Vec<String> = block_objects(&bucket);
    drop(v);
    // Rotate: key 2 seals new data; key 1 stays in the ring for old blocks.
    ring.add(2, key(2)).rotate_to(2).unwrap();
    let v = vfs(&tmp.path().join("cache-rotated"));
    attach(&v, &bucket, Some(secure(&ring))).unwrap();
    let c = connect(&v, "new.db");
    fill(&c, 0, 300);
    drop(c);
    v.upload("c", &UploadOptions::default()).unwrap();
    let new_blocks: Vec<String> = block_objects(&bucket).into_iter().filter(|b| !before.contains(b)).collect();
    assert!(!new_blocks.is_empty());
    for b in &new_blocks {
        let bytes = std::fs::read(bucket.join(b)).unwrap();
        assert_eq!(&bytes[..4], &2u32.to_le_bytes(), "{b} is sealed with key 2");
    }
    for b in &before {
        let bytes = std::fs::read(bucket.join(b)).unwrap();
        assert_eq!(&bytes[..4], &1u32.to_le_bytes(), "{b} is still sealed with key 1");
    }
    // A reader whose key provider knows both keys reads both databases.
    let asked = Arc::new(AtomicU64::new(0));
    let a = asked.clone();
    let provider = Arc::new(move |id: u32| {
        a.fetch_add(1, Ordering::SeqCst);
        match id {
            1 => Some(key(1)),
            2 => Some(key(2)),
            _ => None,
        }
    });
    let v2 = vfs(&tmp.path().join("cache-reader"));
    attach(&v2, &bucket, Some(SecureOptions::aes_gcm_with_provider(2, provider))).unwrap();
    assert_eq!(count(&connect(&v2, "old.db"), "SELECT count(*) FROM t"), 300);
    assert_eq!(count(&connect(&v2, "new.db"), "SELECT count(*) FROM t"), 300);
    assert_eq!(asked.load(Ordering::SeqCst), 2, "each key is asked for once");
}

fn block_objects(bucket: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(bucket)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".bcv") && n != "manifest.bcv" && n != "bcv_kv.bcv")
        .collect();
    v.sort();
    v
}

/// An application cipher: AES-GCM under another name, counting its calls (as an HSM wrapper would).
struct AppCipher {
    inner: AesGcmCipher,
    calls: AtomicU64,
}

impl BlockCipher for AppCipher {
    fn name(&self) -> String {
        "app-hsm-v1".into()
    }
    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.seal(context, plaintext, out)
    }
    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.open(context, sealed, out)
    }
}

#[test]
fn an_application_cipher_plugs_in_and_its_name_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let cipher = Arc::new(AppCipher { inner: AesGcmCipher::new(&Keyring::new(1, key(5))), calls: AtomicU64::new(0) });
    let options = SecureOptions::custom(cipher.clone());
    create_secure(&bucket, options.clone());
    let v = vfs(&tmp.path().join("cache"));
    attach(&v, &bucket, Some(options.clone())).unwrap();
    let c = connect(&v, "s.db");
    fill(&c, 0, 100);
    assert_eq!(count(&c, "SELECT count(*) FROM t"), 100);
    drop(c);
    v.upload("c", &UploadOptions::default()).unwrap();
    assert!(cipher.calls.load(Ordering::Relaxed) > 10);
    no_plaintext_anywhere(tmp.path(), "with an application cipher");
    // The same key under the default cipher's name is refused: the container records its cipher.
    let v2 = vfs(&tmp.path().join("cache2"));
    let err = attach(&v2, &bucket, Some(secure(&Keyring::new(1, key(5))))).unwrap_err();
    assert!(err.to_string().contains("app-hsm-v1"), "{err}");
}

#[test]
fn a_secure_container_is_reattached_from_the_cache_only_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let ring = Keyring::new(1, key(7));
    create_secure(&bucket, secure(&ring));
    let cache = tmp.path().join("cache");
    {
        let v = vfs(&cache);
        attach(&v, &bucket, Some(secure(&ring))).unwrap();
        let c = connect(&v, "s.db");
        fill(&c, 0, 50);
        drop(c);
        v.runtime().reaper_flush().unwrap();
    }
    // A restart does not re-attach it silently (no key yet); attaching again with the key keeps local changes.
    let v = vfs(&cache);
    assert!(v.attached().is_empty());
    attach(&v, &bucket, Some(secure(&ring))).unwrap();
    assert_eq!(count(&connect(&v, "s.db"), "SELECT count(*) FROM t"), 50);
    v.runtime().reaper_flush().unwrap();
    drop(v);
    let v = vfs(&cache);
    let err = attach(&v, &bucket, Some(secure(&Keyring::new(1, key(9))))).unwrap_err();
    assert!(err.to_string().contains("wrong key"), "{err}");
}

#[test]
fn the_scan_does_find_plaintext_in_a_plain_container() {
    // The control for the tests above: the same data in a plaintext container shows up in cache and bucket.
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    ContainerTools::new(store(&bucket), 4).create(65536, 16, false).unwrap();
    let v = vfs(&tmp.path().join("cache"));
    attach(&v, &bucket, None).unwrap();
    let c = connect(&v, "s.db");
    fill(&c, 0, 2000);
    assert!(!files_containing(&tmp.path().join("cache"), CANARY.as_bytes()).is_empty());
    drop(c);
    v.runtime().reaper_flush().unwrap();
    v.upload("c", &UploadOptions::default()).unwrap();
    assert!(!files_containing(&bucket, CANARY.as_bytes()).is_empty());
}
