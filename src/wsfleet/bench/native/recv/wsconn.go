package main

// A minimal RFC 6455 client: the HTTP/1.1 upgrade, unmasked server frames in (7-, 16- and
// 64-bit lengths, fragmented messages, ping, close), masked client frames out. No
// extensions are offered, so a frame with a reserved bit set is a protocol error.

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	acceptGUID     = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	maxMessage     = 16 << 20 // a bigger message is a protocol error (a bench never sends one)
	writeTimeout   = 5 * time.Second
	closeNormal    = 1000
	closeNoStatus  = 1005
	upgradeBodyCap = 256 // bytes of a refused upgrade's body quoted in the error
)

// closedError: the server sent a close frame.
type closedError struct {
	code   int
	reason string
}

func (e *closedError) Error() string {
	if e.reason == "" {
		return fmt.Sprintf("closed by the server (code %d)", e.code)
	}
	return fmt.Sprintf("closed by the server (code %d: %s)", e.code, e.reason)
}

// wsConn is one client connection. Reads belong to one goroutine; writes take wmu.
type wsConn struct {
	nc      net.Conn
	br      *bufio.Reader
	wmu     sync.Mutex
	wbuf    []byte
	closing atomic.Bool // a close frame was sent (or is being sent): never a second one
	leaving atomic.Bool // we began the close: the end of the connection is ours
	msg     []byte      // payload of the message being read (reader goroutine only)
	fragOp  byte        // opcode of the fragmented message in progress, 0 when none
	ctl     [125]byte   // payload of a control frame
}

