//go:build amd64

package tests

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"

	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/machine/pcqmp"
	"github.com/petrel-vmm/petrel/qmp"
)

// qmpVM is a whole-VM test's machine running in the background with a QMP
// server on a socket and go-qemu's client (a QMP client nobody here wrote)
// connected to it.
type qmpVM struct {
	m    *pc.Machine
	out  *syncBuffer
	mon  *goqmp.SocketMonitor
	done chan guestRun // the run's outcome (Reason, Err) when the guest stops
}

// startQMPVM builds a PC for cfg with its QMP server at dir/qmp.sock, runs
// it for at most 3*runTimeout and connects the monitor. Every event goes to
// the server and, when onEvent is not nil, to onEvent first. Cleanup
// disconnects, stops the server and ends the run.
func startQMPVM(t *testing.T, cfg pc.Config, dir string, onEvent func(string)) *qmpVM {
	t.Helper()
	// The machine emits events from its own goroutines before the server
	// exists: the pointer is published once the server is built.
	var srv atomic.Pointer[qmp.Server]
	cfg.Events = func(ev string, data any) {
		if onEvent != nil {
			onEvent(ev)
		}
		if s := srv.Load(); s != nil {
			s.Emit(ev, data)
		}
	}
	m, out := newMachine(t, cfg)
	s := qmp.NewServer(pcqmp.New(m, nil))
	srv.Store(s)
	sock := filepath.Join(dir, "qmp.sock")
	if err := s.ListenUnix(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*runTimeout)
	t.Cleanup(cancel)
	vm := &qmpVM{m: m, out: out, done: make(chan guestRun, 1)}
	go func() {
		r, err := m.Run(ctx)
		vm.done <- guestRun{Reason: r, Err: err}
	}()

	mon, err := goqmp.NewSocketMonitor("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Disconnect() })
	vm.mon = mon
	return vm
}
