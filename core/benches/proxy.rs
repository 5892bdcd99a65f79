//! Proxy-Wasm host benchmark: figures and ratios measured in one run.
//!
//! 1. The full request lifecycle of a header-adding filter with 10 request headers through bcv (context
//!    create, request headers, read back, on_done/on_log/on_delete) against the same guest calls made with
//!    plain wasmtime and a minimal host (goal: ratio <= 1.2).
//! 2. Instantiation with the pooling allocator: `Vm::start` (store, pooled instance, `_initialize`) and a
//!    bare pooled `InstancePre::instantiate` for reference (goal: <= 4 us).
//! 3. Memory per instance: linear memory and resident-set growth per VM.
//!
//! Run: `cargo bench -p bcv-core --bench proxy` (scripts/bench-proxy.sh builds the plugin first).

use std::time::{Duration, Instant};

use bcv_core::proxy::{FilterAction, HeaderMap, HostConfig, MapType, PluginConfig, ProxyHost, Vm, VmConfig};
use wasmtime::{
    Caller, Config, Engine, Extern, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store,
    TypedFunc,
};

const ITERATIONS: u32 = 20_000;
/// As `HostConfig` sets it (not public API; keep in step with core/src/proxy/host.rs).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

fn request() -> HeaderMap {
    let mut headers: HeaderMap =
        [(":method", "GET"), (":path", "/bench"), (":authority", "bench.local"), (":scheme", "http")]
            .into_iter()
            .collect();
    for i in 0..6 {
        headers.add(format!("x-header-{i}"), format!("value-{i}"));
    }
    headers
}

/// Median of `rounds` timings of `iterations` runs of `f`, per iteration.
fn measure(rounds: usize, iterations: u32, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed() / iterations
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

struct Plain {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    config: Vec<u8>,
}

fn memory(caller: &mut Caller<'_, Plain>) -> wasmtime::Memory {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        _ => panic!("no memory"),
    }
}

