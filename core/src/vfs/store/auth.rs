//! Credentials from the application: a callback consulted for every request to a cloud store.
//!
//! CBS lets the application supply an access token per container through a callback; [`AuthProvider`] is the
//! same idea. Give one in `StoreOptions::auth` and [`ContainerStore::open`](super::ContainerStore::open) hands an
//! adapter to `object_store`'s `with_credentials` for S3, Azure and GCS. `object_store` asks a custom credential
//! provider once per HTTP request and does not cache its answers, so the callback sees every request; it runs on a
//! blocking thread (`tokio::task::spawn_blocking`), so it may block (refresh a token over the network) but should
//! cache tokens itself when fetching one is slow.
//!
//! A callback error fails the request with `object_store::Error::Unauthenticated`, which is never retried.

use std::fmt;
#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
use std::sync::Arc;

/// What a credential is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    /// The kind of store: `"s3"`, `"azure"` or `"gcs"`.
    pub storage: &'static str,
    /// The storage account (Azure), or the endpoint/region when known (S3), or an empty string.
    pub account: String,
    /// The bucket or container.
    pub container: String,
}

/// A credential returned by an [`AuthProvider`]. Which kinds a store accepts:
/// S3 → [`AuthToken::AwsKeys`]; Azure → [`AuthToken::AzureSas`], [`AuthToken::AzureAccessKey`],
/// [`AuthToken::Bearer`]; GCS → [`AuthToken::Bearer`]. Any other kind fails the request.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthToken {
    /// An Azure shared access signature: the query string, with or without the leading `?`.
    AzureSas(String),
    /// An Azure storage account key (base64), used to sign each request with SharedKey.
    AzureAccessKey(String),
    /// An OAuth bearer token (Azure AD / Entra, Google).
    Bearer(String),
    /// AWS access keys, with the session token of temporary credentials.
    AwsKeys {
        /// Access key id.
        key_id: String,
        /// Secret access key.
        secret_key: String,
        /// Session token, for temporary (STS) credentials.
        session_token: Option<String>,
    },
}

impl fmt::Debug for AuthToken {
    /// Shows the kind only: a token is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            AuthToken::AzureSas(_) => "AzureSas",
            AuthToken::AzureAccessKey(_) => "AzureAccessKey",
            AuthToken::Bearer(_) => "Bearer",
            AuthToken::AwsKeys { .. } => "AwsKeys",
        };
        write!(f, "AuthToken::{kind}(<redacted>)")
    }
}

/// The application's credential callback. Called from a blocking thread, possibly from several at once.
pub trait AuthProvider: Send + Sync + 'static {
    /// Returns the credential for `request`, or an explanation of why there is none (shown in the error).
    fn token(&self, request: &AuthRequest) -> Result<AuthToken, String>;
}

impl<F> AuthProvider for F
where
    F: Fn(&AuthRequest) -> Result<AuthToken, String> + Send + Sync + 'static,
{
    fn token(&self, request: &AuthRequest) -> Result<AuthToken, String> {
        self(request)
    }
}

/// Runs the callback off the async threads and turns its refusal into an `Unauthenticated` error.
#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
async fn ask(provider: &Arc<dyn AuthProvider>, request: &AuthRequest) -> object_store::Result<AuthToken> {
    let provider = Arc::clone(provider);
    let req = request.clone();
    let answer = tokio::task::spawn_blocking(move || provider.token(&req)).await?;
    answer.map_err(|reason| unauthenticated(request, format!("the credential callback refused: {reason}")))
}

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
fn unauthenticated(request: &AuthRequest, reason: String) -> object_store::Error {
    object_store::Error::Unauthenticated { path: request.container.clone(), source: reason.into() }
}

/// Adapts an [`AuthProvider`] to one cloud's `object_store` credential provider.
#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
pub(crate) struct CallbackCredentials {
    provider: Arc<dyn AuthProvider>,
    request: AuthRequest,
}

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
impl CallbackCredentials {
    pub(crate) fn new(provider: Arc<dyn AuthProvider>, request: AuthRequest) -> Self {
        CallbackCredentials { provider, request }
    }
}

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
impl fmt::Debug for CallbackCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackCredentials").field("request", &self.request).finish_non_exhaustive()
    }
}

#[cfg(feature = "s3")]
#[async_trait::async_trait]
impl object_store::CredentialProvider for CallbackCredentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        match ask(&self.provider, &self.request).await? {
            AuthToken::AwsKeys { key_id, secret_key, session_token } => {
                Ok(Arc::new(object_store::aws::AwsCredential { key_id, secret_key, token: session_token }))
            }
            other => Err(unauthenticated(&self.request, format!("S3 needs AwsKeys, the callback gave {other:?}"))),
        }
    }
}

/// The Azure flavour; a separate type because a type has one `CredentialProvider::Credential`.
#[cfg(feature = "azure")]
#[derive(Debug)]
pub(crate) struct AzureCallbackCredentials(pub(crate) CallbackCredentials);

#[cfg(feature = "azure")]
#[async_trait::async_trait]
impl object_store::CredentialProvider for AzureCallbackCredentials {
    type Credential = object_store::azure::AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        use object_store::azure::{AzureAccessKey, AzureCredential};
        let req = &self.0.request;
        let credential = match ask(&self.0.provider, req).await? {
            AuthToken::AzureAccessKey(key) => AzureCredential::AccessKey(
                AzureAccessKey::try_new(&key)
                    .map_err(|e| unauthenticated(req, format!("the callback's access key is not valid base64: {e}")))?,
            ),
            AuthToken::AzureSas(sas) => {
                let pairs = object_store::azure::split_sas(sas.trim_start_matches('?'))
                    .map_err(|e| unauthenticated(req, format!("the callback's SAS token is malformed: {e}")))?;
                AzureCredential::SASToken(pairs)
            }
            AuthToken::Bearer(token) => AzureCredential::BearerToken(token),
            other => return Err(unauthenticated(req, format!("Azure cannot use {other:?}"))),
        };
        Ok(Arc::new(credential))
    }
}

/// The GCS flavour.
#[cfg(feature = "gcp")]
#[derive(Debug)]
pub(crate) struct GcsCallbackCredentials(pub(crate) CallbackCredentials);

#[cfg(feature = "gcp")]
#[async_trait::async_trait]
impl object_store::CredentialProvider for GcsCallbackCredentials {
    type Credential = object_store::gcp::GcpCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let req = &self.0.request;
        match ask(&self.0.provider, req).await? {
            AuthToken::Bearer(bearer) => Ok(Arc::new(object_store::gcp::GcpCredential { bearer })),
            other => Err(unauthenticated(req, format!("GCS needs a Bearer token, the callback gave {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let t = AuthToken::AwsKeys { key_id: "AKIA".into(), secret_key: "hunter2".into(), session_token: None };
        let shown = format!("{t:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("AKIA"), "{shown}");
        assert!(!format!("{:?}", AuthToken::AzureAccessKey("k3y".into())).contains("k3y"));
    }

    #[test]
    fn closures_are_providers() {
        let p: Arc<dyn AuthProvider> = Arc::new(|r: &AuthRequest| -> Result<AuthToken, String> {
            Ok(AuthToken::Bearer(format!("for-{}", r.container)))
        });
        let req = AuthRequest { storage: "gcs", account: String::new(), container: "b".into() };
        assert_eq!(p.token(&req), Ok(AuthToken::Bearer("for-b".into())));
    }
}
