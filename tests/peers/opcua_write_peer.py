"""An asyncua server that Twinloom's OPC UA source writes to, driven by commands on stdin.

Serves, in namespace `urn:twinloom:write-peer` (security None, anonymous), the variables
`ns=<idx>;s=<name>`:

- `Speed` Float 0.0, `Count` Int16 0, `Run` Boolean false: writable;
- `Locked` Double 1.0: read-only (AccessLevel CurrentRead);
- `Guarded` Double 2.0: AccessLevel CurrentRead|CurrentWrite, UserAccessLevel CurrentRead only,
  so an anonymous session's write is refused with Bad_UserAccessDenied.

(asyncua 1.1 answers a write to `Locked` with Bad_UserAccessDenied as well, not Bad_NotWritable:
it checks AccessLevel and UserAccessLevel together, `address_space.py` `AttributeService.write`.)

Prints `LISTENING <url> <namespace index>` once it listens. Commands, one per line:
- `GET <name>` → `VALUE <name> <value>` (Python's repr of the value).

Exits when stdin closes.
"""

import asyncio
import sys

from asyncua import Server, ua

URI = "urn:twinloom:write-peer"


async def main():
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(URI)
    folder = await server.nodes.objects.add_object(ua.NodeId("Line1", ns), "Line1")
    nodes = {}
    for name, value, kind in [
        ("Speed", 0.0, ua.VariantType.Float),
        ("Count", 0, ua.VariantType.Int16),
        ("Run", False, ua.VariantType.Boolean),
        ("Locked", 1.0, ua.VariantType.Double),
        ("Guarded", 2.0, ua.VariantType.Double),
    ]:
        nodes[name] = await folder.add_variable(ua.NodeId(name, ns), name, ua.Variant(value, kind))
    for name in ["Speed", "Count", "Run"]:
        await nodes[name].set_writable()
    read_write = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.CurrentWrite.mask
    await nodes["Guarded"].write_attribute(
        ua.AttributeIds.AccessLevel, ua.DataValue(ua.Variant(read_write, ua.VariantType.Byte))
    )
    await server.start()
    port = server.bserver._server.sockets[0].getsockname()[1]
    print(f"LISTENING opc.tcp://127.0.0.1:{port}/ {ns}", flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        words = line.decode().split()
        if not words:
            continue
        if words[0] == "GET":
            value = await nodes[words[1]].read_value()
            print(f"VALUE {words[1]} {value!r}", flush=True)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
