"""An OPC UA client on asyncua (an implementation independent of async-opcua), for interop tests.

Usage: python opcua_client.py URL USER PASSWORD WORKDIR [POLICY [MODE]]

USER "-" connects anonymously. POLICY is None, Basic256Sha256 (default), Aes128_Sha256_RsaOaep or
Aes256_Sha256_RsaPss; MODE is None, Sign or SignAndEncrypt (default; None under POLICY None).
WORKDIR holds the client's self-signed certificate; the server's certificate is trusted as is.

The first line on stdout is {"connected": true}, or {"error": "<message>"} with exit code 1. Then
it follows commands from stdin and answers each with one JSON object per line on stdout:

  browse                     -> {"assets": {"<path>": ["<property>", ...]}}   (whole hierarchy under Objects)
  read <nodeid>              -> {"value": ..., "status": "<name>", "source_timestamp": <bool>,
                                 "server_timestamp": <bool>, "unit": {...}, "range": [lo, hi]}
  subscribe <nodeid>         -> {"subscribed": true}, then {"notification": <value>, "status": "<name>"} per change
  write <nodeid> <type> <json value>  (type Double, Boolean, Int64, UInt64 or String) -> {"status": "<name>"}
  call <object nodeid> <method nodeid>  (no arguments) -> {"status": "<name>"}
  history_raw <nodeid> <json {"start": µs|null, "end": µs|null, "num": n, "bounds": bool}>
      -> {"values": [{"t": µs, "server_t": µs|null, "value": ..., "status": "<name>", "code": <u32>}], "statuses": ["<node status per answer>"],
          "pages": <answers>}  (HistoryRead ReadRawModifiedDetails, following continuation points to the end)
  history_first <nodeid> <json as history_raw>  -> {"values": [...], "status": "<name>", "continuation": <bool>,
          "released": "<status of the release>", "after": "<status of reading on with the released point>"}
  read_raw_history <nodeid> <json {"start": µs, "end": µs, "num": n}>  -> {"values": [...]}  (asyncua's Node.read_raw_history)
  history_at <nodeid> <json [µs, ...] | {"times": [µs, ...], "simple": bool}>  -> {"values": [...], "status": "<name>"}
      (ReadAtTimeDetails; UseSimpleBounds unless "simple" is false)
  read_time <nodeid>         -> {"t": µs}  (a UtcTime variable's value, e.g. StartOfArchive)
  quit

Times are µs since the Unix epoch (OPC UA DateTime has 100 ns ticks: µs are exact).

Status names are the symbolic OPC UA names ("Good", "BadUserAccessDenied"). A command that fails
outright (an unknown node, a lost connection) answers {"error": "<message>"}.

The Node.js (node/opcua_client.js) and open62541 (opcua_client_o6.py) peers speak the same protocol.
"""

import asyncio
import json
import sys
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:twinloom:asyncua-test-client"

POLICIES = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}

TYPES = {name: getattr(ua.VariantType, name) for name in ("Double", "Boolean", "Int64", "UInt64", "String")}


def say(obj):
    print(json.dumps(obj), flush=True)


