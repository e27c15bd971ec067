package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// peer is the server side of one test connection: unmasked frames out, masked frames in.
type peer struct {
	nc net.Conn
	br *bufio.Reader
}

func (p *peer) send(op byte, fin bool, payload []byte) error {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	head := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		head = append(head, byte(n))
	case n <= 0xffff:
		head = append(head, 126, byte(n>>8), byte(n))
	default:
		head = append(head, 127)
		head = binary.BigEndian.AppendUint64(head, uint64(n))
	}
	_, err := p.nc.Write(append(head, payload...))
	return err
}

func (p *peer) text(s string) error { return p.send(opText, true, []byte(s)) }

// recv reads one client frame, which must be masked.
func (p *peer) recv() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 {
		return 0, nil, fmt.Errorf("an unmasked client frame")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		io.ReadFull(p.br, x[:])
		n = int(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		io.ReadFull(p.br, x[:])
		n = int(binary.BigEndian.Uint64(x[:]))
	}
	var key [4]byte
	if _, err := io.ReadFull(p.br, key[:]); err != nil {
		return 0, nil, err
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(p.br, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= key[i&3]
	}
	return h[0] & 0x0f, payload, nil
}

func (p *peer) expect(op byte, want string) error {
	got, payload, err := p.recv()
	if err != nil {
		return err
	}
	if got != op || string(payload) != want {
		return fmt.Errorf("got opcode %d %q, want %d %q", got, payload, op, want)
	}
	return nil
}

// startServer accepts connections on loopback, upgrades them and runs handle on each; its
// errors go to errc. With badAccept the upgrade response carries a wrong accept key.
func startServer(t *testing.T, badAccept bool, handle func(p *peer) error) (string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	errc := make(chan error, 100)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				p := &peer{nc: nc, br: bufio.NewReader(nc)}
				req, err := http.ReadRequest(p.br)
				if err != nil {
					errc <- err
					return
				}
				accept := acceptKey(req.Header.Get("Sec-WebSocket-Key"))
				if badAccept {
					accept = acceptKey("something else")
				}
				fmt.Fprintf(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"+
					"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept)
				if auth := req.Header.Get("Authorization"); !strings.HasPrefix(auth, "Bearer tok-") {
					errc <- fmt.Errorf("Authorization %q", auth)
				}
				errc <- handle(p)
			}()
		}
	}()
	return "ws://" + ln.Addr().String(), errc
}

func newTestReceiver(url string, subscribers int) *receiver {
	return &receiver{
		contenders:  []*contender{newContender("x", url, []string{"tok-1", "tok-2"})},
		channel:     "fanout",
		subscribers: subscribers,
		concurrency: 2,
		readBuffer:  4096,
		openTimeout: 5 * time.Second,
	}
}

func checkServed(t *testing.T, errc chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-errc:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the test server did not finish")
		}
	}
}

