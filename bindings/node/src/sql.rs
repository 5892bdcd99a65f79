//! Prepared statements of a `Database` handle, and the conversion between JS values and SQLite values.
//! `lib/index.js` builds the better-sqlite3-style `Statement` on this class.
//!
//! Binding: `null`/`undefined` → NULL, a boolean → 0/1, an integral number within ±2^53 → INTEGER, any
//! other number → REAL, a string → TEXT, a `BigInt` → INTEGER (it must fit in 64 bits), a `Uint8Array`
//! (`Buffer`) or `ArrayBuffer` → BLOB. Reading: INTEGER → number (or `BigInt` with `safeIntegers`), REAL →
//! number, TEXT → string, BLOB → `Buffer`, NULL → `null`.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use bcv_core::vfs::{Connection, Statement as CoreStatement, Value, VfsError};
use napi::bindgen_prelude::Unknown;
use napi::{Env, JsValue, sys};
use napi_derive::napi;

use crate::env::EnvLocal;
use crate::error::JsErr;
use crate::handle::{Kind, enter};
use crate::js::{self, RawValue};
use crate::vfs::conn_of;

/// Rows as arrays instead of objects.
const MODE_RAW: u32 = 1;
/// Only the first column of each row.
const MODE_PLUCK: u32 = 2;
/// Integers as `BigInt`.
const MODE_SAFE_INTEGERS: u32 = 4;

/// Garbage handed to the drop thread.
type Garbage = Box<dyn Send>;

/// Drops `garbage` on a thread of its own, never on the JS thread (N1): the last statement of a released
/// database closes the SQLite handle when it goes, which may write (a WAL checkpoint).
fn drop_off_thread(garbage: Garbage) {
    static DROPPER: OnceLock<Option<Mutex<Sender<Garbage>>>> = OnceLock::new();
    let sender = DROPPER.get_or_init(|| {
        let (tx, rx) = channel::<Garbage>();
        let spawned = std::thread::Builder::new().name("bcv-node-drop".into()).spawn(move || {
            while let Ok(garbage) = rx.recv() {
                drop(garbage);
            }
        });
        spawned.ok().map(|_| Mutex::new(tx))
    });
    if let Some(tx) = sender {
        // A send fails only when the thread is gone; the garbage then comes back and is dropped here.
        let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(garbage);
    }
}

/// What a statement holds on to, in drop order: the statement first, then the database (whose last
/// reference may let the VFS go, which must come after the connection closed).
struct Inner {
    stmt: CoreStatement,
    /// The `Database` kind: it keeps the connection, and the VFS behind it, alive.
    db: Arc<Kind>,
}

/// One prepared statement. Finalized when garbage-collected (off the JS thread) or when its database
/// closes (later calls then throw `BCV_CLOSED`). It keeps its database open while it lives. Not
/// constructed from JS: `Database.prepare()` makes it.
#[napi]
pub struct Statement {
    inner: ManuallyDrop<Inner>,
    /// Parameter `i + 1`: its name without the prefix (`:a` → `a`), or `None` when it is positional.
    params: Vec<Option<String>>,
    reader: bool,
    readonly: bool,
    /// The result column names of the current execution.
    names: RefCell<Vec<String>>,
}

impl Statement {
    pub(crate) fn prepare(local: &EnvLocal, db: Arc<Kind>, sql: &str) -> napi::Result<Statement> {
        let conn = conn_of(&db);
        let err = |e: VfsError| JsErr::vfs(e, Some(conn.node())).throw(local);
        let stmt = conn.prepare(sql).map_err(err)?;
        let count = stmt.parameter_count().map_err(err)?;
        let mut params = Vec::with_capacity(count);
        for i in 1..=count {
            // `?` and `?NNN` are positional; `:a`, `@a` and `$a` are named `a`.
            let name = stmt.parameter_name(i).map_err(err)?;
            params.push(name.filter(|n| !n.starts_with('?')).map(|n| n[1..].to_string()));
        }
        let names = stmt.columns().map_err(err)?;
        let readonly = stmt.is_readonly().map_err(err)?;
        Ok(Statement {
            reader: !names.is_empty(),
            readonly,
            names: RefCell::new(names),
            params,
            inner: ManuallyDrop::new(Inner { stmt, db }),
        })
    }

    fn conn(&self) -> &Connection {
        conn_of(&self.inner.db)
    }

    fn stmt(&self) -> &CoreStatement {
        &self.inner.stmt
    }

    fn fail(&self, local: &EnvLocal, e: VfsError) -> napi::Error {
        JsErr::vfs(e, Some(self.conn().node())).throw(local)
    }

