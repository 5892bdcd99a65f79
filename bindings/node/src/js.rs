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
