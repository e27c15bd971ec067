// socket.io 4.8 peer, with `--redis URL` on @socket.io/redis-adapter (node-redis 5).
// Wire protocol v1 as socket.io events with acks: the client emits `subscribe`,
// `switch`, `unsubscribe`, `publish`, `ping` with the request object and gets the v1 reply
// object as the ack; a publish is broadcast to the channel's room as a `message` event
// (encoded once per broadcast by socket.io, through Redis with the adapter).
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { args, ready, joined, message, stopOnSignals } = require('./common');

async function main() {
  const opts = args(process.argv);
  const server = http.createServer();
  const io = new Server(server, {
    transports: ['websocket'], serveClient: false, perMessageDeflate: false,
    maxHttpBufferSize: 65536,
  });
  const kind = opts.redis ? 'socketio-redis' : 'socketio';
  if (opts.redis) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    // no command timeout: the adapter's PUBLISH is fire-and-forget, and a timeout under
    // load rejects a promise nobody catches, which ends the process
    const pub = createClient({ url: opts.redis, commandOptions: { timeout: 0 } });
    const sub = pub.duplicate();
    pub.on('error', (e) => console.error('redis pub', e.message));
    sub.on('error', (e) => console.error('redis sub', e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on('connection', (socket) => {
    const on = (op, handler) => socket.on(op, (msg, ack) => {
      const reply = handler(msg || {});
      if (typeof ack === 'function') ack(reply);
    });
    on('subscribe', (msg) => { socket.join(String(msg.channel)); return joined('subscribed', msg.id, msg.channel); });
    on('switch', (msg) => {
      socket.leave(String(msg.from)); socket.join(String(msg.to)); return joined('switched', msg.id, msg.to);
    });
    on('unsubscribe', (msg) => { socket.leave(String(msg.channel)); return { type: 'unsubscribed', id: msg.id, channel: msg.channel }; });
    on('publish', (msg) => {
      const { offset, frame } = message(String(msg.channel), msg.data);
      io.to(String(msg.channel)).emit('message', frame);
      return { type: 'published', id: msg.id, offset };
    });
    on('ping', (msg) => ({ type: 'pong', id: msg.id }));
  });
  server.listen(opts.port, opts.host, () => ready(kind, server.address().port, '/socket.io/?EIO=4&transport=websocket'));
  stopOnSignals(() => io.close());
}

main().catch((e) => { console.error(e); process.exit(1); });
