//! Support code shared by the SDK-free test modules. Each of them pulls this file in with
//! `#[path = "../../common/raw.rs"] mod raw;`, so every module stays a self-contained `cdylib` whose import
//! list is exactly what it declares (no std, no wasi-libc, no SDK).
//!
//! It provides a bump allocator over a static 64 KiB arena (never frees), a `u32` → decimal formatter, and the
//! panic handler (a panic is an `unreachable` trap; none of the modules is expected to panic).

// Not every module uses every helper.
#![allow(dead_code)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

const ARENA_SIZE: usize = 64 * 1024;
/// Every allocation is 8-aligned, so the host may write u64 out-values into returned buffers too.
const ALIGN: usize = 8;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: a wasm32-wasip1 module is single-threaded, and each allocation hands out a disjoint range.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
/// Offset of the first free byte in `ARENA`.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Hands out `size` bytes from the arena, or null when it is exhausted (the host must treat 0 as failure).
pub fn bump_alloc(size: usize) -> *mut u8 {
    let start = NEXT.load(Ordering::Relaxed).next_multiple_of(ALIGN);
    match start.checked_add(size) {
        Some(end) if end <= ARENA_SIZE => {
            NEXT.store(end, Ordering::Relaxed);
            // SAFETY: `start + size <= ARENA_SIZE`, so the range lies inside the arena.
            unsafe { ARENA.0.get().cast::<u8>().add(start) }
        }
        _ => core::ptr::null_mut(),
    }
}

/// Forgets every allocation. Only valid when the module holds no pointer into the arena any more.
pub fn bump_reset() {
    NEXT.store(0, Ordering::Relaxed);
}

/// A `u32` formatted as decimal ASCII, without `alloc`.
pub struct Decimal {
    digits: [u8; 10],
    start: usize,
}

impl Decimal {
    pub fn new(mut value: u32) -> Self {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
