// Loaded with `node --require`: the Node twin of tests/netguard.py. A connection or name
// look-up that is not loopback throws, so a producer that tried to reach off the machine
// (IMDS at 169.254.169.254, login.microsoftonline.com, ...) fails its test instead.
"use strict";
const net = require("node:net");
const dns = require("node:dns");

const LOOPBACK_NAMES = new Set(["localhost", "ip6-localhost", "::1"]);

function isLoopback(host) {
  if (host === undefined || host === null || host === "") return true; // defaults to localhost
  const name = String(host).toLowerCase().replace(/^\[|\]$/g, "");
  return LOOPBACK_NAMES.has(name) || /^127\./.test(name) || name === "0:0:0:0:0:0:0:1";
}

function guardError(what, host) {
  const error = new Error(`network guard: refused ${what} ${host} (loopback only)`);
  error.code = "ENETGUARD";
  return error;
}

const originalConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function connect(...args) {
  // net.connect/tls.connect pass [options, callback] as one normalized array.
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  let host;
  if (first && typeof first === "object") {
    // A unix socket has a path and no port; HTTP request options carry a URL path too.
    const ipc = first.path !== undefined && first.port === undefined && first.host === undefined;
    host = ipc ? undefined : first.host;
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    host = typeof args[1] === "string" ? args[1] : undefined;
  }
  if (!isLoopback(host)) throw guardError("connection to", host);
  return originalConnect.apply(this, args);
};

const originalLookup = dns.lookup;
dns.lookup = function lookup(hostname, ...rest) {
  if (isLoopback(hostname)) return originalLookup.call(this, hostname, ...rest);
  const callback = rest[rest.length - 1];
  if (typeof callback !== "function") throw guardError("name look-up of", hostname);
  process.nextTick(callback, guardError("name look-up of", hostname)); // a failed look-up, not an uncaught throw
  return {};
};

const originalPromiseLookup = dns.promises.lookup;
dns.promises.lookup = function lookup(hostname, ...rest) {
  if (isLoopback(hostname)) return originalPromiseLookup.call(this, hostname, ...rest);
  return Promise.reject(guardError("name look-up of", hostname));
};
