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
  quit

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
        command, *args = line.split(maxsplit=3)
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
            else:
                say({"error": f"unknown command {command}"})
        except Exception as e:
            say({"error": f"{type(e).__name__}: {e}"})
    if subscription is not None:
        await subscription.delete()
    await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
