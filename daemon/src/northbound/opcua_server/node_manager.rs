//! The twin as an OPC UA address space: node ids, types, instances, values, writes.
//!
//! - Namespace: `namespace_uri` (default `urn:twinloom:plant`).
//! - Every asset **type** is an ObjectType, subtype of BaseObjectType (OPC UA Part 5 §6.2), with
//!   one variable declaration per property (HasComponent, ModellingRule Mandatory).
//! - Every path segment above an asset is a folder (FolderType) organised under `Objects`;
//!   every **asset** is an Object with HasTypeDefinition to its ObjectType.
//! - Every **property** is a variable: numbers are AnalogItemType (OPC UA Part 8 §5.3.2.2) with
//!   `EngineeringUnits` (EUInformation, UNECE codes, Part 8 §5.6.3) and `EURange` properties;
//!   other data types are DataItemType (Part 8 §5.3.1).
//! - Every plugin's status object (`twinloom/plugins/<name>`, type `TwinloomPlugin`) has a method
//!   `ClearQuarantine` (no arguments; operator role): a quarantined plugin starts again (Good),
//!   one that is not quarantined answers `Bad_InvalidState`.
//! - The control gate's status object (`twinloom/control`, type `TwinloomControl`, when some
//!   property is read-write) has methods `Arm` (operator role; `Bad_ResourceUnavailable` when the
//!   arming cannot be audited) and `Disarm` (any session: disarming is always allowed); both are
//!   audited with the session's user.
//! - An asset has a method `Select_<property>` (NodeId `<property path>/Select`, operator role)
//!   for each property with `select_before_operate`: the session's user may then write the
//!   property once within that time; `Bad_InvalidState` while another user holds a select.
//! - NodeIds are strings derived from paths: `ns=<plant>;s=plant-a/line1/press1/oil_temperature`
//!   for a property, `...;s=plant-a/line1/press1` for an asset, `...;s=types/HydraulicPress` for
//!   a type. They are stable across restarts as long as the paths are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use opcua::nodes::{MethodBuilder, ObjectBuilder, ObjectTypeBuilder, VariableBuilder};
use opcua::server::address_space::{AccessLevel, AddressSpace};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManager, InMemoryNodeManagerImpl, InMemoryNodeManagerImplBuilder,
};
use opcua::server::node_manager::{MethodCall, RequestContext, ServerContext, WriteNode};
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, DataTypeId, DataValue, DateTime, EUInformation, ExtensionObject, LocalizedText,
    NodeId, NumericRange, ObjectId, ObjectTypeId, QualifiedName, Range, StatusCode, UAString,
    VariableTypeId,
};

use crate::control::{ControlError, ControlHandle, Origin};
use crate::twin::model::{PropertyDecl, TwinModel};
use crate::twin::spec::{CONTROL_STATUS_TYPE, PLUGIN_STATUS_TYPE};
use crate::twin::units::EngineeringUnit;
use crate::twin::{Access, DataType};
use crate::twin::{PropertyId, Quality, QualityLevel, QualityReason, Sample, Twin, WriteError};

/// The node manager serving the twin.
pub type TwinNodeManager = InMemoryNodeManager<TwinNodeManagerImpl>;

pub use crate::northbound::ClearQuarantine;

/// The name of the method every plugin status object has.
pub const CLEAR_QUARANTINE: &str = "ClearQuarantine";

/// The NodeId identifier (a string) of the control status object's `Disarm` method: the one
/// method every session may call.
pub const DISARM_METHOD: &str = "twinloom/control/Disarm";

/// What a method node does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    /// Clear this plugin's quarantine.
    ClearQuarantine(String),
    /// Arm the plant.
    Arm,
    /// Disarm the plant.
    Disarm,
    /// Select this property for the session user's next write (select-before-operate).
    Select(PropertyId),
}

/// Builds the twin's node manager when the server starts.
pub struct TwinNodeManagerBuilder {
    /// Namespace URI of the plant's nodes.
    pub namespace_uri: String,
    /// The twin to serve.
    pub twin: Arc<Twin>,
    /// Where client writes go.
    pub control: ControlHandle,
    /// Where the plugins' `ClearQuarantine` calls go; none when no plugin runs.
    pub clear_quarantine: Option<ClearQuarantine>,
    /// Most monitored items on the twin's nodes per user, over all their sessions.
    pub max_monitored_items_per_user: usize,
    /// Counts monitored items refused by that bound.
    pub refused_monitored_items: Arc<AtomicU64>,
    /// The historian, when `[history]` is configured: historized variables get `Historizing`,
    /// the HistoryRead access bit and a `HistoricalDataConfiguration`, and HistoryRead serves them.
    pub history: Option<crate::history::Historian>,
}