    /// Binds `positional` (an array) and `named` (an object or null) to the parameters, resetting the
    /// statement first, and refreshes the column names.
    fn bind(&self, local: &EnvLocal, positional: &Unknown, named: &Unknown) -> napi::Result<()> {
        let env = local.raw();
        let positional = positional.raw();
        if !js::is_array(env, positional) {
            return Err(JsErr::invalid("parameters must be passed as an array").throw(local));
        }
        let positional = js::elements(env, positional);
        let named = match js::type_of(env, named.raw()) {
            sys::ValueType::napi_undefined | sys::ValueType::napi_null => None,
            sys::ValueType::napi_object => Some(named.raw()),
            _ => return Err(JsErr::invalid("named parameters must be passed as an object").throw(local)),
        };
        let mut values = Vec::with_capacity(self.params.len());
        let mut next = 0;
        for (i, name) in self.params.iter().enumerate() {
            let index = i + 1;
            let raw = match name {
                None => {
                    let Some(v) = positional.get(next) else {
                        return Err(JsErr::invalid(format!(
                            "too few parameter values were provided: the statement takes {} positional ones",
                            self.params.iter().filter(|p| p.is_none()).count()
                        ))
                        .throw(local));
                    };
                    next += 1;
                    *v
                }
                Some(n) => match named {
                    Some(obj) if js::has_own(env, obj, n) => js::get(env, obj, n),
                    Some(_) => return Err(JsErr::invalid(format!("missing named parameter {n:?}")).throw(local)),
                    None => {
                        return Err(JsErr::invalid(format!(
                            "missing named parameter {n:?}: pass an object with the named values"
                        ))
                        .throw(local));
                    }
                },
            };
            let value =
                to_value(env, raw).map_err(|m| JsErr::invalid(format!("parameter {index}: {m}")).throw(local))?;
            values.push((index, value));
        }
        if next < positional.len() {
            return Err(JsErr::invalid(format!(
                "too many parameter values were provided: the statement takes {next} positional ones"
            ))
            .throw(local));
        }
        if named.is_some() && self.params.iter().all(Option::is_none) {
            return Err(JsErr::invalid("the statement has no named parameters").throw(local));
        }
        self.stmt().bind_indexed(&values).map_err(|e| self.fail(local, e))?;
        let names = self.stmt().columns().map_err(|e| self.fail(local, e))?;
        *self.names.borrow_mut() = names;
        Ok(())
    }

    /// One row as JS: an object by column name, an array (raw), or the first value (pluck).
    fn row(&self, env: sys::napi_env, values: Vec<Value>, mode: u32) -> sys::napi_value {
        let safe = mode & MODE_SAFE_INTEGERS != 0;
        if mode & MODE_PLUCK != 0 {
            return values.into_iter().next().map_or_else(|| js::undefined(env), |v| to_js(env, v, safe));
        }
        if mode & MODE_RAW != 0 {
            return js::array(env, values.into_iter().map(|v| to_js(env, v, safe)).collect());
        }
        let obj = js::object(env);
        for (name, v) in self.names.borrow().iter().zip(values) {
            js::set(env, obj, name, to_js(env, v, safe));
        }
        obj
    }
}

#[napi]
impl Statement {
    /// True when the statement returns rows (a `SELECT`, a `RETURNING` clause, most `PRAGMA`s).
    #[napi(getter)]
    pub fn reader(&self) -> bool {
        self.reader
    }

