//! The LIFETIMES.md §7 scenarios that apply to Rust (tag R), on real pipes, transformers, files and TCP.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bcv_core::handle::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const KEY: [u8; 32] = [7u8; 32];

fn runtime() -> Runtime {
    Runtime::new().expect("runtime")
}

fn strict_runtime(level: StrictLevel, profile: StrictProfile) -> Runtime {
    Runtime::builder().strict(StrictConfig { level, profile }).build().expect("runtime")
}

fn assert_idle(rt: &Runtime) {
    assert_eq!(rt.wait_idle(Duration::from_secs(5)), 0, "live nodes left: {:?}", rt.diagnostics());
}

fn closed_reason(e: &Error) -> CloseReason {
    e.closed().unwrap_or_else(|| panic!("expected Closed, got {e:?}")).reason
}

fn payload(n: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    (0..n).map(|_| rng.random::<u8>() % 16).collect()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Asserts that the process's open descriptors return to `before`. Under `cargo test` other tests of this
/// binary run in threads of the same process and open and close their own, so the count is given a few
/// seconds to settle; a leaked descriptor never does. (nextest, which CI uses, runs each test alone.)
fn assert_fds_back_to(before: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(open_fds(), before, "fds back to their starting value");
}

#[test]
fn t05_close_twice_then_release() {
    let rt = runtime();
    let (w, r) = rt.pipe(16).unwrap();
    r.close();
    r.close();
    assert_eq!(closed_reason(&r.read_blocking(&mut [0; 4], None).unwrap_err()), CloseReason::SelfClosed);
    w.close();
    w.close();
    drop((w, r));
    assert_idle(&rt);
}

#[test]
fn t07_writer_released_without_finish_is_never_eof() {
    let rt = runtime();
    let (w, r) = rt.pipe(1024).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match r.read_blocking(&mut buf, Some(Duration::from_secs(5))) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Some(e)),
            }
        }
    });
    w.write_blocking(b"hello", None).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(w);
    let (got, err) = reader.join().unwrap();
    assert_eq!(got, b"hello");
    assert_eq!(closed_reason(&err.expect("must not be EOF")), CloseReason::PeerDropped);
    assert_idle(&rt);
}

#[test]
fn t08_finish_then_release_gives_clean_eof() {
    let rt = runtime();
    let (w, r) = rt.pipe(8).unwrap();
    let data = payload(10_000);
    let expect = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_blocking(&data, None).unwrap();
        w.finish().unwrap();
    });
    assert_eq!(r.read_to_end_blocking().unwrap(), expect);
    writer.join().unwrap();
    assert_eq!(r.read_blocking(&mut [0; 1], None).unwrap(), 0, "EOF stays EOF");
    drop(r);
    assert_idle(&rt);
}