impl std::fmt::Debug for TwinNodeManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinNodeManagerBuilder")
            .field("namespace_uri", &self.namespace_uri)
            .finish_non_exhaustive()
    }
}

/// The twin's node manager: values come from the twin's change fan-out, writes go to the control gate.
pub struct TwinNodeManagerImpl {
    namespace: NamespaceMetadata,
    /// Node id of each property, indexed by [`PropertyId`].
    property_nodes: Vec<NodeId>,
    by_node: HashMap<NodeId, PropertyId>,
    /// Method nodes and what they do.
    methods: HashMap<NodeId, Method>,
    twin: Arc<Twin>,
    control: ControlHandle,
    clear_quarantine: Option<ClearQuarantine>,
    monitored_items: std::sync::atomic::AtomicI64,
    /// Monitored items per user name (anonymous sessions share one), bounded by
    /// `max_monitored_items_per_user`.
    items_per_user: Mutex<HashMap<String, usize>>,
    max_monitored_items_per_user: usize,
    refused_monitored_items: Arc<AtomicU64>,
    history: Option<crate::history::Historian>,
}

impl std::fmt::Debug for TwinNodeManagerImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinNodeManagerImpl")
            .field("namespace", &self.namespace.namespace_uri)
            .finish_non_exhaustive()
    }
}

impl TwinNodeManagerImpl {
    /// Monitored items on this node manager's nodes, over all sessions.
    pub fn monitored_items(&self) -> i64 {
        self.monitored_items
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node id of a property.
    pub fn node_of(&self, property: PropertyId) -> &NodeId {
        &self.property_nodes[property.index()]
    }

    /// The namespace index of the plant.
    pub fn namespace_index(&self) -> u16 {
        self.namespace.namespace_index
    }
}

impl InMemoryNodeManagerImplBuilder for TwinNodeManagerBuilder {
    type Impl = TwinNodeManagerImpl;

    fn build(self, context: ServerContext, address_space: &mut AddressSpace) -> Self::Impl {
        let ns = context
            .type_tree
            .write()
            .namespaces_mut()
            .add_namespace(&self.namespace_uri);
        address_space.add_namespace(&self.namespace_uri, ns);
        let history = self.history.as_ref().map(|h| {
            h.start_of_archive()
                .map_or_else(DateTime::now, super::history::date_time)
        });
        let (property_nodes, methods) = populate(address_space, ns, self.twin.model(), history);
        let by_node = property_nodes
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), PropertyId(i as u32)))
            .collect();
        TwinNodeManagerImpl {
            namespace: NamespaceMetadata {
                namespace_uri: self.namespace_uri,
                namespace_index: ns,
                ..Default::default()
            },
            property_nodes,
            by_node,
            methods,
            twin: self.twin,
            control: self.control,
            clear_quarantine: self.clear_quarantine,
            monitored_items: Default::default(),
            items_per_user: Default::default(),
            max_monitored_items_per_user: self.max_monitored_items_per_user,
            refused_monitored_items: self.refused_monitored_items,
            history: self.history,
        }
    }
}

fn data_type_id(data_type: DataType) -> DataTypeId {
    match data_type {
        DataType::Bool => DataTypeId::Boolean,
        DataType::Integer => DataTypeId::Int64,
        DataType::Unsigned => DataTypeId::UInt64,
        DataType::Float => DataTypeId::Double,
        DataType::String => DataTypeId::String,
    }
}

fn eu_information(unit: &EngineeringUnit) -> EUInformation {
    EUInformation {
        namespace_uri: UAString::from(EngineeringUnit::NAMESPACE_URI),
        unit_id: unit.unit_id(),
        display_name: LocalizedText::new("en", unit.symbol),
        description: LocalizedText::new("en", unit.name),
    }
}

