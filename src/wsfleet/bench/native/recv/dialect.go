package main

// The two dialects the bench's servers speak: wire protocol v1 (JSON text frames: the
// gateway, the plain picows server, Node `ws`) and socket.io (Engine.IO 4 over a
// WebSocket), both as the Python load client speaks them (wsfleet.loadtest.connection).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// dialect: how one kind of server is joined and how its frames are told apart.
type dialect interface {
	// prefix starts every delivery as the servers write it: counted without parsing.
	prefix() []byte
	// subscribe runs from the upgrade to the subscription's reply; deliveries that come
	// meanwhile are passed to deliver.
	subscribe(c *wsConn, channel string, deliver func()) error
	// other handles a text message that did not start with prefix: whether it is a
	// delivery after all, and an error kind to count ("" when none).
	other(c *wsConn, payload []byte) (delivery bool, errKind string)
}

func dialectFor(rawURL string) dialect {
	if strings.Contains(rawURL, "/socket.io/") {
		return socketIO{}
	}
	return v1{}
}

// subscribeID is the id of the only request a receiver sends.
const subscribeID = 1

// v1Frame holds the fields of a wire protocol v1 frame that a receiver looks at.
type v1Frame struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
}

func subscribeRequest(channel string) string {
	name, _ := json.Marshal(channel)
	return fmt.Sprintf(`{"id":%d,"op":"subscribe","channel":%s}`, subscribeID, name)
}

// checkReply: nil for a `subscribed` reply, else the error it carries.
func checkReply(f *v1Frame) error {
	switch f.Type {
	case "subscribed":
		return nil
	case "error":
		return fmt.Errorf("subscribe refused: %s: %s", f.Code, f.Message)
	default:
		return fmt.Errorf("unexpected reply to subscribe: type %q", f.Type)
	}
}

// v1 is wire protocol v1: `welcome` first, then a subscribe request and its reply.
type v1 struct{}

var v1Prefix = []byte(`{"type":"message"`)

func (v1) prefix() []byte { return v1Prefix }

func (v1) subscribe(c *wsConn, channel string, deliver func()) error {
	welcomed := false
	for {
		skipped, op, payload, err := c.next(v1Prefix)
		if err != nil {
			if !welcomed {
				return fmt.Errorf("before welcome: %w", err)
			}
			return fmt.Errorf("before the subscribe reply: %w", err)
		}
		if skipped {
			deliver()
			continue
		}
		if op != opText {
			continue
		}
		var f v1Frame
		if err := json.Unmarshal(payload, &f); err != nil {
			return fmt.Errorf("not a JSON frame: %.80q", payload)
		}
		switch {
		case f.Type == "message":
			deliver()
		case !welcomed && f.Type == "welcome":
			welcomed = true
			if err := c.writeText(subscribeRequest(channel)); err != nil {
				return err
			}
		case !welcomed && f.Type == "error":
			return fmt.Errorf("refused before welcome: %s: %s", f.Code, f.Message)
		case welcomed && string(bytes.TrimSpace(f.ID)) == fmt.Sprint(subscribeID):
			return checkReply(&f)
		}
	}
}

func (v1) other(c *wsConn, payload []byte) (bool, string) {
	var f v1Frame
	if err := json.Unmarshal(payload, &f); err != nil {
		return false, "bad_frame"
	}
	switch f.Type {
	case "message":
		return true, ""
	case "error":
		return false, "error:" + f.Code
	case "reconnect": // the gateway drains: counted, the connection stays until it closes
		return false, "reconnect"
	}
	return false, ""
}

// socketIO is socket.io 4 over Engine.IO 4: the open packet (`0{...}`) is answered with a
// namespace connect (`40`), whose reply (`40{...}`) stands for `welcome`; the subscribe
// request is an event with an ack (`42<id>["subscribe",{request}]`), its reply the ack
// (`43<id>[{reply}]`); deliveries are `message` events; pings (`2`) get pongs (`3`).
type socketIO struct{}

var sioPrefix = []byte(`42["message"`)

func (socketIO) prefix() []byte { return sioPrefix }

func (socketIO) subscribe(c *wsConn, channel string, deliver func()) error {
	connected := false
	ackHead := fmt.Sprintf("43%d[", subscribeID)
	for {
		skipped, op, payload, err := c.next(sioPrefix)
		if err != nil {
			if !connected {
				return fmt.Errorf("before the namespace connect: %w", err)
			}
			return fmt.Errorf("before the subscribe ack: %w", err)
		}
		if skipped {
			deliver()
			continue
		}
		if op != opText {
			continue
		}
		switch {
		case bytes.HasPrefix(payload, []byte("40")):
			if connected {
				continue
			}
			connected = true
			ev, _ := json.Marshal([]any{"subscribe", json.RawMessage(subscribeRequest(channel))})
			if err := c.writeText(fmt.Sprintf("42%d%s", subscribeID, ev)); err != nil {
				return err
			}
		case bytes.HasPrefix(payload, []byte("44")):
			return fmt.Errorf("socket.io connect error: %.200s", payload[2:])
		case bytes.HasPrefix(payload, []byte(ackHead)):
			var args []v1Frame
			if err := json.Unmarshal(payload[len(ackHead)-1:], &args); err != nil || len(args) == 0 {
				return fmt.Errorf("bad subscribe ack: %.80q", payload)
			}
			return checkReply(&args[0])
		case len(payload) > 0 && payload[0] == '0':
			if err := c.writeText("40"); err != nil {
				return err
			}
		case len(payload) > 0 && payload[0] == '2':
			if err := c.writeText("3"); err != nil {
				return err
			}
		}
	}
}

func (socketIO) other(c *wsConn, payload []byte) (bool, string) {
	switch {
	case bytes.Equal(payload, []byte("2")): // Engine.IO ping
		if err := c.writeText("3"); err != nil {
			return false, "pong_failed"
		}
	case bytes.HasPrefix(payload, []byte("44")):
		return false, "socketio_connect_error"
	case bytes.HasPrefix(payload, []byte("41")) || bytes.Equal(payload, []byte("1")):
		c.startClose() // namespace or Engine.IO close: leave, as the Python client does
		return false, "socketio_disconnect"
	}
	return false, ""
}
