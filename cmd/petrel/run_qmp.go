//go:build amd64

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/machine/pcqmp"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/qmp"
)

// qmpFront serves QMP for `petrel run`. The server lives across guest
// reboots, each of which builds a new pc.Machine; machineProxy forwards
// to whichever is current.
type qmpFront struct {
	srv    *qmp.Server
	proxy  *machineProxy
	ln     net.Listener
	wait   bool
	first  chan struct{}
	once   sync.Once
	closed chan struct{}
}

// startQMP parses -qmp and starts listening. quit is called by QMP quit.
func startQMP(spec string, quit func()) (*qmpFront, error) {
	q := &qmpFront{proxy: &machineProxy{quit: quit}, first: make(chan struct{}), closed: make(chan struct{})}
	if spec == "" {
		return q, nil
	}
	q.srv = qmp.NewServer(q.proxy)
	if spec == "stdio" {
		go func() {
			q.srv.ServeConn(stdio{})
			quit() // QEMU exits when the stdio monitor closes
		}()
		return q, nil
	}
	parts := strings.Split(spec, ",")
	if !strings.HasPrefix(parts[0], "unix:") || len(parts[0]) == 5 {
		return nil, fmt.Errorf("-qmp %q: want unix:PATH,server[,wait=off] or stdio", spec)
	}
	path := parts[0][5:]
	server := false
	q.wait = true
	for _, p := range parts[1:] {
		switch p {
		case "server", "server=on":
			server = true
		case "wait=off", "nowait":
			q.wait = false
		case "wait=on":
			q.wait = true
		default:
			return nil, fmt.Errorf("-qmp %q: unknown option %q", spec, p)
		}
	}
	if !server {
		return nil, fmt.Errorf("-qmp %q: only server sockets are supported (add ,server)", spec)
	}
	ln, err := qmp.ListenSocket(path) // mode 0600
	if err != nil {
		return nil, fmt.Errorf("-qmp: %w", err)
	}
	q.ln = ln
	go q.accept()
	return q, nil
}

func (q *qmpFront) accept() {
	for {
		c, err := q.ln.Accept()
		if err != nil {
			return
		}
		q.once.Do(func() { close(q.first) })
		go q.srv.ServeConn(c)
	}
}

// waitClient blocks until the first QMP client connects when -qmp asked
// to wait (QEMU's default for server sockets).
func (q *qmpFront) waitClient() error {
	if q.ln == nil || !q.wait {
		return nil
	}
	fmt.Fprintf(os.Stderr, "petrel: waiting for a QMP connection on %s\n", q.ln.Addr())
	select {
	case <-q.first:
		return nil
	case <-q.closed:
		return errors.New("qmp closed before a client connected")
	}
}

func (q *qmpFront) emit(event string, data any) {
	if q.srv != nil {
		q.srv.Emit(event, data)
	}
}

func (q *qmpFront) attach(m *pc.Machine) { q.proxy.set(m) }
func (q *qmpFront) detach()              { q.proxy.set(nil) }

// Close stops listening and removes the socket.
func (q *qmpFront) Close() {
	select {
	case <-q.closed:
		return
	default:
		close(q.closed)
	}
	if q.ln != nil {
		q.ln.Close()
	}
	if q.srv != nil {
		q.srv.Close()
	}
}

// stdio is os.Stdin+os.Stdout as one connection.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

// machineProxy forwards qmp.Machine calls to the current machine.
type machineProxy struct {
	mu   sync.Mutex
	m    *pcqmp.Adapter
	quit func()
}

func (p *machineProxy) set(m *pc.Machine) {
	p.mu.Lock()
	p.m = nil
	if m != nil {
		p.m = pcqmp.New(m, nil)
	}
	p.mu.Unlock()
}

func (p *machineProxy) get() (*pcqmp.Adapter, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		return nil, qmp.Errorf("the machine is being (re)built")
	}
	return p.m, nil
}

func (p *machineProxy) Status() string {
	m, err := p.get()
	if err != nil {
		return "prelaunch"
	}
	return m.Status()
}

func (p *machineProxy) Stop() error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.Stop()
}

func (p *machineProxy) Cont() error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.Cont()
}

func (p *machineProxy) PowerDown() error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.PowerDown()
}

func (p *machineProxy) Quit() {
	if m, err := p.get(); err == nil {
		m.Quit()
	}
	p.quit()
}

func (p *machineProxy) QueryPCI() []qmp.PCIBus {
	m, err := p.get()
	if err != nil {
		return []qmp.PCIBus{}
	}
	return m.QueryPCI()
}

func (p *machineProxy) QueryBlock() []qmp.BlockInfo {
	m, err := p.get()
	if err != nil {
		return []qmp.BlockInfo{}
	}
	return m.QueryBlock()
}

func (p *machineProxy) DeviceAdd(r qemuopt.DeviceSpec) error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.DeviceAdd(r)
}

func (p *machineProxy) DeviceDel(id string) error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.DeviceDel(id)
}

func (p *machineProxy) BlockdevAdd(r qemuopt.BlockdevSpec) error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.BlockdevAdd(r)
}

func (p *machineProxy) NetdevAdd(n qemuopt.NetdevSpec) error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.NetdevAdd(n)
}

func (p *machineProxy) QueryRxFilter(name string) ([]qmp.RxFilterInfo, error) {
	m, err := p.get()
	if err != nil {
		return nil, err
	}
	return m.QueryRxFilter(name)
}

func (p *machineProxy) NetdevDel(id string) error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.NetdevDel(id)
}

func (p *machineProxy) BlockdevDel(n string) error {
	m, err := p.get()
	if err != nil {
		return err
	}
	return m.BlockdevDel(n)
}