/// Adds the property's variable (and its EngineeringUnits / EURange properties) under `parent`.
fn add_variable(
    space: &mut AddressSpace,
    ns: u16,
    id: &str,
    parent: &NodeId,
    decl: &PropertyDecl,
    declaration: bool,
    history: Option<&HistoryNodes>,
) -> NodeId {
    let node_id = NodeId::new(ns, id);
    let numeric = decl.data_type.is_numeric();
    let mut access = AccessLevel::CURRENT_READ;
    if decl.access == Access::ReadWrite && !declaration {
        access |= AccessLevel::CURRENT_WRITE;
    }
    let historized = history.filter(|_| decl.history.historizing && !declaration);
    if historized.is_some() {
        access |= AccessLevel::HISTORY_READ;
    }
    let mut builder = VariableBuilder::new(
        &node_id,
        QualifiedName::new(ns, decl.name.as_str()),
        decl.name.as_str(),
    )
    .data_type(data_type_id(decl.data_type))
    .value_rank(-1)
    .access_level(access)
    .user_access_level(access)
    .minimum_sampling_interval(0.0)
    .historizing(historized.is_some())
    .has_type_definition(if numeric {
        VariableTypeId::AnalogItemType
    } else {
        VariableTypeId::DataItemType
    })
    .component_of(parent.clone());
    if declaration {
        builder = builder.has_modelling_rule(ObjectId::ModellingRule_Mandatory);
    }
    if let Some(nodes) = historized {
        // OPC UA Part 11 §5.2.2: HasHistoricalConfiguration to the variable's configuration
        // (one shared object per kind: stepped or sloped).
        let configuration = if super::history::stepped(decl) {
            &nodes.stepped
        } else {
            &nodes.sloped
        };
        builder = builder.reference(
            configuration.clone(),
            opcua::types::ReferenceTypeId::HasHistoricalConfiguration,
            opcua::nodes::ReferenceDirection::Forward,
        );
    }
    if let Some(description) = &decl.description {
        builder = builder.description(description.as_str());
    }
    builder.insert(space);
    if let Some(unit) = decl.unit.filter(|_| numeric) {
        VariableBuilder::new(
            &NodeId::new(ns, format!("{id}/EngineeringUnits")),
            QualifiedName::new(0, "EngineeringUnits"),
            "EngineeringUnits",
        )
        .data_type(DataTypeId::EUInformation)
        .value_rank(-1)
        .value(ExtensionObject::from_message(eu_information(unit)))
        .has_type_definition(VariableTypeId::PropertyType)
        .property_of(node_id.clone())
        .insert(space);
    }
    if let Some(range) = decl.range.filter(|_| numeric) {
        VariableBuilder::new(
            &NodeId::new(ns, format!("{id}/EURange")),
            QualifiedName::new(0, "EURange"),
            "EURange",
        )
        .data_type(DataTypeId::Range)
        .value_rank(-1)
        .value(ExtensionObject::from_message(Range {
            low: range.low,
            high: range.high,
        }))
        .has_type_definition(VariableTypeId::PropertyType)
        .property_of(node_id.clone())
        .insert(space);
    }
    node_id
}

