//! T35 soak: a million create → take body → random-order release cycles, then RSS growth under 5 MiB,
//! live nodes back to 0 and the fd count unchanged. (50,000 cycles in a debug build; `scripts/test-rust.sh`
//! runs the full million in release.)

use std::time::Duration;

use bcv_core::handle::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// One cycle: a "request" (a transformer resource every 16th time, else a pipe) whose body is taken, plus
/// a trailers-like future, all released in a random order.
fn cycle(rt: &Runtime, rng: &mut rand::rngs::StdRng, i: usize) {
    let mut handles: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(5);
    let (w, r) = rt.pipe(256).unwrap();
    let _ = w.write_blocking(b"body bytes", None);
    if rng.random_bool(0.5) {
        let _ = w.finish();
    }
    if i.is_multiple_of(16) {
        let (transformer, body) = rt.gzip_compress(r, 1).unwrap();
        handles.push(Box::new(transformer));
        handles.push(Box::new(body));
    } else {
        handles.push(Box::new(r));
    }
    let (fw, fr) = rt.future::<u64>().unwrap();
    if rng.random_bool(0.5) {
        let _ = fw.write(7);
    }
    handles.push(Box::new(w));
    handles.push(Box::new(fw));
    handles.push(Box::new(fr));
    handles.shuffle(rng);
    for h in handles {
        drop(h);
    }
}

#[test]
fn t35_million_cycles_do_not_grow() {
    let cycles: usize = std::env::var("BCV_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 50_000 } else { 1_000_000 });
    let rt = Runtime::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(35);
    // The application lets the reaper catch up every 500 cycles (a steady state, as a server between
    // bursts). A warm-up with the same rhythm sets the allocator's high-water mark before the baseline,
    // so what is measured afterwards is growth: a leak shows, pool sizing does not.
    let rhythm = 500;
    for i in 0..(cycles / 4).max(10 * rhythm) {
        cycle(&rt, &mut rng, i);
        if i % rhythm == rhythm - 1 {
            rt.wait_idle(Duration::from_secs(30));
        }
    }
    assert_eq!(rt.wait_idle(Duration::from_secs(30)), 0);
    let fds = open_fds();
    let rss = rss_bytes();
    for i in 0..cycles {
        cycle(&rt, &mut rng, i);
        if i % rhythm == rhythm - 1 {
            rt.wait_idle(Duration::from_secs(30));
        }
    }
    assert_eq!(rt.wait_idle(Duration::from_secs(30)), 0, "live nodes after {cycles} cycles");
    let growth = rss_bytes().saturating_sub(rss);
    println!("{cycles} cycles: RSS grew by {} KiB, {} nodes created", growth / 1024, rt.diagnostics().created_nodes);
    assert!(growth < 5 << 20, "RSS grew by {growth} bytes");
    assert_eq!(open_fds(), fds);
    rt.shutdown(Duration::from_secs(5)).unwrap();
}