/// The same guest, driven through plain wasmtime with the smallest host that lets the filter run.
fn plain_wasmtime(wasm: &[u8]) -> (Duration, Duration) {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).expect("compile");
    let mut linker: Linker<Plain> = Linker::new(&engine);
    linker
        .func_wrap(
            "env",
            "proxy_add_header_map_value",
            |mut c: Caller<'_, Plain>, _t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                let m = memory(&mut c);
                let data = m.data(&c);
                let key = data[kp as usize..(kp + kl) as usize].to_vec();
                let value = data[vp as usize..(vp + vl) as usize].to_vec();
                c.data_mut().headers.push((key, value));
                0
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_get_buffer_bytes",
            |mut c: Caller<'_, Plain>, ty: i32, _s: i32, _m: i32, po: i32, lo: i32| -> i32 {
                let bytes = if ty == 7 { c.data().config.clone() } else { Vec::new() };
                let m = memory(&mut c);
                if bytes.is_empty() {
                    m.data_mut(&mut c)[po as usize..po as usize + 4].copy_from_slice(&0u32.to_le_bytes());
                    m.data_mut(&mut c)[lo as usize..lo as usize + 4].copy_from_slice(&0u32.to_le_bytes());
                    return 0;
                }
                let alloc = c.get_export("proxy_on_memory_allocate").and_then(|e| e.into_func()).unwrap();
                let alloc: TypedFunc<i32, i32> = alloc.typed(&c).unwrap();
                let at = alloc.call(&mut c, bytes.len() as i32).unwrap() as usize;
                let data = m.data_mut(&mut c);
                data[at..at + bytes.len()].copy_from_slice(&bytes);
                data[po as usize..po as usize + 4].copy_from_slice(&(at as u32).to_le_bytes());
                data[lo as usize..lo as usize + 4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                0
            },
        )
        .unwrap();
    let mut store = Store::new(&engine, Plain { headers: Vec::new(), config: b"add-header".to_vec() });
    linker.define_unknown_imports_as_default_values(&mut store, &module).unwrap();
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let init: TypedFunc<(), ()> = instance.get_typed_func(&mut store, "_initialize").unwrap();
    init.call(&mut store, ()).unwrap();
    let create: TypedFunc<(i32, i32), ()> = instance.get_typed_func(&mut store, "proxy_on_context_create").unwrap();
    let vm_start: TypedFunc<(i32, i32), i32> = instance.get_typed_func(&mut store, "proxy_on_vm_start").unwrap();
    let configure: TypedFunc<(i32, i32), i32> = instance.get_typed_func(&mut store, "proxy_on_configure").unwrap();
    let headers_cb: TypedFunc<(i32, i32, i32), i32> =
        instance.get_typed_func(&mut store, "proxy_on_request_headers").unwrap();
    let done: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "proxy_on_done").unwrap();
    let log: TypedFunc<i32, ()> = instance.get_typed_func(&mut store, "proxy_on_log").unwrap();
    let delete: TypedFunc<i32, ()> = instance.get_typed_func(&mut store, "proxy_on_delete").unwrap();
    create.call(&mut store, (1, 0)).unwrap();
    assert_eq!(vm_start.call(&mut store, (1, 0)).unwrap(), 1);
    assert_eq!(configure.call(&mut store, (1, 10)).unwrap(), 1);
    let template: Vec<_> = request().into_pairs();
    let mut next = 2;
    let lifecycle = measure(5, ITERATIONS, || {
        let ctx = next;
        next += 1;
        store.data_mut().headers = template.clone();
        create.call(&mut store, (ctx, 1)).unwrap();
        assert_eq!(headers_cb.call(&mut store, (ctx, 10, 1)).unwrap(), 0);
        let out = std::mem::take(&mut store.data_mut().headers);
        assert_eq!(out.len(), 11);
        done.call(&mut store, ctx).unwrap();
        log.call(&mut store, ctx).unwrap();
        delete.call(&mut store, ctx).unwrap();
    });

    // A bare pooled instantiation of the same module, for reference.
    let mut config = Config::new();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(16).total_memories(16).total_tables(16).max_memory_size(64 << 20);
    // The same pool settings as bcv's host (`core/src/proxy/host.rs`): tables stay resident between uses.
    pool.table_keep_resident(TABLE_KEEP_RESIDENT);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let pooled = Engine::new(&config).unwrap();
    let module = Module::new(&pooled, wasm).unwrap();
    let mut linker: Linker<()> = Linker::new(&pooled);
    linker.define_unknown_imports_as_traps(&module).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    let instantiate = measure(5, 2_000, || {
        let mut store = Store::new(&pooled, ());
        pre.instantiate(&mut store).unwrap();
    });
    (lifecycle, instantiate)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let path =
        std::env::var("BCV_BENCH_PLUGIN").expect("BCV_BENCH_PLUGIN: path of testkit.wasm (see scripts/bench-proxy.sh)");
    let wasm = std::fs::read(&path).expect("read the plugin");

    let host = ProxyHost::new(HostConfig { max_instances: 256, ..Default::default() }).unwrap();
    let module = host.load_module("testkit", &wasm).unwrap();
    let vm = Vm::start(&host, &module, VmConfig::default()).unwrap();
    let plugin = vm
        .add_plugin(PluginConfig { name: "bench".into(), configuration: b"add-header".to_vec(), ..Default::default() })
        .unwrap();
    let template = request();
    let bcv = measure(5, ITERATIONS, || {
        let ctx = plugin.http_context().unwrap();
        assert_eq!(ctx.on_request_headers(template.clone(), true).unwrap(), FilterAction::Continue);
        // Read back in place, as the plain host takes its vector: neither side copies the result.
        assert_eq!(ctx.read_headers(MapType::HttpRequestHeaders, |h| h.len()).unwrap(), 11);
        assert!(ctx.finish().unwrap());
    });
    let (plain, bare_instantiate) = plain_wasmtime(&wasm);
    if std::env::var_os("BCV_BENCH_SPLIT").is_some() {
        let create_only = measure(5, ITERATIONS, || {
            let ctx = plugin.http_context().unwrap();
            assert!(ctx.finish().unwrap());
        });
        let rt = bcv_core::handle::Runtime::global();
        let pipes = measure(5, ITERATIONS, || {
            let _ = rt.pipe(16).unwrap();
        });
        println!(
            "  split: context create+finish {:.2} us, a pipe (2 nodes) {:.2} us",
            create_only.as_secs_f64() * 1e6,
            pipes.as_secs_f64() * 1e6
        );
    }

    let vm_start = measure(5, 500, || {
        Vm::start(&host, &module, VmConfig::default()).unwrap();
    });

    let before = rss_bytes();
    let vms: Vec<(Vm, _)> = (0..100)
        .map(|_| {
            let vm = Vm::start(&host, &module, VmConfig::default()).unwrap();
            let plugin = vm
                .add_plugin(PluginConfig {
                    name: "m".into(),
                    configuration: b"add-header".to_vec(),
                    ..Default::default()
                })
                .unwrap();
            (vm, plugin)
        })
        .collect();
    let per_vm_rss = rss_bytes().saturating_sub(before) / 100;
    let linear = vms[0].0.memory_size().expect("not called from a callback");
    drop(vms);

    let ratio = bcv.as_secs_f64() / plain.as_secs_f64();
    println!("proxy bench: header-adding filter, 10 request headers, {ITERATIONS} requests x 5 rounds (median)");
    println!("  bcv full request lifecycle      {:>8.2} us", bcv.as_secs_f64() * 1e6);
    println!("  plain wasmtime, same guest calls {:>7.2} us", plain.as_secs_f64() * 1e6);
    println!("  ratio bcv / plain wasmtime      {ratio:>8.2}x (goal <= 1.2x)");
    println!(
        "  instantiation, pooled (bare InstancePre::instantiate) {:>6.2} us (goal <= 4 us)",
        bare_instantiate.as_secs_f64() * 1e6
    );
    println!("  Vm::start (pooled instance + store + _initialize)     {:>6.2} us", vm_start.as_secs_f64() * 1e6);
    println!(
        "  memory per instance: linear memory {} KiB, resident set growth {} KiB per VM (100 VMs with a plugin)",
        linear / 1024,
        per_vm_rss / 1024
    );
}