/// Adds the twin's types, folders, assets and properties to `space`; returns the node of each
/// property (by [`PropertyId`]) and the status objects' methods (`ClearQuarantine` of each plugin,
/// `Arm` and `Disarm` of the control gate).
fn populate(
    space: &mut AddressSpace,
    ns: u16,
    model: &TwinModel,
    history: Option<DateTime>,
) -> (Vec<NodeId>, HashMap<NodeId, Method>) {
    let history = history.map(|start| history_configurations(space, ns, start));
    let mut type_nodes = Vec::new();
    for ty in model.types() {
        let id = format!("types/{}", ty.name);
        let type_node = NodeId::new(ns, id.as_str());
        let mut builder = ObjectTypeBuilder::new(
            &type_node,
            QualifiedName::new(ns, ty.name.as_str()),
            ty.name.as_str(),
        )
        .is_abstract(false)
        .subtype_of(ObjectTypeId::BaseObjectType);
        if let Some(description) = &ty.description {
            builder = builder.description(description.as_str());
        }
        builder.insert(space);
        for decl in &ty.properties {
            add_variable(
                space,
                ns,
                &format!("{id}/{}", decl.name),
                &type_node,
                decl,
                true,
                None,
            );
        }
        type_nodes.push(type_node);
    }
    let asset_paths: std::collections::HashSet<&str> =
        model.assets().iter().map(|a| a.path.as_str()).collect();
    let mut folders: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut property_nodes = vec![NodeId::null(); model.properties().len()];
    let mut methods = HashMap::new();
    for asset in model.assets() {
        // Folders for every ancestor that is not itself an asset.
        let mut parent = NodeId::from(ObjectId::ObjectsFolder);
        let segments: Vec<&str> = asset.path.split('/').collect();
        for depth in 1..segments.len() {
            let prefix = segments[..depth].join("/");
            let node = NodeId::new(ns, prefix.as_str());
            if !asset_paths.contains(prefix.as_str()) && folders.insert(prefix.clone()) {
                space.add_folder(
                    &node,
                    QualifiedName::new(ns, segments[depth - 1]),
                    segments[depth - 1],
                    &parent,
                );
            }
            parent = node;
        }
        let asset_node = NodeId::new(ns, asset.path.as_str());
        let name = segments[segments.len() - 1];
        let mut builder = ObjectBuilder::new(&asset_node, QualifiedName::new(ns, name), name)
            .has_type_definition(type_nodes[asset.type_id.0 as usize].clone());
        builder = if parent == ObjectId::ObjectsFolder || folders.contains(&node_path(&parent)) {
            builder.organized_by(parent.clone())
        } else {
            builder.component_of(parent.clone())
        };
        if let Some(description) = &asset.description {
            builder = builder.description(description.as_str());
        }
        builder.insert(space);
        let ty = model.type_of(asset);
        for (decl, property) in ty.properties.iter().zip(&asset.properties) {
            let id = &model.property(*property).path;
            let variable = add_variable(space, ns, id, &asset_node, decl, false, history.as_ref());
            if decl.write_policy.select_before_operate.is_some() {
                // Methods belong to objects (OPC UA Part 3 §5.7): the asset has one per property.
                let method = NodeId::new(ns, format!("{id}/Select"));
                let name = format!("Select_{}", decl.name);
                MethodBuilder::new(&method, QualifiedName::new(ns, name.as_str()), name.as_str())
                    .description(
                        "Selects the property for your next write (select-before-operate; operator role)",
                    )
                    .component_of(asset_node.clone())
                    .executable(true)
                    .user_executable(true)
                    .insert(space);
                methods.insert(method, Method::Select(*property));
            }
            property_nodes[property.index()] = variable;
        }
        let own: &[(&str, &str, Method)] = if ty.name == PLUGIN_STATUS_TYPE {
            &[(
                CLEAR_QUARANTINE,
                "Starts the quarantined plugin again (operator role)",
                Method::ClearQuarantine(name.to_owned()),
            )]
        } else if ty.name == CONTROL_STATUS_TYPE {
            &[
                (
                    "Arm",
                    "Arms the plant: plugins' proposals are written (operator role; audited)",
                    Method::Arm,
                ),
                (
                    "Disarm",
                    "Disarms the plant: plugins' waiting writes are dropped, on_loss applies (any session; audited)",
                    Method::Disarm,
                ),
            ]
        } else {
            &[]
        };
        for (method_name, description, action) in own {
            let method = NodeId::new(ns, format!("{}/{method_name}", asset.path));
            MethodBuilder::new(&method, QualifiedName::new(ns, *method_name), *method_name)
                .description(*description)
                .component_of(asset_node.clone())
                .executable(true)
                .user_executable(true)
                .insert(space);
            methods.insert(method, action.clone());
        }
    }
    (property_nodes, methods)
}

/// Where the history configuration objects' node ids (strings) start.
const HISTORY_CONFIGURATIONS: &str = "twinloom/history/";

/// The two shared `HistoricalDataConfiguration` objects (stepped and sloped) historized
/// variables refer to.
#[derive(Debug)]
struct HistoryNodes {
    stepped: NodeId,
    sloped: NodeId,
}

/// Adds the stepped and sloped HistoricalDataConfiguration objects (OPC UA Part 11 §5.2.2,
/// HistoricalDataConfigurationType with its mandatory AggregateConfiguration and Stepped, and
/// StartOfArchive, StartOfOnlineArchive: `start`, the value at server start; a read asks the
/// historian again, see `read_values`).
fn history_configurations(space: &mut AddressSpace, ns: u16, start: DateTime) -> HistoryNodes {
    use opcua::types::Variant;
    let add = |space: &mut AddressSpace, id: &str, stepped: bool| {
        let node = NodeId::new(ns, id);
        ObjectBuilder::new(
            &node,
            QualifiedName::new(0, "HA Configuration"),
            "HA Configuration",
        )
        .has_type_definition(ObjectTypeId::HistoricalDataConfigurationType)
        .insert(space);
        let property = |space: &mut AddressSpace,
                        parent: &NodeId,
                        name: &str,
                        data_type: DataTypeId,
                        value: Variant| {
            VariableBuilder::new(
                &NodeId::new(ns, format!("{}/{name}", node_path(parent))),
                QualifiedName::new(0, name),
                name,
            )
            .data_type(data_type)
            .value_rank(-1)
            .value(value)
            .has_type_definition(VariableTypeId::PropertyType)
            .property_of(parent.clone())
            .insert(space);
        };
        property(
            space,
            &node,
            "Stepped",
            DataTypeId::Boolean,
            Variant::from(stepped),
        );
        property(
            space,
            &node,
            "StartOfArchive",
            DataTypeId::UtcTime,
            Variant::from(start),
        );
        property(
            space,
            &node,
            "StartOfOnlineArchive",
            DataTypeId::UtcTime,
            Variant::from(start),
        );
        let aggregates = NodeId::new(ns, format!("{id}/AggregateConfiguration"));
        ObjectBuilder::new(
            &aggregates,
            QualifiedName::new(0, "AggregateConfiguration"),
            "AggregateConfiguration",
        )
        .has_type_definition(ObjectTypeId::AggregateConfigurationType)
        .component_of(node.clone())
        .insert(space);
        property(
            space,
            &aggregates,
            "TreatUncertainAsBad",
            DataTypeId::Boolean,
            Variant::from(true),
        );
        property(
            space,
            &aggregates,
            "PercentDataBad",
            DataTypeId::Byte,
            Variant::from(100u8),
        );
        property(
            space,
            &aggregates,
            "PercentDataGood",
            DataTypeId::Byte,
            Variant::from(100u8),
        );
        property(
            space,
            &aggregates,
            "UseSlopedExtrapolation",
            DataTypeId::Boolean,
            Variant::from(false),
        );
        node
    };
    HistoryNodes {
        stepped: add(space, &format!("{HISTORY_CONFIGURATIONS}stepped"), true),
        sloped: add(space, &format!("{HISTORY_CONFIGURATIONS}sloped"), false),
    }
}

