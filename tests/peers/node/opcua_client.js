// An OPC UA client on node-opcua (an implementation independent of async-opcua), for interop tests.
//
// Usage: node opcua_client.js URL USER PASSWORD WORKDIR [POLICY [MODE]]
//
// USER "-" connects anonymously. POLICY is None, Basic256Sha256 (default), Aes128_Sha256_RsaOaep or
// Aes256_Sha256_RsaPss; MODE is None, Sign or SignAndEncrypt (default; None under POLICY None).
// WORKDIR holds the client's PKI (its self-signed certificate); the server's certificate is
// trusted as is.
//
// The first line on stdout is {"connected": true}, or {"error": "<message>"} with exit code 1. Then
// it follows commands from stdin and answers each with one JSON object per line on stdout:
//
//   browse                     -> {"assets": {"<path>": ["<property>", ...]}}   (whole hierarchy under Objects)
//   read <nodeid>              -> {"value": ..., "status": "<name>", "source_timestamp": <bool>,
//                                  "server_timestamp": <bool>, "unit": {...}, "range": [lo, hi]}
//   subscribe <nodeid>         -> {"subscribed": true}, then {"notification": <value>, "status": "<name>"} per change
//   write <nodeid> <type> <json value>  (type Double, Boolean, Int64, UInt64 or String) -> {"status": "<name>"}
//   call <object nodeid> <method nodeid>  (no arguments) -> {"status": "<name>"}
//   history_raw <nodeid> <json {"start": µs|null, "end": µs|null, "num": n, "bounds": bool}>
//       -> {"values": [{"t": µs, "value": ..., "status": "<name>", "code": <u32>}], "statuses": [...], "pages": n}
//       (HistoryRead ReadRawModifiedDetails, following continuation points; JavaScript dates hold
//       milliseconds: "t" is whole milliseconds in µs)
//   quit
//
// Status names are the symbolic OPC UA names ("Good", "BadUserAccessDenied"). A command that fails
// outright (an unknown node, a lost connection) answers {"error": "<message>"}.
//
// The asyncua (../opcua_client.py) and open62541 (../opcua_client_o6.py) peers speak the same protocol.

"use strict";

// node-opcua logs with console.log: the answers get stdout to themselves, the rest goes to stderr.
console.log = console.info = console.debug = console.error;

const path = require("node:path");
const readline = require("node:readline");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const {
  AttributeIds,
  BrowseDirection,
  DataType,
  MessageSecurityMode,
  NodeClass,
  OPCUAClient,
  ReadRawModifiedDetails,
  HistoryReadRequest,
  StatusCodes,
  TimestampsToReturn,
  UserTokenType,
  browseAll,
} = require("node-opcua-client");

const APP_URI = "urn:twinloom:node-opcua-test-client";
const PLANT_URI = "urn:twinloom:plant";
const FOLDER_TYPE = "ns=0;i=61";
const TYPES = { Double: DataType.Double, Boolean: DataType.Boolean, Int64: DataType.Int64, UInt64: DataType.UInt64, String: DataType.String };
const STATUS_NAMES = new Map(Object.values(StatusCodes).map((code) => [code.value, code.name]));

// JSON.stringify writes a whole Double as 42 where the Python peers write 42.0, and serde_json's
// Value equality tells the two apart: say writes a Real with its ".0".
class Real {
  constructor(n) {
    this.n = n;
  }
  toJSON() {
    return `\u0000${this.n}`;
  }
}

function say(obj) {
  const text = JSON.stringify(obj).replace(/"\\u0000(-?\d+)"/g, "$1.0").replace(/"\\u0000([^"]*)"/g, "$1");
  process.stdout.write(text + "\n");
}

