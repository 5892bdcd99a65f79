//! Store URLs: which object store a container URL names, and how it is configured.
//!
//! | form | store |
//! |---|---|
//! | `/abs/path`, `file:///abs/path[?fsync=true]` | [`LocalCas`] over that directory (created if missing) |
//! | `memory://NAME` | the process-wide in-memory store `NAME` ([`memory_container`](super::memory_container)) |
//! | `s3://BUCKET[?endpoint=&region=&access_key_id=&secret_access_key=&session_token=&allow_http=&virtual_hosted_style=]` | S3 and S3-compatible (feature `s3`) |
//! | `az://CONTAINER[?account=&access_key=&sas=&bearer_token=&endpoint=&use_emulator=&allow_http=]` | Azure Blob / Azurite (feature `azure`) |
//! | `gs://BUCKET[?service_account=&service_account_key=]` | Google Cloud Storage (feature `gcp`) |
//!
//! Query values are percent-decoded (write `+` in a key as `%2B`). A query key not in the table is a
//! [`VfsError::Config`] naming it. `StoreOptions::options` takes `object_store`'s own configuration keys
//! (`aws_*`, `azure_*`, `google_*`, and client keys such as `timeout`), applied after the URL's; on local and
//! memory stores any option is an error.
//!
//! Cloud stores start from `object_store`'s `from_env()` builders, so the usual environment variables
//! (`AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_NAME`, …) apply when the URL does not say otherwise. S3 uses
//! conditional puts by ETag (`If-None-Match: *` / `If-Match`), copy-if-not-exists by multipart copy, and
//! path-style requests unless `virtual_hosted_style=true`. `object_store`'s internal retries are switched off:
//! [`ContainerStore`](super::ContainerStore) retries, so each attempt is metered and fault-injectable.
//!
//! Secrets (`secret_access_key`, `session_token`, `access_key`, `sas`, `bearer_token`, `service_account_key`,
//! user info, option values) never appear in the label nor in errors.

use std::sync::Arc;

use object_store::ObjectStore;
use url::Url;

use super::StoreOptions;
use super::local_cas::LocalCas;
use crate::vfs::{VfsError, VfsResult};

/// Query keys whose values are secrets: dropped from labels.
const SECRET_KEYS: &[&str] =
    &["secret_access_key", "session_token", "access_key", "sas", "bearer_token", "service_account_key"];

/// A parsed store URL: the store and the label to show for it.
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) label: String,
}

/// A best-effort redaction of a string that did not even parse: keep what precedes any query or user info.
fn redact_raw(raw: &str) -> String {
    let no_query = raw.split(['?', '#']).next().unwrap_or("");
    match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => no_query.to_string(),
        },
        None => no_query.to_string(),
    }
}

/// The URL with secret query values and user info removed; the other query pairs keep their original spelling.
fn label_of(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let kept: Vec<&str> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let key: String = url::form_urlencoded::parse(key.as_bytes()).map(|(k, _)| k.into_owned()).collect();
            !pair.is_empty() && !SECRET_KEYS.contains(&key.as_str())
        })
        .collect();
    let query = kept.join("&");
    shown.set_query(if query.is_empty() { None } else { Some(&query) });
    shown.to_string()
}

fn config(label: &str, reason: impl Into<String>) -> VfsError {
    VfsError::Config { url: label.to_string(), reason: reason.into() }
}

/// The query of a URL, consumed key by key so that leftovers are reported as unknown.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn new(url: &Url, label: &str) -> VfsResult<Query> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url.query_pairs() {
            if pairs.iter().any(|(seen, _)| seen == k.as_ref()) {
                return Err(config(label, format!("query key {k:?} is given twice")));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Query { pairs })
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn take_bool(&mut self, key: &str, label: &str) -> VfsResult<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(config(label, format!("query key {key:?} must be true or false, not {v:?}"))),
            },
        }
    }

    fn finish(self, label: &str) -> VfsResult<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(config(label, format!("unknown query key {k:?}"))),
        }
    }
}