fn node_path(node: &NodeId) -> String {
    match &node.identifier {
        opcua::types::Identifier::String(s) => s.to_string(),
        _ => String::new(),
    }
}

/// The OPC UA status code for a quality (OPC UA Part 4 §7.39, Part 8 §6.3): an upstream
/// server's code verbatim, otherwise the code of the level and reason.
pub fn status_code(quality: Quality) -> StatusCode {
    match (quality.level, quality.reason) {
        (_, QualityReason::Upstream(code)) => StatusCode::from(code),
        (QualityLevel::Good, _) => StatusCode::Good,
        (QualityLevel::Uncertain, QualityReason::Stale) => StatusCode::UncertainLastUsableValue,
        (QualityLevel::Uncertain, QualityReason::InputsNotGood) => StatusCode::UncertainSubNormal,
        (QualityLevel::Uncertain, _) => StatusCode::Uncertain,
        (QualityLevel::Bad, QualityReason::NotYetRead) => StatusCode::BadWaitingForInitialData,
        (QualityLevel::Bad, QualityReason::CommunicationFailure) => {
            StatusCode::BadCommunicationError
        }
        (QualityLevel::Bad, QualityReason::Timeout) => StatusCode::BadTimeout,
        (QualityLevel::Bad, QualityReason::NoConnection) => StatusCode::BadNoCommunication,
        (QualityLevel::Bad, QualityReason::DeviceException(_)) => StatusCode::BadDeviceFailure,
        (QualityLevel::Bad, QualityReason::DecodeError) => StatusCode::BadDecodingError,
        (QualityLevel::Bad, QualityReason::ConfigurationError) => StatusCode::BadConfigurationError,
        (QualityLevel::Bad, QualityReason::OutOfRange) => StatusCode::BadOutOfRange,
        (QualityLevel::Bad, QualityReason::PluginFailure) => StatusCode::BadInternalError,
        (QualityLevel::Bad, _) => StatusCode::Bad,
    }
}

/// OPC UA DateTime (100 ns ticks since 1601-01-01) of a system time.
pub fn date_time(time: SystemTime) -> DateTime {
    const TICKS_1601_TO_1970: i64 = 116_444_736_000_000_000;
    let ticks = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => TICKS_1601_TO_1970 + (d.as_nanos() / 100) as i64,
        Err(e) => TICKS_1601_TO_1970 - (e.duration().as_nanos() / 100) as i64,
    };
    DateTime::from(ticks)
}

/// The DataValue of a sample: value, status code, source and server timestamps.
///
/// A sample without a value (nothing ever arrived) carries an empty Variant rather than none:
/// async-opcua-nodes 0.19 drops a variable's status when its value is absent (`Variable::value`),
/// so a client would read `Good` with a null value instead of, say, `Bad_WaitingForInitialData`
/// (OPC UA Part 4 §7.7.1: a Bad status code may come with a null value). The source timestamp is
/// set only once a value exists.
pub fn data_value(sample: &Sample) -> DataValue {
    DataValue {
        value: Some(sample.value.as_ref().map_or(
            opcua::types::Variant::Empty,
            crate::opcua_values::to_variant,
        )),
        status: Some(status_code(sample.quality)),
        source_timestamp: sample.source_time.map(date_time),
        server_timestamp: Some(date_time(sample.server_time)),
        ..Default::default()
    }
}

/// The user name of a session's request (anonymous sessions share async-opcua's `ANONYMOUS`).
fn user_name(context: &RequestContext) -> String {
    context.user_token().0.clone()
}