function plain(variant) {
  const value = variant ? variant.value : null;
  if (typeof value === "number" && (variant.dataType === DataType.Double || variant.dataType === DataType.Float)) {
    return new Real(value);
  }
  // node-opcua hands 64-bit integers over as [high, low] 32-bit words.
  if (variant && (variant.dataType === DataType.Int64 || variant.dataType === DataType.UInt64)) {
    const wide = (BigInt(value[0] >>> 0) << 32n) | BigInt(value[1] >>> 0);
    return Number(variant.dataType === DataType.Int64 ? BigInt.asIntN(64, wide) : wide);
  }
  if (value === null || value === undefined || ["boolean", "number", "string"].includes(typeof value)) {
    return value ?? null;
  }
  return String(value);
}

// The low 16 bits are info bits (overflow, historian flags), not part of the symbolic name.
function statusName(code) {
  return STATUS_NAMES.get((code.value & 0xffff0000) >>> 0) ?? code.name;
}

// The first count - 1 words, then the rest of the line as is (a JSON string value may hold spaces).
function splitArgs(text, count) {
  const words = [];
  let rest = text;
  while (rest && words.length < count - 1) {
    const [word] = rest.split(/\s/, 1);
    words.push(word);
    rest = rest.slice(word.length).trimStart();
  }
  return rest ? [...words, rest] : words;
}

async function connect(url, user, password, workdir, policy, mode) {
  const client = OPCUAClient.create({
    applicationName: "node-opcua test client",
    applicationUri: APP_URI,
    securityPolicy: `http://opcfoundation.org/UA/SecurityPolicy#${policy}`,
    securityMode: MessageSecurityMode[mode],
    // The URL given need not spell the endpoint as the server does (it adds a trailing slash).
    endpointMustExist: false,
    // Fail at once instead of retrying forever: the test wants the error.
    connectionStrategy: { maxRetry: 0 },
    clientCertificateManager: new OPCUACertificateManager({
      rootFolder: path.join(workdir, "pki"),
      automaticallyAcceptUnknownCertificate: true,
    }),
  });
  await client.connect(url);
  const identity = user === "-" ? { type: UserTokenType.Anonymous } : { type: UserTokenType.UserName, userName: user, password };
  const session = await client.createSession(identity);
  return { client, session };
}

async function browse(session, nodeId, prefix, assets, plantNs) {
  const result = await browseAll(session, {
    nodeId,
    browseDirection: BrowseDirection.Forward,
    referenceTypeId: "HierarchicalReferences",
    includeSubtypes: true,
    resultMask: 0x3f,
  });
  for (const ref of result.references ?? []) {
    if (ref.nodeId.namespace !== plantNs) continue;
    const name = ref.browseName.name;
    const childPath = prefix ? `${prefix}/${name}` : name;
    if (ref.nodeClass === NodeClass.Object) {
      if (ref.typeDefinition.toString() !== FOLDER_TYPE) assets[childPath] ??= [];
      await browse(session, ref.nodeId, childPath, assets, plantNs);
    } else if (ref.nodeClass === NodeClass.Variable && prefix in assets) {
      assets[prefix].push(name);
    }
  }
}

async function read(session, nodeId) {
  // node-opcua asks for both timestamps.
  const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
  const answer = {
    value: plain(dv.value),
    status: statusName(dv.statusCode),
    source_timestamp: dv.sourceTimestamp !== null,
    server_timestamp: dv.serverTimestamp !== null,
  };
  const props = await session.browse({
    nodeId,
    browseDirection: BrowseDirection.Forward,
    referenceTypeId: "HasProperty",
    resultMask: 0x3f,
  });
  const byName = Object.fromEntries((props.references ?? []).map((ref) => [ref.browseName.name, ref.nodeId]));
  if (byName.EngineeringUnits) {
    const eu = (await session.read({ nodeId: byName.EngineeringUnits, attributeId: AttributeIds.Value })).value.value;
    answer.unit = { unit_id: eu.unitId, display_name: eu.displayName.text, namespace: eu.namespaceUri };
  }
  if (byName.EURange) {
    const range = (await session.read({ nodeId: byName.EURange, attributeId: AttributeIds.Value })).value.value;
    answer.range = [new Real(range.low), new Real(range.high)];
  }
  return answer;
}