def plain(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def status_name(code):
    # The low 16 bits are info bits (overflow, historian flags), not part of the symbolic name.
    return ua.StatusCode(code.value & 0xFFFF0000).name


class Handler:
    def datachange_notification(self, node, val, data):
        status = data.monitored_item.Value.StatusCode
        say({"notification": plain(val), "status": status_name(status)})


async def browse(node, path, assets, plant_ns):
    for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
        name = (await child.read_browse_name()).Name
        node_class = await child.read_node_class()
        if child.nodeid.NamespaceIndex != plant_ns:
            continue
        child_path = f"{path}/{name}" if path else name
        if node_class == ua.NodeClass.Object:
            type_def = await child.read_type_definition()
            if type_def is not None and type_def.Identifier != ua.ObjectIds.FolderType:
                assets.setdefault(child_path, [])
            await browse(child, child_path, assets, plant_ns)
        elif node_class == ua.NodeClass.Variable and path in assets:
            assets[path].append(name)


async def read(client, nodeid):
    node = client.get_node(nodeid)
    # asyncua asks for the source timestamp only by default; ask for both to see what the server sends.
    params = ua.ReadParameters(
        NodesToRead=[ua.ReadValueId(NodeId_=node.nodeid, AttributeId=ua.AttributeIds.Value)],
        TimestampsToReturn_=ua.TimestampsToReturn.Both,
    )
    [data_value] = await node.read_params(params)
    answer = {
        "value": plain(data_value.Value.Value),
        "status": status_name(data_value.StatusCode),
        "source_timestamp": data_value.SourceTimestamp is not None,
        "server_timestamp": data_value.ServerTimestamp is not None,
    }
    props = {(await p.read_browse_name()).Name: p for p in await node.get_properties()}
    if "EngineeringUnits" in props:
        eu = await props["EngineeringUnits"].read_value()
        answer["unit"] = {"unit_id": eu.UnitId, "display_name": eu.DisplayName.Text, "namespace": eu.NamespaceUri}
    if "EURange" in props:
        r = await props["EURange"].read_value()
        answer["range"] = [r.Low, r.High]
    return answer


async def write(client, nodeid, type_name, value):
    variant = ua.Variant(json.loads(value), TYPES[type_name])
    # The low-level call hands back the per-node status instead of raising on a Bad one.
    [status] = await client.uaclient.write_attributes([ua.NodeId.from_string(nodeid)], [ua.DataValue(variant)], ua.AttributeIds.Value)
    return {"status": status_name(status)}


async def call(client, object_id, method_id):
    request = ua.CallMethodRequest(ObjectId=ua.NodeId.from_string(object_id), MethodId=ua.NodeId.from_string(method_id))
    [result] = await client.uaclient.call([request])
    return {"status": status_name(result.StatusCode)}


EPOCH = __import__("datetime").datetime(1970, 1, 1, tzinfo=__import__("datetime").timezone.utc)


def to_time(us):
    import datetime
    return None if us is None else EPOCH + datetime.timedelta(microseconds=us)


def from_time(t):
    if t is None:
        return None
    if t.tzinfo is None:
        import datetime
        t = t.replace(tzinfo=datetime.timezone.utc)
    delta = t - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def history_values(data_values):
    return [
        {
            "t": from_time(dv.SourceTimestamp),
            "server_t": from_time(dv.ServerTimestamp),
            "value": plain(dv.Value.Value) if dv.Value is not None else None,
            "status": status_name(dv.StatusCode),
            "code": dv.StatusCode.value,
        }
        for dv in data_values or []
    ]


def raw_details(spec):
    details = ua.ReadRawModifiedDetails()
    details.IsReadModified = False
    details.StartTime = to_time(spec.get("start")) or ua.get_win_epoch()
    details.EndTime = to_time(spec.get("end")) or ua.get_win_epoch()
    details.NumValuesPerNode = spec.get("num", 0)
    details.ReturnBounds = spec.get("bounds", False)
    return details


async def history_read(client, nodeid, details, continuation=None, release=False):
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = release
    value_id = ua.HistoryReadValueId()
    value_id.NodeId = ua.NodeId.from_string(nodeid)
    value_id.ContinuationPoint = continuation
    params.NodesToRead = [value_id]
    [result] = await client.uaclient.history_read(params)
    return result


async def history_raw(client, nodeid, spec):
    details = raw_details(json.loads(spec))
    values, statuses, continuation = [], [], None
    while True:
        result = await history_read(client, nodeid, details, continuation)
        statuses.append(status_name(result.StatusCode))
        # A null HistoryData (a refused node) decodes as an empty ExtensionObject.
        values.extend(history_values(getattr(result.HistoryData, "DataValues", None)))
        continuation = result.ContinuationPoint
        if not continuation:
            break
    return {"values": values, "statuses": statuses, "pages": len(statuses)}


async def history_first(client, nodeid, spec):
    details = raw_details(json.loads(spec))
    first = await history_read(client, nodeid, details)
    answer = {
        "values": history_values(getattr(first.HistoryData, "DataValues", None)),
        "status": status_name(first.StatusCode),
        "continuation": bool(first.ContinuationPoint),
    }
    if first.ContinuationPoint:
        released = await history_read(client, nodeid, details, first.ContinuationPoint, release=True)
        answer["released"] = status_name(released.StatusCode)
        after = await history_read(client, nodeid, details, first.ContinuationPoint)
        answer["after"] = status_name(after.StatusCode)
    return answer


async def read_raw_history(client, nodeid, spec):
    spec = json.loads(spec)
    node = client.get_node(nodeid)
    values = await node.read_raw_history(
        to_time(spec["start"]), to_time(spec["end"]), spec.get("num", 0), return_bounds=spec.get("bounds", False)
    )
    return {"values": history_values(values)}


async def history_at(client, nodeid, times):
    spec = json.loads(times)
    if isinstance(spec, list):
        spec = {"times": spec}
    details = ua.ReadAtTimeDetails()
    details.ReqTimes = [to_time(t) for t in spec["times"]]
    details.UseSimpleBounds = spec.get("simple", True)
    result = await history_read(client, nodeid, details)
    return {
        "values": history_values(getattr(result.HistoryData, "DataValues", None)),
        "status": status_name(result.StatusCode),
    }


async def connect():
    url, user, password, workdir = sys.argv[1:5]
    policy = sys.argv[5] if len(sys.argv) > 5 else "Basic256Sha256"
    mode = sys.argv[6] if len(sys.argv) > 6 else ("None" if policy == "None" else "SignAndEncrypt")
    client = Client(url, timeout=10)
    client.application_uri = APP_URI
    if user != "-":
        client.set_user(user)
        client.set_password(password)
    if policy != "None":
        work = Path(workdir)
        key, cert = work / "client-key.pem", work / "client-cert.der"
        await setup_self_signed_certificate(
            key, cert, APP_URI, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "asyncua test client"}
        )
        await client.set_security(
            POLICIES[policy], certificate=str(cert), private_key=str(key), mode=getattr(ua.MessageSecurityMode, mode)
        )
    await client.connect()
    return client


