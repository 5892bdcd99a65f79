//! Property lookup (`proxy_get_property`): the context's own properties, then the plugin's identity and
//! configured properties, then values derived from the request and response, then the embedder.
//!
//! Public APIs name a property by its dotted path (`"request.path"`); inside, a path is its segments joined
//! by NUL, as on the wire.

use super::headers::HeaderMap;
use super::services::PropertyRequest;
use super::state::HostState;

/// The internal key of a path given as segments.
pub(crate) fn key_of(segments: &[&[u8]]) -> Vec<u8> {
    segments.join(&0u8)
}

/// The internal key of a dotted path (`"request.path"`).
pub(crate) fn key_of_dotted(path: &str) -> Vec<u8> {
    path.replace('.', "\0").into_bytes()
}

/// Looks `segments` up for context `context`.
pub(crate) fn lookup(state: &HostState, context: u32, segments: &[&[u8]]) -> Option<Vec<u8>> {
    let key = key_of(segments);
    let ctx = state.contexts.get(&context);
    if let Some(value) = ctx.and_then(|c| c.properties.get(&key)) {
        return Some(value.clone());
    }
    if let Some(ctx) = ctx {
        let plugin = &ctx.plugin;
        match key.as_slice() {
            b"plugin_name" => return Some(plugin.name.clone().into_bytes()),
            b"plugin_root_id" => return Some(plugin.root_id.clone().into_bytes()),
            b"plugin_vm_id" | b"vm_id" => return Some(state.vm.id.clone().into_bytes()),
            _ => {}
        }
        let dotted = String::from_utf8_lossy(&key).replace('\0', ".");
        if let Some(value) = plugin.properties.get(&dotted) {
            return Some(value.clone());
        }
        if let Some(http) = ctx.http()
            && let Some(value) = derived(&http.request_headers, &http.response_headers, segments)
        {
            return Some(value);
        }
    }
    let handler = state.vm.services.property.as_ref()?;
    let plugin = ctx.map(|c| c.plugin.name.as_str()).unwrap_or("");
    handler(&PropertyRequest { plugin, context_id: context, path: segments })
}

/// Envoy-style request and response attributes computed from the header maps.
fn derived(request: &HeaderMap, response: &HeaderMap, segments: &[&[u8]]) -> Option<Vec<u8>> {
    let header = |map: &HeaderMap, name: &str| map.get(name.as_bytes()).map(<[u8]>::to_vec);
    match segments {
        [b"request", b"path"] => header(request, ":path"),
        [b"request", b"url_path"] => {
            let path = request.get(b":path")?;
            Some(path.split(|b| *b == b'?').next().unwrap_or(path).to_vec())
        }
        [b"request", b"query"] => {
            let path = request.get(b":path")?;
            let at = path.iter().position(|b| *b == b'?')?;
            Some(path[at + 1..].to_vec())
        }
        [b"request", b"method"] => header(request, ":method"),
        [b"request", b"host"] => header(request, ":authority").or_else(|| header(request, "host")),
        [b"request", b"scheme"] => header(request, ":scheme"),
        [b"request", b"headers", name] => request.get(name).map(<[u8]>::to_vec),
        [b"response", b"code"] => header(response, ":status"),
        [b"response", b"headers", name] => response.get(name).map(<[u8]>::to_vec),
        _ => None,
    }
}
