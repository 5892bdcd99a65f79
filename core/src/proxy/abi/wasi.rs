//! WASI preview1, as far as proxy-wasm plugins use it, under a given module name (`wasi_snapshot_preview1`
//! and the older `wasi_unstable`).
//!
//! stdout lines are logged at Info and stderr lines at Error; the clock and randomness are real; the
//! environment is the VM's own (never the host process's); there is no file system, so file and socket
//! calls answer BADF or NOTSUP. `proc_exit` fails the VM.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::{memory_and_state, put_u32, put_u64, slice};
use crate::proxy::error::FailReason;
use crate::proxy::state::HostState;
use crate::proxy::types::LogLevel;

type C<'a> = Caller<'a, HostState>;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOTSUP: i32 = 58;

fn errno(result: Result<(), i32>) -> i32 {
    result.err().unwrap_or(SUCCESS)
}

fn u32_at(memory: &[u8], ptr: i32) -> Result<u32, i32> {
    let bytes = slice(memory, ptr, 4).map_err(|_| FAULT)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

pub(super) fn link(l: &mut Linker<HostState>, module: &str) -> wasmtime::Result<()> {
    l.func_wrap(module, "fd_write", fd_write)?;
    l.func_wrap(module, "clock_time_get", clock_time_get)?;
    l.func_wrap(module, "clock_res_get", |mut c: C<'_>, id: i32, out: i32| -> i32 {
        if !(0..=3).contains(&id) {
            return INVAL;
        }
        let (memory, _) = memory_and_state(&mut c);
        errno(put_u64(memory, out, 1).map_err(|_| FAULT))
    })?;
    l.func_wrap(module, "random_get", random_get)?;
    l.func_wrap(module, "environ_sizes_get", environ_sizes_get)?;
    l.func_wrap(module, "environ_get", environ_get)?;
    l.func_wrap(module, "args_sizes_get", |mut c: C<'_>, count_out: i32, size_out: i32| -> i32 {
        let (memory, _) = memory_and_state(&mut c);
        errno(put_u32(memory, count_out, 0).and_then(|()| put_u32(memory, size_out, 0)).map_err(|_| FAULT))
    })?;
    l.func_wrap(module, "args_get", |_c: C<'_>, _argv: i32, _buf: i32| -> i32 { SUCCESS })?;
    l.func_wrap(module, "proc_exit", |mut c: C<'_>, code: i32| -> wasmtime::Result<()> {
        let reason = FailReason::ProcExit(code);
        let message = reason.to_string();
        c.data_mut().fault = Some(reason);
        Err(wasmtime::Error::msg(message))
    })?;
    l.func_wrap(module, "sched_yield", |_c: C<'_>| -> i32 { SUCCESS })?;
    l.func_wrap(module, "fd_fdstat_get", fd_fdstat_get)?;
    l.func_wrap(module, "fd_close", |_c: C<'_>, _fd: i32| -> i32 { BADF })?;
    l.func_wrap(module, "fd_seek", |_c: C<'_>, _fd: i32, _off: i64, _whence: i32, _out: i32| -> i32 { BADF })?;
    l.func_wrap(module, "fd_read", |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _out: i32| -> i32 { BADF })?;
    l.func_wrap(module, "fd_prestat_get", |_c: C<'_>, _fd: i32, _out: i32| -> i32 { BADF })?;
    l.func_wrap(module, "fd_prestat_dir_name", |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> i32 { BADF })?;
    l.func_wrap(module, "fd_filestat_get", |_c: C<'_>, _fd: i32, _out: i32| -> i32 { BADF })?;
    l.func_wrap(module, "fd_sync", |_c: C<'_>, _fd: i32| -> i32 { BADF })?;
    l.func_wrap(module, "poll_oneoff", |_c: C<'_>, _in: i32, _out: i32, _n: i32, _nout: i32| -> i32 { NOTSUP })?;
    l.func_wrap(
        module,
        "path_open",
        |_c: C<'_>, _fd: i32, _df: i32, _p: i32, _pl: i32, _of: i32, _rb: i64, _ri: i64, _ff: i32, _out: i32| -> i32 {
            NOTSUP
        },
    )?;
    l.func_wrap(module, "path_filestat_get", |_c: C<'_>, _fd: i32, _fl: i32, _p: i32, _pl: i32, _out: i32| -> i32 {
        NOTSUP
    })?;
    Ok(())
}

fn fd_write(mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, written_out: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return BADF,
    };
    let (memory, state) = memory_and_state(&mut c);
    let mut bytes = Vec::new();
    for i in 0..iovs_len.max(0) {
        let entry = iovs.wrapping_add(i.wrapping_mul(8));
        let (Ok(ptr), Ok(len)) = (u32_at(memory, entry), u32_at(memory, entry.wrapping_add(4))) else { return FAULT };
        match slice(memory, ptr as i32, len as i32) {
            Ok(part) => bytes.extend_from_slice(part),
            Err(_) => return FAULT,
        }
        if bytes.len() > 1 << 20 {
            return INVAL;
        }
    }
    if put_u32(memory, written_out, bytes.len() as u32).is_err() {
        return FAULT;
    }
    let text = String::from_utf8_lossy(&bytes);
    let context = state.effective;
    for line in text.lines().filter(|l| !l.is_empty()) {
        state.log(level, context, line.to_string());
    }
    SUCCESS
}

fn clock_time_get(mut c: C<'_>, id: i32, _precision: i64, out: i32) -> i32 {
    let now = match id {
        0 => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        1 => {
            let started = c.data().vm.host.started;
            started.elapsed().as_nanos() as u64 + 1
        }
        _ => return NOTSUP,
    };
    let (memory, _) = memory_and_state(&mut c);
    errno(put_u64(memory, out, now).map_err(|_| FAULT))
}

fn random_get(mut c: C<'_>, buf: i32, len: i32) -> i32 {
    let limit = c.data().vm.host.config.max_random_bytes;
    if len as u32 as usize > limit {
        return INVAL;
    }
    let (memory, _) = memory_and_state(&mut c);
    let (at, len) = (buf as u32 as usize, len as u32 as usize);
    let Some(target) = at.checked_add(len).and_then(|end| memory.get_mut(at..end)) else { return FAULT };
    if getrandom::fill(target).is_err() {
        return NOTSUP;
    }
    SUCCESS
}

fn environ_sizes_get(mut c: C<'_>, count_out: i32, size_out: i32) -> i32 {
    let (memory, state) = memory_and_state(&mut c);
    let env = &state.vm.environment;
    let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    errno(
        put_u32(memory, count_out, env.len() as u32)
            .and_then(|()| put_u32(memory, size_out, size as u32))
            .map_err(|_| FAULT),
    )
}

fn environ_get(mut c: C<'_>, pointers: i32, buffer: i32) -> i32 {
    let (memory, state) = memory_and_state(&mut c);
    let mut at = buffer as u32;
    for (i, (k, v)) in state.vm.environment.iter().enumerate() {
        let entry = format!("{k}={v}\0");
        let end = (at as usize).checked_add(entry.len());
        let Some(target) = end.and_then(|end| memory.get_mut(at as usize..end)) else { return FAULT };
        target.copy_from_slice(entry.as_bytes());
        if put_u32(memory, pointers.wrapping_add(i as i32 * 4), at).is_err() {
            return FAULT;
        }
        at += entry.len() as u32;
    }
    SUCCESS
}

fn fd_fdstat_get(mut c: C<'_>, fd: i32, out: i32) -> i32 {
    if !(0..=2).contains(&fd) {
        return BADF;
    }
    let (memory, _) = memory_and_state(&mut c);
    let at = out as u32 as usize;
    let Some(stat) = at.checked_add(24).and_then(|end| memory.get_mut(at..end)) else { return FAULT };
    stat.fill(0);
    stat[0] = 2; // character device
    let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 }; // fd_read / fd_write
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    SUCCESS
}