func TestV1CountsDeliveriesOfEveryFrameShape(t *testing.T) {
	const subscribers = 3
	url, errc := startServer(t, false, func(p *peer) error {
		if err := p.text(`{"type": "welcome", "connection": "c1"}`); err != nil {
			return err
		}
		if err := p.expect(opText, `{"id":1,"op":"subscribe","channel":"fanout"}`); err != nil {
			return err
		}
		msg := func(pad int) []byte {
			return []byte(`{"type":"message","channel":"fanout","data":"` + strings.Repeat("x", pad) + `"}`)
		}
		steps := []func() error{
			func() error { return p.text(`{"type":"subscribed","id":1,"channel":"fanout","history":[]}`) },
			func() error { return p.send(opText, true, msg(10)) },    // 7-bit length
			func() error { return p.send(opText, true, msg(300)) },   // 16-bit length
			func() error { return p.send(opText, true, msg(70000)) }, // 64-bit length
			func() error { return p.send(opText, false, msg(5)[:4]) },
			func() error { return p.send(opPing, true, []byte("hi")) }, // between fragments
			func() error { return p.expect(opPong, "hi") },
			func() error { return p.send(opContinuation, false, msg(5)[4:20]) },
			func() error { return p.send(opContinuation, true, msg(5)[20:]) },
			func() error { return p.text(`{"type": "message", "channel": "fanout"}`) }, // parsed
			func() error { return p.text(`{"type":"pong","id":7}`) },                   // not a delivery
			func() error { return p.send(opBinary, true, msg(1)) },                     // not text
			func() error { return p.text(`{"type":"error","code":"slow","message":"m"}`) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		// then the server leaves: the client answers its close with the same code
		if err := p.send(opClose, true, []byte{0x03, 0xe9, 'b', 'y', 'e'}); err != nil {
			return err
		}
		return p.expect(opClose, "\x03\xe9")
	})
	r := newTestReceiver(url, subscribers)
	if err := r.open(); err != nil {
		t.Fatal(err)
	}
	ct := r.contenders[0]
	if got := ct.await(5*subscribers, 5*time.Second); got != 5*subscribers {
		t.Fatalf("counted %d deliveries, want %d", got, 5*subscribers)
	}
	checkServed(t, errc, subscribers)
	r.readers.Wait()
	errs := ct.errorCounts()
	if errs["error:slow"] != subscribers || errs["disconnected"] != subscribers {
		t.Errorf("errors %v", errs)
	}
	if ct.count.Load() != 5*subscribers || ct.open.Load() != 0 {
		t.Errorf("count %d open %d", ct.count.Load(), ct.open.Load())
	}
}

func TestSocketIOHandshakeAcksAndPings(t *testing.T) {
	url, errc := startServer(t, false, func(p *peer) error {
		for _, step := range []func() error{
			func() error { return p.text(`0{"sid":"s1","pingInterval":25000}`) },
			func() error { return p.expect(opText, "40") },
			func() error { return p.text(`40{"sid":"n1"}`) },
			func() error {
				return p.expect(opText, `421["subscribe",{"id":1,"op":"subscribe","channel":"fanout"}]`)
			},
			func() error { return p.text(`431[{"type":"subscribed","id":1,"channel":"fanout"}]`) },
			func() error { return p.text(`42["message",{"type":"message","channel":"fanout"}]`) },
			func() error { return p.text("2") },
			func() error { return p.expect(opText, "3") },
			func() error { return p.text(`42["presence",{}]`) },
			func() error { return p.text(`42["message",{"type":"message","channel":"fanout"}]`) },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		return p.expect(opClose, "\x03\xe8") // the receiver's quit
	})
	r := newTestReceiver(url+"/socket.io/?EIO=4&transport=websocket", 2)
	if err := r.open(); err != nil {
		t.Fatal(err)
	}
	if got := r.contenders[0].await(4, 5*time.Second); got != 4 {
		t.Fatalf("counted %d, want 4", got)
	}
	r.close(2 * time.Second)
	checkServed(t, errc, 2)
	if errs := r.contenders[0].errorCounts(); len(errs) != 0 {
		t.Errorf("errors %v", errs) // the end was ours: nothing to count
	}
}

func TestRefusedSubscribeAndBadAcceptAreErrors(t *testing.T) {
	url, _ := startServer(t, false, func(p *peer) error {
		p.text(`{"type":"welcome"}`)
		p.recv()
		return p.text(`{"type":"error","id":1,"code":"forbidden","message":"not yours"}`)
	})
	err := newTestReceiver(url, 1).open()
	if err == nil || !strings.Contains(err.Error(), "subscribe refused: forbidden: not yours") {
		t.Errorf("got %v", err)
	}
	bad, _ := startServer(t, true, func(p *peer) error { return nil })
	err = newTestReceiver(bad, 1).open()
	if err == nil || !strings.Contains(err.Error(), "bad Sec-WebSocket-Accept") {
		t.Errorf("got %v", err)
	}
}

func TestControlLoopCountsAwaitsAndQuits(t *testing.T) {
	url, _ := startServer(t, false, func(p *peer) error {
		p.text(`{"type":"welcome"}`)
		p.recv()
		p.text(`{"type":"subscribed","id":1}`)
		p.text(`{"type":"message","channel":"fanout"}`)
		_, _, err := p.recv() // the close frame of quit
		return err
	})
	in := strings.NewReader(strings.Join([]string{
		`{"cmd":"await","name":"a","target":2,"timeout_s":5}`,
		`{"cmd":"count"}`,
		`{"cmd":"await","name":"zz","target":1,"timeout_s":1}`,
		`{"cmd":"quit"}`,
	}, "\n"))
	var out bytes.Buffer
	code := run([]string{"--contender", "a=" + url + "/ws", "--subscribers", "2"}, in, &out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		`{"errors":{},"opened":{"a":2},"ready":true}`,
		`{"count":2,"name":"a"}`,
		`{"counts":{"a":2},"errors":{},"open":{"a":2}}`,
		`{"error":"no contender zz"}`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", out.String(), strings.Join(want, "\n"))
	}
	var ready map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &ready); err != nil {
		t.Error(err)
	}
}

func TestParseContender(t *testing.T) {
	if _, err := parseContender("nourl"); err == nil {
		t.Error("want an error for a spec without =")
	}
	ct, err := parseContender("sio=ws://h:1/socket.io/?EIO=4&transport=websocket")
	if err != nil || ct.url != "ws://h:1/socket.io/?EIO=4&transport=websocket" || ct.tokens != nil {
		t.Errorf("%v %+v", err, ct)
	}
	if _, ok := ct.dialect.(socketIO); !ok {
		t.Error("a /socket.io/ URL speaks socket.io")
	}
	if _, err := parseContender("a=ws://h:1/ws@/does/not/exist"); err == nil {
		t.Error("want an error for a missing token file")
	}
}
