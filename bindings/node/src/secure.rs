//! Secure containers: key rings, and the cipher options given to `attach` and `openContainer`.
//! Conversion only; the encryption is `bcv_core::vfs` ([`Keyring`], [`SecureOptions`], [`AesGcmCipher`]).
//!
//! A cipher or key provider written in JS is a [`JsCallable`]: core calls it from any thread (see
//! [`crate::callable`] for how those calls reach the JS thread).
//!
//! [`AesGcmCipher`]: bcv_core::vfs::AesGcmCipher

use std::sync::Arc;

use bcv_core::vfs::{BlockCipher, CipherError, KEY_LEN, Keyring, SEAL_OVERHEAD, SecureOptions};
use napi::bindgen_prelude::{Buffer, Uint8Array, Unknown};
use napi::{Env, JsValue, sys};
use napi_derive::napi;

use crate::callable::{JsCallable, Outcome, Thrown, call};
use crate::error::JsErr;
use crate::handle::enter;
use crate::js;

/// A 32-byte key from JS bytes.
fn key_of(key: &[u8]) -> Result<[u8; KEY_LEN], JsErr> {
    <[u8; KEY_LEN]>::try_from(key)
        .map_err(|_| JsErr::invalid(format!("a key must be {KEY_LEN} bytes, got {} bytes", key.len())))
}

/// A new random 32-byte key from the operating system's generator.
#[napi]
pub fn generate_key(env: Env) -> napi::Result<Buffer> {
    let local = enter(&env)?;
    let key = Keyring::generate_key().map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(Buffer::from(key.to_vec()))
}

/// The AES-256 keys of a secure container, by id, and the id that seals new data. The keys stay on the
/// native side (wiped when it is garbage-collected). `lib/vfs.js` wraps it as `Keyring`.
#[napi]
pub struct KeyringHandle {
    ring: Keyring,
}

#[napi]
impl KeyringHandle {
    /// A ring holding one key (32 bytes), which seals new data.
    #[napi(constructor)]
    pub fn new(env: Env, key_id: u32, key: Uint8Array) -> napi::Result<KeyringHandle> {
        let local = enter(&env)?;
        let key = key_of(&key).map_err(|e| e.throw(&local))?;
        Ok(KeyringHandle { ring: Keyring::new(key_id, key) })
    }

    /// Adds (or replaces) the key that opens data sealed with `keyId`.
    #[napi]
    pub fn add(&mut self, env: Env, key_id: u32, key: Uint8Array) -> napi::Result<()> {
        let local = enter(&env)?;
        let key = key_of(&key).map_err(|e| e.throw(&local))?;
        self.ring.add(key_id, key);
        Ok(())
    }

    /// Makes `keyId` the key that seals new data. Throws `BCV_INVALID_ARGUMENT` when the ring lacks it.
    #[napi]
    pub fn rotate_to(&mut self, env: Env, key_id: u32) -> napi::Result<()> {
        let local = enter(&env)?;
        self.ring.rotate_to(key_id).map_err(|e| JsErr::from(e).throw(&local))?;
        Ok(())
    }

    /// The id of the key that seals new data.
    #[napi(getter)]
    pub fn current(&self) -> u32 {
        self.ring.current()
    }
}

impl KeyringHandle {
    /// The core key ring.
    pub(crate) fn ring(&self) -> &Keyring {
        &self.ring
    }
}

/// The cipher (with its keys) of a secure container, made by `secureKeyring`, `secureKeyProvider` or
/// `secureCipher`; given to `vfsAttach` and `openContainer`.
#[napi]
pub struct SecureHandle {
    options: SecureOptions,
    uses_js: bool,
}

#[napi]
impl SecureHandle {
    /// The cipher's name, as recorded in the container (`'aes-256-gcm'` for key rings and key providers).
    #[napi(getter)]
    pub fn cipher_name(&self) -> String {
        self.options.cipher.name()
    }
}

impl SecureHandle {
    /// The core options.
    pub(crate) fn options(&self) -> SecureOptions {
        self.options.clone()
    }

    /// True when JS code (a cipher or a key provider) is called to seal or open.
    pub(crate) fn uses_js(&self) -> bool {
        self.uses_js
    }
}

/// Secure options with AES-256-GCM and the keys of `ring` (copied: later changes to the ring do not apply).
#[napi]
pub fn secure_keyring(ring: &KeyringHandle) -> SecureHandle {
    SecureHandle { options: SecureOptions::aes_gcm(ring.ring()), uses_js: false }
}

