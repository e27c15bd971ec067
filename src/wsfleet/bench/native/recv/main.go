// benchrecv: the subscribers' side of the fan-out benchmark, in Go, so that the client is
// not what limits the deliveries/s measured (the publisher stays in Python).
//
//	benchrecv --contender NAME=URL[@TOKENFILE] ... --subscribers N [--channel fanout]
//	          [--concurrency 64] [--procs 1] [--open-timeout-s 10] [--read-buffer 65536]
//
// It opens and subscribes N connections per contender (a URL containing /socket.io/
// speaks socket.io, any other wire protocol v1), prints {"ready":true,"opened":{...}} (or
// {"error":"..."} and exits 1), then answers JSON-line commands on stdin, one at a time:
//
//	{"cmd":"count"}                                 -> {"counts":{...},"open":{...},"errors":{...}}
//	{"cmd":"await","name":X,"target":T,"timeout_s":S} -> {"name":X,"count":C} once X counted T (or at S)
//	{"cmd":"quit"}                                  -> closes every connection, exits 0
//
// It also quits when stdin closes. A TOKENFILE holds one bearer token per line (connection
// i uses line i mod count). URLs with user info (an @) are not supported.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

const closeGrace = 3 * time.Second

type contenderFlags []string

func (f *contenderFlags) String() string     { return strings.Join(*f, " ") }
func (f *contenderFlags) Set(v string) error { *f = append(*f, v); return nil }

// parseContender reads NAME=URL[@TOKENFILE].
func parseContender(spec string) (*contender, error) {
	name, rest, ok := strings.Cut(spec, "=")
	if !ok || name == "" || rest == "" {
		return nil, fmt.Errorf("--contender %q: want NAME=URL[@TOKENFILE]", spec)
	}
	url, tokenFile := rest, ""
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		url, tokenFile = rest[:at], rest[at+1:]
	}
	var tokens []string
	if tokenFile != "" {
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--contender %s: %w", name, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if t := strings.TrimSpace(line); t != "" {
				tokens = append(tokens, t)
			}
		}
		if len(tokens) == 0 {
			return nil, fmt.Errorf("--contender %s: no token in %s", name, tokenFile)
		}
	}
	return newContender(name, url, tokens), nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout))
}

func run(args []string, stdin io.Reader, stdout io.Writer) int {
	out := json.NewEncoder(stdout)
	fail := func(err error) int {
		_ = out.Encode(map[string]string{"error": err.Error()})
		return 1
	}
	fs := flag.NewFlagSet("benchrecv", flag.ContinueOnError)
	var specs contenderFlags
	fs.Var(&specs, "contender", "NAME=URL[@TOKENFILE], repeatable")
	subscribers := fs.Int("subscribers", 1000, "connections per contender")
	channel := fs.String("channel", "fanout", "channel every connection subscribes to")
	concurrency := fs.Int("concurrency", 64, "connections being opened at once")
	procs := fs.Int("procs", 1, "GOMAXPROCS (the bench pins the client to one core)")
	openTimeout := fs.Float64("open-timeout-s", 10, "seconds to connect and subscribe one connection")
	readBuffer := fs.Int("read-buffer", 64<<10, "bytes of each connection's read buffer")
	if err := fs.Parse(args); err != nil {
		return fail(err)
	}
	if len(specs) == 0 || *subscribers < 1 {
		return fail(errors.New("want at least one --contender and --subscribers >= 1"))
	}
	runtime.GOMAXPROCS(max(1, *procs))
	r := &receiver{
		channel: *channel, subscribers: *subscribers, concurrency: *concurrency,
		readBuffer: max(4096, *readBuffer), openTimeout: time.Duration(*openTimeout * float64(time.Second)),
	}
	for _, spec := range specs {
		ct, err := parseContender(spec)
		if err != nil {
			return fail(err)
		}
		if r.find(ct.name) != nil {
			return fail(fmt.Errorf("contender %s given twice", ct.name))
		}
		r.contenders = append(r.contenders, ct)
	}
	if err := r.open(); err != nil {
		r.close(closeGrace)
		return fail(err)
	}
	_, opened, errs := r.snapshot()
	_ = out.Encode(map[string]any{"ready": true, "opened": opened, "errors": errs})
	serve(r, stdin, out)
	r.close(closeGrace)
	return 0
}

type command struct {
	Cmd      string  `json:"cmd"`
	Name     string  `json:"name"`
	Target   int64   `json:"target"`
	TimeoutS float64 `json:"timeout_s"`
}

// serve answers commands until quit or the end of stdin.
func serve(r *receiver, stdin io.Reader, out *json.Encoder) {
	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		var cmd command
		if err := json.Unmarshal(lines.Bytes(), &cmd); err != nil {
			_ = out.Encode(map[string]string{"error": "bad command: " + err.Error()})
			continue
		}
		switch cmd.Cmd {
		case "count":
			counts, open, errs := r.snapshot()
			_ = out.Encode(map[string]any{"counts": counts, "open": open, "errors": errs})
		case "await":
			ct := r.find(cmd.Name)
			if ct == nil {
				_ = out.Encode(map[string]string{"error": "no contender " + cmd.Name})
				continue
			}
			n := ct.await(cmd.Target, time.Duration(cmd.TimeoutS*float64(time.Second)))
			_ = out.Encode(map[string]any{"name": ct.name, "count": n})
		case "quit":
			return
		default:
			_ = out.Encode(map[string]string{"error": fmt.Sprintf("unknown command %q", cmd.Cmd)})
		}
	}
}
