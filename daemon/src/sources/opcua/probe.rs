//! `twinloom check --online`: one session with an OPC UA source's server that checks every
//! binding against the address space (namespace URIs, browse paths, nodes, DataTypes) and closes.

use std::path::Path;

use anyhow::Context as _;
use opcua::types::{DataTypeId, NodeId, ReadValueId, StatusCode, TimestampsToReturn, Variant};

use super::limits::OperationLimits;
use super::session::{self, Unresolved};
use crate::config::diagnostic::{KeyPath, Problem};
use crate::config::sources::opcua::{OpcUaBindingConfig, OpcUaSourceConfig};
use crate::twin::spec::DataType;

/// NamespaceArray (Part 5 §6.3.1, i=2255).
const NAMESPACE_ARRAY: u32 = 2255;

/// One binding to probe: its key path (where problems are reported), the binding and the
/// property's data type.
#[derive(Debug, Clone)]
pub struct ProbedBinding {
    /// `assets[i].bindings.<property>`.
    pub path: KeyPath,
    /// The binding.
    pub binding: OpcUaBindingConfig,
    /// The property's declared data type.
    pub data_type: DataType,
}

/// Connects to `source`'s server (client certificate in `pki_dir`) and checks each binding:
/// its namespace URI is in the server's NamespaceArray (Part 5 §6.3.1), its browse path resolves
/// (TranslateBrowsePathsToNodeIds, Part 4 §5.8.4), its node exists, is a scalar, and its DataType
/// fits the property (Boolean for `bool`; the integer types for `integer` and `unsigned` within
/// their sign; any number for `float`; String for `string`; the abstract BaseDataType, Number,
/// Integer and UInteger are taken on trust). Returns a problem per binding that does not fit;
/// the session is closed (CloseSession) before returning.
///
/// Errors: no session within twice the source's `timeout`, or a request failed as a whole.
pub async fn probe(
    source: &OpcUaSourceConfig,
    pki_dir: &Path,
    bindings: &[ProbedBinding],
) -> anyhow::Result<Vec<Problem>> {
    let limit = source.timeout * 2;
    let (session, mut events) = tokio::time::timeout(limit, session::connect(source, pki_dir))
        .await
        .map_err(|_| anyhow::anyhow!("no session within {limit:?}"))??;
    let outcome = check(source, &session, &mut events, bindings).await;
    session::close(&session, &mut events, true, limit).await;
    outcome
}

async fn check(
    source: &OpcUaSourceConfig,
    session: &opcua::client::Session,
    events: &mut session::Events,
    bindings: &[ProbedBinding],
) -> anyhow::Result<Vec<Problem>> {
    let mut nodes = OperationLimits::nodes().to_vec();
    let limit_count = nodes.len();
    nodes.push(ReadValueId::from(NodeId::new(0, NAMESPACE_ARRAY)));
    let values = session::drive(
        events,
        session.read(&nodes, TimestampsToReturn::Neither, 0.0),
    )
    .await?
    .context("cannot read the server's operation limits and namespace array")?;
    let limit_values: Vec<_> = values
        .iter()
        .take(limit_count)
        .map(|v| (v.status(), v.value.as_ref()))
        .collect();
    let limits = OperationLimits::from_values(&limit_values);
    let namespaces = session::namespace_uris(values.get(limit_count));
    let targets: Vec<_> = bindings.iter().map(|b| b.binding.target()).collect();
    let resolved = session::resolve_targets(
        session,
        events,
        source,
        targets.iter().flatten(),
        &namespaces,
        limits,
    )
    .await?;
    let mut problems = Vec::new();
    let mut found: Vec<(&ProbedBinding, NodeId)> = Vec::new();
    let mut resolved = resolved.into_iter();
    for (binding, target) in bindings.iter().zip(&targets) {
        if target.is_none() {
            continue;
        }
        match resolved.next() {
            Some(Ok(node)) => found.push((binding, node)),
            Some(Err(Unresolved::Namespace(uri))) => problems.push(Problem::new(
                binding.path.clone(),
                format!("the server has no namespace `{uri}` (not in its NamespaceArray)"),
            )),
            Some(Err(Unresolved::Path(status))) => problems.push(Problem::new(
                binding.path.clone(),
                format!(
                    "browse path `{}` does not resolve on the server ({status})",
                    binding.binding.describe()
                ),
            )),
            None => {}
        }
    }
    let reads: Vec<ReadValueId> = found
        .iter()
        .flat_map(|(_, node)| super::write::type_attributes(node))
        .collect();
    let values = session::read_batched(session, events, reads, limits.reads_per_call()).await?;
    for (i, (binding, node)) in found.iter().enumerate() {
        let (data_type, rank) = (values.get(2 * i), values.get(2 * i + 1));
        let status = data_type.map_or(StatusCode::BadUnexpectedError, |v| v.status());
        let message = match data_type.and_then(|v| v.value.as_ref()) {
            _ if status == StatusCode::BadNodeIdUnknown => Some(format!(
                "node `{node}` does not exist on the server ({status})"
            )),
            Some(Variant::NodeId(id)) if status.is_good() => {
                let rank = match rank.and_then(|v| v.value.as_ref()) {
                    Some(Variant::Int32(rank)) => *rank,
                    _ => -1,
                };
                if (-3..=-1).contains(&rank) {
                    fits(binding.data_type, id).err()
                } else {
                    Some(format!(
                        "node `{node}` holds arrays (ValueRank {rank}); a property is one value"
                    ))
                }
            }
            _ => Some(format!(
                "node `{node}` is not a variable with a DataType ({status})"
            )),
        };
        if let Some(message) = message {
            problems.push(Problem::new(binding.path.clone(), message));
        }
    }
    Ok(problems)
}

/// Whether a variable of DataType `id` fits a property of `data_type`.
///
/// Errors: why not, lowercase.
fn fits(data_type: DataType, id: &NodeId) -> Result<(), String> {
    use DataTypeId as T;
    let Ok(kind) = id.as_data_type_id() else {
        return Err(format!(
            "the variable's DataType `{id}` is not a built-in type a property can hold"
        ));
    };
    let ok = match kind {
        T::BaseDataType | T::Number => true,
        T::Boolean => data_type == DataType::Bool,
        T::SByte | T::Int16 | T::Int32 | T::Int64 | T::Integer => {
            matches!(data_type, DataType::Integer | DataType::Float)
        }
        T::Byte | T::UInt16 | T::UInt32 => {
            matches!(
                data_type,
                DataType::Integer | DataType::Unsigned | DataType::Float
            )
        }
        T::UInt64 | T::UInteger => matches!(data_type, DataType::Unsigned | DataType::Float),
        T::Float | T::Double | T::Duration => data_type == DataType::Float,
        T::String => data_type == DataType::String,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the variable's DataType {kind:?} does not fit the property's data type `{}`",
            format!("{data_type:?}").to_lowercase()
        ))
    }
}
