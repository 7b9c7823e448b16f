// An OPC UA server on node-opcua with one UInt32 variable `ns=<idx>;s=Counter` that counts up by
// 1 every 100 ms (source timestamp: when it changed), for the OPC UA source's Republish tests
// (node-opcua supports TransferSubscriptions and Republish, Part 4 §5.13.6-7). Security None,
// anonymous. With ADVERTISE=<port> it also advertises opc.tcp://127.0.0.1:<port>/ (a proxy in
// front of it: async-opcua connects to the advertised endpoint whose port matches the URL it was
// given). Prints `LISTENING <url> <namespace index>`.
//
// stdin, one command a line:
//   FORGET  empty every subscription's retransmission queue (its sent, unacknowledged
//           NotificationMessages: Republish then answers Bad_MessageNotAvailable); answers
//           `FORGOT <messages dropped>`
// Exits when stdin closes.
//
// Usage: node opcua_counter_server.js [ADVERTISE=<port>]
"use strict";

const readline = require("readline");
const { freePort } = require("./free_port");
const { OPCUAServer } = require("node-opcua-server");
const { DataType, Variant, MessageSecurityMode, SecurityPolicy } = require("node-opcua-client");
const { nodesets } = require("node-opcua-nodesets");
const { StatusCodes } = require("node-opcua-status-code");

const TICK_MS = 100;

async function main() {
  const advertise = process.argv
    .slice(2)
    .filter((arg) => arg.startsWith("ADVERTISE="))
    .map((arg) => `opc.tcp://127.0.0.1:${Number(arg.split("=")[1])}/`);
  const port = await freePort();
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    nodeset_filename: [nodesets.standard],
    securityPolicies: [SecurityPolicy.None],
    securityModes: [MessageSecurityMode.None],
    allowAnonymous: true,
    advertisedEndpoints: advertise,
  });
  await server.initialize();
  const namespace = server.engine.addressSpace.registerNamespace("urn:twinloom:counter-peer");
  const folder = namespace.addFolder(server.engine.addressSpace.rootFolder.objects, {
    browseName: "counter",
  });
  const counter = namespace.addVariable({
    componentOf: folder,
    browseName: "Counter",
    nodeId: "s=Counter",
    dataType: "UInt32",
  });
  let value = 0;
  const set = () =>
    counter.setValueFromSource(
      new Variant({ dataType: DataType.UInt32, value }),
      StatusCodes.Good,
      new Date(),
    );
  set();
  const timer = setInterval(() => {
    value += 1;
    set();
  }, TICK_MS);
  await server.start();
  process.stdout.write(`LISTENING opc.tcp://127.0.0.1:${port}/ ${namespace.index}\n`);

  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "FORGET") {
      let dropped = 0;
      for (const session of server.engine.getSessions()) {
        for (const subscription of session.publishEngine.subscriptions) {
          dropped += subscription._flushSentNotifications().length;
        }
      }
      process.stdout.write(`FORGOT ${dropped}\n`);
    }
  });
  lines.on("close", async () => {
    clearInterval(timer);
    await server.shutdown(0);
    process.exit(0);
  });
}

main().catch((error) => {
  process.stdout.write(`ERROR ${error}\n`);
  process.exit(1);
});
