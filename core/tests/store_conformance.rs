//! Conformance of the store layer: the same behaviour from every backend (memory, local directory, and — when
//! `scripts/servers.sh` started them — Azurite and moto), plus retries, fault injection, metering, the
//! conditional-write self-test, the local compare-and-swap across processes, URL parsing and auth callbacks.
//!
//! Server backends run when `BCV_TEST_AZURE_URL` / `BCV_TEST_S3_URL` are set. With `BCV_REQUIRE_SERVERS=1` a
//! missing server fails the test instead of skipping it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bcv_core::vfs::VfsError;
use bcv_core::vfs::store::{
    AuthProvider, AuthRequest, AuthToken, ContainerStore, CustomError, CustomStore, FaultAction, FaultPlan, FaultRule,
    FaultStore, ObjectVersion, OpKind, StoreOptions, memory_container,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// A name unique to this process and call, so tests sharing a server container never collide.
fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{tag}-{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn fast_options() -> StoreOptions {
    StoreOptions { retry_base_delay: Duration::from_millis(1), ..StoreOptions::default() }
}

/// The server URL in `var`, or `None` to skip; a failure when `BCV_REQUIRE_SERVERS=1`.
fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("BCV_REQUIRE_SERVERS").is_ok_and(|v| v == "1") {
                panic!("BCV_REQUIRE_SERVERS=1 but {var} is not set: start the servers with scripts/servers.sh");
            }
            eprintln!("{var} is not set: skipping (run under scripts/servers.sh to include this server)");
            None
        }
    }
}

