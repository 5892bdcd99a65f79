//! Plugins: root contexts of a VM, each with its own name, configuration and failure policy.

use std::collections::HashMap;
use std::sync::Arc;

use super::context::{HttpContext, TcpContext};
use super::error::{FailReason, ProxyError, ProxyResult};
use super::state::{ContextData, ContextKind, PluginIdentity};
use super::vm::{Vm, VmInner, run_canary, start_root};
use crate::handle::{CloseReason, Closed, Node, NodeHooks, TaskResource};

/// How to configure a plugin.
#[derive(Clone, Debug, Default)]
pub struct PluginConfig {
    /// The plugin's name (logs, metrics, property `plugin_name`).
    pub name: String,
    /// The root id (property `plugin_root_id`); SDKs use it to pick a root context implementation.
    pub root_id: String,
    /// The plugin configuration, readable in `on_configure`.
    pub configuration: Vec<u8>,
    /// When the VM fails: true lets traffic through unfiltered, false (the default) answers HTTP with a
    /// local 503 and closes TCP connections.
    pub fail_open: bool,
    /// Properties the plugin can read (`"a.b"` → value), before the embedder's property handler.
    pub properties: HashMap<String, Vec<u8>>,
}

pub(crate) struct PluginInner {
    pub vm: Arc<VmInner>,
    pub identity: Arc<PluginIdentity>,
    pub fail_open: bool,
    pub resource: TaskResource,
}

impl PluginInner {
    pub(crate) fn context_name(&self, kind: &str, id: u32) -> String {
        format!("{kind} context {id} of plugin {}", self.identity.name)
    }
}

struct PluginHooks {
    vm: Arc<VmInner>,
    root: u32,
}

impl NodeHooks for PluginHooks {
    fn on_close(&self, _closed: Closed) {}
    fn on_teardown(&self) {
        // The root context's on_done / on_log / on_delete (or waiting for proxy_done).
        if let Ok(mut core) = self.vm.lock() {
            core.finish_context(self.root);
            self.vm.settle(&mut core);
        }
    }
}

/// A plugin running in a VM. Cloning shares it. Closing it (or releasing the last handle) runs the root
/// context's `on_done`, `on_log` and `on_delete` and closes its stream contexts.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
    node: Node,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.identity.name)
            .field("root_context", &self.inner.identity.root_context)
            .finish()
    }
}

impl Plugin {
    pub(crate) fn create(vm: &Vm, config: PluginConfig) -> ProxyResult<Plugin> {
        let inner = &vm.inner;
        let rejected = |reason: String| ProxyError::PluginRejected { plugin: config.name.clone(), reason };
        let vm_configuration = {
            let mut core = inner.lock_for_work()?;
            if let Some(reason) = &core.failed {
                return Err(inner.failed_error(reason.clone()));
            }
            core.state().call.vm_configuration.clone()
        };
        let mut identity = PluginIdentity {
            name: config.name.clone(),
            root_id: config.root_id.clone(),
            configuration: config.configuration.clone(),
            root_context: 0,
            properties: config.properties.clone(),
        };
        run_canary(
            inner,
            &Arc::new(PluginIdentity { root_context: 1, ..clone_identity(&identity) }),
            &vm_configuration,
        )
        .map_err(rejected)?;
        let mut core = inner.lock()?;
        if let Some(reason) = &core.failed {
            return Err(inner.failed_error(reason.clone()));
        }
        let root = core.state().allocate_context_id();
        identity.root_context = root;
        let identity = Arc::new(identity);
        core.state().contexts.insert(root, ContextData::new(ContextKind::Root, identity.clone()));
        let started = start_root(&mut core, root, &identity);
        inner.settle(&mut core);
        if let Err(reason) = started {
            core.state().contexts.remove(&root);
            return Err(rejected(reason));
        }
        drop(core);
        let hooks = PluginHooks { vm: inner.clone(), root };
        let (resource, node) = TaskResource::create_with(
            &inner.shared.host.runtime,
            "proxy plugin",
            Some(&inner.resource.core),
            Some(Box::new(hooks)),
        )
        .map_err(ProxyError::Closed)?;
        let plugin = PluginInner { vm: inner.clone(), identity, fail_open: config.fail_open, resource };
        Ok(Plugin { inner: Arc::new(plugin), node })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.identity.name
    }

    /// Its root context id.
    pub fn root_context_id(&self) -> u32 {
        self.inner.identity.root_context
    }

    /// True when traffic passes unfiltered after a VM failure.
    pub fn fail_open(&self) -> bool {
        self.inner.fail_open
    }

    /// The plugin's node (close, state).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The VM's failure, if it has failed. Never blocks on the VM (callable from its own callbacks).
    pub fn failure(&self) -> Option<FailReason> {
        self.inner.vm.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new HTTP stream context (`on_context_create(id, root)`).
    ///
    /// Errors: [`ProxyError::Closed`] when the plugin is closed; [`ProxyError::Reentrant`] from a callback.
    /// A failed VM still gives a context, whose calls then follow the fail-open/closed policy.
    pub fn http_context(&self) -> ProxyResult<HttpContext> {
        HttpContext::create(self)
    }

    /// A new TCP (network) stream context.
    ///
    /// Errors: as [`http_context`](Self::http_context).
    pub fn tcp_context(&self) -> ProxyResult<TcpContext> {
        TcpContext::create(self)
    }

    /// Calls the plugin's `proxy_on_foreign_function(root, function_id, args_size)`; the plugin reads
    /// `args` as the FOREIGN_FUNCTION_ARGUMENTS buffer. ABI 0.2.0 and later.
    ///
    /// Errors: [`ProxyError::VmFailed`] when the VM has failed or the callback trapped;
    /// [`ProxyError::Closed`] when the plugin is closed.
    pub fn call_foreign_function(&self, function_id: u32, args: &[u8]) -> ProxyResult<()> {
        let vm = &self.inner.vm;
        let root = self.inner.identity.root_context;
        let mut core = vm.lock_for_work()?;
        if !super::context::plugin_root_live(&self.inner, &mut core) {
            return Err(ProxyError::Closed(Closed::new(CloseReason::Parent)));
        }
        core.state().call.foreign_arguments = args.to_vec();
        let f = core.exports.foreign_function.clone();
        let result = core.call(&f, root, (root as i32, function_id as i32, args.len() as i32));
        core.state().call.foreign_arguments.clear();
        vm.settle(&mut core);
        result.map(|_| ()).map_err(|reason| vm.failed_error(reason))
    }
}

fn clone_identity(identity: &PluginIdentity) -> PluginIdentity {
    PluginIdentity {
        name: identity.name.clone(),
        root_id: identity.root_id.clone(),
        configuration: identity.configuration.clone(),
        root_context: identity.root_context,
        properties: identity.properties.clone(),
    }
}