/// The origin of a session's request: its user (`anonymous` for anonymous sessions).
fn origin(context: &RequestContext) -> Origin {
    let user = context.user_token();
    Origin::OpcUa {
        user: if user.is_anonymous() {
            "anonymous".to_owned()
        } else {
            user.0.clone()
        },
    }
}

fn write_status(outcome: &Result<(), ControlError>) -> StatusCode {
    match outcome {
        Ok(()) => StatusCode::Good,
        Err(ControlError::NotWritable) => StatusCode::BadNotWritable,
        Err(ControlError::TypeMismatch(_)) => StatusCode::BadTypeMismatch,
        Err(ControlError::OutOfLimits { .. } | ControlError::NotFinite(_)) => {
            StatusCode::BadOutOfRange
        }
        Err(ControlError::AuditUnavailable(_)) => StatusCode::BadResourceUnavailable,
        Err(ControlError::TooSoon { .. } | ControlError::TooFast { .. }) => {
            StatusCode::BadRequestNotAllowed
        }
        Err(ControlError::OverBudget { .. }) => StatusCode::BadTooManyOperations,
        // The plant is not in a state that permits the write (Part 4 §7.39: BadInvalidState).
        Err(ControlError::Interlock { .. }) => StatusCode::BadInvalidState,
        Err(ControlError::Superseded) => StatusCode::BadOperationAbandoned,
        // Plugins' answers only: an OPC UA write is neither disarmed nor in shadow mode.
        Err(
            ControlError::Disarmed
            | ControlError::Shadow
            | ControlError::ManualOverride
            | ControlError::NotSelected(_),
        ) => StatusCode::BadRequestNotAllowed,
        Err(ControlError::Expired) => StatusCode::BadTimeout,
        Err(ControlError::Source(error)) => match error {
            WriteError::Timeout => StatusCode::BadTimeout,
            WriteError::NotConnected => StatusCode::BadNoCommunication,
            WriteError::DeviceRejected { .. } | WriteError::ReadBackMismatch { .. } => {
                StatusCode::BadDeviceFailure
            }
            WriteError::Encoding { .. } | WriteError::OutOfRange { .. } => {
                StatusCode::BadOutOfRange
            }
            WriteError::NotWritable { .. } => StatusCode::BadNotWritable,
            WriteError::NotBound => StatusCode::BadNodeIdUnknown,
            WriteError::Stopped => StatusCode::BadResourceUnavailable,
            // The gate answers these as `Expired` and `Interlock`; kept for completeness.
            WriteError::Expired => StatusCode::BadTimeout,
            WriteError::Held { .. } => StatusCode::BadInvalidState,
        },
        Err(ControlError::Closed | ControlError::QueueFull) => StatusCode::BadResourceUnavailable,
    }
}

#[async_trait]
impl InMemoryNodeManagerImpl for TwinNodeManagerImpl {
    async fn init(&self, _address_space: &mut AddressSpace, _context: ServerContext) {}

    fn name(&self) -> &str {
        "twinloom"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        vec![self.namespace.clone()]
    }

