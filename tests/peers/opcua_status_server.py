"""An OPC UA server on asyncua whose variables carry fixed status codes, for Twinloom's source
tests: the status code a server sends must reach the twin and Twinloom's own clients verbatim.

Serves Double variables `ns=<idx>;s=<name>`, one per NAME=CODE argument (CODE in decimal or
0x hex), each written once with value 1.5 and that status code, a source timestamp of
2024-01-01T00:00:00Z, security None, anonymous. Prints `LISTENING <url> <namespace index>`;
exits when stdin closes.

Usage: python opcua_status_server.py NAME=CODE ...
"""

import asyncio
import datetime
import sys

from asyncua import Server, ua

SOURCE_TIME = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


async def main():
    statuses = [(name, int(code, 0)) for name, code in (arg.split("=", 1) for arg in sys.argv[1:])]
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:twinloom:status-peer")
    folder = await server.nodes.objects.add_folder(ua.NodeId("statuses", ns), "statuses")
    async with server:
        for name, code in statuses:
            node = await folder.add_variable(ua.NodeId(name, ns), name, 0.0)
            await server.write_attribute_value(
                node.nodeid,
                ua.DataValue(
                    ua.Variant(1.5, ua.VariantType.Double),
                    StatusCode_=ua.StatusCode(code),
                    SourceTimestamp=SOURCE_TIME,
                ),
            )
        port = server.bserver._server.sockets[0].getsockname()[1]
        print(f"LISTENING opc.tcp://127.0.0.1:{port}/ {ns}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
