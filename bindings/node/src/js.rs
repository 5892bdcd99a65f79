//! Small helpers over raw Node-API calls used on the JS thread. A failing call yields `undefined`
//! rather than a panic: these build return values and error details, where a missing property is the
//! worst outcome.

use std::ptr;

use napi::sys;

pub(crate) fn undefined(env: sys::napi_env) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_get_undefined(env, &mut v) };
    v
}

pub(crate) fn null(env: sys::napi_env) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_get_null(env, &mut v) };
    v
}

pub(crate) fn string(env: sys::napi_env, s: &str) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut v) };
    v
}

pub(crate) fn number(env: sys::napi_env, n: f64) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_create_double(env, n, &mut v) };
    v
}

pub(crate) fn object(env: sys::napi_env) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_create_object(env, &mut v) };
    v
}

pub(crate) fn array(env: sys::napi_env, items: Vec<sys::napi_value>) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_create_array_with_length(env, items.len(), &mut v) };
    for (i, item) in items.into_iter().enumerate() {
        unsafe { sys::napi_set_element(env, v, i as u32, item) };
    }
    v
}

/// HTTP fields as an array of `[name, value]` string pairs.
pub(crate) fn fields(env: sys::napi_env, fields: &[(String, String)]) -> sys::napi_value {
    array(env, fields.iter().map(|(n, v)| array(env, vec![string(env, n), string(env, v)])).collect())
}

/// A Node `Buffer` holding a copy of `data`.
pub(crate) fn buffer(env: sys::napi_env, data: &[u8]) -> sys::napi_value {
    let mut v = ptr::null_mut();
    let mut out = ptr::null_mut();
    unsafe { sys::napi_create_buffer_copy(env, data.len(), data.as_ptr().cast(), &mut out, &mut v) };
    v
}

pub(crate) fn set(env: sys::napi_env, obj: sys::napi_value, key: &str, value: sys::napi_value) {
    let k = string(env, key);
    unsafe { sys::napi_set_property(env, obj, k, value) };
}

pub(crate) fn get(env: sys::napi_env, obj: sys::napi_value, key: &str) -> sys::napi_value {
    let k = string(env, key);
    let mut v = ptr::null_mut();
    if unsafe { sys::napi_get_property(env, obj, k, &mut v) } != sys::Status::napi_ok {
        return undefined(env);
    }
    v
}

/// Copies the own enumerable properties of `from` onto `to`.
pub(crate) fn assign(env: sys::napi_env, to: sys::napi_value, from: sys::napi_value) {
    let mut names = ptr::null_mut();
    if unsafe { sys::napi_get_property_names(env, from, &mut names) } != sys::Status::napi_ok {
        return;
    }
    let mut len = 0u32;
    unsafe { sys::napi_get_array_length(env, names, &mut len) };
    for i in 0..len {
        let mut key = ptr::null_mut();
        let mut value = ptr::null_mut();
        unsafe {
            sys::napi_get_element(env, names, i, &mut key);
            sys::napi_get_property(env, from, key, &mut value);
            sys::napi_set_property(env, to, key, value);
        }
    }
}

/// A raw JS value returned from a `#[napi]` function as is (promises built with `napi_create_promise`).
pub struct RawValue(pub(crate) sys::napi_value);

impl napi::bindgen_prelude::ToNapiValue for RawValue {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        Ok(val.0)
    }
}

impl napi::bindgen_prelude::TypeName for RawValue {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::Unknown
    }
}

pub(crate) fn boolean(env: sys::napi_env, b: bool) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_get_boolean(env, b, &mut v) };
    v
}

/// A `BigInt` holding `n`.
pub(crate) fn bigint(env: sys::napi_env, n: i64) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_create_bigint_int64(env, n, &mut v) };
    v
}

/// The `typeof` of a value (`sys::ValueType::*`); `undefined` when the call fails.
pub(crate) fn type_of(env: sys::napi_env, value: sys::napi_value) -> sys::napi_valuetype {
    let mut t = sys::ValueType::napi_undefined;
    unsafe { sys::napi_typeof(env, value, &mut t) };
    t
}

/// True for a JS array.
pub(crate) fn is_array(env: sys::napi_env, value: sys::napi_value) -> bool {
    let mut yes = false;
    unsafe { sys::napi_is_array(env, value, &mut yes) };
    yes
}