    /// Monitored items start with the current value (pushed later by the twin's fan-out, never
    /// sampled); counted for metrics, and per user: beyond `max_monitored_items_per_user` an item
    /// is refused with `Bad_TooManyMonitoredItems`.
    async fn create_value_monitored_items(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        items: &mut [&mut &mut opcua::server::CreateMonitoredItem],
    ) {
        let space = address_space.read();
        let mut created = 0;
        let mut per_user = self
            .items_per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let owned = per_user.entry(user_name(context)).or_default();
        for item in items.iter_mut() {
            if *owned >= self.max_monitored_items_per_user {
                item.set_status(StatusCode::BadTooManyMonitoredItems);
                self.refused_monitored_items.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            *owned += 1;
            let value = space.read(
                context,
                item.item_to_monitor(),
                0.0,
                opcua::types::TimestampsToReturn::Both,
            );
            if value.status() != StatusCode::BadAttributeIdInvalid {
                item.set_initial_value(value);
            }
            item.set_status(StatusCode::Good);
            created += 1;
        }
        self.monitored_items
            .fetch_add(created, std::sync::atomic::Ordering::Relaxed);
    }

    async fn delete_monitored_items(
        &self,
        context: &RequestContext,
        items: &[&opcua::server::node_manager::MonitoredItemRef],
    ) {
        // Deleted by their session (or for it, when it expires): the same user that created them.
        let mut per_user = self
            .items_per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(owned) = per_user.get_mut(&user_name(context)) {
            *owned = owned.saturating_sub(items.len());
        }
        self.monitored_items
            .fetch_sub(items.len() as i64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Method calls: the plugins' `ClearQuarantine`, the control gate's `Arm` and `Disarm` (the
    /// server has already checked that the method belongs to the object and that the user may
    /// execute it: operators only, except `Disarm`).
    async fn call(
        &self,
        context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        methods_to_call: &mut [&mut &mut MethodCall],
    ) -> Result<(), StatusCode> {
        for method in methods_to_call {
            let Some(action) = self.methods.get(method.method_id()) else {
                method.set_status(StatusCode::BadMethodInvalid);
                continue;
            };
            if !method.arguments().is_empty() {
                method.set_status(StatusCode::BadTooManyArguments);
                continue;
            }
            let status = match action {
                Method::ClearQuarantine(plugin) => match self.clear_quarantine.as_ref() {
                    Some(clear) if clear(plugin.clone()).await => StatusCode::Good,
                    Some(_) => StatusCode::BadInvalidState,
                    None => StatusCode::BadMethodInvalid,
                },
                Method::Arm => match self.control.arm(origin(context)).await {
                    Ok(()) => StatusCode::Good,
                    Err(_) => StatusCode::BadResourceUnavailable,
                },
                Method::Disarm => match self.control.disarm(origin(context)).await {
                    Ok(()) => StatusCode::Good,
                    Err(_) => StatusCode::BadResourceUnavailable,
                },
                Method::Select(property) => {
                    match self.control.select(*property, origin(context)).await {
                        Ok(()) => StatusCode::Good,
                        Err(ControlError::NotSelected(_)) => StatusCode::BadInvalidState,
                        Err(_) => StatusCode::BadResourceUnavailable,
                    }
                }
            };
            method.set_outputs(Vec::new());
            method.set_status(status);
        }
        Ok(())
    }

    /// Value reads from the address space, except the history configurations'
    /// `StartOfArchive` and `StartOfOnlineArchive` (OPC UA Part 11 §5.2.2), answered from the
    /// historian when read ([`crate::history::Historian::start_of_archive`]: it moves as
    /// retention deletes files and when the first sample reaches an empty archive; the time of
    /// the read while history holds nothing).
    async fn read_values(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        nodes: &[&opcua::server::node_manager::ParsedReadValueId],
        max_age: f64,
        timestamps_to_return: opcua::types::TimestampsToReturn,
    ) -> Vec<DataValue> {
        let mut values: Vec<DataValue> = {
            let space = address_space.read();
            nodes
                .iter()
                .map(|n| space.read(context, n, max_age, timestamps_to_return))
                .collect()
        };
        let Some(historian) = &self.history else {
            return values;
        };
        for (node, value) in nodes.iter().zip(values.iter_mut()) {
            let archive = matches!(&node.node_id.identifier, opcua::types::Identifier::String(s)
                if s.as_ref().starts_with(HISTORY_CONFIGURATIONS)
                    && (s.as_ref().ends_with("/StartOfArchive")
                        || s.as_ref().ends_with("/StartOfOnlineArchive")));
            if archive
                && node.node_id.namespace == self.namespace.namespace_index
                && value.status.is_none_or(|s| s.is_good())
            {
                let start = historian
                    .start_of_archive()
                    .map_or_else(DateTime::now, super::history::date_time);
                value.value = Some(opcua::types::Variant::from(start));
            }
        }
        values
    }

    /// HistoryRead of raw values (OPC UA Part 11 §6.5.3; see [`super::history`]). The server
    /// has checked that each node is a variable whose UserAccessLevel has HistoryRead.
    async fn history_read_raw_modified(
        &self,
        _context: &RequestContext,
        details: &opcua::types::ReadRawModifiedDetails,
        nodes: &mut [&mut &mut opcua::server::node_manager::HistoryNode],
        timestamps_to_return: opcua::types::TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let Some(historian) = &self.history else {
            return Err(StatusCode::BadHistoryOperationUnsupported);
        };
        blocking(|| {
            super::history::read_raw(historian, details, nodes, timestamps_to_return, |node| {
                self.by_node.get(node).and_then(|p| historian.series_of(*p))
            })
        })
    }

    /// HistoryRead at given times (OPC UA Part 11 §6.5.5; see [`super::history`]).
    async fn history_read_at_time(
        &self,
        _context: &RequestContext,
        details: &opcua::types::ReadAtTimeDetails,
        nodes: &mut [&mut &mut opcua::server::node_manager::HistoryNode],
        timestamps_to_return: opcua::types::TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let Some(historian) = &self.history else {
            return Err(StatusCode::BadHistoryOperationUnsupported);
        };
        let model = self.twin.model();
        blocking(|| {
            super::history::read_at_time(historian, details, nodes, timestamps_to_return, |node| {
                let property = *self.by_node.get(node)?;
                let series = historian.series_of(property)?;
                Some((series, super::history::stepped(model.decl(property))))
            })
        })
    }

    /// Client writes: the address space checks access (Bad_NotWritable for read-only properties,
    /// Bad_UserAccessDenied for viewers) and the data type; accepted writes become proposals to
    /// the control gate, whose answer is the write's status. The stored value changes only when
    /// the device's value comes back through the twin.
    async fn write(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        nodes_to_write: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        let mut proposals = Vec::new();
        {
            let mut space = address_space.write();
            let type_tree = context.type_tree.read();
            for (index, write) in nodes_to_write.iter_mut().enumerate() {
                // async-opcua 0.19 checks only UserAccessLevel for Value writes, so a read-only
                // variable would answer Bad_UserAccessDenied; OPC UA Part 4 §5.10.4 wants
                // Bad_NotWritable when the AccessLevel itself forbids writing.
                if let Some(&property) = self.by_node.get(&write.value().node_id)
                    && self.twin.model().decl(property).access != Access::ReadWrite
                {
                    write.set_status(StatusCode::BadNotWritable);
                    continue;
                }
                let checked = space
                    .validate_node_write(context, write.value(), &*type_tree)
                    .map(|_| ());
                if let Err(status) = checked {
                    write.set_status(status);
                    continue;
                }
                let request = write.value();
                if request.attribute_id != AttributeId::Value
                    || request.index_range != NumericRange::None
                {
                    write.set_status(StatusCode::BadWriteNotSupported);
                    continue;
                }
                let Some(&property) = self.by_node.get(&request.node_id) else {
                    write.set_status(StatusCode::BadNotWritable);
                    continue;
                };
                match request
                    .value
                    .value
                    .as_ref()
                    .and_then(crate::opcua_values::from_variant)
                {
                    Some(value) => proposals.push((index, property, value)),
                    None => write.set_status(StatusCode::BadTypeMismatch),
                }
            }
        }
        let origin = origin(context);
        for (index, property, value) in proposals {
            // The client's timeout hint bounds the device write (patch 0003 of the series).
            let outcome = self
                .control
                .write_until(property, value, origin.clone(), context.deadline)
                .await;
            nodes_to_write[index].set_status(write_status(&outcome));
        }
        Ok(())
    }
}

/// Runs `f`, which reads history files, where blocking is allowed: in place on a multi-threaded
/// runtime (the daemon's), directly otherwise.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl TwinNodeManagerImpl {
    /// Current samples of every property as (node id, data value) pairs.
    pub fn all_values(&self) -> Vec<(NodeId, DataValue)> {
        let ids: Vec<PropertyId> = (0..self.property_nodes.len() as u32)
            .map(PropertyId)
            .collect();
        self.twin
            .samples(&ids)
            .iter()
            .zip(&self.property_nodes)
            .map(|(sample, node)| (node.clone(), data_value(sample)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualities_map_to_their_status_codes() {
        // An upstream server's code, whatever its severity, is served verbatim (with its info
        // bits: Uncertain_LastUsableValue, InfoType DataValue, low limited).
        for code in [0x4090_0500, 0x0096_0000, 0x808B_0000] {
            assert_eq!(
                status_code(Quality::from_status_code(code)).bits(),
                code,
                "{code:#x}"
            );
        }
        let cases = [
            (Quality::GOOD, StatusCode::Good),
            (
                Quality::uncertain(QualityReason::Stale),
                StatusCode::UncertainLastUsableValue,
            ),
            (
                Quality::bad(QualityReason::NotYetRead),
                StatusCode::BadWaitingForInitialData,
            ),
            (
                Quality::bad(QualityReason::CommunicationFailure),
                StatusCode::BadCommunicationError,
            ),
            (Quality::bad(QualityReason::Timeout), StatusCode::BadTimeout),
            (
                Quality::bad(QualityReason::NoConnection),
                StatusCode::BadNoCommunication,
            ),
            (
                Quality::bad(QualityReason::DeviceException(4)),
                StatusCode::BadDeviceFailure,
            ),
            (
                Quality::bad(QualityReason::DecodeError),
                StatusCode::BadDecodingError,
            ),
            (
                Quality::bad(QualityReason::ConfigurationError),
                StatusCode::BadConfigurationError,
            ),
            (
                Quality::bad(QualityReason::OutOfRange),
                StatusCode::BadOutOfRange,
            ),
        ];
        for (quality, status) in cases {
            assert_eq!(status_code(quality), status, "{quality}");
        }
    }

    #[test]
    fn date_times_count_ticks_from_1601() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(
            i64::from(date_time(t)),
            116_444_736_000_000_000 + 15_000_000
        );
    }
}
