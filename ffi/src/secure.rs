//! Secure (encrypted) containers: the key ring, the key-provider callback and application ciphers given as
//! function pointers, turned into the core's `SecureOptions`.
//!
//! A secure container is sealed client-side (AES-256-GCM unless the application brings its own cipher), in
//! the bucket and in the local cache. CBS cannot read it; plaintext containers stay CBS-compatible.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use bcv_core::vfs::{BlockCipher, CipherError, KEY_LEN, Keyring, SEAL_OVERHEAD, SecureOptions};

use crate::error::*;
use crate::io::c_str;
use crate::stream::bcv_user_data_free_t;

/// Bytes a seal adds to each chunk: `sealed_len == plaintext_len + BCV_SEAL_OVERHEAD`.
pub const BCV_SEAL_OVERHEAD: usize = 32;
/// Bytes of an AES-256 key.
pub const BCV_KEY_LEN: usize = 32;
const _: () = assert!(BCV_SEAL_OVERHEAD == SEAL_OVERHEAD && BCV_KEY_LEN == KEY_LEN);

/// One AES-256 key of a key ring. New data is sealed with the ring's current key; data sealed with any key of
/// the ring opens, so a rotated ring keeps its old keys.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_key_t {
    /// The key id recorded with each sealed chunk (any value; ids name keys, they are not secret).
    pub id: u32,
    /// The key.
    pub key: [u8; BCV_KEY_LEN],
}

/// Produces the key with id `key_id` into `key_out` (32 bytes) and returns `BCV_OK`, or returns anything
/// else when it does not know that key. bcv asks at most once per key id per attach and keeps the key in
/// memory (wiped when the container is detached). It may run on any bcv thread; it may not call into bcv.
pub type bcv_key_provider_t =
    Option<unsafe extern "C" fn(user_data: *mut c_void, key_id: u32, key_out: *mut u8) -> bcv_status_t>;

/// One direction of an application cipher. `seal` reads `input_len` bytes of plaintext and writes exactly
/// `input_len + BCV_SEAL_OVERHEAD` bytes to `output`; `open` reads `input_len` sealed bytes and writes exactly
/// `input_len - BCV_SEAL_OVERHEAD` bytes of plaintext. The sealed bytes must be bound to `context`
/// (`context_len` bytes: the container's salt, the kind of data and its position): opening with another
/// context must fail. Chunks are at most 16 KiB. Seal must use a fresh nonce each time (the same position is
/// sealed many times). Return `BCV_OK`, `BCV_E_AUTH` when the data is not authentic (wrong key, changed
/// data), `BCV_E_NOT_FOUND` when the data names a key the cipher does not have, anything else for another
/// failure. Runs on many bcv threads at once; may not call into bcv.
pub type bcv_cipher_fn_t = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        context: *const u8,
        context_len: usize,
        input: *const u8,
        input_len: usize,
        output: *mut u8,
    ) -> bcv_status_t,
>;

/// How a container is made secure: exactly one of a key ring (`keys`), a key provider (`key_provider`), or an
/// application cipher (`cipher_name`, `seal`, `open`). Initialise it with `bcv_secure_init`. Strings and
/// the key array are borrowed for the call that takes the struct (the keys are copied).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_secure_t {
    /// AES-256-GCM with these `key_count` keys; `current_key` seals new data.
    pub keys: *const bcv_key_t,
    /// Number of entries at `keys`.
    pub key_count: usize,
    /// The id of the key sealing new data (with `keys` or `key_provider`).
    pub current_key: u32,
    /// AES-256-GCM asking this callback for keys by id.
    pub key_provider: bcv_key_provider_t,
    /// The application cipher's name, recorded in the container: a container created with one cipher name
    /// refuses to attach with another.
    pub cipher_name: *const c_char,
    /// The application cipher's seal function.
    pub seal: bcv_cipher_fn_t,
    /// The application cipher's open function.
    pub open: bcv_cipher_fn_t,
    /// Passed to `key_provider`, `seal` and `open`.
    pub user_data: *mut c_void,
    /// Frees `user_data` (may be NULL). The call taking the struct runs it exactly once: when the last
    /// container using the cipher is gone, or before the call returns when it fails. Any thread; may not call
    /// into bcv.
    pub user_data_free: bcv_user_data_free_t,
}

/// Fills `*secure` with an empty configuration (no keys, no callbacks). Errors: `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_secure_init(secure: *mut bcv_secure_t) -> bcv_status_t {
    guard(|| {
        if secure.is_null() {
            return fail_with(BCV_E_INVALID, "secure is NULL");
        }
        // SAFETY: non-NULL, caller-provided storage for one struct.
        unsafe {
            *secure = bcv_secure_t {
                keys: std::ptr::null(),
                key_count: 0,
                current_key: 0,
                key_provider: None,
                cipher_name: std::ptr::null(),
                seal: None,
                open: None,
                user_data: std::ptr::null_mut(),
                user_data_free: None,
            }
        };
        BCV_OK
    })
}