// dial connects to a ws:// URL and completes the upgrade; ctx bounds the whole handshake.
// token, when not empty, goes in an Authorization: Bearer header.
func dial(ctx context.Context, rawURL, token string, readBuffer int) (*wsConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %w", err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("unsupported URL scheme %q (ws:// only)", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(deadline)
	}
	c := &wsConn{nc: nc, br: bufio.NewReaderSize(nc, readBuffer)}
	if err := c.upgrade(u, token); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *wsConn) upgrade(u *url.URL, token string) error {
	var raw [16]byte
	if _, err := crand.Read(raw[:]); err != nil {
		return err
	}
	key := base64.StdEncoding.EncodeToString(raw[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	req.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n")
	fmt.Fprintf(&req, "Sec-WebSocket-Key: %s\r\n", key)
	if token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", token)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(c.nc, req.String()); err != nil {
		return err
	}
	// a 101 has no body: ReadResponse leaves the first frames in br
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet, URL: u})
	if err != nil {
		return fmt.Errorf("reading the upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, upgradeBodyCap))
		resp.Body.Close()
		if body = bytes.TrimSpace(body); len(body) > 0 {
			return fmt.Errorf("upgrade refused: HTTP %s: %q", resp.Status, body)
		}
		return fmt.Errorf("upgrade refused: HTTP %s", resp.Status)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		return fmt.Errorf("upgrade response without Upgrade: websocket")
	}
	if !headerHasToken(resp.Header, "Connection", "upgrade") {
		return fmt.Errorf("upgrade response without Connection: Upgrade")
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(key); got != want {
		return fmt.Errorf("bad Sec-WebSocket-Accept %q (want %q)", got, want)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		return fmt.Errorf("server chose an extension not offered: %q", ext)
	}
	return nil
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// endHandshake lifts the handshake's deadline: from now on reads wait as long as it takes.
func (c *wsConn) endHandshake() error { return c.nc.SetDeadline(time.Time{}) }

// next reads frames up to the end of the next data message, answering pings on the way.
// A text message starting with prefix is skipped without being copied (skipped == true);
// any other message's payload is returned, valid until the next call. A close frame from
// the server is answered and returned as a *closedError.
func (c *wsConn) next(prefix []byte) (skipped bool, op byte, payload []byte, err error) {
	for {
		fin, op, n, err := c.header()
		if err != nil {
			return false, 0, nil, err
		}
		switch op {
		case opText, opBinary:
			if c.fragOp != 0 {
				return false, 0, nil, errors.New("protocol error: a new message inside a fragmented one")
			}
			if fin {
				if op == opText && len(prefix) > 0 && n >= int64(len(prefix)) {
					head, err := c.br.Peek(len(prefix))
					if err != nil {
						return false, 0, nil, err
					}
					if bytes.Equal(head, prefix) {
						_, err = c.br.Discard(int(n))
						return err == nil, op, nil, err
					}
				}
				if err := c.readPayload(c.msg[:0], n); err != nil {
					return false, 0, nil, err
				}
				return false, op, c.msg, nil
			}
			c.fragOp = op
			if err := c.readPayload(c.msg[:0], n); err != nil {
				return false, 0, nil, err
			}
		case opContinuation:
			if c.fragOp == 0 {
				return false, 0, nil, errors.New("protocol error: a continuation frame without a message")
			}
			if err := c.readPayload(c.msg, n); err != nil {
				return false, 0, nil, err
			}
			if fin {
				op, c.fragOp = c.fragOp, 0
				if op == opText && len(prefix) > 0 && bytes.HasPrefix(c.msg, prefix) {
					return true, op, nil, nil
				}
				return false, op, c.msg, nil
			}
		case opPing, opPong, opClose:
			if !fin || n > int64(len(c.ctl)) {
				return false, 0, nil, errors.New("protocol error: a fragmented or long control frame")
			}
			p := c.ctl[:n]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return false, 0, nil, err
			}
			switch op {
			case opPing:
				if err := c.write(opPong, p); err != nil {
					return false, 0, nil, err
				}
			case opClose:
				return false, 0, nil, c.onClose(p)
			}
		default:
			return false, 0, nil, fmt.Errorf("protocol error: unknown opcode %#x", op)
		}
	}
}

// header reads one frame header: FIN, opcode and payload length.
func (c *wsConn) header() (fin bool, op byte, n int64, err error) {
	h, err := c.br.Peek(2)
	if err != nil {
		return false, 0, 0, err
	}
	b0, b1 := h[0], h[1]
	if b0&0x70 != 0 {
		return false, 0, 0, errors.New("protocol error: reserved bits set (no extension was negotiated)")
	}
	if b1&0x80 != 0 {
		return false, 0, 0, errors.New("protocol error: a masked server frame")
	}
	size := 2
	switch b1 & 0x7f {
	case 126:
		size = 4
	case 127:
		size = 10
	}
	if h, err = c.br.Peek(size); err != nil {
		return false, 0, 0, err
	}
	switch size {
	case 2:
		n = int64(b1 & 0x7f)
	case 4:
		n = int64(binary.BigEndian.Uint16(h[2:]))
	default:
		u := binary.BigEndian.Uint64(h[2:])
		if u > maxMessage {
			return false, 0, 0, fmt.Errorf("a frame of %d bytes (at most %d)", u, maxMessage)
		}
		n = int64(u)
	}
	_, err = c.br.Discard(size)
	return b0&0x80 != 0, b0 & 0x0f, n, err
}

// readPayload appends n payload bytes to buf and keeps the result as c.msg.
func (c *wsConn) readPayload(buf []byte, n int64) error {
	if int64(len(buf))+n > maxMessage {
		return fmt.Errorf("a message over %d bytes", maxMessage)
	}
	start := len(buf)
	end := start + int(n)
	if cap(buf) < end {
		grown := make([]byte, start, end+end/2)
		copy(grown, buf)
		buf = grown
	}
	buf = buf[:end]
	c.msg = buf
	_, err := io.ReadFull(c.br, buf[start:])
	return err
}

// onClose answers the server's close frame (unless we began the close) and says why.
func (c *wsConn) onClose(p []byte) error {
	e := &closedError{code: closeNoStatus}
	if len(p) >= 2 {
		e.code = int(binary.BigEndian.Uint16(p))
		e.reason = string(p[2:])
	}
	if !c.closing.Swap(true) {
		var reply []byte
		if len(p) >= 2 {
			reply = p[:2]
		}
		_ = c.write(opClose, reply)
	}
	return e
}

// write sends one masked frame (FIN set).
func (c *wsConn) write(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := len(payload)
	buf := append(c.wbuf[:0], 0x80|op)
	switch {
	case n < 126:
		buf = append(buf, 0x80|byte(n))
	case n <= 0xffff:
		buf = append(buf, 0x80|126, byte(n>>8), byte(n))
	default:
		buf = append(buf, 0x80|127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	buf = append(buf, key[:]...)
	start := len(buf)
	buf = append(buf, payload...)
	for i := range payload {
		buf[start+i] ^= key[i&3]
	}
	c.wbuf = buf
	if err := c.nc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err := c.nc.Write(buf)
	return err
}

// writeText sends one text message.
func (c *wsConn) writeText(s string) error { return c.write(opText, []byte(s)) }

// startClose sends our close frame (1000) once; the reader then sees the server's reply.
func (c *wsConn) startClose() {
	c.leaving.Store(true)
	if c.closing.Swap(true) {
		return
	}
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], closeNormal)
	_ = c.write(opClose, p[:])
}