fn payload(tag: &str, len: usize) -> Bytes {
    let seed = tag.bytes().fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    Bytes::from(
        (0..len).map(|i| (seed.wrapping_add(i as u32).wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<_>>(),
    )
}

// ---------------------------------------------------------------------------------------------------------------
// The suite every backend runs

async fn conformance(url: &str) {
    conformance_with(|options| ContainerStore::open(url, &options).expect("open")).await;
}

/// The suite, on stores made by `open` (each call a new client of the same container, with its own meter).
async fn conformance_with(open: impl Fn(StoreOptions) -> ContainerStore) {
    let store = open(fast_options());
    basic_io(&store).await;
    ranges(&store).await;
    list_and_delete(&store).await;
    conditional_writes(&store).await;
    store.check_conditional_writes().await.expect("self-test passes");
    // Cached: a second call makes no request.
    let before = store.meter().snapshot().total.requests;
    store.check_conditional_writes().await.expect("cached");
    assert_eq!(store.meter().snapshot().total.requests, before);

    let racer = open(StoreOptions { max_concurrency: 16, ..fast_options() });
    create_race(&racer).await;
    update_race(&racer).await;

    meter_counts(&open(fast_options())).await;
}

async fn basic_io(store: &ContainerStore) {
    let name = unique("io");
    let data = payload(&name, 100_000);
    let v1 = store.put(&name, data.clone()).await.expect("put");
    let got = store.get(&name).await.expect("get");
    assert_eq!(got.bytes, data);
    assert_eq!(got.version, v1, "GET reports the version PUT returned");
    let (size, hv) = store.head(&name).await.expect("head").expect("exists");
    assert_eq!(size, 100_000);
    assert_eq!(hv, v1);
    assert_eq!(store.head(&unique("missing")).await.expect("head missing"), None);
    match store.get(&unique("missing")).await {
        Err(VfsError::NotFound { container, object }) => {
            assert_eq!(container, store.label());
            assert!(object.starts_with("missing-"));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    // get_if_changed: unchanged, then changed.
    assert!(store.get_if_changed(&name, &v1).await.expect("unchanged").is_none());
    let data2 = payload("second", 5000);
    let v2 = store.put(&name, data2.clone()).await.expect("overwrite");
    assert_ne!(v1, v2);
    let changed = store.get_if_changed(&name, &v1).await.expect("changed").expect("is changed");
    assert_eq!(changed.bytes, data2);
    assert_eq!(changed.version, v2);
    store.delete(&name).await.expect("delete");
}

async fn ranges(store: &ContainerStore) {
    let name = unique("ranges");
    let data = payload(&name, 300_000);
    store.put(&name, data.clone()).await.expect("put");
    let got = store.get_range(&name, 1000..5000).await.expect("range");
    assert_eq!(got, data.slice(1000..5000));
    assert_eq!(store.get_range(&name, 299_999..300_000).await.expect("last byte"), data.slice(299_999..));
    assert!(store.get_range(&name, 7..7).await.expect("empty").is_empty());

    // Many small ranges, some adjacent, overlapping, far apart, out of order and empty: exactly those bytes.
    let mut wanted: Vec<std::ops::Range<u64>> =
        (0..60u64).map(|i| (i * 997) % 290_000..(i * 997) % 290_000 + 1 + i * 13).collect();
    wanted.extend([0..1, 0..1, 10..20, 15..25, 299_000..300_000, 150_000..150_000, 200_000..260_000]);
    let before = store.meter().snapshot().kind(OpKind::RangedGet).requests;
    let parts = store.get_ranges(&name, &wanted).await.expect("get_ranges");
    let made = store.meter().snapshot().kind(OpKind::RangedGet).requests - before;
    assert_eq!(parts.len(), wanted.len());
    for (r, part) in wanted.iter().zip(&parts) {
        assert_eq!(part, &data.slice(r.start as usize..r.end as usize), "range {r:?}");
    }
    assert!(made < 10, "nearby ranges are coalesced ({made} requests for {} ranges)", wanted.len());

    match store.get_range(&name, 299_000..301_000).await {
        Err(VfsError::ShortRead { got, start: 299_000, end: 301_000, .. }) => assert_eq!(got, 1000),
        Err(VfsError::Store { .. }) => {} // some stores refuse the range outright
        other => panic!("a range past the end must not succeed: {other:?}"),
    }
    store.delete(&name).await.expect("delete");
}

async fn list_and_delete(store: &ContainerStore) {
    let names: Vec<String> = (0..3).map(|i| unique(&format!("list{i}"))).collect();
    for (i, n) in names.iter().enumerate() {
        store.put(n, payload(n, 10 + i)).await.expect("put");
    }
    let listed = store.list().await.expect("list");
    for (i, n) in names.iter().enumerate() {
        let info = listed.iter().find(|o| &o.name == n).unwrap_or_else(|| panic!("{n} listed"));
        assert_eq!(info.size, 10 + i as u64);
        // Custom stores do not report modification times (0); every other store does.
        assert!(info.last_modified_unix_ms == 0 || info.last_modified_unix_ms > 1_600_000_000_000, "{info:?}");
    }
    assert!(!listed.iter().any(|o| o.name.contains("cas-lock")), "no lock file in listings");
    for n in &names {
        store.delete(n).await.expect("delete");
    }
    let listed = store.list().await.expect("list");
    assert!(!names.iter().any(|n| listed.iter().any(|o| &o.name == n)), "deleted objects are gone");
    store.delete(&names[0]).await.expect("deleting a missing object is success");
    assert!(matches!(store.get(&names[0]).await, Err(VfsError::NotFound { .. })));
}

async fn conditional_writes(store: &ContainerStore) {
    let name = unique("cas");
    let v1 = store.put_if_absent(&name, Bytes::from_static(b"one")).await.expect("create");
    match store.put_if_absent(&name, Bytes::from_static(b"two")).await {
        Err(VfsError::AlreadyExists { object, .. }) => assert_eq!(object, name),
        other => panic!("second create must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(&name).await.expect("get").bytes, Bytes::from_static(b"one"), "not overwritten");

    let v2 = store.put_if_match(&name, Bytes::from_static(b"three"), &v1).await.expect("fresh update");
    assert_ne!(v1, v2);
    match store.put_if_match(&name, Bytes::from_static(b"four"), &v1).await {
        Err(e @ VfsError::Conflict { .. }) => assert!(e.is_conflict()),
        other => panic!("stale update must be Conflict, got {other:?}"),
    }
    assert_eq!(store.get(&name).await.expect("get").bytes, Bytes::from_static(b"three"));
    match store.put_if_match(&unique("absent"), Bytes::from_static(b"x"), &v2).await {
        Err(VfsError::Conflict { .. }) => {}
        other => panic!("update of a missing object must be Conflict, got {other:?}"),
    }
    store.delete(&name).await.expect("delete");
}

async fn create_race(store: &ContainerStore) {
    let name = unique("create-race");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let name = name.clone();
            tokio::spawn(async move { store.put_if_absent(&name, Bytes::from(format!("racer {i}"))).await })
        })
        .collect();
    let (mut won, mut lost) = (Vec::new(), 0);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("join") {
            Ok(_) => won.push(i),
            Err(VfsError::AlreadyExists { .. }) => lost += 1,
            Err(e) => panic!("racer {i}: {e}"),
        }
    }
    assert_eq!((won.len(), lost), (1, 15), "exactly one creator wins");
    let content = store.get(&name).await.expect("get").bytes;
    assert_eq!(content, Bytes::from(format!("racer {}", won[0])));
    store.delete(&name).await.expect("delete");
}

async fn update_race(store: &ContainerStore) {
    let name = unique("update-race");
    let base = store.put_if_absent(&name, Bytes::from_static(b"base")).await.expect("create");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let name = name.clone();
            let base = base.clone();
            tokio::spawn(async move { store.put_if_match(&name, Bytes::from(format!("updater {i}")), &base).await })
        })
        .collect();
    let (mut won, mut lost) = (Vec::new(), 0);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("join") {
            Ok(v) => won.push((i, v)),
            Err(VfsError::Conflict { .. }) => lost += 1,
            Err(e) => panic!("updater {i}: {e}"),
        }
    }
    assert_eq!((won.len(), lost), (1, 15), "exactly one updater wins");
    let now = store.get(&name).await.expect("get");
    assert_eq!(now.bytes, Bytes::from(format!("updater {}", won[0].0)));
    assert_eq!(now.version, won[0].1);
    store.delete(&name).await.expect("delete");
}