/// The elements of a JS array (empty for anything else).
pub(crate) fn elements(env: sys::napi_env, array: sys::napi_value) -> Vec<sys::napi_value> {
    let mut len = 0u32;
    if unsafe { sys::napi_get_array_length(env, array, &mut len) } != sys::Status::napi_ok {
        return Vec::new();
    }
    (0..len)
        .map(|i| {
            let mut v = ptr::null_mut();
            unsafe { sys::napi_get_element(env, array, i, &mut v) };
            v
        })
        .collect()
}

/// True when `obj` has an own property `key` (inherited ones, such as `toString`, do not count).
pub(crate) fn has_own(env: sys::napi_env, obj: sys::napi_value, key: &str) -> bool {
    let k = string(env, key);
    let mut yes = false;
    unsafe { sys::napi_has_own_property(env, obj, k, &mut yes) };
    yes
}

/// The number inside a JS number.
pub(crate) fn get_number(env: sys::napi_env, value: sys::napi_value) -> f64 {
    let mut n = 0.0;
    unsafe { sys::napi_get_value_double(env, value, &mut n) };
    n
}

/// The boolean inside a JS boolean.
pub(crate) fn get_bool(env: sys::napi_env, value: sys::napi_value) -> bool {
    let mut b = false;
    unsafe { sys::napi_get_value_bool(env, value, &mut b) };
    b
}

/// The text of a JS string (lone surrogates become U+FFFD, as in `Buffer.from(str)`).
pub(crate) fn get_string(env: sys::napi_env, value: sys::napi_value) -> String {
    let mut len = 0usize;
    unsafe { sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &mut len) };
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    unsafe { sys::napi_get_value_string_utf8(env, value, buf.as_mut_ptr().cast(), buf.len(), &mut written) };
    buf.truncate(written);
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The value of a JS `BigInt` if it fits in an `i64`.
pub(crate) fn get_bigint(env: sys::napi_env, value: sys::napi_value) -> Option<i64> {
    let mut n = 0i64;
    let mut lossless = false;
    let status = unsafe { sys::napi_get_value_bigint_int64(env, value, &mut n, &mut lossless) };
    (status == sys::Status::napi_ok && lossless).then_some(n)
}

/// A copy of the bytes of a `Uint8Array` (a `Buffer` included) or an `ArrayBuffer`; `None` for anything
/// else (other typed arrays included: their byte order is the platform's, not a blob's).
pub(crate) fn get_bytes(env: sys::napi_env, value: sys::napi_value) -> Option<Vec<u8>> {
    let mut yes = false;
    unsafe { sys::napi_is_typedarray(env, value, &mut yes) };
    if yes {
        let mut kind = 0;
        let mut len = 0usize;
        let mut data = ptr::null_mut();
        let mut buffer = ptr::null_mut();
        let mut offset = 0usize;
        let status = unsafe {
            sys::napi_get_typedarray_info(env, value, &mut kind, &mut len, &mut data, &mut buffer, &mut offset)
        };
        if status != sys::Status::napi_ok || kind != sys::TypedarrayType::uint8_array {
            return None;
        }
        return Some(if len == 0 || data.is_null() {
            Vec::new()
        } else {
            // SAFETY: Node-API reports `len` readable bytes at `data` for the duration of this call.
            unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec()
        });
    }
    unsafe { sys::napi_is_arraybuffer(env, value, &mut yes) };
    if yes {
        let mut data = ptr::null_mut();
        let mut len = 0usize;
        if unsafe { sys::napi_get_arraybuffer_info(env, value, &mut data, &mut len) } != sys::Status::napi_ok {
            return None;
        }
        return Some(if len == 0 || data.is_null() {
            Vec::new()
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec()
        });
    }
    None
}

/// `snake_case` → `camelCase` (report fields come from serde with Rust names).
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as a plain JS value, object keys in camelCase (numbers beyond 2^53 lose precision).
pub(crate) fn json(env: sys::napi_env, value: &serde_json::Value) -> sys::napi_value {
    use serde_json::Value as J;
    match value {
        J::Null => null(env),
        J::Bool(b) => boolean(env, *b),
        J::Number(n) => number(env, n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => string(env, s),
        J::Array(items) => array(env, items.iter().map(|v| json(env, v)).collect()),
        J::Object(map) => {
            let obj = object(env);
            for (k, v) in map {
                set(env, obj, &camel(k), json(env, v));
            }
            obj
        }
    }
}
