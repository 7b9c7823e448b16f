"""An OPC UA server on asyncua, the reference for Twinloom's OPC UA benchmark.

Serves N Double variables `ns=<idx>;s=v<i>` in objects of 100 (the shape of Twinloom's twin:
assets with properties; a single folder of 100 000 children makes asyncua's node creation
quadratic), security None, anonymous, and rewrites every one of them as fast as it can, at most
every 100 ms. Prints `LISTENING <url> <namespace index>`; exits
when stdin closes.

Usage: python opcua_server.py N
"""

import asyncio
import sys

from asyncua import Server, ua


async def main():
    count = int(sys.argv[1])
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:twinloom:bench-reference")
    folder = await server.nodes.objects.add_folder(ua.NodeId("bench", ns), "bench")
    nodes = []
    for start in range(0, count, 100):
        asset = await folder.add_object(ua.NodeId(f"a{start // 100}", ns), f"a{start // 100}")
        for i in range(start, min(start + 100, count)):
            nodes.append(await asset.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0))
    async with server:
        port = server.bserver._server.sockets[0].getsockname()[1]
        print(f"LISTENING opc.tcp://127.0.0.1:{port}/ {ns}", flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        step = 0
        while not stdin_closed.done():
            started = loop.time()
            step += 1
            for i, node in enumerate(nodes):
                await server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(float(step * 1000 + i), ua.VariantType.Double)))
            await asyncio.sleep(max(0.0, 0.1 - (loop.time() - started)))


if __name__ == "__main__":
    asyncio.run(main())
