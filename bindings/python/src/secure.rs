//! Secure (encrypted) containers: `bcv.Secure` (a key ring, a key-provider callable, or a cipher object of
//! the application) and `bcv.generate_key()`, converted into the core's `SecureOptions`.
//!
//! Callables run on bcv threads and on the thread running SQLite; they take the GIL for each call. Every
//! bcv call that can wait on them releases the GIL, so they never deadlock. An exception in a callable
//! never unwinds into bcv: it becomes a cipher error (authentication failure for `AuthenticationError`).

use std::sync::Arc;

use bcv_core::vfs::{BlockCipher, CipherError, KEY_LEN, Keyring, SEAL_OVERHEAD, SecureOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::errors;

/// How a container is made secure: exactly one of `keys` (a key ring: AES-256-GCM keys by id, `current`
/// sealing new data), `key_provider` (a callable `key_provider(key_id) -> bytes | None`, asked at most once
/// per key id, with `current` sealing new data) or `cipher` (an object of the application with a `name`
/// string and `seal(context, plaintext) -> bytes` / `open(context, sealed) -> bytes` methods).
///
/// A cipher's `seal` must return exactly `len(plaintext) + 32` bytes bound to `context` (opening with another
/// context must fail) with a fresh nonce each time; `open` returns the plaintext, or raises
/// `bcv.AuthenticationError` (or returns `None`) when the data is not authentic. Both run on many threads.
#[pyclass(frozen, name = "Secure", module = "bcv")]
pub(crate) struct PySecure {
    pub(crate) options: SecureOptions,
    /// The key ring when built from `keys` (a daemon can hand it to clients).
    pub(crate) ring: Option<Keyring>,
}

fn key_of(value: &[u8], id: u32) -> PyResult<[u8; KEY_LEN]> {
    <[u8; KEY_LEN]>::try_from(value).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("key {id} has {} bytes, not {KEY_LEN}", value.len()))
    })
}

#[pymethods]
impl PySecure {
    /// Builds secure options from exactly one of `keys`, `key_provider` or `cipher`. Raises `ValueError` for
    /// none or several of them, a key that is not 32 bytes, or a `current` id missing from `keys`.
    #[new]
    #[pyo3(signature = (*, keys = None, current = None, key_provider = None, cipher = None))]
    fn new(
        py: Python<'_>,
        keys: Option<Bound<'_, PyDict>>,
        current: Option<u32>,
        key_provider: Option<Py<PyAny>>,
        cipher: Option<Py<PyAny>>,
    ) -> PyResult<PySecure> {
        errors::enter(py)?;
        let chosen = usize::from(keys.is_some()) + usize::from(key_provider.is_some()) + usize::from(cipher.is_some());
        if chosen != 1 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "bcv.Secure needs exactly one of keys=, key_provider= or cipher=",
            ));
        }
        if let Some(keys) = keys {
            let mut entries = Vec::with_capacity(keys.len());
            for (id, key) in keys.iter() {
                entries.push((id.extract::<u32>()?, key.extract::<Vec<u8>>()?));
            }
            entries.sort_by_key(|(id, _)| *id);
            let Some((first_id, first)) = entries.first() else {
                return Err(pyo3::exceptions::PyValueError::new_err("keys is empty"));
            };
            let mut ring = Keyring::new(*first_id, key_of(first, *first_id)?);
            for (id, key) in &entries[1..] {
                ring.add(*id, key_of(key, *id)?);
            }
            let current = current.unwrap_or(entries[entries.len() - 1].0);
            ring.rotate_to(current).map_err(|e| errors::vfs_error(py, e, None))?;
            return Ok(PySecure { options: SecureOptions::aes_gcm(&ring), ring: Some(ring) });
        }
        if let Some(provider) = key_provider {
            let current = current.ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err("key_provider= needs current= (the key id sealing new data)")
            })?;
            let ask = move |id: u32| ask_provider(&provider, id);
            return Ok(PySecure { options: SecureOptions::aes_gcm_with_provider(current, Arc::new(ask)), ring: None });
        }
        let cipher = cipher.ok_or_else(|| pyo3::exceptions::PyValueError::new_err("cipher is None"))?;
        let name: String = cipher.bind(py).getattr("name")?.extract()?;
        if name.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err("the cipher's name is empty"));
        }
        for method in ["seal", "open"] {
            if !cipher.bind(py).getattr(method)?.is_callable() {
                return Err(pyo3::exceptions::PyValueError::new_err(format!("the cipher has no {method}() method")));
            }
        }
        Ok(PySecure { options: SecureOptions::custom(Arc::new(PyCipher { name, cipher })), ring: None })
    }

    /// The cipher's name as recorded in the container (`"aes-256-gcm"` unless the application's own).
    #[getter]
    fn cipher_name(&self) -> String {
        self.options.cipher.name()
    }

    fn __repr__(&self) -> String {
        format!("<bcv.Secure {:?}>", self.options.cipher.name())
    }
}

/// Asks the application's key provider for key `id`; `None` when it does not know it or fails (an exception
/// is reported as unraisable, a wrong length too).
fn ask_provider(provider: &Py<PyAny>, id: u32) -> Option<[u8; KEY_LEN]> {
    Python::attach(|py| {
        let answer = match provider.call1(py, (id,)) {
            Ok(a) => a,
            Err(e) => {
                e.write_unraisable(py, Some(provider.bind(py)));
                return None;
            }
        };
        if answer.is_none(py) {
            return None;
        }
        match answer.extract::<Vec<u8>>(py).and_then(|k| key_of(&k, id)) {
            Ok(key) => Some(key),
            Err(e) => {
                e.write_unraisable(py, Some(provider.bind(py)));
                None
            }
        }
    })
}

/// A cipher object of the application.
struct PyCipher {
    name: String,
    cipher: Py<PyAny>,
}

impl PyCipher {
    /// Calls `method(context, input)` and copies the bytes it returns into `out`, which they must fill.
    fn call(&self, method: &str, context: &[u8], input: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        Python::attach(|py| {
            let result = self.cipher.call_method1(py, method, (PyBytes::new(py, context), PyBytes::new(py, input)));
            let value = match result {
                Ok(v) => v,
                Err(e) => {
                    let auth = errors::class(py, "AuthenticationError").is_ok_and(|class| e.is_instance(py, &class));
                    return Err(if auth {
                        CipherError::Authentication
                    } else {
                        CipherError::Other(format!("the cipher's {method}() raised {e}"))
                    });
                }
            };
            if value.is_none(py) {
                return Err(CipherError::Authentication);
            }
            let bytes: Vec<u8> = value
                .extract(py)
                .map_err(|e| CipherError::Other(format!("the cipher's {method}() did not return bytes: {e}")))?;
            if bytes.len() != out.len() {
                return Err(CipherError::Other(format!(
                    "the cipher's {method}() returned {} bytes for {} bytes of input; it must return {}",
                    bytes.len(),
                    input.len(),
                    out.len()
                )));
            }
            out.copy_from_slice(&bytes);
            Ok(())
        })
    }
}

impl BlockCipher for PyCipher {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        self.call("seal", context, plaintext, out)
    }

    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CipherError::Authentication);
        }
        self.call("open", context, sealed, out)
    }
}

/// Returns 32 random bytes from the operating system: a new AES-256 key for `bcv.Secure(keys=...)`.
#[pyfunction]
pub(crate) fn generate_key(py: Python<'_>) -> PyResult<Py<PyBytes>> {
    let key = Keyring::generate_key().map_err(|e| errors::vfs_error(py, e, None))?;
    Ok(PyBytes::new(py, &key).unbind())
}
