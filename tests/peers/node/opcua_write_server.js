// An OPC UA server on node-opcua for Twinloom's OPC UA source writes by browse path: in
// namespace `urn:twinloom:node-write-peer`, Objects/Line1/Filler/Speed (Double 0, writable) and
// Objects/Line1/Filler/Level (Double 7.5, read-only: a write is answered Bad_NotWritable), with
// string NodeIds the bindings never name (`s=speed-4711`, `s=level-4712`); security None,
// anonymous. Prints `LISTENING <url> <namespace index>`; exits when stdin closes.
//
// Usage: node opcua_write_server.js
"use strict";

const { freePort } = require("./free_port");
const { OPCUAServer } = require("node-opcua-server");
const { DataType, MessageSecurityMode, SecurityPolicy } = require("node-opcua-client");
const { nodesets } = require("node-opcua-nodesets");

async function main() {
  const port = await freePort();
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    nodeset_filename: [nodesets.standard],
    securityPolicies: [SecurityPolicy.None],
    securityModes: [MessageSecurityMode.None],
    allowAnonymous: true,
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const namespace = addressSpace.registerNamespace("urn:twinloom:node-write-peer");
  const line = namespace.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Line1" });
  const filler = namespace.addObject({ componentOf: line, browseName: "Filler" });
  namespace.addVariable({
    componentOf: filler,
    browseName: "Speed",
    nodeId: "s=speed-4711",
    dataType: "Double",
    accessLevel: "CurrentRead | CurrentWrite",
    userAccessLevel: "CurrentRead | CurrentWrite",
    value: { dataType: DataType.Double, value: 0 },
  });
  namespace.addVariable({
    componentOf: filler,
    browseName: "Level",
    nodeId: "s=level-4712",
    dataType: "Double",
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
    value: { dataType: DataType.Double, value: 7.5 },
  });
  await server.start();
  process.stdout.write(`LISTENING opc.tcp://127.0.0.1:${port}/ ${namespace.index}\n`);
  process.stdin.resume();
  process.stdin.on("end", async () => {
    await server.shutdown(0);
    process.exit(0);
  });
}

main().catch((error) => {
  process.stdout.write(`ERROR ${error}\n`);
  process.exit(1);
});