/// A fresh store (own meter) makes a known sequence of requests; the meter must show exactly those.
async fn meter_counts(store: &ContainerStore) {
    let a = unique("meter-a");
    let b = unique("meter-b");
    let data = payload(&a, 4096);
    store.put(&a, data.clone()).await.expect("put");
    store.get(&a).await.expect("get");
    store.get_range(&a, 0..100).await.expect("range");
    store.head(&a).await.expect("head");
    store.head(&b).await.expect("head missing");
    let v = store.put_if_absent(&b, Bytes::from_static(b"12345")).await.expect("create");
    store.put_if_match(&b, Bytes::from_static(b"123"), &v).await.expect("update");
    assert!(store.get(&unique("meter-missing")).await.is_err());
    store.list().await.expect("list");
    store.delete(&a).await.expect("delete");
    store.delete(&b).await.expect("delete");

    let s = store.meter().snapshot();
    let get = s.kind(OpKind::Get);
    assert_eq!((get.requests, get.errors, get.retries, get.bytes_down), (2, 1, 0, 4096), "{s:#?}");
    let ranged = s.kind(OpKind::RangedGet);
    assert_eq!((ranged.requests, ranged.bytes_down), (1, 100));
    assert_eq!(s.kind(OpKind::Head).requests, 2);
    let put = s.kind(OpKind::Put);
    assert_eq!((put.requests, put.bytes_up), (1, 4096));
    let cond = s.kind(OpKind::ConditionalPut);
    assert_eq!((cond.requests, cond.bytes_up, cond.errors), (2, 8, 0));
    assert_eq!(s.kind(OpKind::Delete).requests, 2);
    assert_eq!(s.kind(OpKind::List).requests, 1);
    assert_eq!(s.total.requests, 11);
    assert_eq!(s.total.retries, 0);
    assert!(s.total.estimated_cost > 0.0);
    let json = serde_json::to_string(&s).expect("serializes");
    assert!(json.contains("\"conditional_put\""), "{json}");
}

