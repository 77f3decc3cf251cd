// Command qmpsend is the slow tier's QMP client: it connects to a QMP
// socket, negotiates capabilities, and runs its arguments in order.
//
//	qmpsend SOCKET '{"execute":"query-status"}' 'wait:DEVICE_DELETED' ...
//
// A JSON argument is sent as a command and its reply printed; an error reply
// ends qmpsend with status 1. "wait:EVENT" waits (up to -timeout) for that
// event. Events that arrive meanwhile are printed too.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// main exits 2 for a usage error and 1 when a step fails (connection,
// timeout, malformed reply or an error reply), so the shell scripts of
// the Linux tier can tell a broken invocation from a failing guest.
func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "how long each step may take")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: qmpsend [-timeout D] SOCKET COMMAND_JSON|wait:EVENT ...")
	}
	flag.Parse()
	if flag.NArg() < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Args()[1:], *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "qmpsend:", err)
		os.Exit(1)
	}
}

// message is any QMP server message, decoded only as far as qmpsend
// needs: which kind it is (greeting, event, return, error) and an error's
// class and text. The raw line is what gets printed.
type message struct {
	Event  string          `json:"event"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	QMP json.RawMessage `json:"QMP"`
}

// run connects to sock and runs steps after an implicit qmp_capabilities.
// timeout bounds each read from the socket, not a whole step: a server
// that keeps sending other events keeps a wait step alive. An event that
// arrives during a wait for another event is printed but not counted in
// seen, so a later wait for it needs a further occurrence.
func run(sock string, steps []string, timeout time.Duration) error {
	c, err := net.DialTimeout("unix", sock, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	// QMP servers send one JSON object per line, CRLF-terminated, so a
	// line is a message; the printed line keeps its line ending.
	r := bufio.NewReader(c)
	read := func() (message, []byte, error) {
		c.SetReadDeadline(time.Now().Add(timeout))
		line, err := r.ReadBytes('\n')
		if err != nil {
			return message{}, nil, err
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			return message{}, nil, fmt.Errorf("bad reply %q: %w", line, err)
		}
		return m, line, nil
	}
	if m, _, err := read(); err != nil || m.QMP == nil {
		return fmt.Errorf("no QMP greeting: %v", err)
	}
	// seen counts events not yet consumed by a wait step: one may arrive
	// while a command's reply is awaited.
	seen := map[string]int{}
	// Negotiation comes first: until it, a QMP server refuses every other
	// command (CommandNotFound) and sends no events.
	steps = append([]string{`{"execute":"qmp_capabilities"}`}, steps...)
	for _, step := range steps {
		if ev, ok := strings.CutPrefix(step, "wait:"); ok {
			if seen[ev] > 0 {
				seen[ev]--
				continue
			}
			for {
				m, line, err := read()
				if err != nil {
					return fmt.Errorf("waiting for %s: %w", ev, err)
				}
				fmt.Printf("%s", line)
				if m.Event == ev {
					break
				}
			}
			continue
		}
		if _, err := c.Write([]byte(step + "\n")); err != nil {
			return err
		}
		for {
			m, line, err := read()
			if err != nil {
				return fmt.Errorf("%s: %w", step, err)
			}
			fmt.Printf("%s", line)
			if m.Event != "" {
				seen[m.Event]++
				continue
			}
			if m.Error != nil {
				return fmt.Errorf("%s: %s: %s", step, m.Error.Class, m.Error.Desc)
			}
			break
		}
	}
	return nil
}