/// Writes 32 random bytes from the operating system's generator to `key_out` (a new AES-256 key).
/// Errors: `BCV_E_INVALID` (NULL), `BCV_E_IO` (no randomness available).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_key_generate(key_out: *mut u8) -> bcv_status_t {
    guard(|| {
        if key_out.is_null() {
            return fail_with(BCV_E_INVALID, "key_out is NULL");
        }
        match Keyring::generate_key() {
            Ok(key) => {
                // SAFETY: the caller provides 32 writable bytes (documented).
                unsafe { std::ptr::copy_nonoverlapping(key.as_ptr(), key_out, KEY_LEN) };
                BCV_OK
            }
            Err(e) => fail_vfs(&e),
        }
    })
}

/// The application's user data with its free function, run once when the last user is gone.
pub(crate) struct UserData {
    pub(crate) data: *mut c_void,
    pub(crate) free: bcv_user_data_free_t,
}

// SAFETY: the header tells the application that its callbacks and user data are used from several bcv
// threads at once and freed on any thread.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: runs exactly once (Drop), with no bcv lock held, as documented.
            unsafe { free(self.data) };
        }
    }
}

/// An application cipher given as function pointers.
struct CCipher {
    name: String,
    seal: unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize, *mut u8) -> bcv_status_t,
    open: unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize, *mut u8) -> bcv_status_t,
    user_data: Arc<UserData>,
}

fn cipher_error(status: bcv_status_t, what: &str) -> CipherError {
    match status {
        BCV_E_AUTH => CipherError::Authentication,
        _ => CipherError::Other(format!(
            "the application's {what} function returned {}",
            status_cname(status).to_string_lossy()
        )),
    }
}

impl BlockCipher for CCipher {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        debug_assert_eq!(out.len(), plaintext.len() + SEAL_OVERHEAD);
        // SAFETY: the cipher contract in the header: `output` has room for input + overhead bytes.
        let status = unsafe {
            (self.seal)(
                self.user_data.data,
                context.as_ptr(),
                context.len(),
                plaintext.as_ptr(),
                plaintext.len(),
                out.as_mut_ptr(),
            )
        };
        if status == BCV_OK { Ok(()) } else { Err(cipher_error(status, "seal")) }
    }

    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CipherError::Authentication);
        }
        // SAFETY: as in seal: `output` has room for input - overhead bytes.
        let status = unsafe {
            (self.open)(
                self.user_data.data,
                context.as_ptr(),
                context.len(),
                sealed.as_ptr(),
                sealed.len(),
                out.as_mut_ptr(),
            )
        };
        match status {
            BCV_OK => Ok(()),
            BCV_E_NOT_FOUND => Err(CipherError::Other("the application's cipher does not have the key".into())),
            other => Err(cipher_error(other, "open")),
        }
    }
}

/// Copies `count` keys from `keys` into a ring whose current key is `current`.
pub(crate) fn keyring_of(keys: *const bcv_key_t, count: usize, current: u32) -> Result<Keyring, bcv_status_t> {
    if keys.is_null() || count == 0 {
        return Err(fail_with(BCV_E_INVALID, "a key ring needs at least one key"));
    }
    // SAFETY: the caller provides `count` keys valid for the call.
    let keys = unsafe { std::slice::from_raw_parts(keys, count) };
    let mut ring = Keyring::new(keys[0].id, keys[0].key);
    for k in &keys[1..] {
        ring.add(k.id, k.key);
    }
    if let Err(e) = ring.rotate_to(current) {
        return Err(fail_vfs(&e));
    }
    Ok(ring)
}

/// Converts the caller's secure configuration, taking ownership of its user data first so that its free
/// function runs exactly once whatever happens next. NULL means "not secure".
pub(crate) fn secure_options(secure: *const bcv_secure_t) -> Result<Option<SecureOptions>, bcv_status_t> {
    if secure.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
    let s = unsafe { *secure };
    let user_data = Arc::new(UserData { data: s.user_data, free: s.user_data_free });
    let has_cipher = !s.cipher_name.is_null() || s.seal.is_some() || s.open.is_some();
    let chosen = usize::from(s.key_count > 0) + usize::from(s.key_provider.is_some()) + usize::from(has_cipher);
    if chosen != 1 {
        return Err(fail_with(
            BCV_E_INVALID,
            "bcv_secure_t needs exactly one of: keys, key_provider, or an application cipher (cipher_name, seal, open)",
        ));
    }
    if s.key_count > 0 {
        return Ok(Some(SecureOptions::aes_gcm(&keyring_of(s.keys, s.key_count, s.current_key)?)));
    }
    if let Some(provider) = s.key_provider {
        let user_data = Arc::clone(&user_data);
        let ask = move |id: u32| {
            let mut key = [0u8; KEY_LEN];
            // SAFETY: the provider contract in the header: `key_out` has room for 32 bytes.
            let status = unsafe { provider(user_data.data, id, key.as_mut_ptr()) };
            (status == BCV_OK).then_some(key)
        };
        return Ok(Some(SecureOptions::aes_gcm_with_provider(s.current_key, Arc::new(ask))));
    }
    let (Some(seal), Some(open)) = (s.seal, s.open) else {
        return Err(fail_with(BCV_E_INVALID, "an application cipher needs both seal and open"));
    };
    let name = c_str(s.cipher_name, "cipher_name")?;
    if name.is_empty() {
        return Err(fail_with(BCV_E_INVALID, "cipher_name is empty"));
    }
    Ok(Some(SecureOptions::custom(Arc::new(CCipher { name: name.to_owned(), seal, open, user_data }))))
}
