// Node `ws` peer: wire protocol v1 (JSON text frames) on /ws, the way a `ws` user writes a
// broadcast (README of ws): channel -> Set of sockets, one encoded frame sent to each.
'use strict';
const { WebSocketServer } = require('ws');
const { args, ready, joined, message, stopOnSignals } = require('./common');

const opts = args(process.argv);
const channels = new Map();
const wss = new WebSocketServer({
  host: opts.host, port: opts.port, path: '/ws', perMessageDeflate: false, clientTracking: false,
  maxPayload: 65536,
});
let nextId = 0;

function join(ws, channel) {
  let members = channels.get(channel);
  if (!members) channels.set(channel, (members = new Set()));
  members.add(ws);
  ws.channels.add(channel);
}

function leave(ws, channel) {
  const members = channels.get(channel);
  if (members) {
    members.delete(ws);
    if (members.size === 0) channels.delete(channel);
  }
  ws.channels.delete(channel);
}

function handle(ws, msg) {
  const { op, id } = msg;
  if (op === 'subscribe') { join(ws, String(msg.channel)); return joined('subscribed', id, msg.channel); }
  if (op === 'switch') {
    leave(ws, String(msg.from)); join(ws, String(msg.to)); return joined('switched', id, msg.to);
  }
  if (op === 'unsubscribe') { leave(ws, String(msg.channel)); return { type: 'unsubscribed', id, channel: msg.channel }; }
  if (op === 'publish') {
    const { offset, frame } = message(String(msg.channel), msg.data);
    const members = channels.get(String(msg.channel));
    if (members) {
      const bytes = Buffer.from(JSON.stringify(frame));
      for (const member of members) member.send(bytes, { binary: false });
    }
    return { type: 'published', id, offset };
  }
  if (op === 'ping') return { type: 'pong', id };
  return { type: 'error', id, code: 'bad_request', message: `unknown op ${op}` };
}

wss.on('connection', (ws) => {
  ws.channels = new Set();
  nextId += 1;
  ws.send(JSON.stringify({ type: 'welcome', connection: `ws-${nextId}`, node: 'node-ws', limits: {} }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try { msg = JSON.parse(data); } catch (e) {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_request', message: 'not JSON' })); return;
    }
    ws.send(JSON.stringify(handle(ws, msg)));
  });
  ws.on('close', () => { for (const channel of [...ws.channels]) leave(ws, channel); });
});
wss.on('listening', () => ready('node-ws', wss.address().port, '/ws'));
stopOnSignals(() => wss.close());
