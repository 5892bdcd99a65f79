//! Container tools without a VFS or cache (`bcv_core::vfs::ContainerTools`): create, destroy, list,
//! upload and download a database file, copy, delete, cleanup, manifest, and the container's lease. Every
//! call that talks to the store runs on its own thread and settles a promise; progress callbacks run on the
//! JS thread, and so does a JS cipher given for a secure container (its calls are posted there).

use std::path::PathBuf;

use bcv_core::vfs::store::ContainerStore;
use bcv_core::vfs::{ContainerTools, DEFAULT_BLOCK_SIZE, DEFAULT_NAME_BYTES, Progress, VfsResult};
use napi::bindgen_prelude::Unknown;
use napi::{Env, JsValue, sys};
use napi_derive::napi;

use crate::env::{EnvLocal, JsKey, Out};
use crate::error::JsErr;
use crate::handle::enter;
use crate::js::{self, RawValue};
use crate::secure::SecureHandle;
use crate::vfs::{lease_duration, lease_json, lease_options, manifest_json, store_options};

/// Options of `openContainer`.
#[napi(object)]
pub struct ContainerOptions {
    /// Parallel requests for uploads, downloads and deletes; default 8.
    pub nrequest: Option<u32>,
    /// Retries after a transient store failure; default 4.
    pub retries: Option<u32>,
    /// Time limit of one store request in milliseconds; default 30000.
    pub request_timeout_ms: Option<f64>,
    /// How far the clocks of two lease clients may disagree, in milliseconds; default 5000.
    pub lease_max_skew_ms: Option<f64>,
    /// The lease time that must be left after the renewal before each manifest write, in milliseconds;
    /// default 5000.
    pub lease_safety_margin_ms: Option<f64>,
}

/// The operations on one container, without a cache. Not constructed from JS: `openContainer` makes it.
#[napi]
pub struct ContainerHandle {
    tools: ContainerTools,
}

/// Opens the container at `url` (a directory, `memory://NAME`, `s3://`, `az://`, `gs://`) for the tools;
/// no request is made. With `secure`, `create` makes a secure container and uploads and downloads seal and
/// open blocks. Throws `BCV_INVALID_ARGUMENT` for a bad URL or option, `BCV_IO`.
#[napi]
pub fn open_container(
    env: Env,
    url: String,
    options: Option<ContainerOptions>,
    secure: Option<&SecureHandle>,
) -> napi::Result<ContainerHandle> {
    let local = enter(&env)?;
    let o = options.unwrap_or(ContainerOptions {
        nrequest: None,
        retries: None,
        request_timeout_ms: None,
        lease_max_skew_ms: None,
        lease_safety_margin_ms: None,
    });
    let lease = lease_options(o.lease_max_skew_ms, o.lease_safety_margin_ms).map_err(|e| e.throw(&local))?;
    let opened = store_options(o.retries, o.request_timeout_ms)
        .and_then(|options| ContainerStore::open(&url, &options).map_err(JsErr::from))
        .map_err(|e| e.throw(&local))?;
    let mut tools = ContainerTools::new(opened, o.nrequest.unwrap_or(8).max(1) as usize).with_lease_options(lease);
    if let Some(secure) = secure {
        tools = tools.with_secure(secure.options());
    }
    Ok(ContainerHandle { tools })
}

/// Runs `work` on the container's tools off the JS thread.
fn tools_op<T: Send + 'static>(
    env: &Env,
    tools: &ContainerTools,
    work: impl FnOnce(&ContainerTools) -> VfsResult<T> + Send + 'static,
    convert: impl FnOnce(T) -> Out + Send + 'static,
) -> napi::Result<RawValue> {
    let tools = tools.clone();
    crate::off_thread(env, move || work(&tools).map_err(JsErr::from), move |r| r.map(convert))
}

/// A progress callback parked on the JS side; `report` posts one call of it to the JS thread.
struct ProgressSink {
    key: Option<JsKey>,
    bridge: std::sync::Arc<crate::env::Bridge>,
}