async def main():
    try:
        client = await connect()
    except Exception as e:
        say({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
    say({"connected": True})
    plant_ns = await client.get_namespace_index("urn:twinloom:plant")
    loop = asyncio.get_running_loop()
    subscription = None
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        if not line.strip():
            continue
        command, *args = line.split(maxsplit=2 if line.startswith("history") or line.startswith("read_raw") else 3)
        try:
            if command == "browse":
                assets = {}
                await browse(client.nodes.objects, "", assets, plant_ns)
                say({"assets": {k: sorted(v) for k, v in assets.items()}})
            elif command == "read":
                say(await read(client, *args))
            elif command == "subscribe":
                if subscription is None:
                    subscription = await client.create_subscription(100, Handler())
                await subscription.subscribe_data_change(client.get_node(args[0]))
                say({"subscribed": True})
            elif command == "write":
                say(await write(client, *args))
            elif command == "call":
                say(await call(client, *args))
            elif command == "history_raw":
                say(await history_raw(client, *args))
            elif command == "history_first":
                say(await history_first(client, *args))
            elif command == "read_raw_history":
                say(await read_raw_history(client, *args))
            elif command == "history_at":
                say(await history_at(client, *args))
            elif command == "read_time":
                say({"t": from_time(await client.get_node(args[0]).read_value())})
            else:
                say({"error": f"unknown command {command}"})
        except Exception as e:
            say({"error": f"{type(e).__name__}: {e}"})
    if subscription is not None:
        await subscription.delete()
    await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
