//! A simulated OPC UA server: a quality-lab instrument with a few Double variables.
//!
//! Security None, anonymous (a lab PC on an isolated test rig). Variables are
//! `ns=<lab>;s=Lab.<Name>` under `Objects/Lab`; [`OpcUaSimServer::set`] changes them and notifies
//! subscribed clients.

use std::net::SocketAddr;
use std::sync::Arc;

use opcua::server::address_space::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ServerBuilder, ServerHandle, SubscriptionCache};
use opcua::types::{DataValue, NodeId, Variant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Namespace URI of the lab's nodes.
pub const LAB_NAMESPACE: &str = "urn:twinloom-sim:lab";

/// A running simulated OPC UA server.
pub struct OpcUaSimServer {
    /// `opc.tcp://127.0.0.1:PORT/`.
    pub endpoint_url: String,
    /// Namespace index of the lab's nodes.
    pub namespace: u16,
    manager: Arc<SimpleNodeManager>,
    subscriptions: Arc<SubscriptionCache>,
    handle: ServerHandle,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for OpcUaSimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaSimServer")
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

impl OpcUaSimServer {
    /// Serves Double variables named `names` (initial value 0) on `addr` (port 0 for a free one).
    ///
    /// Errors: the address cannot be bound or async-opcua rejects the configuration.
    pub async fn start(addr: SocketAddr, names: &[&str]) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let pki = std::env::temp_dir().join(format!("twinloom-sim-pki-{}", std::process::id()));
        let (server, handle) = ServerBuilder::new_anonymous("twinloom-sim quality lab")
            .application_uri("urn:twinloom-sim:lab-pc")
            .host("127.0.0.1")
            .port(port)
            .pki_dir(pki)
            .create_sample_keypair(true)
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: LAB_NAMESPACE.to_owned(),
                    ..Default::default()
                },
                "lab",
            ))
            .build()
            .map_err(std::io::Error::other)?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .ok_or_else(|| std::io::Error::other("lab node manager missing"))?;
        let namespace = handle
            .get_namespace_index(LAB_NAMESPACE)
            .ok_or_else(|| std::io::Error::other("lab namespace missing"))?;
        {
            let mut space = manager.address_space().write();
            let folder = NodeId::new(namespace, "Lab");
            space.add_folder(&folder, "Lab", "Lab", &NodeId::objects_folder_id());
            let variables = names
                .iter()
                .map(|name| {
                    Variable::new(
                        &NodeId::new(namespace, format!("Lab.{name}")),
                        *name,
                        *name,
                        0.0f64,
                    )
                })
                .collect();
            space.add_variables(variables, &folder);
        }
        let subscriptions = Arc::clone(handle.subscriptions());
        let task = tokio::spawn(async move {
            if let Err(error) = server.run_with(listener).await {
                tracing::warn!(%error, "Simulated OPC UA server stopped");
            }
        });
        Ok(Self {
            endpoint_url: format!("opc.tcp://127.0.0.1:{port}/"),
            namespace,
            manager,
            subscriptions,
            handle,
            task,
        })
    }

    /// Sets variable `Lab.<name>` and notifies subscribers.
    pub fn set(&self, name: &str, value: f64) {
        let node = NodeId::new(self.namespace, format!("Lab.{name}"));
        let _ = self.manager.set_value(
            &self.subscriptions,
            &node,
            None,
            DataValue::new_now(Variant::Double(value)),
        );
    }

    /// Stops the server and closes its connections.
    pub async fn stop(self) {
        self.handle.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
