"""An OPC UA client on asyncua (an implementation independent of async-opcua), for interop tests.

Connects with Basic256Sha256 SignAndEncrypt and a user name, then follows commands from stdin and
answers with one JSON object per line on stdout:

  browse            -> {"assets": {"<path>": ["<property>", ...]}}   (whole hierarchy under Objects)
  read <nodeid>     -> {"value": ..., "status": "<name>", "unit": {...}, "range": [lo, hi]}
  subscribe <nodeid>-> {"subscribed": true}, then {"notification": <value>, "status": "<name>"} per change
  quit

Usage: python opcua_client.py URL USER PASSWORD WORKDIR
"""

import asyncio
import json
import sys
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:twinloom:asyncua-test-client"


def say(obj):
    print(json.dumps(obj), flush=True)


def plain(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


class Handler:
    def datachange_notification(self, node, val, data):
        status = data.monitored_item.Value.StatusCode
        say({"notification": plain(val), "status": status.name})


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


async def main():
    url, user, password, workdir = sys.argv[1:5]
    work = Path(workdir)
    key, cert = work / "client-key.pem", work / "client-cert.der"
    await setup_self_signed_certificate(
        key, cert, APP_URI, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "asyncua test client"}
    )
    client = Client(url, timeout=10)
    client.application_uri = APP_URI
    client.set_user(user)
    client.set_password(password)
    await client.set_security(
        SecurityPolicyBasic256Sha256, certificate=str(cert), private_key=str(key), mode=ua.MessageSecurityMode.SignAndEncrypt
    )
    async with client:
        say({"connected": True})
        plant_ns = await client.get_namespace_index("urn:twinloom:plant")
        loop = asyncio.get_running_loop()
        subscription = None
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                break
            command, _, arg = line.strip().partition(" ")
            if command == "browse":
                assets = {}
                await browse(client.nodes.objects, "", assets, plant_ns)
                say({"assets": {k: sorted(v) for k, v in assets.items()}})
            elif command == "read":
                node = client.get_node(arg)
                data_value = await node.read_data_value(raise_on_bad_status=False)
                answer = {"value": plain(data_value.Value.Value), "status": data_value.StatusCode.name}
                props = {(await p.read_browse_name()).Name: p for p in await node.get_properties()}
                if "EngineeringUnits" in props:
                    eu = await props["EngineeringUnits"].read_value()
                    answer["unit"] = {"unit_id": eu.UnitId, "display_name": eu.DisplayName.Text, "namespace": eu.NamespaceUri}
                if "EURange" in props:
                    r = await props["EURange"].read_value()
                    answer["range"] = [r.Low, r.High]
                say(answer)
            elif command == "subscribe":
                subscription = await client.create_subscription(100, Handler())
                await subscription.subscribe_data_change(client.get_node(arg))
                say({"subscribed": True})
        if subscription is not None:
            await subscription.delete()


if __name__ == "__main__":
    asyncio.run(main())
