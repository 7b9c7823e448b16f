// A free loopback port, asked of the kernel: node-opcua announces the configured port in its
// endpoint URL, so a server of the test peers cannot be given port 0 itself.
"use strict";

const net = require("net");

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

module.exports = { freePort };
