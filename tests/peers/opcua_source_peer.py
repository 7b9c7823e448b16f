"""An asyncua server that Twinloom's OPC UA *source* reads from, driven by commands on stdin.

Serves N Double variables `ns=<idx>;s=v<i>` (namespace `urn:twinloom:source-peer`) in objects of
100, security None, anonymous, and rewrites every one of them with `step × 100000 + i` every
PERIOD seconds. Prints `LISTENING <url> <namespace index>` once it listens. Commands, one per
line, each answered with one line:

- `COUNT` → `COUNT <sessions> <subscriptions>`: activated sessions and subscriptions the server
  holds (asyncua's own bookkeeping: `InternalSession._current_connections`, the subscription
  service's table).
- `DELETE <i>` → `DELETED <i>`: deletes variable v<i>. Its monitored items first get a value
  with Bad_NodeIdUnknown, as OPC UA Part 4 §5.12.1 has a server report it: asyncua 1.1.8 itself
  never tells them (`address_space.py` `_delete_node_callbacks` calls the async callback without
  awaiting it, and would send a subscription-wide StatusChangeNotification if it did).
- `RESTART` → `LISTENING <url> <namespace index>`: a restart as clients see it, in ≈ 10 ms: the
  listening socket and every connection closed (asyncua closes their sessions and deletes their
  subscriptions), then listening again on the same port. The address space stays (a fresh asyncua
  server takes ≈ 3.5 s to stop and start, too slow for 20 restarts in a test).
- `RESTART FULL` → the same with a fresh asyncua server (nothing of the old one's state).

Exits when stdin closes.

Usage: python opcua_source_peer.py N [PERIOD]
"""

import asyncio
import sys

from asyncua import Server, ua
from asyncua.server.binary_server_asyncio import BinaryServer
from asyncua.server.internal_session import InternalSession

URI = "urn:twinloom:source-peer"


async def start(count, port):
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(URI)
    folder = await server.nodes.objects.add_folder(ua.NodeId("peer", ns), "peer")
    nodes = []
    for first in range(0, count, 100):
        asset = await folder.add_object(ua.NodeId(f"a{first // 100}", ns), f"a{first // 100}")
        for i in range(first, min(first + 100, count)):
            nodes.append(await asset.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", float(i)))
    await server.start()
    port = server.bserver._server.sockets[0].getsockname()[1]
    print(f"LISTENING opc.tcp://127.0.0.1:{port}/ {ns}", flush=True)
    return server, nodes, port


async def stop_listening(server):
    """Closes the listening socket, then every connection. In this order: a client reconnecting
    while the connections close would otherwise be accepted by the old socket, and Python 3.11's
    `wait_closed` (in asyncua's stop) waits for that connection to end, forever."""
    server.bserver._server.close()
    await server.bserver.stop()


async def main():
    count = int(sys.argv[1])
    period = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    server, nodes, port = await start(count, 0)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    state = {"server": server, "nodes": nodes, "deleted": set(), "step": 0}

    async def writer():
        while True:
            state["step"] += 1
            step = state["step"]
            srv = state["server"]
            for i, node in enumerate(state["nodes"]):
                if i in state["deleted"]:
                    continue
                try:
                    value = ua.DataValue(ua.Variant(float(step * 100000 + i), ua.VariantType.Double))
                    await srv.write_attribute_value(node.nodeid, value)
                except Exception:
                    pass
            await asyncio.sleep(period)

    writing = asyncio.create_task(writer())
    while True:
        line = await reader.readline()
        if not line:
            break
        words = line.decode().split()
        if not words:
            continue
        if words[0] == "COUNT":
            srv = state["server"]
            sessions = InternalSession._current_connections
            subscriptions = len(srv.iserver.subscription_service.subscriptions)
            print(f"COUNT {sessions} {subscriptions}", flush=True)
        elif words[0] == "DELETE":
            i = int(words[1])
            state["deleted"].add(i)
            node = state["nodes"][i]
            gone = ua.DataValue(StatusCode_=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown))
            await state["server"].write_attribute_value(node.nodeid, gone)
            await state["server"].delete_nodes([node])
            print(f"DELETED {i}", flush=True)
        elif words[0] == "RESTART" and len(words) == 1:
            srv = state["server"]
            await stop_listening(srv)
            srv.bserver = BinaryServer(srv.iserver, "127.0.0.1", port, srv.limits)
            await srv.bserver.start()
            state["step"] = 0
            ns = await srv.get_namespace_index(URI)
            print(f"LISTENING opc.tcp://127.0.0.1:{port}/ {ns}", flush=True)
        elif words[0] == "RESTART":
            await stop_listening(state["server"])
            await state["server"].stop()
            InternalSession._current_connections = 0
            state["deleted"] = set()
            state["step"] = 0
            server, nodes, _ = await start(count, port)
            state["server"], state["nodes"] = server, nodes
    writing.cancel()
    await state["server"].stop()


if __name__ == "__main__":
    asyncio.run(main())
