"""An OPC UA client on o6 (open62541, an implementation independent of async-opcua), for interop tests.

Usage: python opcua_client_o6.py URL USER PASSWORD WORKDIR [POLICY [MODE]]

USER "-" connects anonymously. POLICY is None, Basic256Sha256 (default), Aes128_Sha256_RsaOaep or
Aes256_Sha256_RsaPss; MODE is None, Sign or SignAndEncrypt (default; None under POLICY None).
The client makes a self-signed certificate in memory (WORKDIR is not needed) and accepts the
server's certificate as is.

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

The o6 wheel without a credential runs in "script mode": the process ends after ten minutes.
"""

import json
import os
import sys
import threading

# o6 prints a banner and open62541 logs to stdout: the answers get stdout to themselves, the rest
# goes to stderr.
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

import numpy  # noqa: E402
import o6  # noqa: E402
from o6.ns import ns0  # noqa: E402
from o6.util import createSelfSignedCertificate  # noqa: E402

APP_URI = "urn:twinloom:o6-test-client"
PLANT_URI = "urn:twinloom:plant"
FOLDER_TYPE = o6.NodeId("i=61")
HAS_PROPERTY = o6.NodeId("i=46")
MODES = {
    "None": ns0.datatypes.MessageSecurityMode.NONE,
    "Sign": ns0.datatypes.MessageSecurityMode.SIGN,
    "SignAndEncrypt": ns0.datatypes.MessageSecurityMode.SIGN_AND_ENCRYPT,
}
TYPES = {"Double": o6.Double, "Boolean": o6.Boolean, "Int64": o6.Int64, "UInt64": o6.UInt64, "String": o6.String}

say_lock = threading.Lock()


def say(obj):
    # Notifications come from o6's worker thread, answers from the main one.
    with say_lock:
        out.write(json.dumps(obj) + "\n")
        out.flush()


def plain(value):
    # o6 hands numbers over as NumPy scalars.
    if isinstance(value, numpy.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def status_name(code):
    # The low 16 bits are info bits (overflow, historian flags), not part of the symbolic name.
    return o6.StatusCodeError(int(code) & 0xFFFF0000).symbol


def describe(error):
    # A StatusCodeError reads as a bare number; its symbol says what failed.
    detail = error.symbol if isinstance(error, o6.StatusCodeError) else error
    return f"{type(error).__name__}: {detail}"


def connect():
    url, user, password = sys.argv[1:4]
    policy = sys.argv[5] if len(sys.argv) > 5 else "Basic256Sha256"
    mode = sys.argv[6] if len(sys.argv) > 6 else ("None" if policy == "None" else "SignAndEncrypt")
    key, cert = createSelfSignedCertificate(appUri=APP_URI, commonName="o6 test client")
    client = o6.Client(
        url,
        certificate=cert,
        privateKey=key,
        # o6 2.2.0 stores a short policy name as is and then matches no endpoint: give the URI.
        securityPolicy=f"http://opcfoundation.org/UA/SecurityPolicy#{policy}",
        securityMode=MODES[mode],
        applicationUri=APP_URI,
        username=None if user == "-" else user,
        password=password,
        # Under POLICY None the server's user token policy asks for the password in the clear.
        allowNonePolicyPassword=True,
    )
    client.connect(createDefaultSubscription=False)
    return client


class Peer:
    def __init__(self, client):
        self.client = client
        self.namespaces = list(client.read("i=2255"))  # Server_NamespaceArray
        self.subscription = None

    def node_id(self, text):
        # o6 reads "ns=<n>" as an index into its own process-wide namespace table (ns=2 is a
        # companion specification there), not the server's: name the namespace by its URI.
        ns, sep, rest = text.partition(";")
        if sep and ns.startswith("ns="):
            return o6.NodeId(f"nsu={self.namespaces[int(ns[3:])]};{rest}")
        return o6.NodeId(text)

    def browse(self, node, path, assets):
        for ref in self.client.browse(node, resultMask=ns0.datatypes.BrowseResultMask.ALL):
            if getattr(ref.nodeId.ns, "uri", None) != PLANT_URI:
                continue
            name = ref.browseName.name
            child_path = f"{path}/{name}" if path else name
            if ref.nodeClass == ns0.datatypes.NodeClass.OBJECT:
                if o6.NodeId(ref.typeDefinition) != FOLDER_TYPE:
                    assets.setdefault(child_path, [])
                self.browse(o6.NodeId(ref.nodeId), child_path, assets)
            elif ref.nodeClass == ns0.datatypes.NodeClass.VARIABLE and path in assets:
                assets[path].append(name)

    def read(self, text):
        node = self.node_id(text)
        dv = self.client.read(node, valueOnly=False, timestampsToReturn=ns0.datatypes.TimestampsToReturn.BOTH)
        answer = {
            "value": plain(dv.value),
            "status": status_name(dv.status),
            "source_timestamp": dv.sourceTimestamp is not None,
            "server_timestamp": dv.serverTimestamp is not None,
        }
        if dv.status == o6.StatusCode.BAD_NODE_ID_UNKNOWN:
            return answer  # o6 raises on browsing it for properties
        props = {
            ref.browseName.name: o6.NodeId(ref.nodeId)
            for ref in self.client.browse(node, reftype=HAS_PROPERTY, resultMask=ns0.datatypes.BrowseResultMask.ALL)
        }
        if "EngineeringUnits" in props:
            eu = self.client.read(props["EngineeringUnits"])
            answer["unit"] = {"unit_id": int(eu.unitId), "display_name": eu.displayName.text, "namespace": eu.namespaceUri}
        if "EURange" in props:
            r = self.client.read(props["EURange"])
            answer["range"] = [float(r.low), float(r.high)]
        return answer

    def subscribe(self, text):
        if self.subscription is None:
            self.subscription = self.client.createSubscription(100.0)

        def changed(dv):
            say({"notification": plain(dv.value), "status": status_name(dv.status)})

        self.client.monitor(self.node_id(text), changed, 0.0, valueOnly=False, subscription=self.subscription)
        return {"subscribed": True}

    def write(self, text, type_name, value):
        status = self.client.write(self.node_id(text), TYPES[type_name](json.loads(value)))
        return {"status": status_name(status)}

    def call(self, object_id, method_id):
        status, *_ = self.client.call(self.node_id(object_id), self.node_id(method_id))
        return {"status": status_name(status)}


def main():
    try:
        client = connect()
    except Exception as e:
        say({"error": describe(e)})
        sys.exit(1)
    say({"connected": True})
    peer = Peer(client)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        if not line.strip():
            continue
        command, *args = line.split(maxsplit=3)
        try:
            if command == "browse":
                assets = {}
                peer.browse(client.objects, "", assets)
                say({"assets": {k: sorted(v) for k, v in assets.items()}})
            elif command in ("read", "subscribe", "write", "call"):
                say(getattr(peer, command)(*args))
            else:
                say({"error": f"unknown command {command}"})
        except Exception as e:
            say({"error": describe(e)})
    client.disconnect()


if __name__ == "__main__":
    main()