/// The bucket or container named by the URL's host; a path inside it is refused.
#[cfg_attr(not(any(feature = "s3", feature = "azure", feature = "gcp")), allow(dead_code))]
fn container_name(url: &Url, label: &str) -> VfsResult<String> {
    let name = url.host_str().unwrap_or("");
    if name.is_empty() {
        return Err(config(label, "the URL names no bucket or container"));
    }
    if !(url.path().is_empty() || url.path() == "/") {
        return Err(config(label, "a path inside the bucket or container is not supported; use one container per URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config(label, "credentials in the URL's user info are not supported; use query keys or auth"));
    }
    Ok(name.to_string())
}

/// Opens the store a URL names. See the module documentation for the forms.
pub(crate) fn open(raw: &str, options: &StoreOptions) -> VfsResult<Opened> {
    let path = std::path::Path::new(raw);
    if path.is_absolute() && !raw.contains("://") {
        no_options(options, raw)?;
        let store = LocalCas::new(path)?;
        return Ok(Opened { label: format!("file://{}", store.root().display()), store: Arc::new(store) });
    }
    let url = Url::parse(raw).map_err(|e| config(&redact_raw(raw), format!("not an absolute path nor a URL: {e}")))?;
    let label = label_of(&url);
    match url.scheme() {
        "file" => {
            let dir = url.to_file_path().map_err(|()| config(&label, "not a local absolute path"))?;
            let mut query = Query::new(&url, &label)?;
            let fsync = query.take_bool("fsync", &label)?.unwrap_or(false);
            query.finish(&label)?;
            no_options(options, &label)?;
            let store = LocalCas::with_options(&dir, fsync)?;
            Ok(Opened { label: format!("file://{}", store.root().display()), store: Arc::new(store) })
        }
        "memory" => {
            let name = url.host_str().unwrap_or("");
            if name.is_empty() || !(url.path().is_empty() || url.path() == "/") {
                return Err(config(&label, "expected memory://NAME"));
            }
            Query::new(&url, &label)?.finish(&label)?;
            no_options(options, &label)?;
            Ok(Opened { store: super::memory::memory_container(name), label })
        }
        "s3" => cloud::s3(&url, label, options),
        "az" | "azure" => cloud::azure(&url, label, options),
        "gs" => cloud::gcs(&url, label, options),
        other => Err(config(&label, format!("unknown scheme {other:?} (expected file, memory, s3, az or gs)"))),
    }
}

fn no_options(options: &StoreOptions, label: &str) -> VfsResult<()> {
    match options.options.first() {
        None => Ok(()),
        Some((k, _)) => Err(config(label, format!("option {k:?} does not apply to local or memory stores"))),
    }
}

/// Installs rustls' ring provider as the process default (reqwest is built without one). Idempotent.
#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
fn install_crypto_provider() {
    // Err means a provider is already installed (ours or the application's): either way one is there.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
fn client_options(options: &StoreOptions, allow_http: bool) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(options.request_timeout)
        .with_connect_timeout(options.request_timeout.min(std::time::Duration::from_secs(10)))
        .with_pool_max_idle_per_host(64)
}

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
fn no_retries() -> object_store::RetryConfig {
    object_store::RetryConfig { max_retries: 0, ..Default::default() }
}

mod cloud {
    #![allow(unused_imports, unused_variables)]

    use super::*;

    #[cfg(not(feature = "s3"))]
    pub(super) fn s3(_url: &Url, label: String, _options: &StoreOptions) -> VfsResult<Opened> {
        Err(config(&label, "S3 support is not compiled in (bcv-core feature \"s3\")"))
    }

    #[cfg(feature = "s3")]
    pub(super) fn s3(url: &Url, label: String, options: &StoreOptions) -> VfsResult<Opened> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut, S3CopyIfNotExists};
        let bucket = container_name(url, &label)?;
        let mut q = Query::new(url, &label)?;
        let endpoint = q.take("endpoint");
        let region = q.take("region");
        let key_id = q.take("access_key_id");
        let secret = q.take("secret_access_key");
        let token = q.take("session_token");
        let allow_http = q.take_bool("allow_http", &label)?;
        let virtual_hosted = q.take_bool("virtual_hosted_style", &label)?.unwrap_or(false);
        q.finish(&label)?;
        let allow_http = allow_http.unwrap_or_else(|| endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));

        install_crypto_provider();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(virtual_hosted)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .with_client_options(client_options(options, allow_http))
            .with_retry(no_retries());
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &region {
            b = b.with_region(r);
        }
        if let Some(k) = key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = secret {
            b = b.with_secret_access_key(s);
        }
        if let Some(t) = token {
            b = b.with_token(t);
        }
        for (k, v) in &options.options {
            let key: AmazonS3ConfigKey = k.parse().map_err(|_| config(&label, format!("unknown S3 option {k:?}")))?;
            b = b.with_config(key, v);
        }
        if let Some(auth) = &options.auth {
            let account = endpoint.or(region).unwrap_or_default();
            let request = AuthRequest { storage: "s3", account, container: bucket };
            b = b.with_credentials(Arc::new(CallbackCredentials::new(Arc::clone(auth), request)));
        }
        let store = b.build().map_err(|e| config(&label, format!("S3: {e}")))?;
        Ok(Opened { store: Arc::new(store), label })
    }

    #[cfg(not(feature = "azure"))]
    pub(super) fn azure(_url: &Url, label: String, _options: &StoreOptions) -> VfsResult<Opened> {
        Err(config(&label, "Azure support is not compiled in (bcv-core feature \"azure\")"))
    }

    #[cfg(feature = "azure")]
    pub(super) fn azure(url: &Url, label: String, options: &StoreOptions) -> VfsResult<Opened> {
        use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
        let container = container_name(url, &label)?;
        let mut q = Query::new(url, &label)?;
        let account = q.take("account");
        let access_key = q.take("access_key");
        let sas = q.take("sas");
        let bearer = q.take("bearer_token");
        let mut endpoint = q.take("endpoint");
        let use_emulator = q.take_bool("use_emulator", &label)?.unwrap_or(false);
        let allow_http = q.take_bool("allow_http", &label)?;
        q.finish(&label)?;

        install_crypto_provider();
        let mut account = account;
        let mut emulator_mode = use_emulator;
        if use_emulator && (options.auth.is_some() || endpoint.is_some()) {
            // object_store's emulator mode ignores custom credentials and endpoints, so address Azurite like any
            // account: endpoint = emulator URL + "/" + account.
            let account_name = account.clone().unwrap_or_else(|| "devstoreaccount1".to_string());
            if endpoint.is_none() {
                let base =
                    std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
                endpoint = Some(format!("{}/{account_name}", base.trim_end_matches('/')));
            }
            if access_key.is_none() && sas.is_none() && bearer.is_none() && options.auth.is_none() {
                return Err(config(&label, "use_emulator with an explicit endpoint needs access_key (or auth)"));
            }
            account = Some(account_name);
            emulator_mode = false;
        }
        let allow_http =
            allow_http.unwrap_or(use_emulator || endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
        let mut b = MicrosoftAzureBuilder::from_env()
            .with_container_name(&container)
            .with_client_options(client_options(options, allow_http))
            .with_retry(no_retries());
        if emulator_mode {
            b = b.with_use_emulator(true);
        }
        if let Some(a) = &account {
            b = b.with_account(a);
        }
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e.clone());
        }
        if let Some(k) = access_key {
            b = b.with_access_key(k);
        }
        if let Some(s) = sas {
            b = b.with_config(AzureConfigKey::SasKey, s);
        }
        if let Some(t) = bearer {
            b = b.with_bearer_token_authorization(t);
        }
        for (k, v) in &options.options {
            let key: AzureConfigKey = k.parse().map_err(|_| config(&label, format!("unknown Azure option {k:?}")))?;
            b = b.with_config(key, v);
        }
        if let Some(auth) = &options.auth {
            let request = AuthRequest { storage: "azure", account: account.clone().unwrap_or_default(), container };
            let provider = AzureCallbackCredentials(CallbackCredentials::new(Arc::clone(auth), request));
            b = b.with_credentials(Arc::new(provider));
        }
        let store = b.build().map_err(|e| config(&label, format!("Azure: {e}")))?;
        Ok(Opened { store: Arc::new(store), label })
    }

    #[cfg(not(feature = "gcp"))]
    pub(super) fn gcs(_url: &Url, label: String, _options: &StoreOptions) -> VfsResult<Opened> {
        Err(config(&label, "Google Cloud Storage support is not compiled in (bcv-core feature \"gcp\")"))
    }

    #[cfg(feature = "gcp")]
    pub(super) fn gcs(url: &Url, label: String, options: &StoreOptions) -> VfsResult<Opened> {
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        let bucket = container_name(url, &label)?;
        let mut q = Query::new(url, &label)?;
        let service_account = q.take("service_account");
        let service_account_key = q.take("service_account_key");
        q.finish(&label)?;

        install_crypto_provider();
        let mut b = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(&bucket)
            .with_client_options(client_options(options, false))
            .with_retry(no_retries());
        if let Some(p) = service_account {
            b = b.with_service_account_path(p);
        }
        if let Some(k) = service_account_key {
            b = b.with_service_account_key(k);
        }
        for (k, v) in &options.options {
            let key: GoogleConfigKey = k.parse().map_err(|_| config(&label, format!("unknown GCS option {k:?}")))?;
            b = b.with_config(key, v);
        }
        if let Some(auth) = &options.auth {
            let request = AuthRequest { storage: "gcs", account: String::new(), container: bucket };
            let provider = GcsCallbackCredentials(CallbackCredentials::new(Arc::clone(auth), request));
            b = b.with_credentials(Arc::new(provider));
        }
        let store = b.build().map_err(|e| config(&label, format!("GCS: {e}")))?;
        Ok(Opened { store: Arc::new(store), label })
    }

    #[cfg(feature = "azure")]
    use super::super::auth::AzureCallbackCredentials;
    #[cfg(feature = "gcp")]
    use super::super::auth::GcsCallbackCredentials;
    #[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
    use super::super::auth::{AuthRequest, CallbackCredentials};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_secrets() {
        let url =
            Url::parse("s3://b?endpoint=http://127.0.0.1:9&secret_access_key=SECRET1&access_key_id=AK").expect("valid");
        let l = label_of(&url);
        assert!(!l.contains("SECRET1"), "{l}");
        assert!(l.contains("access_key_id=AK"), "{l}");
        assert_eq!(redact_raw("s3://user:pw@bucket?sas=zzz"), "s3://<redacted>@bucket");
        assert_eq!(redact_raw("weird?access_key=k"), "weird");
    }
}
