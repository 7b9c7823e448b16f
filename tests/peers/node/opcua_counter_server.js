// An OPC UA server on node-opcua with one UInt32 variable `ns=<idx>;s=Counter` that counts up by
// 1 every 100 ms (source timestamp: when it changed), for the OPC UA source's Republish tests
// (node-opcua supports TransferSubscriptions and Republish, Part 4 §5.13.6-7). Security None,
// anonymous. Prints `LISTENING <url> <namespace index>`. (A proxy in front of it must write its
// own port over the server's in the answers: async-opcua connects to the advertised endpoint's
// port; node-opcua's `advertisedEndpoints` would add a second endpoint whose anonymous policy id
// ActivateSession then refuses with Bad_IdentityTokenInvalid.)
//
// stdin, one command a line:
//   FORGET  empty every subscription's retransmission queue (its sent, unacknowledged
//           NotificationMessages: Republish then answers Bad_MessageNotAvailable); answers
//           `FORGOT <messages dropped>`
//   PAUSE   stop counting (node-opcua does not sample the monitored items of an orphaned
//           subscription, so values changing while no session holds it never reach any client);
//           answers `PAUSED <value>`
//   RESUME  count again; answers `RESUMED <value>`
//   STEP    count once (while paused: exactly one change) once every monitored item of every
//           session's subscriptions has queued the current value; answers `STEPPED <value>` once
//           they have queued the new one
//   QUIET   from now on an ActivateSession does not make the session's monitored items send their
//           current values again (node-opcua does; Part 4 does not ask for it and other servers
//           do not); answers `QUIET 1`
//   COUNT   the sessions and subscriptions the server holds (orphaned ones too); answers
//           `COUNTED <sessions> <subscriptions>`
//   EXPIRE  close every session as if it had timed out, its subscriptions kept (orphaned, Part 4
//           §5.13.7: a new session may take them with TransferSubscriptions); answers
//           `EXPIRED <sessions>`
// Exits when stdin closes.
//
// Usage: node opcua_counter_server.js
"use strict";

const readline = require("readline");
const { freePort } = require("./free_port");
const { OPCUAServer } = require("node-opcua-server");
const { DataType, Variant, MessageSecurityMode, SecurityPolicy } = require("node-opcua-client");
const { nodesets } = require("node-opcua-nodesets");
const { StatusCodes } = require("node-opcua-status-code");

const TICK_MS = 100;

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
  let paused = false;
  const set = () =>
    counter.setValueFromSource(
      new Variant({ dataType: DataType.UInt32, value }),
      StatusCodes.Good,
      new Date(),
    );
  set();
  const timer = setInterval(() => {
    if (!paused) {
      value += 1;
      set();
    }
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
    } else if (line.trim() === "PAUSE") {
      paused = true;
      process.stdout.write(`PAUSED ${value}\n`);
    } else if (line.trim() === "RESUME") {
      paused = false;
      process.stdout.write(`RESUMED ${value}\n`);
    } else if (line.trim() === "STEP") {
      // Steps once every monitored item has queued the current value (they sample on a timer: a
      // value replaced within one sampling interval would never reach a client), and answers once
      // they have queued the new one.
      const sampled = (expected) =>
        server.engine.getSessions().every((session) =>
          session.publishEngine.subscriptions.every((subscription) =>
            [...subscription.monitoredItems.values()].every(
              (item) => item.oldDataValue?.value?.value === expected,
            ),
          ),
        );
      const when = (expected, then) =>
        sampled(expected) ? then() : setTimeout(() => when(expected, then), 5);
      when(value, () => {
        value += 1;
        set();
        const stepped = value;
        when(stepped, () => process.stdout.write(`STEPPED ${stepped}\n`));
      });
    } else if (line.trim() === "QUIET") {
      // node-opcua emits session_activated just before it calls the session's
      // resendMonitoredItemInitialValues.
      server.on("session_activated", (session) => {
        session.resendMonitoredItemInitialValues = async () => {};
      });
      process.stdout.write("QUIET 1\n");
    } else if (line.trim() === "COUNT") {
      const engine = server.engine;
      process.stdout.write(
        `COUNTED ${engine.currentSessionCount} ${engine.serverDiagnosticsSummary.currentSubscriptionCount}\n`,
      );
    } else if (line.trim() === "EXPIRE") {
      const sessions = server.engine.getSessions();
      for (const session of sessions) {
        server.engine.closeSession(session.authenticationToken, false, "Timeout");
      }
      process.stdout.write(`EXPIRED ${sessions.length}\n`);
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