// ---------------------------------------------------------------------------------------------------------------
// Backends

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend() {
    conformance(&format!("memory://{}", unique("conf"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("container");
    conformance(root.to_str().expect("utf-8 path")).await;
    // The lock file sits beside the root, never inside it.
    assert!(dir.path().join("container.cas-lock").exists());
    let url = format!("file://{}", root.display());
    let store = ContainerStore::open(&url, &fast_options()).expect("file:// URL");
    assert!(store.list().await.expect("list").is_empty(), "the suite cleaned up after itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azurite_backend() {
    let Some(url) = server_url("BCV_TEST_AZURE_URL") else { return };
    conformance(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moto_backend() {
    let Some(url) = server_url("BCV_TEST_S3_URL") else { return };
    conformance(&url).await;
}

/// A blocking in-memory store behind the `CustomStore` trait, as an application (or the C ABI) would write one.
#[derive(Default)]
struct MapStore {
    objects: std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, u64)>>,
    next_tag: std::sync::atomic::AtomicU64,
}

impl MapStore {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Vec<u8>, u64)>> {
        self.objects.lock().expect("lock")
    }
    fn tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl CustomStore for MapStore {
    fn get(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, CustomError> {
        Ok(self.map().get(name).map(|(d, t)| (d.clone(), t.to_string())))
    }
    fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Vec<u8>, CustomError> {
        let map = self.map();
        let (data, _) = map.get(name).ok_or(CustomError::NotFound)?;
        let start = (start as usize).min(data.len());
        let end = (start + len as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }
    fn put_overwrite(&self, name: &str, data: &[u8]) -> Result<String, CustomError> {
        let t = self.tag();
        self.map().insert(name.to_string(), (data.to_vec(), t));
        Ok(t.to_string())
    }
    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<String, CustomError> {
        let t = self.tag();
        let mut map = self.map();
        if map.contains_key(name) {
            return Err(CustomError::AlreadyExists);
        }
        map.insert(name.to_string(), (data.to_vec(), t));
        Ok(t.to_string())
    }
    fn put_if_match(&self, name: &str, data: &[u8], etag: &str) -> Result<String, CustomError> {
        let t = self.tag();
        let mut map = self.map();
        match map.get(name) {
            Some((_, current)) if current.to_string() == etag => {
                map.insert(name.to_string(), (data.to_vec(), t));
                Ok(t.to_string())
            }
            _ => Err(CustomError::Precondition),
        }
    }
    fn delete(&self, name: &str) -> Result<(), CustomError> {
        self.map().remove(name).map(|_| ()).ok_or(CustomError::NotFound)
    }
    fn list(&self) -> Result<Vec<(String, u64)>, CustomError> {
        Ok(self.map().iter().map(|(k, (d, _))| (k.clone(), d.len() as u64)).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_store_backend() {
    let custom: Arc<MapStore> = Arc::new(MapStore::default());
    conformance_with(|options| ContainerStore::from_custom(custom.clone(), "custom://map", &options)).await;
}

#[tokio::test]
async fn custom_store_errors_map_to_retry_classes() {
    struct Failing(bool);
    impl CustomStore for Failing {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, String)>, CustomError> {
            Err(CustomError::Other { message: "backend says no".into(), transient: self.0 })
        }
        fn get_range(&self, _: &str, _: u64, _: u64) -> Result<Vec<u8>, CustomError> {
            Err(CustomError::NotFound)
        }
        fn put_overwrite(&self, _: &str, _: &[u8]) -> Result<String, CustomError> {
            Ok("1".into())
        }
        fn put_if_absent(&self, _: &str, _: &[u8]) -> Result<String, CustomError> {
            Err(CustomError::AlreadyExists)
        }
        fn put_if_match(&self, _: &str, _: &[u8], _: &str) -> Result<String, CustomError> {
            Err(CustomError::Precondition)
        }
        fn delete(&self, _: &str) -> Result<(), CustomError> {
            Err(CustomError::NotFound)
        }
        fn list(&self) -> Result<Vec<(String, u64)>, CustomError> {
            Ok(Vec::new())
        }
    }
    let transient = ContainerStore::from_custom(Arc::new(Failing(true)), "custom://t", &fast_options());
    let err = transient.get("x").await.expect_err("fails");
    assert!(err.to_string().contains("backend says no"), "{err}");
    assert_eq!(transient.meter().snapshot().kind(OpKind::Get).retries, 4);
    let permanent = ContainerStore::from_custom(Arc::new(Failing(false)), "custom://p", &fast_options());
    assert!(permanent.get("x").await.is_err());
    assert_eq!(permanent.meter().snapshot().kind(OpKind::Get).retries, 0);
    assert!(matches!(permanent.put_if_absent("x", Bytes::new()).await, Err(VfsError::AlreadyExists { .. })));
    assert!(matches!(
        permanent.put_if_match("x", Bytes::new(), &ObjectVersion { e_tag: Some("1".into()), version: None }).await,
        Err(VfsError::Conflict { .. })
    ));
    permanent.delete("x").await.expect("missing delete is success");
}

#[tokio::test]
async fn memory_stores_are_shared_by_name() {
    let name = unique("shared");
    let a = ContainerStore::open(&format!("memory://{name}"), &StoreOptions::default()).expect("open");
    let b = ContainerStore::open(&format!("memory://{name}"), &StoreOptions::default()).expect("open");
    a.put("x", Bytes::from_static(b"hello")).await.expect("put");
    assert_eq!(b.get("x").await.expect("seen by b").bytes, Bytes::from_static(b"hello"));
    let other = ContainerStore::open(&format!("memory://{name}-other"), &StoreOptions::default()).expect("open");
    assert!(matches!(other.get("x").await, Err(VfsError::NotFound { .. })));
}

// ---------------------------------------------------------------------------------------------------------------
// The self-test against stores that do not honour conditions

/// Turns every conditional put into an overwrite: what s3rver and some S3 look-alikes do.
#[derive(Debug)]
struct IgnoreConditions(Arc<dyn ObjectStore>);

impl fmt::Display for IgnoreConditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IgnoreConditions({})", self.0)
    }
}

#[async_trait]
impl ObjectStore for IgnoreConditions {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.0.put_opts(location, payload, PutOptions { mode: PutMode::Overwrite, ..opts }).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn self_test_rejects_a_store_that_ignores_conditions() {
    let inner = memory_container(&unique("ignore"));
    let store = ContainerStore::from_object_store(Arc::new(IgnoreConditions(inner)), "memory://liar", &fast_options());
    match store.check_conditional_writes().await {
        Err(VfsError::ConditionalWritesUnsupported { container, detail }) => {
            assert_eq!(container, "memory://liar");
            assert!(detail.contains("create-if-absent"), "{detail}");
        }
        other => panic!("expected ConditionalWritesUnsupported, got {other:?}"),
    }
    assert!(store.list().await.expect("list").is_empty(), "the probe object was removed");
    // Not cached as passed: it fails again.
    assert!(store.check_conditional_writes().await.is_err());
}

#[tokio::test]
async fn self_test_rejects_plain_local_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("fs");
    let store = ContainerStore::from_object_store(Arc::new(fs), "plain-local", &fast_options());
    match store.check_conditional_writes().await {
        Err(VfsError::ConditionalWritesUnsupported { detail, .. }) => {
            assert!(detail.contains("update-if-match"), "{detail}")
        }
        other => panic!("expected ConditionalWritesUnsupported, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Retries and fault injection

fn faulty(plan: FaultPlan, options: &StoreOptions) -> (ContainerStore, Arc<FaultStore>) {
    let inner = memory_container(&unique("faults"));
    let faults = Arc::new(FaultStore::new(inner, plan));
    let store = ContainerStore::from_object_store(faults.clone(), "memory://faulty", options);
    (store, faults)
}

#[tokio::test]
async fn transient_errors_are_retried_and_counted() {
    let plan = FaultPlan::new().rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::Get).first(2));
    let (store, faults) = faulty(plan, &fast_options());
    store.put("obj", Bytes::from_static(b"payload")).await.expect("put");
    let got = store.get("obj").await.expect("third attempt succeeds");
    assert_eq!(got.bytes, Bytes::from_static(b"payload"));
    assert_eq!(faults.injected(), 2);
    let get = store.meter().snapshot().kind(OpKind::Get).clone();
    assert_eq!((get.requests, get.errors, get.retries), (3, 2, 2));
}

#[tokio::test]
async fn persistent_errors_name_container_object_and_operation() {
    let plan = FaultPlan::new().rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::Get));
    let options = StoreOptions { retries: 3, ..fast_options() };
    let (store, faults) = faulty(plan, &options);
    store.put("blocks/0001.bcv", Bytes::from_static(b"x")).await.expect("put");
    let err = store.get("blocks/0001.bcv").await.expect_err("always 503");
    let message = err.to_string();
    assert!(matches!(err, VfsError::Store { op: "GET", .. }), "{err:?}");
    assert!(message.contains("memory://faulty") && message.contains("blocks/0001.bcv"), "{message}");
    assert!(message.contains("503"), "{message}");
    assert_eq!(faults.injected(), 4, "one attempt plus three retries");
    assert_eq!(store.meter().snapshot().kind(OpKind::Get).retries, 3);
}

#[tokio::test]
async fn not_found_and_preconditions_are_not_retried() {
    let (store, _) = faulty(FaultPlan::new(), &fast_options());
    assert!(matches!(store.get("nope").await, Err(VfsError::NotFound { .. })));
    let v = store.put_if_absent("o", Bytes::from_static(b"1")).await.expect("create");
    assert!(matches!(store.put_if_absent("o", Bytes::from_static(b"2")).await, Err(VfsError::AlreadyExists { .. })));
    store.put("o", Bytes::from_static(b"3")).await.expect("overwrite");
    assert!(matches!(store.put_if_match("o", Bytes::from_static(b"4"), &v).await, Err(VfsError::Conflict { .. })));
    assert_eq!(store.meter().snapshot().total.retries, 0);
}

#[tokio::test]
async fn short_reads_are_retried_and_never_return_wrong_bytes() {
    let data = payload("short", 10_000);
    let plan = FaultPlan::new().rule(FaultRule::new(FaultAction::ShortRead).first(2));
    let (store, faults) = faulty(plan, &fast_options());
    store.put("o", data.clone()).await.expect("put");
    assert_eq!(store.get_range("o", 100..9000).await.expect("retried"), data.slice(100..9000));
    assert_eq!(faults.injected(), 2);
    assert_eq!(store.meter().snapshot().kind(OpKind::RangedGet).retries, 2);

    // Whole-object GETs are length-checked too.
    faults.set_plan(FaultPlan::new().rule(FaultRule::new(FaultAction::ShortRead).op(OpKind::Get).first(1)));
    assert_eq!(store.get("o").await.expect("retried").bytes, data);

    // Always short: a ShortRead error after the retries, never truncated data.
    faults.set_plan(FaultPlan::new().rule(FaultRule::new(FaultAction::ShortRead)));
    match store.get_range("o", 0..1000).await {
        Err(VfsError::ShortRead { start: 0, end: 1000, got: 500, .. }) => {}
        other => panic!("expected ShortRead, got {other:?}"),
    }
    match store.get_ranges("o", &[0..10, 20..30, 5000..6000]).await {
        Err(VfsError::ShortRead { .. }) => {}
        other => panic!("expected ShortRead, got {other:?}"),
    }
    // Flaky (seeded, 30 % short): every successful answer is exact.
    faults.set_plan(FaultPlan::new().seed(9).rule(FaultRule::new(FaultAction::ShortRead).probability(0.3)));
    for i in 0..50u64 {
        let r = i * 150..i * 150 + 700;
        if let Ok(bytes) = store.get_range("o", r.clone()).await {
            assert_eq!(bytes, data.slice(r.start as usize..r.end as usize));
        }
    }
}

#[tokio::test]
async fn slow_requests_time_out_and_are_retried() {
    let plan =
        FaultPlan::new().rule(FaultRule::new(FaultAction::Delay(Duration::from_secs(5))).op(OpKind::Head).first(1));
    let options = StoreOptions { request_timeout: Duration::from_millis(100), ..fast_options() };
    let (store, _) = faulty(plan, &options);
    store.put("o", Bytes::from_static(b"abc")).await.expect("put");
    let started = std::time::Instant::now();
    let (size, _) = store.head("o").await.expect("second attempt").expect("exists");
    assert_eq!(size, 3);
    assert!(started.elapsed() < Duration::from_secs(2), "the slow attempt was abandoned");
    assert_eq!(store.meter().snapshot().kind(OpKind::Head).retries, 1);
}

#[tokio::test]
async fn ambiguous_conditional_puts_succeed_when_the_bytes_landed() {
    let plan = FaultPlan::new().rule(FaultRule::new(FaultAction::FailAfterPut).op(OpKind::ConditionalPut).first(1));
    let (store, faults) = faulty(plan, &fast_options());
    // Create: the first attempt lands but reports 503; the retry sees AlreadyExists; our bytes are there.
    let v1 = store.put_if_absent("manifest.bcv", Bytes::from_static(b"m1")).await.expect("landed create");
    assert_eq!(faults.injected(), 1);
    let now = store.get("manifest.bcv").await.expect("get");
    assert_eq!((now.bytes, now.version), (Bytes::from_static(b"m1"), v1.clone()));

    // Update: same story with Precondition.
    faults
        .set_plan(FaultPlan::new().rule(FaultRule::new(FaultAction::FailAfterPut).op(OpKind::ConditionalPut).first(1)));
    let v2 = store.put_if_match("manifest.bcv", Bytes::from_static(b"m2"), &v1).await.expect("landed update");
    let now = store.get("manifest.bcv").await.expect("get");
    assert_eq!((now.bytes, now.version), (Bytes::from_static(b"m2"), v2.clone()));
    assert_eq!(store.meter().snapshot().kind(OpKind::ConditionalPut).retries, 2);

    // An unambiguous loss stays a loss even if the content happens to be equal.
    match store.put_if_match("manifest.bcv", Bytes::from_static(b"m2"), &v1).await {
        Err(VfsError::Conflict { .. }) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    // A 503 before the write (nothing landed) is simply retried.
    faults
        .set_plan(FaultPlan::new().rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::ConditionalPut).first(1)));
    store.put_if_match("manifest.bcv", Bytes::from_static(b"m3"), &v2).await.expect("retried update");
}

// ---------------------------------------------------------------------------------------------------------------
// Local compare-and-swap across processes

/// The child side of `local_cas_races_across_processes`: does nothing unless the parent set BCV_CAS_CHILD_DIR.
#[test]
fn cas_child() {
    let Ok(dir) = std::env::var("BCV_CAS_CHILD_DIR") else { return };
    let id = std::env::var("BCV_CAS_CHILD_ID").expect("id");
    let mode = std::env::var("BCV_CAS_CHILD_MODE").expect("mode");
    let sync = std::path::PathBuf::from(std::env::var("BCV_CAS_CHILD_SYNC").expect("sync dir"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let outcome = rt.block_on(async {
        let store = ContainerStore::open(&dir, &fast_options()).expect("open");
        std::fs::write(sync.join(format!("ready-{id}")), b"").expect("ready");
        while !sync.join("go").exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let data = Bytes::from(format!("process {id}"));
        let result = if mode == "create" {
            store.put_if_absent("race", data).await
        } else {
            let expected: ObjectVersion =
                serde_json::from_str(&std::env::var("BCV_CAS_CHILD_VERSION").expect("version")).expect("json");
            store.put_if_match("race", data, &expected).await
        };
        match result {
            Ok(_) => "won".to_string(),
            Err(VfsError::AlreadyExists { .. } | VfsError::Conflict { .. }) => "lost".to_string(),
            Err(e) => format!("error {e}"),
        }
    });
    println!("CAS-RESULT {id} {outcome}");
}

fn race_processes(root: &std::path::Path, mode: &str, version: Option<&ObjectVersion>) -> (Vec<usize>, usize) {
    let exe = std::env::current_exe().expect("test binary");
    let sync = tempfile::tempdir().expect("sync dir");
    let children: Vec<_> = (0..16)
        .map(|id| {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["cas_child", "--exact", "--nocapture", "--test-threads=1"])
                .env("BCV_CAS_CHILD_DIR", root)
                .env("BCV_CAS_CHILD_ID", id.to_string())
                .env("BCV_CAS_CHILD_MODE", mode)
                .env("BCV_CAS_CHILD_SYNC", sync.path())
                .stdout(std::process::Stdio::piped());
            if let Some(v) = version {
                cmd.env("BCV_CAS_CHILD_VERSION", serde_json::to_string(v).expect("json"));
            }
            cmd.spawn().expect("spawn child")
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..16).any(|id| !sync.path().join(format!("ready-{id}")).exists()) {
        assert!(std::time::Instant::now() < deadline, "children did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(sync.path().join("go"), b"").expect("go");
    let (mut won, mut lost) = (Vec::new(), 0);
    for (id, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("child output");
        assert!(out.status.success(), "child {id} failed: {}", String::from_utf8_lossy(&out.stdout));
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text.find("CAS-RESULT").unwrap_or_else(|| panic!("child {id}: {text}"));
        let line = text[at..].lines().next().unwrap_or_default();
        match line.split_whitespace().nth(2) {
            Some("won") => won.push(id),
            Some("lost") => lost += 1,
            _ => panic!("child {id}: {line}"),
        }
    }
    (won, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cas_races_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("c");
    let store = ContainerStore::open(root.to_str().expect("utf-8"), &fast_options()).expect("open");

    let (won, lost) = tokio::task::block_in_place(|| race_processes(&root, "create", None));
    assert_eq!((won.len(), lost), (1, 15), "exactly one process creates");
    let now = store.get("race").await.expect("get");
    assert_eq!(now.bytes, Bytes::from(format!("process {}", won[0])));

    for round in 0..2 {
        let base = store.head("race").await.expect("head").expect("exists").1;
        let (won, lost) = tokio::task::block_in_place(|| race_processes(&root, "update", Some(&base)));
        assert_eq!((won.len(), lost), (1, 15), "round {round}: exactly one process updates");
        let now = store.get("race").await.expect("get");
        assert_eq!(now.bytes, Bytes::from(format!("process {}", won[0])));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// URLs

#[tokio::test]
async fn good_urls_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("a/b");
    let s = ContainerStore::open(plain.to_str().expect("utf-8"), &StoreOptions::default()).expect("plain path");
    assert!(plain.is_dir(), "created");
    assert!(s.label().starts_with("file://"), "{}", s.label());
    ContainerStore::open(&format!("file://{}?fsync=true", dir.path().join("c").display()), &StoreOptions::default())
        .expect("file URL");
    assert_eq!(ContainerStore::open("memory://m1", &StoreOptions::default()).expect("memory").label(), "memory://m1");

    #[cfg(feature = "s3")]
    {
        let url = "s3://bucket?endpoint=http://127.0.0.1:9&region=us-east-1&access_key_id=AKID&secret_access_key=SeCrEt1&session_token=ToKeN2";
        let s = ContainerStore::open(url, &StoreOptions::default()).expect("s3");
        assert!(!s.label().contains("SeCrEt1") && !s.label().contains("ToKeN2"), "{}", s.label());
        assert!(s.label().starts_with("s3://bucket") && s.label().contains("endpoint="), "{}", s.label());
        let with_options = StoreOptions {
            options: vec![("aws_secret_access_key".into(), "OpTsEcReT".into())],
            ..StoreOptions::default()
        };
        let s = ContainerStore::open("s3://bucket?endpoint=http://127.0.0.1:9&access_key_id=AKID", &with_options)
            .expect("options");
        assert!(!format!("{s:?} {with_options:?}").contains("OpTsEcReT"));
    }
    #[cfg(feature = "azure")]
    {
        let url = "az://container?account=devstoreaccount1&access_key=c2VjcmV0a2V5&endpoint=http://127.0.0.1:9/devstoreaccount1";
        let s = ContainerStore::open(url, &StoreOptions::default()).expect("azure");
        assert!(!s.label().contains("c2VjcmV0a2V5"), "{}", s.label());
        ContainerStore::open("az://container?use_emulator=true", &StoreOptions::default()).expect("emulator");
    }
}

#[test]
fn bad_urls_are_config_errors_without_secrets() {
    let cases: &[(&str, &str)] = &[
        ("relative/path", "not an absolute path"),
        ("ftp://host/x", "unknown scheme"),
        ("memory://", "memory://NAME"),
        ("memory://x?color=blue", "\"color\""),
        ("s3://bucket?secret_access_key=TOPSECRET&colour=1", "\"colour\""),
        ("s3://bucket/some/prefix?secret_access_key=TOPSECRET", "path inside"),
        ("s3://AKID:TOPSECRET@bucket", "user info"),
        ("s3://?secret_access_key=TOPSECRET", "no bucket"),
        ("s3://b?allow_http=maybe&sas=TOPSECRET", "true or false"),
        ("s3://b?region=a&region=b", "twice"),
        ("az://c?account=a&access_key=TOPSECRET&bogus=1", "\"bogus\""),
        ("gs://b?service_account_key=TOPSECRET&what=1", "\"what\""),
    ];
    for (url, expected) in cases {
        // Without its cargo feature a cloud scheme is refused up front, before its query is read.
        let compiled_in = match url.split("://").next() {
            Some("s3") => cfg!(feature = "s3"),
            Some("az") => cfg!(feature = "azure"),
            Some("gs") => cfg!(feature = "gcp"),
            _ => true,
        };
        let expected = if compiled_in { expected } else { "not compiled in" };
        match ContainerStore::open(url, &StoreOptions::default()) {
            Err(e @ VfsError::Config { .. }) => {
                let shown = format!("{e} {e:?}");
                assert!(shown.contains(expected), "{url}: {shown}");
                assert!(!shown.contains("TOPSECRET"), "{url}: secret leaked: {shown}");
            }
            other => panic!("{url}: expected a Config error, got {other:?}"),
        }
    }
    let local_with_option = StoreOptions { options: vec![("aws_region".into(), "x".into())], ..Default::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        ContainerStore::open(dir.path().to_str().expect("utf-8"), &local_with_option),
        Err(VfsError::Config { .. })
    ));
    #[cfg(feature = "s3")]
    {
        let unknown =
            StoreOptions { options: vec![("aws_frobnicate".into(), "TOPSECRET".into())], ..Default::default() };
        match ContainerStore::open("s3://b", &unknown) {
            Err(e @ VfsError::Config { .. }) => {
                assert!(e.to_string().contains("aws_frobnicate") && !e.to_string().contains("TOPSECRET"), "{e}")
            }
            other => panic!("expected Config, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Auth callbacks (need the servers)

struct CountingAuth {
    calls: AtomicUsize,
    token: Result<AuthToken, String>,
    seen: std::sync::Mutex<Vec<AuthRequest>>,
}

impl AuthProvider for CountingAuth {
    fn token(&self, request: &AuthRequest) -> Result<AuthToken, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().expect("lock").push(request.clone());
        self.token.clone()
    }
}

fn without_query_keys(url: &str, drop: &[&str]) -> String {
    let mut parsed = url::Url::parse(url).expect("server URL");
    let kept: Vec<(String, String)> =
        parsed.query_pairs().filter(|(k, _)| !drop.contains(&k.as_ref())).map(|(k, v)| (k.into(), v.into())).collect();
    parsed.query_pairs_mut().clear().extend_pairs(kept);
    parsed.to_string()
}

fn query_value(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

async fn auth_roundtrip(url: &str, token: AuthToken, storage: &str) {
    let auth = Arc::new(CountingAuth { calls: AtomicUsize::new(0), token: Ok(token), seen: Default::default() });
    let options = StoreOptions { auth: Some(auth.clone()), ..fast_options() };
    let store = ContainerStore::open(url, &options).expect("open with auth");
    let name = unique("auth");
    store.put(&name, Bytes::from_static(b"authorised")).await.expect("put with callback credentials");
    assert_eq!(store.get(&name).await.expect("get").bytes, Bytes::from_static(b"authorised"));
    store.delete(&name).await.expect("delete");
    assert!(auth.calls.load(Ordering::SeqCst) >= 3, "the callback is consulted per request");
    let seen = auth.seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.storage, storage);
    assert!(!seen.container.is_empty());

    let refusing = Arc::new(CountingAuth {
        calls: AtomicUsize::new(0),
        token: Err("token expired".into()),
        seen: Default::default(),
    });
    let options = StoreOptions { auth: Some(refusing.clone()), ..fast_options() };
    let store = ContainerStore::open(url, &options).expect("open");
    let err = store.get(&name).await.expect_err("refused");
    assert!(err.to_string().contains("token expired"), "{err}");
    assert_eq!(store.meter().snapshot().total.retries, 0, "auth failures are not retried");
    assert_eq!(refusing.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_auth_callback() {
    let Some(url) = server_url("BCV_TEST_AZURE_URL") else { return };
    let key = query_value(&url, "access_key").expect("the test URL carries the emulator key");
    let keyless = without_query_keys(&url, &["access_key"]);
    auth_roundtrip(&keyless, AuthToken::AzureAccessKey(key), "azure").await;

    // A wrong key is refused by the server, and not retried.
    let wrong = "d3Jvbmcga2V5IGZvciBhenVyaXRlIHRlc3RzIDAxMjM0NTY3ODk=".to_string();
    let auth = Arc::new(CountingAuth {
        calls: AtomicUsize::new(0),
        token: Ok(AuthToken::AzureAccessKey(wrong)),
        seen: Default::default(),
    });
    let store = ContainerStore::open(&keyless, &StoreOptions { auth: Some(auth), ..fast_options() }).expect("open");
    assert!(store.put(&unique("auth"), Bytes::from_static(b"x")).await.is_err());
    assert_eq!(store.meter().snapshot().total.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_auth_callback() {
    let Some(url) = server_url("BCV_TEST_S3_URL") else { return };
    let key_id = query_value(&url, "access_key_id").unwrap_or_else(|| "testing".into());
    let secret = query_value(&url, "secret_access_key").unwrap_or_else(|| "testing".into());
    let keyless = without_query_keys(&url, &["access_key_id", "secret_access_key"]);
    auth_roundtrip(&keyless, AuthToken::AwsKeys { key_id, secret_key: secret, session_token: None }, "s3").await;
}

// ---------------------------------------------------------------------------------------------------------------
// Thread-safety the other layers rely on

#[test]
fn handles_and_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<ContainerStore>();
    send_sync::<StoreOptions>();
    let store = ContainerStore::open("memory://send-check", &StoreOptions::default()).expect("open");
    let v = ObjectVersion { e_tag: None, version: None };
    send(&store.get("a"));
    send(&store.get_if_changed("a", &v));
    send(&store.get_range("a", 0..1));
    send(&store.get_ranges("a", &[0..1, 2..3]));
    send(&store.head("a"));
    send(&store.put("a", Bytes::new()));
    send(&store.put_if_absent("a", Bytes::new()));
    send(&store.put_if_match("a", Bytes::new(), &v));
    send(&store.delete("a"));
    send(&store.list());
    send(&store.check_conditional_writes());
}