async function write(session, nodeId, type, value) {
  const status = await session.write({
    nodeId,
    attributeId: AttributeIds.Value,
    value: { value: { dataType: TYPES[type], value: JSON.parse(value) } },
  });
  return { status: statusName(status) };
}

async function call(session, objectId, methodId) {
  const result = await session.call({ objectId, methodId, inputArguments: [] });
  return { status: statusName(result.statusCode) };
}

// The OPC UA DateTime MinValue (1601-01-01): "no time given".
const MIN_DATE = new Date(Date.UTC(1601, 0, 1));

async function historyRaw(session, nodeId, spec) {
  const s = JSON.parse(spec);
  const date = (us) => (us === null || us === undefined ? MIN_DATE : new Date(us / 1000));
  const details = new ReadRawModifiedDetails({
    isReadModified: false,
    startTime: date(s.start),
    endTime: date(s.end),
    numValuesPerNode: s.num ?? 0,
    returnBounds: s.bounds ?? false,
  });
  const values = [];
  const statuses = [];
  let continuationPoint = null;
  do {
    const response = await session.historyRead(
      new HistoryReadRequest({
        historyReadDetails: details,
        timestampsToReturn: TimestampsToReturn.Both,
        releaseContinuationPoints: false,
        nodesToRead: [{ nodeId, continuationPoint }],
      }),
    );
    const [result] = response.results;
    statuses.push(statusName(result.statusCode));
    for (const dv of result.historyData?.dataValues ?? []) {
      values.push({
        t: dv.sourceTimestamp ? dv.sourceTimestamp.getTime() * 1000 : null,
        value: plain(dv.value),
        status: statusName(dv.statusCode),
        code: dv.statusCode.value,
      });
    }
    continuationPoint = result.continuationPoint && result.continuationPoint.length > 0 ? result.continuationPoint : null;
  } while (continuationPoint);
  return { values, statuses, pages: statuses.length };
}

async function main() {
  const [url, user, password, workdir, policy = "Basic256Sha256"] = process.argv.slice(2);
  const mode = process.argv[7] ?? (policy === "None" ? "None" : "SignAndEncrypt");
  let client, session;
  try {
    ({ client, session } = await connect(url, user, password, workdir, policy, mode));
  } catch (e) {
    say({ error: String(e) });
    process.exit(1);
  }
  say({ connected: true });
  const namespaces = (await session.read({ nodeId: "ns=0;i=2255", attributeId: AttributeIds.Value })).value.value;
  const plantNs = namespaces.indexOf(PLANT_URI);
  let subscription = null;
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const [command, ...args] = splitArgs(line.trim(), 4);
    if (command === "quit") break;
    if (!command) continue;
    try {
      if (command === "browse") {
        const assets = {};
        await browse(session, "ns=0;i=85", "", assets, plantNs);
        say({ assets: Object.fromEntries(Object.entries(assets).map(([k, v]) => [k, v.sort()])) });
      } else if (command === "read") {
        say(await read(session, args[0]));
      } else if (command === "subscribe") {
        subscription ??= await session.createSubscription2({
          requestedPublishingInterval: 100,
          requestedLifetimeCount: 600,
          requestedMaxKeepAliveCount: 10,
          publishingEnabled: true,
        });
        const item = await subscription.monitor(
          { nodeId: args[0], attributeId: AttributeIds.Value },
          { samplingInterval: 0, queueSize: 1, discardOldest: true },
          TimestampsToReturn.Both,
        );
        item.on("changed", (dv) => say({ notification: plain(dv.value), status: statusName(dv.statusCode) }));
        say({ subscribed: true });
      } else if (command === "write") {
        say(await write(session, ...args));
      } else if (command === "call") {
        say(await call(session, ...args));
      } else if (command === "history_raw") {
        say(await historyRaw(session, args[0], line.trim().split(/\s+/).slice(2).join(" ")));
      } else {
        say({ error: `unknown command ${command}` });
      }
    } catch (e) {
      say({ error: String(e) });
    }
  }
  await session.close();
  await client.disconnect();
  // After a subscription node-opcua leaves handles open that would keep the process alive.
  process.exit(0);
}

main();