impl ProgressSink {
    fn new(local: &EnvLocal, callback: Option<Unknown>) -> napi::Result<ProgressSink> {
        let key = match callback {
            Some(cb) if js::type_of(local.raw(), cb.raw()) == sys::ValueType::napi_function => {
                Some(local.park_value(cb.raw())?)
            }
            Some(cb)
                if !matches!(
                    js::type_of(local.raw(), cb.raw()),
                    sys::ValueType::napi_undefined | sys::ValueType::napi_null
                ) =>
            {
                return Err(JsErr::invalid("onProgress must be a function").throw(local));
            }
            _ => None,
        };
        Ok(ProgressSink { key, bridge: local.bridge.clone() })
    }

    fn report(&self, p: Progress) {
        let Some(key) = &self.key else { return };
        let id = key.id;
        self.bridge.post(Box::new(move |local: &EnvLocal| {
            let Some(callback) = local.peek_value(id) else { return };
            let env = local.raw();
            let arg = js::object(env);
            js::set(env, arg, "done", js::number(env, p.done as f64));
            js::set(env, arg, "total", js::number(env, p.total as f64));
            let mut ignored = std::ptr::null_mut();
            // A throwing callback surfaces as an uncaught exception, as for any Node callback.
            unsafe { sys::napi_call_function(env, js::undefined(env), callback, 1, [arg].as_ptr(), &mut ignored) };
        }));
    }
}

#[napi]
impl ContainerHandle {
    /// The container as shown in errors: its URL without secrets.
    #[napi(getter)]
    pub fn label(&self) -> String {
        self.tools.store().label().to_string()
    }

