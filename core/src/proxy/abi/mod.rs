//! The host side of the ABI: the `env.proxy_*` functions (`env.rs`), WASI preview1 under both of its
//! module names (`wasi.rs`), and the guest-memory helpers they share.
//!
//! Every host function returns a status to the guest and never panics on guest input: a bad pointer is
//! INVALID_MEMORY_ACCESS, a bad enum value BAD_ARGUMENT. Only a restricted call, `proc_exit` or a failing
//! guest allocator turn into a trap, which marks the VM failed.

mod env;
mod wasi;

use wasmtime::{Caller, Linker};

use super::error::FailReason;
use super::state::{HostState, Phase};
use super::types::{AbiVersion, Status};

/// Adds every host function of `abi` to `linker`.
pub(crate) fn link(linker: &mut Linker<HostState>, abi: AbiVersion) -> wasmtime::Result<()> {
    env::link(linker, abi)?;
    wasi::link(linker, "wasi_snapshot_preview1")?;
    wasi::link(linker, "wasi_unstable")?;
    Ok(())
}

/// Host calls allowed while the guest starts or allocates (cpp-host's restricted-callback allowlist).
fn check_phase(c: &mut Caller<'_, HostState>, function: &'static str) -> wasmtime::Result<()> {
    let state = c.data_mut();
    if let Some(phase) = state.phase.restricted() {
        let reason = FailReason::RestrictedHostcall { function, phase };
        let message = reason.to_string();
        state.fault = Some(reason);
        return Err(wasmtime::Error::msg(message));
    }
    Ok(())
}

/// The guest's memory and the host state, borrowed together.
fn memory_and_state<'a>(c: &'a mut Caller<'_, HostState>) -> (&'a mut [u8], &'a mut HostState) {
    match c.data().memory {
        Some(memory) => memory.data_and_store_mut(c),
        None => (&mut [], c.data_mut()),
    }
}

/// The guest bytes at `ptr..ptr+len`. A zero length is valid with any pointer (NULL included).
fn slice(memory: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(&[]);
    }
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    memory.get(ptr..end).ok_or(Status::InvalidMemoryAccess)
}

/// A copy of the guest bytes at `ptr..ptr+len`.
fn read(c: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let (memory, _) = memory_and_state(c);
    slice(memory, ptr, len).map(<[u8]>::to_vec)
}

/// True when `len` bytes at `ptr` are inside the guest memory.
fn in_bounds(memory: &[u8], ptr: i32, len: usize) -> bool {
    (ptr as u32 as usize).checked_add(len).is_some_and(|end| end <= memory.len())
}

fn put_u32(memory: &mut [u8], ptr: i32, value: u32) -> Result<(), Status> {
    let at = ptr as u32 as usize;
    let end = at.checked_add(4).ok_or(Status::InvalidMemoryAccess)?;
    memory.get_mut(at..end).ok_or(Status::InvalidMemoryAccess)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

fn put_u64(memory: &mut [u8], ptr: i32, value: u64) -> Result<(), Status> {
    let at = ptr as u32 as usize;
    let end = at.checked_add(8).ok_or(Status::InvalidMemoryAccess)?;
    memory.get_mut(at..end).ok_or(Status::InvalidMemoryAccess)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Writes one u32 to guest memory.
fn write_u32(c: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> Result<(), Status> {
    let (memory, _) = memory_and_state(c);
    put_u32(memory, ptr, value)
}

/// Hands `bytes` to the guest: allocates exactly `bytes.len()` with the guest allocator, copies them in and
/// writes (pointer, length) to the out slots. Empty values are written as (0, 0) without allocating.
///
/// Errors: a trap (`Err`) when the allocator traps, returns 0 or returns memory outside the guest; the VM
/// then fails. Bad out pointers are INVALID_MEMORY_ACCESS, checked before anything is allocated.
fn give_bytes(c: &mut Caller<'_, HostState>, bytes: &[u8], ptr_out: i32, len_out: i32) -> wasmtime::Result<Status> {
    {
        let (memory, _) = memory_and_state(c);
        if !in_bounds(memory, ptr_out, 4) || !in_bounds(memory, len_out, 4) {
            return Ok(Status::InvalidMemoryAccess);
        }
        if bytes.is_empty() {
            let _ = put_u32(memory, ptr_out, 0);
            let _ = put_u32(memory, len_out, 0);
            return Ok(Status::Ok);
        }
    }
    let Ok(len) = i32::try_from(bytes.len()) else { return Ok(Status::BadArgument) };
    let address = allocate(c, len)?;
    let (memory, state) = memory_and_state(c);
    if !in_bounds(memory, address, bytes.len()) {
        let reason = FailReason::AllocatorFailed(format!("returned {address:#x} for {len} bytes, outside memory"));
        let message = reason.to_string();
        state.fault = Some(reason);
        return Err(wasmtime::Error::msg(message));
    }
    let at = address as u32 as usize;
    memory[at..at + bytes.len()].copy_from_slice(bytes);
    let _ = put_u32(memory, ptr_out, address as u32);
    let _ = put_u32(memory, len_out, len as u32);
    Ok(Status::Ok)
}

/// Calls the guest allocator in the restricted allocator phase.
fn allocate(c: &mut Caller<'_, HostState>, len: i32) -> wasmtime::Result<i32> {
    let Some(allocator) = c.data().allocator.clone() else {
        let reason = FailReason::AllocatorFailed("the module exports no allocator".into());
        let message = reason.to_string();
        c.data_mut().fault = Some(reason);
        return Err(wasmtime::Error::msg(message));
    };
    let previous = std::mem::replace(&mut c.data_mut().phase, Phase::Allocator);
    let result = allocator.call(&mut *c, len);
    c.data_mut().phase = previous;
    let address = result?;
    if address == 0 {
        let reason = FailReason::AllocatorFailed(format!("returned NULL for {len} bytes"));
        let message = reason.to_string();
        c.data_mut().fault = Some(reason);
        return Err(wasmtime::Error::msg(message));
    }
    Ok(address)
}

/// The status code of an outcome.
fn status(result: Result<(), Status>) -> i32 {
    match result {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_check_bounds_and_accept_empty_null() {
        let memory = [1u8, 2, 3, 4];
        assert_eq!(slice(&memory, 0, 0), Ok(&[][..]));
        assert_eq!(slice(&memory, -1, 0), Ok(&[][..]));
        assert_eq!(slice(&memory, 1, 2), Ok(&[2, 3][..]));
        assert_eq!(slice(&memory, 3, 2), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&memory, -16, 64), Err(Status::InvalidMemoryAccess));
        let mut memory = [0u8; 8];
        assert_eq!(put_u32(&mut memory, 6, 1), Err(Status::InvalidMemoryAccess));
        assert_eq!(put_u64(&mut memory, 0, u64::MAX), Ok(()));
        assert!(!in_bounds(&memory, -1, 4));
    }
}