    /// True when the statement does not write to the database.
    #[napi(getter)]
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Runs the statement to its end: `{ changes, lastInsertRowid }` (`changes` counts the rows this run
    /// inserted, updated or deleted; `lastInsertRowid` is a `BigInt` with `safeIntegers`).
    #[napi(ts_args_type = "params: unknown[], named: object | null, safeIntegers: boolean")]
    pub fn run(&self, env: Env, params: Unknown, named: Unknown, safe_integers: bool) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let conn = self.conn();
        let before = conn.total_changes();
        self.bind(&local, &params, &named)?;
        loop {
            match self.stmt().step() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(self.fail(&local, e)),
            }
        }
        let _ = self.stmt().reset();
        let changes = if conn.total_changes() == before { 0 } else { conn.changes() };
        let rowid = conn.last_insert_rowid();
        let raw = local.raw();
        let out = js::object(raw);
        js::set(raw, out, "changes", js::number(raw, changes as f64));
        let rowid = if safe_integers { js::bigint(raw, rowid) } else { js::number(raw, rowid as f64) };
        js::set(raw, out, "lastInsertRowid", rowid);
        Ok(RawValue(out))
    }

    /// The first row, or `undefined` when there is none (the statement is reset afterwards).
    #[napi(ts_args_type = "params: unknown[], named: object | null, mode: number", ts_return_type = "unknown")]
    pub fn get(&self, env: Env, params: Unknown, named: Unknown, mode: u32) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        self.bind(&local, &params, &named)?;
        let step = self.stmt().step();
        let _ = self.stmt().reset();
        let raw = local.raw();
        match step {
            Ok(Some(values)) => Ok(RawValue(self.row(raw, values, mode))),
            Ok(None) => Ok(RawValue(js::undefined(raw))),
            Err(e) => Err(self.fail(&local, e)),
        }
    }

    /// Every row.
    #[napi(ts_args_type = "params: unknown[], named: object | null, mode: number", ts_return_type = "unknown[]")]
    pub fn all(&self, env: Env, params: Unknown, named: Unknown, mode: u32) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        self.bind(&local, &params, &named)?;
        let raw = local.raw();
        let mut rows = Vec::new();
        loop {
            match self.stmt().step() {
                Ok(Some(values)) => rows.push(self.row(raw, values, mode)),
                Ok(None) => break,
                Err(e) => return Err(self.fail(&local, e)),
            }
        }
        let _ = self.stmt().reset();
        Ok(RawValue(js::array(raw, rows)))
    }

    /// Binds the parameters for an iteration driven by `iterNext`.
    #[napi(ts_args_type = "params: unknown[], named: object | null")]
    pub fn iter_start(&self, env: Env, params: Unknown, named: Unknown) -> napi::Result<()> {
        let local = enter(&env)?;
        self.bind(&local, &params, &named)
    }

    /// The next row of the iteration, or `undefined` at its end (the statement is then reset).
    #[napi(ts_return_type = "unknown")]
    pub fn iter_next(&self, env: Env, mode: u32) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let raw = local.raw();
        match self.stmt().step() {
            Ok(Some(values)) => Ok(RawValue(self.row(raw, values, mode))),
            Ok(None) => {
                let _ = self.stmt().reset();
                Ok(RawValue(js::undefined(raw)))
            }
            Err(e) => Err(self.fail(&local, e)),
        }
    }

    /// Resets the statement (ends an iteration early, releasing its read lock).
    #[napi]
    pub fn reset(&self, env: Env) -> napi::Result<()> {
        let local = enter(&env)?;
        self.stmt().reset().map_err(|e| self.fail(&local, e))
    }

    /// The result columns: `{ name, type }`, `type` being the declared type or `null` for expressions.
    #[napi(ts_return_type = "Array<{ name: string, type: string | null }>")]
    pub fn columns(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let names = self.stmt().columns().map_err(|e| self.fail(&local, e))?;
        let types = self.stmt().column_decltypes().map_err(|e| self.fail(&local, e))?;
        let raw = local.raw();
        let items = names
            .iter()
            .zip(types)
            .map(|(name, t)| {
                let o = js::object(raw);
                js::set(raw, o, "name", js::string(raw, name));
                js::set(raw, o, "type", t.map_or_else(|| js::null(raw), |t| js::string(raw, &t)));
                o
            })
            .collect();
        Ok(RawValue(js::array(raw, items)))
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once and `inner` is not used after this.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        drop_off_thread(Box::new(inner));
    }
}

/// Converts one JS value to an SQLite value (see the module docs); the error says why it cannot be bound.
fn to_value(env: sys::napi_env, v: sys::napi_value) -> Result<Value, String> {
    Ok(match js::type_of(env, v) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Value::Null,
        sys::ValueType::napi_boolean => Value::Integer(js::get_bool(env, v) as i64),
        sys::ValueType::napi_number => {
            let n = js::get_number(env, v);
            if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_991.0 {
                Value::Integer(n as i64)
            } else {
                Value::Real(n)
            }
        }
        sys::ValueType::napi_string => Value::Text(js::get_string(env, v)),
        sys::ValueType::napi_bigint => {
            Value::Integer(js::get_bigint(env, v).ok_or("the BigInt does not fit in a 64-bit signed integer")?)
        }
        sys::ValueType::napi_object => Value::Blob(
            js::get_bytes(env, v).ok_or("only null, numbers, BigInts, strings and Uint8Arrays can be bound")?,
        ),
        _ => return Err("only null, numbers, BigInts, strings and Uint8Arrays can be bound".into()),
    })
}

/// Converts one SQLite value to JS.
fn to_js(env: sys::napi_env, v: Value, safe_integers: bool) -> sys::napi_value {
    match v {
        Value::Null => js::null(env),
        Value::Integer(i) if safe_integers => js::bigint(env, i),
        Value::Integer(i) => js::number(env, i as f64),
        Value::Real(f) => js::number(env, f),
        Value::Text(s) => js::string(env, &s),
        Value::Blob(b) => js::buffer(env, &b),
    }
}