    /// Creates an empty container. Rejects with `BCV_ALREADY_EXISTS` unless `overwrite`, and with
    /// `BCV_UNSUPPORTED` for a store without conditional writes.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn create(
        &self,
        env: Env,
        block_size: Option<u32>,
        name_bytes: Option<u32>,
        overwrite: Option<bool>,
    ) -> napi::Result<RawValue> {
        let (bs, nb) = (block_size.unwrap_or(DEFAULT_BLOCK_SIZE), name_bytes.unwrap_or(DEFAULT_NAME_BYTES));
        let overwrite = overwrite.unwrap_or(false);
        tools_op(&env, &self.tools, move |t| t.create(bs, nb, overwrite), |()| Out::Undefined)
    }

    /// Deletes every object of the container (the manifest first): resolves with the objects deleted.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn destroy(&self, env: Env) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, |t| t.destroy(), |n| Out::Number(n as f64))
    }

    /// The databases of the container.
    #[napi(ts_return_type = "Promise<unknown[]>")]
    pub fn list(&self, env: Env) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, |t| t.list(), |l| Out::Json(serde_json::to_value(l).unwrap_or_default()))
    }

    /// Uploads the local file `path` as database `name`; resolves with its new version.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn upload_file(
        &self,
        env: Env,
        path: String,
        name: String,
        #[napi(ts_arg_type = "(progress: { done: number, total: number }) => void")] on_progress: Option<Unknown>,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let sink = ProgressSink::new(&local, on_progress)?;
        let path = PathBuf::from(path);
        tools_op(
            &env,
            &self.tools,
            move |t| t.upload_file(&path, &name, &|p| sink.report(p)),
            |v| Out::Number(v as f64),
        )
    }

    /// Downloads database `name` to the local file `path` (written to a temporary name, then renamed);
    /// resolves with the bytes written.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn download_file(
        &self,
        env: Env,
        name: String,
        path: String,
        #[napi(ts_arg_type = "(progress: { done: number, total: number }) => void")] on_progress: Option<Unknown>,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let sink = ProgressSink::new(&local, on_progress)?;
        let path = PathBuf::from(path);
        tools_op(
            &env,
            &self.tools,
            move |t| t.download_file(&name, &path, &|p| sink.report(p)),
            |n| Out::Number(n as f64),
        )
    }

    /// Copies database `from` to a new database `to`, sharing blocks.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn copy(&self, env: Env, from: String, to: String) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, move |t| t.copy(&from, &to), |()| Out::Undefined)
    }

    /// Deletes database `name` (its blocks go to the delete list).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete(&self, env: Env, name: String) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, move |t| t.delete(&name), |()| Out::Undefined)
    }

    /// Deletes blocks that have waited `graceSeconds` on the delete list, and (with `findOrphans`) block
    /// objects no database references that are as old: the cleanup report.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn cleanup(&self, env: Env, grace_seconds: f64, find_orphans: bool) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        if !(grace_seconds.is_finite() && grace_seconds >= 0.0) {
            return Err(JsErr::invalid(format!("graceSeconds must be a non-negative number, got {grace_seconds}"))
                .throw(&local));
        }
        let grace = crate::duration_from_ms(grace_seconds * 1000.0);
        tools_op(
            &env,
            &self.tools,
            move |t| t.cleanup(grace, find_orphans),
            |r| Out::Json(serde_json::to_value(r).unwrap_or_default()),
        )
    }

    /// The manifest: sizes, databases and the delete list.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn manifest(&self, env: Env) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, |t| t.manifest(), |(m, _)| Out::Json(manifest_json(&m)))
    }

    /// True when the container is secure (has a `bcv_secure.json` marker).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn is_secure(&self, env: Env) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, |t| t.is_secure(), |b| Out::Json(serde_json::Value::Bool(b)))
    }

    /// Obtains the container's lease for `holder` for `durationMs`: resolves with the lease (its `token` lets
    /// another process extend, release or adopt it). Rejects with `BCV_LEASE_HELD` naming the holder.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn lease_obtain(&self, env: Env, holder: String, duration_ms: f64) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let duration = lease_duration(duration_ms).map_err(|e| e.throw(&local))?;
        tools_op(&env, &self.tools, move |t| t.lease_obtain(&holder, duration), |l| Out::Json(lease_json(Some(&l))))
    }

    /// Extends the lease these tools hold, or with `token` the holding of that token (obtained elsewhere), to
    /// expire `durationMs` from now. Rejects with `BCV_LEASE_LOST`.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn lease_extend(&self, env: Env, duration_ms: f64, token: Option<String>) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let duration = lease_duration(duration_ms).map_err(|e| e.throw(&local))?;
        tools_op(
            &env,
            &self.tools,
            move |t| match &token {
                Some(token) => t.lease_extend_with_token(token, duration),
                None => t.lease_extend(duration),
            },
            |l| Out::Json(lease_json(Some(&l))),
        )
    }

    /// Releases the lease these tools hold, or with `token` the holding of that token. Rejects with
    /// `BCV_LEASE_LOST`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn lease_release(&self, env: Env, token: Option<String>) -> napi::Result<RawValue> {
        tools_op(
            &env,
            &self.tools,
            move |t| match &token {
                Some(token) => t.lease_release_with_token(token),
                None => t.lease_release(),
            },
            |()| Out::Undefined,
        )
    }

    /// The lease as recorded in the container, read now: resolves with it, or `null` when none is held.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn lease_status(&self, env: Env) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, |t| t.lease_status(), |l| Out::Json(lease_json(l.as_ref())))
    }

    /// The lease these tools hold, as they last wrote it (no request), or `null`.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn lease_held(&self, env: Env) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, |t| t.lease_held(), |l| Out::Json(lease_json(l.as_ref())))
    }

    /// Makes these tools the holder of the lease obtained elsewhere under `token` (nothing is written).
    /// Rejects with `BCV_LEASE_LOST` when the container's lease is not that unexpired holding.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn lease_adopt(&self, env: Env, token: String) -> napi::Result<RawValue> {
        tools_op(&env, &self.tools, move |t| t.lease_adopt(&token), |l| Out::Json(lease_json(Some(&l))))
    }

    /// The request counters of this container object.
    #[napi(ts_return_type = "unknown")]
    pub fn meter(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let snapshot = serde_json::to_value(self.tools.store().meter().snapshot()).unwrap_or_default();
        Ok(RawValue(js::json(local.raw(), &snapshot)))
    }
}
