package main

// The receiver: N subscribed connections per contender, one reader goroutine each,
// deliveries counted with one atomic add per message.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// contender is one server under test: its URL, tokens, connections and counters.
type contender struct {
	name    string
	url     string
	tokens  []string
	dialect dialect

	count   atomic.Int64
	target  atomic.Int64  // an await's target (MaxInt64 when none): readers signal reaching it
	reached chan struct{} // capacity 1: "count may have reached target"
	open    atomic.Int64

	mu       sync.Mutex
	conns    []*wsConn
	errors   map[string]int64
	firstErr string
}

func newContender(name, url string, tokens []string) *contender {
	ct := &contender{
		name: name, url: url, tokens: tokens, dialect: dialectFor(url),
		reached: make(chan struct{}, 1), errors: map[string]int64{},
	}
	ct.target.Store(math.MaxInt64)
	return ct
}

// deliver counts one delivery: the hot path.
func (ct *contender) deliver() {
	if ct.count.Add(1) >= ct.target.Load() {
		select {
		case ct.reached <- struct{}{}:
		default:
		}
	}
}

func (ct *contender) fail(kind, detail string) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.errors[kind]++
	if ct.firstErr == "" && detail != "" {
		ct.firstErr = detail
	}
}

func (ct *contender) errorCounts() map[string]int64 {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	out := make(map[string]int64, len(ct.errors))
	for k, v := range ct.errors {
		out[k] = v
	}
	return out
}

// await returns as soon as the count reaches target, or at the timeout: the count then.
// One await at a time (the control loop runs commands one after the other).
func (ct *contender) await(target int64, timeout time.Duration) int64 {
	ct.target.Store(target)
	defer ct.target.Store(math.MaxInt64)
	select { // a signal left by an earlier await
	case <-ct.reached:
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if n := ct.count.Load(); n >= target {
			return n
		}
		select {
		case <-ct.reached:
		case <-timer.C:
			return ct.count.Load()
		}
	}
}

// receiver holds every contender's connections.
type receiver struct {
	contenders  []*contender
	channel     string
	subscribers int
	concurrency int
	readBuffer  int
	openTimeout time.Duration
	readers     sync.WaitGroup
}

func (r *receiver) find(name string) *contender {
	for _, ct := range r.contenders {
		if ct.name == name {
			return ct
		}
	}
	return nil
}

// open opens and subscribes `subscribers` connections per contender, `concurrency` at a
// time, and starts their readers. A contender with none open is an error.
func (r *receiver) open() error {
	slots := make(chan struct{}, max(1, r.concurrency))
	var wg sync.WaitGroup
	for _, ct := range r.contenders {
		for i := range r.subscribers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				slots <- struct{}{}
				defer func() { <-slots }()
				r.openOne(ct, i)
			}()
		}
	}
	wg.Wait()
	var failed []string
	for _, ct := range r.contenders {
		if ct.open.Load() == 0 {
			failed = append(failed, fmt.Sprintf("%s: no connection opened (of %d) to %s: %s",
				ct.name, r.subscribers, ct.url, ct.firstErr))
		}
	}
	if failed != nil {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func (r *receiver) openOne(ct *contender, i int) {
	token := ""
	if len(ct.tokens) > 0 {
		token = ct.tokens[i%len(ct.tokens)]
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.openTimeout)
	defer cancel()
	c, err := dial(ctx, ct.url, token, r.readBuffer)
	if err != nil {
		ct.fail("connect", describe("connect", err))
		return
	}
	err = ct.dialect.subscribe(c, r.channel, ct.deliver)
	if err == nil {
		err = c.endHandshake()
	}
	if err != nil {
		c.nc.Close()
		ct.fail("subscribe", describe("subscribe", err))
		return
	}
	ct.mu.Lock()
	ct.conns = append(ct.conns, c)
	ct.mu.Unlock()
	ct.open.Add(1)
	r.readers.Add(1)
	go r.read(ct, c)
}

func describe(stage string, err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return stage + ": timed out: " + err.Error()
	}
	return stage + ": " + err.Error()
}

// read counts one connection's deliveries until it closes.
func (r *receiver) read(ct *contender, c *wsConn) {
	defer r.readers.Done()
	defer ct.open.Add(-1)
	defer c.nc.Close()
	prefix := ct.dialect.prefix()
	for {
		skipped, op, payload, err := c.next(prefix)
		if err != nil {
			if !c.leaving.Load() || !isEnd(err) {
				ct.fail("disconnected", "read: "+err.Error())
			}
			return
		}
		if skipped {
			ct.deliver()
			continue
		}
		if op != opText {
			continue
		}
		delivery, kind := ct.dialect.other(c, payload)
		if delivery {
			ct.deliver()
		}
		if kind != "" {
			ct.fail(kind, "")
		}
	}
}

// isEnd: the error a reader sees when the connection ends after our close frame.
func isEnd(err error) bool {
	var closed *closedError
	return errors.As(err, &closed) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded)
}

// close sends a close frame on every connection, waits (bounded) for the readers to see
// the servers' replies, then closes whatever is left.
func (r *receiver) close(grace time.Duration) {
	var all []*wsConn
	for _, ct := range r.contenders {
		ct.mu.Lock()
		all = append(all, ct.conns...)
		ct.mu.Unlock()
	}
	for _, c := range all {
		c.startClose()
	}
	done := make(chan struct{})
	go func() {
		r.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		for _, c := range all {
			c.nc.Close()
		}
		<-done
	}
}

// snapshot: per contender, its count, open connections and error counts.
func (r *receiver) snapshot() (counts, open map[string]int64, errs map[string]map[string]int64) {
	counts, open, errs = map[string]int64{}, map[string]int64{}, map[string]map[string]int64{}
	for _, ct := range r.contenders {
		counts[ct.name] = ct.count.Load()
		open[ct.name] = ct.open.Load()
		if e := ct.errorCounts(); len(e) > 0 {
			errs[ct.name] = e
		}
	}
	return counts, open, errs
}