#[test]
fn t09_blocked_writer_released_reader() {
    let rt = runtime();
    let (w, r) = rt.pipe(4096).unwrap();
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        let err = w.write_blocking(&[1u8; 10_000], None).unwrap_err();
        (err, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    let released_at = Instant::now();
    std::thread::spawn(move || drop(r)).join().unwrap();
    let (err, _) = t.join().unwrap();
    assert!(released_at.elapsed() < Duration::from_secs(1));
    assert_eq!(closed_reason(&err.error), CloseReason::PeerDropped);
    assert!(err.accepted <= 10_000 && err.accepted >= 4096, "accepted {}", err.accepted);
    assert_idle(&rt);
}

#[test]
fn t10_close_from_other_thread_wakes_blocked_read() {
    let rt = runtime();
    let (w, r) = rt.pipe(16).unwrap();
    let r = Arc::new(r);
    let r2 = r.clone();
    let t = std::thread::spawn(move || r2.read_blocking(&mut [0; 8], None));
    std::thread::sleep(Duration::from_millis(30));
    let start = Instant::now();
    r.close();
    let err = t.join().unwrap().unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(closed_reason(&err), CloseReason::SelfClosed);
    assert!(w.write_blocking(b"x", None).unwrap_err().error.closed().unwrap().reason == CloseReason::PeerDropped);
    drop((w, r));
    assert_idle(&rt);
}

#[test]
fn t11_release_only_handle_while_read_blocked() {
    let rt = runtime();
    let (w, r) = rt.pipe(16).unwrap();
    // The C ABI's slot holds the only external reference while another thread reads through it;
    // `release_now` is what `bcv_release` does to the slot.
    let r = Arc::new(r);
    let r2 = r.clone();
    let t = std::thread::spawn(move || r2.read_blocking(&mut [0; 8], Some(Duration::from_secs(5))));
    std::thread::sleep(Duration::from_millis(30));
    r.release_now();
    let err = t.join().unwrap().unwrap_err();
    assert_eq!(closed_reason(&err), CloseReason::HandleReleased);
    let werr = w.write_blocking(b"x", None).unwrap_err();
    assert_eq!(closed_reason(&werr.error), CloseReason::PeerDropped);
    drop((w, r));
    assert_idle(&rt);
}

#[test]
fn t12_stress_random_release_and_close_on_16_threads() {
    let rt = runtime();
    let fds = open_fds();
    let trees = 6_000;
    let threads = 16;
    let nodes: Arc<Mutex<Vec<Box<dyn std::any::Any + Send>>>> = Arc::new(Mutex::new(Vec::new()));
    let mut builders = Vec::new();
    for t in 0..threads {
        let rt = rt.clone();
        builders.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            let mut mine: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
            for _ in 0..trees / threads {
                // resource -> SR (transformer output), SW (pipe writer feeding it), FR (future), CR-dep
                let (w, r) = rt.pipe(64).unwrap();
                let _ = w.write_blocking(b"abc", Some(Duration::from_millis(1)));
                let (g, out) = rt.gzip_compress(r, 1).unwrap();
                let (fw, fr) = rt.future::<u32>().unwrap();
                if rng.random_bool(0.5) {
                    let _ = fw.write(1);
                }
                mine.push(Box::new(g));
                mine.push(Box::new(out));
                mine.push(Box::new(w));
                mine.push(Box::new(fw));
                mine.push(Box::new(fr));
            }
            mine
        }));
    }
    for b in builders {
        nodes.lock().unwrap().extend(b.join().unwrap());
    }
    let mut all = std::mem::take(&mut *nodes.lock().unwrap());
    all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(99));
    let per = all.len() / threads + 1;
    let mut workers = Vec::new();
    let closes = Arc::new(AtomicUsize::new(0));
    while !all.is_empty() {
        let chunk: Vec<_> = all.drain(..per.min(all.len())).collect();
        let closes = closes.clone();
        workers.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(chunk.len() as u64);
            for item in chunk {
                if rng.random_bool(0.3) {
                    if let Some(n) = item.downcast_ref::<Resource>() {
                        n.close();
                        closes.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(n) = item.downcast_ref::<ReadStream>() {
                        n.close();
                        closes.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(n) = item.downcast_ref::<WriteStream>() {
                        n.close();
                        closes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(item);
            }
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    assert!(closes.load(Ordering::Relaxed) > 0);
    assert_idle(&rt);
    assert_fds_back_to(fds);
}

#[test]
fn t21_callback_releases_its_stream_and_parent() {
    let rt = runtime();
    let (w, r) = rt.pipe(1024).unwrap();
    let (g, out) = rt.gzip_compress(r, 1).unwrap();
    let holder: Arc<Mutex<Option<(ReadStream, Resource)>>> = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicUsize::new(0));
    let (h2, c2) = (holder.clone(), calls.clone());
    out.on_data(move |_event| {
        c2.fetch_add(1, Ordering::SeqCst);
        // Release SR and its parent from inside the callback.
        let taken = h2.lock().unwrap().take();
        drop(taken);
    })
    .unwrap();
    *holder.lock().unwrap() = Some((out, g));
    // The write may fail once the callback has released the output: that is the point of the test.
    let _ = w.write_blocking(&payload(200_000), None);
    let _ = w.finish();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no callback after the release");
    drop(w);
    assert_idle(&rt);
}

#[test]
fn t22_close_and_wait_in_callback_would_deadlock() {
    let rt = runtime();
    let (w, r) = rt.pipe(1024).unwrap();
    let r = Arc::new(r);
    let (tx, rx) = std::sync::mpsc::channel();
    let r2 = r.clone();
    r.on_data(move |_| {
        let start = Instant::now();
        let res = r2.close_and_wait_blocking(Duration::from_secs(1));
        let elapsed = start.elapsed();
        r2.close();
        let _ = tx.send((res, elapsed));
    })
    .unwrap();
    w.write_blocking(b"x", None).unwrap();
    let (res, elapsed) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(res, Err(CloseWaitError::WouldDeadlock));
    assert!(elapsed < Duration::from_millis(10));
    // From a plain thread the same wait is allowed, and completes once the callback has returned.
    r.close_and_wait_blocking(Duration::from_secs(5)).unwrap();
    assert_eq!(r.state(), NodeState::Closed);
    drop((w, r));
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("valid gzip");
    out
}

#[test]
fn t23_release_transformer_midway_keeps_pipe_running() {
    let rt = runtime();
    let input = payload(1_000_000);
    let (w, r) = rt.pipe(64 * 1024).unwrap();
    let (g, out) = rt.gzip_compress(r, 6).unwrap();
    let data = input.clone();
    let writer = std::thread::spawn(move || {
        w.write_blocking(&data[..500_000], None).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        w.write_blocking(&data[500_000..], None).unwrap();
        w.finish().unwrap();
    });
    let mut compressed = Vec::new();
    let first = out.read_chunk_blocking(usize::MAX, None).unwrap().unwrap();
    compressed.extend_from_slice(&first);
    drop(g);
    compressed.extend_from_slice(&out.read_to_end_blocking().unwrap());
    writer.join().unwrap();
    assert_eq!(gunzip(&compressed), input);
    drop(out);
    assert_idle(&rt);
}

#[test]
fn t24_release_output_stops_transformer_and_upstream() {
    let rt = runtime();
    let (w, r) = rt.pipe(16 * 1024).unwrap();
    let (g, out) = rt.gzip_compress(r, 1).unwrap();
    let producer = std::thread::spawn(move || {
        let chunk = payload(16 * 1024);
        loop {
            if let Err(e) = w.write_blocking(&chunk, Some(Duration::from_secs(5))) {
                return e;
            }
        }
    });
    let _ = out.read_chunk_blocking(1024, None).unwrap();
    let released = Instant::now();
    drop(out);
    let err = producer.join().unwrap();
    assert!(released.elapsed() < Duration::from_millis(500));
    assert_eq!(closed_reason(&err.error), CloseReason::PeerDropped);
    drop(g);
    assert_idle(&rt);
}

#[test]
fn t25_truncated_ciphertext_never_ends_in_eof() {
    let rt = runtime();
    let plain = payload(300_000);
    let (e, ct) = rt.aead_encrypt(rt.stream_from_bytes(plain.clone()).unwrap(), &KEY).unwrap();
    let ciphertext = ct.read_to_end_blocking().unwrap();
    drop((e, ct));
    let (w, r) = rt.pipe(1 << 20).unwrap();
    let (d, out) = rt.aead_decrypt(r, &KEY).unwrap();
    w.write_blocking(&ciphertext[..200_000], None).unwrap();
    drop(w); // released without finish, halfway
    let mut got = Vec::new();
    let err = loop {
        match out.read_chunk_blocking(usize::MAX, Some(Duration::from_secs(5))) {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => panic!("truncated ciphertext reached EOF"),
            Err(e) => break e,
        }
    };
    let closed = err.closed().expect("closed error");
    assert_eq!(closed.reason, CloseReason::Upstream);
    assert_eq!(closed.upstream, Some(CloseReason::PeerDropped));
    // Only whole authenticated chunks were released, all of them a prefix of the plaintext.
    assert_eq!(got.len() % AEAD_CHUNK_SIZE, 0);
    assert!(got.len() < 200_000);
    assert_eq!(&plain[..got.len()], &got[..]);
    drop((d, out));
    assert_idle(&rt);
}

#[test]
fn t26_close_encryptor_midway() {
    let rt = runtime();
    let (w, r) = rt.pipe(1 << 20).unwrap();
    let (e, out) = rt.aead_encrypt(r, &KEY).unwrap();
    w.write_blocking(&payload(150_000), None).unwrap();
    let _ = out.read_chunk_blocking(usize::MAX, Some(Duration::from_secs(5))).unwrap();
    e.close();
    assert_eq!(closed_reason(&out.read_chunk_blocking(16, None).unwrap_err()), CloseReason::Parent);
    let werr = w.write_blocking(&[0; 10], Some(Duration::from_secs(5))).unwrap_err();
    assert_eq!(closed_reason(&werr.error), CloseReason::PeerDropped);
    drop((w, e, out));
    assert_idle(&rt);
}

#[test]
fn aead_round_trip_wrong_key_and_tampering() {
    let rt = runtime();
    for len in [0usize, 1, AEAD_CHUNK_SIZE - 1, AEAD_CHUNK_SIZE, AEAD_CHUNK_SIZE + 1, 3 * AEAD_CHUNK_SIZE, 500_000] {
        let plain = payload(len);
        let (_e, ct) = rt.aead_encrypt(rt.stream_from_bytes(plain.clone()).unwrap(), &KEY).unwrap();
        let ciphertext = ct.read_to_end_blocking().unwrap();
        let (_d, pt) = rt.aead_decrypt(rt.stream_from_bytes(ciphertext.clone()).unwrap(), &KEY).unwrap();
        assert_eq!(pt.read_to_end_blocking().unwrap(), plain, "len {len}");
        let (_d, pt) = rt.aead_decrypt(rt.stream_from_bytes(ciphertext.clone()).unwrap(), &[8u8; 32]).unwrap();
        assert!(matches!(pt.read_to_end_blocking(), Err(Error::Authentication(_))), "wrong key, len {len}");
        let mut tampered = ciphertext.to_vec();
        let at = tampered.len() - 1;
        tampered[at] ^= 1;
        let (_d, pt) = rt.aead_decrypt(rt.stream_from_bytes(tampered).unwrap(), &KEY).unwrap();
        assert!(matches!(pt.read_to_end_blocking(), Err(Error::Authentication(_))), "tampered, len {len}");
        if len > AEAD_CHUNK_SIZE {
            // Cut exactly at a chunk boundary: the remaining chunk lacks the last flag.
            let cut = AEAD_HEADER_LEN + AEAD_CHUNK_SIZE + 16;
            let (_d, pt) = rt.aead_decrypt(rt.stream_from_bytes(ciphertext.slice(..cut)).unwrap(), &KEY).unwrap();
            assert!(matches!(pt.read_to_end_blocking(), Err(Error::Authentication(_))), "boundary cut, len {len}");
        }
    }
    assert!(matches!(
        rt.aead_encrypt(rt.stream_from_bytes(&b"x"[..]).unwrap(), &[0; 16]),
        Err(Error::InvalidArgument(_))
    ));
    rt.shutdown(Duration::from_secs(2)).unwrap();
}

#[test]
fn gzip_round_trip_and_truncation() {
    let rt = runtime();
    let plain = payload(700_000);
    let (_g, gz) = rt.gzip_compress(rt.stream_from_bytes(plain.clone()).unwrap(), 6).unwrap();
    let compressed = gz.read_to_end_blocking().unwrap();
    assert_eq!(gunzip(&compressed), plain);
    let (_g, out) = rt.gzip_decompress(rt.stream_from_bytes(compressed.clone()).unwrap()).unwrap();
    assert_eq!(out.read_to_end_blocking().unwrap(), plain);
    for cut in [compressed.len() - 1, compressed.len() - 8, compressed.len() / 2, 5, 0] {
        let (_g, out) = rt.gzip_decompress(rt.stream_from_bytes(compressed.slice(..cut)).unwrap()).unwrap();
        let res = out.read_to_end_blocking();
        assert!(matches!(res, Err(Error::Corrupt(_))), "cut at {cut}: {res:?}");
    }
    rt.shutdown(Duration::from_secs(2)).unwrap();
}

#[test]
fn t28_t29_future_writer_and_reader_released() {
    let rt = runtime();
    let (fw, fr) = rt.future::<String>().unwrap();
    drop(fw);
    assert_eq!(closed_reason(&fr.wait_blocking(Some(Duration::from_secs(1))).unwrap_err()), CloseReason::PeerDropped);
    drop(fr);
    // T29: the value comes back when the reader is gone, so resources inside it can be released.
    let (fw, fr) = rt.future::<ReadStream>().unwrap();
    drop(fr);
    rt.reaper_flush().unwrap();
    let (w, r) = rt.pipe(8).unwrap();
    let back = fw.write(r).unwrap_err();
    assert_eq!(back.closed.reason, CloseReason::PeerDropped);
    drop(back.value);
    let werr = w.write_blocking(b"x", None).unwrap_err();
    assert_eq!(closed_reason(&werr.error), CloseReason::PeerDropped);
    drop((fw, w));
    assert_idle(&rt);
}

#[test]
fn t30_shutdown_with_live_handles_and_ops_in_flight() {
    let rt = runtime();
    let fds = open_fds();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let client = rt.tcp_connect_blocking(addr).unwrap();
    let server = listener.accept_blocking(Some(Duration::from_secs(5))).unwrap();
    let recv = server.take_receive().unwrap();
    let (w, r) = rt.pipe(4).unwrap();
    let (fw, fr) = rt.future::<u8>().unwrap();
    let pending_read = std::thread::spawn(move || {
        let e = recv.read_blocking(&mut [0; 8], None).unwrap_err();
        (e, recv)
    });
    let fr = Arc::new(fr);
    let fr2 = fr.clone();
    let pending_future = std::thread::spawn(move || fr2.wait_blocking(None).unwrap_err());
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    rt.shutdown(Duration::from_secs(1)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    let (e, recv) = pending_read.join().unwrap();
    assert_eq!(closed_reason(&e), CloseReason::RuntimeShutdown);
    assert_eq!(closed_reason(&pending_future.join().unwrap()), CloseReason::RuntimeShutdown);
    assert_eq!(rt.diagnostics().live_nodes, 0);
    assert_eq!(closed_reason(&r.read_blocking(&mut [0; 1], None).unwrap_err()), CloseReason::RuntimeShutdown);
    assert!(rt.pipe(4).is_err());
    drop((listener, client, server, recv, w, r, fw, fr));
    assert_fds_back_to(fds);
}

#[test]
fn t31_stuck_callback_makes_shutdown_time_out() {
    let rt = runtime();
    let (w, r) = rt.pipe(16).unwrap();
    let stuck = r.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(rx));
    r.on_data(move |_| {
        // A foreign callback that does not return until the test lets it.
        let _ = gate.lock().unwrap().recv();
    })
    .unwrap();
    w.write_blocking(b"x", None).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let err = rt.shutdown(Duration::from_millis(500)).unwrap_err();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(1500), "{took:?}");
    match err {
        ShutdownError::Timeout { stuck_node_ids } => assert!(stuck_node_ids.contains(&stuck), "{stuck_node_ids:?}"),
        other => panic!("{other:?}"),
    }
    drop(tx);
    drop((w, r));
}

#[test]
fn t32_concurrent_reads_one_gets_busy() {
    let rt = runtime();
    let (w, r) = rt.pipe(16).unwrap();
    let r = Arc::new(r);
    let r2 = r.clone();
    let first = std::thread::spawn(move || r2.read_blocking(&mut [0; 8], Some(Duration::from_secs(5))));
    std::thread::sleep(Duration::from_millis(30));
    assert!(matches!(r.read_blocking(&mut [0; 8], None), Err(Error::Busy(_))));
    w.write_blocking(b"abc", None).unwrap();
    assert_eq!(first.join().unwrap().unwrap(), 3);
    drop((w, r));
    assert_idle(&rt);
}

#[test]
fn t33_strict_wasip2_parent_before_child_reports_but_behaves() {
    let rt = strict_runtime(StrictLevel::Warn, StrictProfile::Wasip2);
    let (g, out) = rt.gzip_compress(rt.stream_from_bytes(payload(1000)).unwrap(), 1).unwrap();
    drop(g);
    let compressed = out.read_to_end_blocking().unwrap();
    assert_eq!(gunzip(&compressed), payload(1000));
    rt.reaper_flush().unwrap();
    let diags = rt.strict_diagnostics();
    let v1 = diags.iter().find(|d| d.kind == ViolationKind::ParentBeforeChild).expect("V1 reported");
    assert!(v1.creation_backtrace.as_deref().is_some_and(|b| !b.is_empty()));
    assert_eq!(rt.diagnostics().violations[0], 1);
    drop(out);
    assert_idle(&rt);
}

#[test]
fn strict_error_level_raises_at_next_call_on_that_thread() {
    let rt = strict_runtime(StrictLevel::Error, StrictProfile::Hygiene);
    let (w, r) = rt.pipe(16).unwrap();
    drop(w); // V2
    assert_eq!(closed_reason(&r.read_blocking(&mut [0; 1], None).unwrap_err()), CloseReason::PeerDropped);
    let d = rt.check().unwrap_err();
    assert_eq!(d.kind, ViolationKind::WriterNotFinished);
    assert!(rt.check().is_ok());
    let (fw, fr) = rt.future::<u8>().unwrap();
    drop(fw); // V3
    assert_eq!(rt.check().unwrap_err().kind, ViolationKind::FutureNotWritten);
    drop((r, fr));
    assert_idle(&rt);
}

#[test]
fn t36_auto_close_on_quiescence() {
    let rt = runtime();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let sock = listener.accept_blocking(Some(Duration::from_secs(5))).unwrap();
    let fds_with_socket = open_fds();
    let recv = sock.take_receive().unwrap();
    let send = sock.take_send().unwrap();
    peer.write_all(b"ping").unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(&recv.read_to_end_blocking().unwrap()[..], b"ping");
    send.write_blocking(b"pong", None).unwrap();
    send.finish().unwrap();
    drop(recv);
    let mut reply = Vec::new();
    peer.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"pong", "FIN after finish()");
    let deadline = Instant::now() + Duration::from_millis(500);
    while open_fds() >= fds_with_socket && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(open_fds() < fds_with_socket, "fd closed while the socket handle is still alive");
    assert_eq!(sock.state(), NodeState::Open);
    drop((sock, send, listener));
    assert_idle(&rt);
}

#[test]
fn send_stream_dropped_unfinished_resets_connection() {
    let rt = runtime();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut peer = std::net::TcpStream::connect(listener.local_addr()).unwrap();
    let sock = listener.accept_blocking(Some(Duration::from_secs(5))).unwrap();
    let send = sock.take_send().unwrap();
    send.write_blocking(b"partial", None).unwrap();
    drop(send);
    drop(sock);
    let mut got = Vec::new();
    let res = peer.read_to_end(&mut got);
    assert!(res.is_err(), "the peer must see a reset, not a clean end; got {:?} after {:?}", res, got);
    drop(listener);
    assert_idle(&rt);
}

#[test]
fn t37_scope_closes_what_it_created_unless_detached() {
    let rt = runtime();
    let (kept, closed) = {
        let mut scope = Scope::enter();
        let kept = rt.stream_from_bytes(&b"kept"[..]).unwrap();
        let closed = rt.stream_from_bytes(&b"closed"[..]).unwrap();
        kept.detach_from_scope();
        rt.reaper_flush().unwrap(); // the released writers of both streams are gone from the scope
        assert_eq!(scope.len(), 1);
        scope.close();
        (kept, closed)
    };
    assert_eq!(&kept.read_to_end_blocking().unwrap()[..], b"kept");
    assert_eq!(closed_reason(&closed.read_blocking(&mut [0; 1], None).unwrap_err()), CloseReason::ScopeExited);
    drop((kept, closed));
    assert_idle(&rt);
}

#[test]
fn t37_detached_file_stream_outlives_its_scope() {
    let rt = runtime();
    let path = std::env::temp_dir().join(format!("bcv-t37-{}", std::process::id()));
    std::fs::write(&path, payload(500_000)).unwrap();
    let (file, stream) = {
        let _scope = Scope::enter();
        let (file, stream) = rt.read_file(&path).unwrap();
        stream.detach_from_scope(); // and with it the file resource it reads through
        (file, stream)
    };
    assert_eq!(stream.read_to_end_blocking().unwrap().len(), 500_000);
    drop((file, stream));
    std::fs::remove_file(&path).unwrap();
    assert_idle(&rt);
}

#[test]
fn t39_close_and_wait_frees_the_port() {
    let rt = runtime();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = listener.local_addr();
    let client = rt.tcp_connect_blocking(addr).unwrap();
    let server = listener.accept_blocking(Some(Duration::from_secs(5))).unwrap();
    let recv = Arc::new(server.take_receive().unwrap());
    let r2 = recv.clone();
    let pending = std::thread::spawn(move || r2.read_blocking(&mut [0; 8], None));
    std::thread::sleep(Duration::from_millis(20));
    server.close_and_wait_blocking(Duration::from_secs(5)).unwrap();
    listener.close_and_wait_blocking(Duration::from_secs(5)).unwrap();
    assert_eq!(closed_reason(&pending.join().unwrap().unwrap_err()), CloseReason::Parent);
    let again = std::net::TcpListener::bind(addr).expect("port reusable right after close_and_wait");
    drop(again);
    drop((client, server, recv, listener));
    assert_idle(&rt);
}

#[test]
fn files_stream_in_and_out() {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("bcv-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("in.bin");
    let data = payload(333_333);
    std::fs::write(&src, &data).unwrap();
    let (file, stream) = rt.read_file(&src).unwrap();
    drop(file);
    let sink = rt.write_file(dir.join("out.bin")).unwrap();
    rt.spawn_pipe(stream, sink.writer);
    assert_eq!(sink.done.wait_blocking(Some(Duration::from_secs(10))).unwrap(), Ok(data.len() as u64));
    assert_eq!(std::fs::read(dir.join("out.bin")).unwrap(), data);
    let missing = rt.read_file(dir.join("missing")).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
    drop((sink.resource, sink.done));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_idle(&rt);
}

#[test]
fn async_pipe_and_tcp_echo() {
    let rt = runtime();
    let rt2 = rt.clone();
    let echoed = rt
        .block_on(async move {
            let listener = rt2.tcp_listen("127.0.0.1:0".parse().unwrap())?;
            let client = rt2.tcp_connect(listener.local_addr()).await?;
            let server = listener.accept().await?;
            // Echo: server receive -> server send.
            rt2.spawn_pipe(server.take_receive()?, server.take_send()?);
            let send = client.take_send()?;
            let recv = client.take_receive()?;
            let data = payload(1_000_000);
            let writer = {
                let data = data.clone();
                tokio::spawn(async move {
                    send.write(&data).await.map_err(|e| e.error)?;
                    send.finish()
                })
            };
            let got = recv.read_to_end().await?;
            writer.await.expect("join")?;
            Ok::<_, Error>(got == data)
        })
        .unwrap()
        .unwrap();
    assert!(echoed);
    assert_idle(&rt);
}

#[test]
fn accept_and_connect_from_a_foreign_executor() {
    // A caller driving bcv futures from its own executor (no tokio context), as UniFFI or napi do.
    let rt = runtime();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let rt2 = rt.clone();
    let client = std::thread::spawn(move || futures_lite_block_on(rt2.tcp_connect(addr)).unwrap());
    let socket = futures_lite_block_on(listener.accept()).unwrap();
    let peer = client.join().unwrap();
    assert_eq!(socket.local_addr(), addr);
    let send = peer.take_send().unwrap();
    futures_lite_block_on(send.write(b"ping")).unwrap();
    send.finish().unwrap();
    let got = futures_lite_block_on(socket.take_receive().unwrap().read_to_end()).unwrap();
    assert_eq!(&got[..], b"ping");
    futures_lite_block_on(listener.close_and_wait(Duration::from_secs(5))).unwrap();
    drop((socket, listener, peer, send));
    assert_idle(&rt);
}

/// A minimal executor with no tokio context: polls on this thread, parking between wake-ups.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn t27_closing_the_socket_closes_its_tls_session() {
    let rt = runtime();
    let cert = self_signed_certificate(&["localhost".to_owned()]).unwrap();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let server_cert = cert.clone();
    let rt2 = rt.clone();
    let server = std::thread::spawn(move || {
        let sock = listener.accept_blocking(Some(Duration::from_secs(5))).unwrap();
        let tls =
            sock.start_tls_server_blocking(server_cert.cert_pem.as_bytes(), server_cert.key_pem.as_bytes()).unwrap();
        let (r, w) = (tls.take_receive().unwrap(), tls.take_send().unwrap());
        // Echo until the client goes away.
        rt2.spawn_pipe(r, w);
        (sock, tls, listener)
    });
    let socket = rt.tcp_connect_blocking(addr).unwrap();
    let peer = socket.peer_addr(); // CR-det snapshot
    let tls = socket.start_tls_client_blocking("localhost", cert.cert_pem.as_bytes()).unwrap();
    let (recv, send) = (tls.take_receive().unwrap(), tls.take_send().unwrap());
    send.write_blocking(b"hello over tls", None).unwrap();
    let mut buf = [0u8; 64];
    let n = recv.read_blocking(&mut buf, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(&buf[..n], b"hello over tls");
    let (server_sock, server_tls, listener) = server.join().unwrap();
    // A read in flight when the socket closes.
    let recv = Arc::new(recv);
    let r2 = recv.clone();
    let pending = std::thread::spawn(move || r2.read_blocking(&mut [0; 8], None));
    std::thread::sleep(Duration::from_millis(20));
    socket.close_and_wait_blocking(Duration::from_secs(5)).unwrap();
    assert_eq!(closed_reason(&pending.join().unwrap().unwrap_err()), CloseReason::Parent);
    assert_eq!(closed_reason(&send.write_blocking(b"x", None).unwrap_err().error), CloseReason::Parent);
    assert_eq!(tls.close_reason().map(|c| c.reason), Some(CloseReason::Parent));
    assert_eq!(socket.peer_addr(), peer, "the snapshot still reads");
    drop((tls, recv, send, socket, server_sock, server_tls, listener));
    assert_idle(&rt);
}

#[test]
fn tls_rejects_an_untrusted_certificate() {
    let rt = runtime();
    let served = self_signed_certificate(&["localhost".to_owned()]).unwrap();
    let other = self_signed_certificate(&["localhost".to_owned()]).unwrap();
    let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let server = std::thread::spawn(move || {
        let sock = listener.accept_blocking(Some(Duration::from_secs(5))).unwrap();
        let res = sock.start_tls_server_blocking(served.cert_pem.as_bytes(), served.key_pem.as_bytes());
        (res.is_err(), sock, listener)
    });
    let socket = rt.tcp_connect_blocking(addr).unwrap();
    let err = socket.start_tls_client_blocking("localhost", other.cert_pem.as_bytes()).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    drop(socket);
    let (server_failed, sock, listener) = server.join().unwrap();
    assert!(server_failed);
    drop((sock, listener));
    assert_idle(&rt);
}

#[test]
fn t40_handles_released_after_shutdown_from_other_threads() {
    let rt = runtime();
    let mut handles: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    for _ in 0..32 {
        let (w, r) = rt.pipe(32).unwrap();
        let (g, out) = rt.gzip_compress(r, 1).unwrap();
        handles.push(Box::new(w));
        handles.push(Box::new(g));
        handles.push(Box::new(out));
    }
    rt.shutdown(Duration::from_secs(2)).unwrap();
    drop(rt); // the application's runtime handle goes first (C's bcv_runtime_free)
    let per = handles.len() / 4;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let batch: Vec<_> = handles.drain(..per.min(handles.len())).collect();
            std::thread::spawn(move || drop(batch))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(handles);
}