/// Secure options with AES-256-GCM asking `provider(keyId)` for each key the first time it is needed (a
/// 32-byte `Uint8Array`, or `null` when it does not know it); new data is sealed with key `currentKeyId`.
/// The provider may be called while any bcv call runs, on the JS thread.
#[napi]
pub fn secure_key_provider(
    env: Env,
    current_key_id: u32,
    #[napi(ts_arg_type = "(keyId: number) => Uint8Array | null | undefined")] provider: Unknown,
) -> napi::Result<SecureHandle> {
    let local = enter(&env)?;
    if js::type_of(local.raw(), provider.raw()) != sys::ValueType::napi_function {
        return Err(JsErr::invalid("keyProvider must be a function").throw(&local));
    }
    let callable = Arc::new(JsCallable::new(&local, provider.raw())?);
    let provide = move |key_id: u32| -> Option<[u8; KEY_LEN]> {
        let outcome = callable.with_js(move |env, f| {
            let arg = js::number(env, f64::from(key_id));
            match call(env, js::undefined(env), f, &[arg]) {
                Ok(v) => Outcome::Returned(js::get_bytes(env, v)),
                Err(t) => Outcome::Thrown(t),
            }
        });
        // A provider that throws or returns anything but 32 bytes does not know the key: core reports it as
        // missing (`key N is not available`).
        match outcome {
            Outcome::Returned(Some(bytes)) => <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        }
    };
    Ok(SecureHandle { options: SecureOptions::aes_gcm_with_provider(current_key_id, Arc::new(provide)), uses_js: true })
}

/// Secure options with the application's own cipher: `cipher.seal(context, plaintext)` returns the sealed
/// bytes (exactly `plaintext.length + 32`), `cipher.open(context, sealed)` returns the plaintext, or `null`
/// (or throws an error with `code: 'BCV_AUTH'`) when the data is not authentic. `name` is recorded in the
/// container; a container created with another cipher name refuses to attach.
#[napi]
pub fn secure_cipher(
    env: Env,
    name: String,
    #[napi(ts_arg_type = "{ seal(context: Buffer, plaintext: Buffer): Uint8Array, \
                          open(context: Buffer, sealed: Buffer): Uint8Array | null }")]
    cipher: Unknown,
) -> napi::Result<SecureHandle> {
    let local = enter(&env)?;
    let raw = local.raw();
    if name.is_empty() {
        return Err(JsErr::invalid("a cipher needs a non-empty name").throw(&local));
    }
    let obj = cipher.raw();
    let is_obj = matches!(js::type_of(raw, obj), sys::ValueType::napi_object | sys::ValueType::napi_function);
    let has = |m: &str| is_obj && js::type_of(raw, js::get(raw, obj, m)) == sys::ValueType::napi_function;
    if !has("seal") || !has("open") {
        return Err(JsErr::invalid("a cipher must be an object with seal() and open() methods").throw(&local));
    }
    let js_cipher = JsCipher { name, target: JsCallable::new(&local, obj)? };
    Ok(SecureHandle { options: SecureOptions::custom(Arc::new(js_cipher)), uses_js: true })
}

/// A [`BlockCipher`] whose `seal` and `open` are methods of a JS object.
struct JsCipher {
    name: String,
    target: JsCallable,
}

/// Which method to call.
#[derive(Clone, Copy)]
enum Op {
    Seal,
    Open,
}

impl Op {
    fn method(self) -> &'static str {
        match self {
            Op::Seal => "seal",
            Op::Open => "open",
        }
    }
}

impl JsCipher {
    /// Calls `seal` or `open` with copies of `context` and `input`; writes the result into `out`, checking
    /// its length.
    fn run(&self, op: Op, context: &[u8], input: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        let (context, input) = (context.to_vec(), input.to_vec());
        let outcome = self.target.with_js(move |env, obj| {
            let func = js::get(env, obj, op.method());
            let args = [js::buffer(env, &context), js::buffer(env, &input)];
            match call(env, obj, func, &args) {
                Ok(v) => match js::type_of(env, v) {
                    sys::ValueType::napi_null | sys::ValueType::napi_undefined => Outcome::Returned(None),
                    _ => match js::get_bytes(env, v) {
                        Some(bytes) => Outcome::Returned(Some(bytes)),
                        None => Outcome::Thrown(Thrown {
                            code: None,
                            message: format!("cipher.{}() must return a Uint8Array (synchronously)", op.method()),
                        }),
                    },
                },
                Err(t) => Outcome::Thrown(t),
            }
        });
        let bytes = match outcome {
            Outcome::Returned(Some(bytes)) => bytes,
            // `open` returning nothing means "not authentic"; `seal` must always produce bytes.
            Outcome::Returned(None) => {
                return Err(match op {
                    Op::Open => CipherError::Authentication,
                    Op::Seal => CipherError::Other("cipher.seal() returned no bytes".into()),
                });
            }
            Outcome::Thrown(t) if t.code.as_deref() == Some("BCV_AUTH") => return Err(CipherError::Authentication),
            Outcome::Thrown(t) => {
                return Err(CipherError::Other(format!("cipher.{}() failed: {}", op.method(), t.message)));
            }
        };
        if bytes.len() != out.len() {
            let rule = match op {
                Op::Seal => format!("the plaintext length + {SEAL_OVERHEAD}"),
                Op::Open => format!("the sealed length - {SEAL_OVERHEAD}"),
            };
            return Err(CipherError::Other(format!(
                "cipher.{}() returned {} bytes; it must return {} ({rule})",
                op.method(),
                bytes.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&bytes);
        Ok(())
    }
}

impl BlockCipher for JsCipher {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        self.run(Op::Seal, context, plaintext, out)
    }

    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        self.run(Op::Open, context, sealed, out)
    }
}
