//! TLS over a TCP socket: `startTlsClient` / `startTlsServer` on a `TcpSocket` handle, the `TlsSession`
//! handle, `selfSignedCertificate`, and the strict-mode diagnostics list. Conversion only; the lifetimes
//! are core's: a session is a dependent child of its socket (CR-dep), so closing the socket ends the
//! session's streams with `Closed{PARENT}`, while the peer-address snapshot (CR-det) keeps reading.

use bcv_core::handle::Error;
use napi::Env;
use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

use crate::env::{Out, runtime};
use crate::error::JsErr;
use crate::handle::{Handle, Kind, enter, run_op};
use crate::js::RawValue;

/// A self-signed certificate and its private key, both PEM.
#[napi(object)]
pub struct SelfSignedCertificate {
    /// The certificate (PEM), also usable as the client's trusted root.
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// Makes a self-signed certificate for `names` (DNS names or IP addresses), for tests and development
/// servers. Throws `BCV_INVALID_ARGUMENT` for a name that cannot go in a certificate.
#[napi]
pub fn self_signed_certificate(env: Env, names: Vec<String>) -> napi::Result<SelfSignedCertificate> {
    let local = enter(&env)?;
    let made = bcv_core::handle::self_signed_certificate(&names).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(SelfSignedCertificate { cert_pem: made.cert_pem, key_pem: made.key_pem })
}

/// One strict-mode report (LIFETIMES.md §5).
#[napi(object)]
pub struct StrictDiagnostic {
    /// `'V1'` … `'V6'`.
    pub violation: String,
    /// The node it concerns.
    pub node_id: f64,
    /// The node's label (`'pipe writer'`, …).
    pub node_label: String,
    /// Where the node was created (captured while strict mode is on).
    pub creation_backtrace: Option<String>,
}

/// The most recent strict-mode diagnostics of the runtime (oldest first; empty when strict mode is off).
#[napi]
pub fn strict_diagnostics() -> Vec<StrictDiagnostic> {
    runtime()
        .strict_diagnostics()
        .into_iter()
        .map(|d| StrictDiagnostic {
            violation: d.kind.code().to_string(),
            node_id: d.node_id as f64,
            node_label: d.node_label.to_string(),
            creation_backtrace: d.creation_backtrace,
        })
        .collect()
}

#[napi]
impl Handle {
    /// Starts TLS as a client on this socket: verifies the server's certificate for `serverName` against
    /// the PEM roots in `trustedRootsPem`. Takes the socket's streams; resolves with a `TlsSession` handle
    /// (a dependent child of the socket). Rejects with `BCV_AUTH` when the handshake fails (untrusted
    /// certificate, wrong name), `BCV_ALREADY_TAKEN` if a socket stream was taken, `BCV_INVALID_ARGUMENT`
    /// for a bad name or PEM, `BCV_CLOSED`.
    #[napi(ts_return_type = "Promise<Handle>")]
    pub fn start_tls_client(
        &self,
        env: Env,
        server_name: String,
        trusted_roots_pem: Uint8Array,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        if !matches!(*kind, Kind::Socket(_)) {
            return Err(self.wrong(&local, "startTlsClient"));
        }
        let roots = trusted_roots_pem.to_vec();
        let fut = async move {
            match &*kind {
                Kind::Socket(s) => s.start_tls_client(&server_name, &roots).await,
                _ => Err(Error::InvalidArgument("not a socket".into())),
            }
        };
        self.session(&local, fut)
    }

    /// Starts TLS as a server on this socket with a PEM certificate chain and private key. Resolves and
    /// rejects as `startTlsClient`.
    #[napi(ts_return_type = "Promise<Handle>")]
    pub fn start_tls_server(
        &self,
        env: Env,
        cert_chain_pem: Uint8Array,
        key_pem: Uint8Array,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        if !matches!(*kind, Kind::Socket(_)) {
            return Err(self.wrong(&local, "startTlsServer"));
        }
        let (chain, key) = (cert_chain_pem.to_vec(), key_pem.to_vec());
        let fut = async move {
            match &*kind {
                Kind::Socket(s) => s.start_tls_server(&chain, &key).await,
                _ => Err(Error::InvalidArgument("not a socket".into())),
            }
        };
        self.session(&local, fut)
    }
}

impl Handle {
    /// Runs a handshake and resolves with the session, wrapped as a child of this socket handle.
    fn session(
        &self,
        local: &crate::env::EnvLocal,
        fut: impl std::future::Future<Output = bcv_core::handle::Result<bcv_core::handle::TlsSession>> + Send + 'static,
    ) -> napi::Result<RawValue> {
        let scope = local.scopes.borrow().last().map(|s| s.id);
        let ancestors = self.lineage();
        run_op(local, fut, move |r| r.map(|t| Out::Child(Kind::Tls(t), scope, ancestors)).map_err(JsErr::from), false)
    }
}
