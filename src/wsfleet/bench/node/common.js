// Shared by the benchmark's Node peers: arguments, the ready line, wire protocol v1 replies.
'use strict';

function args(argv) {
  const out = { host: '127.0.0.1', port: 0, redis: null };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    out[key] = argv[i + 1];
  }
  out.port = Number(out.port);
  return out;
}

function ready(kind, port, path) {
  const line = { event: 'peer_ready', kind, port, pid: process.pid, ws: `ws://127.0.0.1:${port}${path}` };
  process.stdout.write(JSON.stringify(line) + '\n');
}

function joined(kind, id, channel) {
  return { type: kind, id, channel, offset: '0-0', meta: {}, history: [], recovered: true };
}

let seq = 0;

function message(channel, data) {
  seq += 1;
  const now = Date.now();
  const offset = `${now}-${seq}`;
  return { offset, frame: { type: 'message', channel, offset, ts: now, data } };
}

function stopOnSignals(close) {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      close();
      process.exit(0);
    });
  }
}

module.exports = { args, ready, joined, message, stopOnSignals };
