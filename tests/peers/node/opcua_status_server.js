// An OPC UA server on node-opcua whose variables carry fixed status codes, for Twinloom's source
// tests (the same protocol as ../opcua_status_server.py): Double variables `ns=<idx>;s=<name>`,
// one per NAME=CODE argument (decimal), each set once to 1.5 with that status code and a source
// timestamp of 2024-01-01T00:00:00Z; security None, anonymous. Prints
// `LISTENING <url> <namespace index>`; exits when stdin closes.
//
// Usage: node opcua_status_server.js NAME=CODE ...
"use strict";

const { freePort } = require("./free_port");
const { OPCUAServer } = require("node-opcua-server");
const { DataType, Variant, MessageSecurityMode, SecurityPolicy } = require("node-opcua-client");
const { nodesets } = require("node-opcua-nodesets");
const { coerceStatusCode } = require("node-opcua-status-code");

const SOURCE_TIME = new Date(Date.UTC(2024, 0, 1));

async function main() {
  const statuses = process.argv.slice(2).map((arg) => {
    const [name, code] = arg.split("=");
    return [name, Number(code)];
  });
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
  const namespace = server.engine.addressSpace.registerNamespace("urn:twinloom:status-peer");
  const folder = namespace.addFolder(server.engine.addressSpace.rootFolder.objects, {
    browseName: "statuses",
  });
  for (const [name, code] of statuses) {
    const variable = namespace.addVariable({
      componentOf: folder,
      browseName: name,
      nodeId: `s=${name}`,
      dataType: "Double",
    });
    variable.setValueFromSource(
      new Variant({ dataType: DataType.Double, value: 1.5 }),
      coerceStatusCode(code),
      SOURCE_TIME,
    );
  }
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
