package qmp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"

	"github.com/petrel-vmm/petrel/qemuopt"
)

// recMachine is a Machine that records what the server asked of it. The
// protocol tests use it; whole-VM hotplug tests in tests/ use machine/pcqmp over a PC.
type recMachine struct {
	mu      sync.Mutex
	status  string
	devices map[string]qemuopt.DeviceSpec
	nodes   map[string]qemuopt.BlockdevSpec
	calls   []string
	srv     *Server
	snapState
}

func newRec() *recMachine {
	return &recMachine{status: "running", devices: map[string]qemuopt.DeviceSpec{}, nodes: map[string]qemuopt.BlockdevSpec{}}
}

func (m *recMachine) log(s string) { m.mu.Lock(); m.calls = append(m.calls, s); m.mu.Unlock() }
func (m *recMachine) Status() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}
func (m *recMachine) Stop() error {
	m.mu.Lock()
	m.status = "paused"
	m.mu.Unlock()
	m.srv.Emit("STOP", nil)
	return nil
}
func (m *recMachine) Cont() error {
	m.mu.Lock()
	m.status = "running"
	m.mu.Unlock()
	m.srv.Emit("RESUME", nil)
	return nil
}
func (m *recMachine) PowerDown() error { m.log("powerdown"); return nil }
func (m *recMachine) Quit()            { m.log("quit") }
func (m *recMachine) QueryPCI() []PCIBus {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := PCIBus{Devices: []PCIDevice{}}
	for id, d := range m.devices {
		b.Devices = append(b.Devices, PCIDevice{Slot: d.Slot, QdevID: id, ID: PCIID{Vendor: 0x1af4, Device: 0x1042}})
	}
	return []PCIBus{b}
}
func (m *recMachine) QueryBlock() []BlockInfo { return nil }
func (m *recMachine) DeviceAdd(r qemuopt.DeviceSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.devices[r.ID]; dup {
		return Errorf("Duplicate device ID '%s'", r.ID)
	}
	if r.Slot < 0 {
		r.Slot = 3
	}
	m.devices[r.ID] = r
	return nil
}
func (m *recMachine) DeviceDel(id string) error {
	m.mu.Lock()
	_, ok := m.devices[id]
	delete(m.devices, id)
	m.mu.Unlock()
	if !ok {
		return DeviceNotFound(id)
	}
	// The guest ejects later; emulate that asynchronously.
	go m.srv.Emit("DEVICE_DELETED", map[string]any{"device": id, "path": "/machine/peripheral/" + id})
	return nil
}
func (m *recMachine) BlockdevAdd(r qemuopt.BlockdevSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes[r.NodeName] = r
	return nil
}
func (m *recMachine) BlockdevDel(n string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.nodes[n]; !ok {
		return Errorf("Failed to find node with node-name='%s'", n)
	}
	delete(m.nodes, n)
	return nil
}

func (m *recMachine) NetdevAdd(n qemuopt.NetdevSpec) error {
	m.log("netdev_add " + n.Type + " " + n.ID)
	return nil
}
func (m *recMachine) QueryRxFilter(name string) ([]RxFilterInfo, error) {
	if name != "" {
		return nil, DeviceNotFound(name)
	}
	return nil, nil
}
func (m *recMachine) NetdevDel(id string) error {
	m.log("netdev_del " + id)
	return nil
}

func startServer(t *testing.T) (*recMachine, *Server, string) {
	t.Helper()
	m := newRec()
	s := NewServer(m)
	m.srv = s
	path := filepath.Join(t.TempDir(), "qmp.sock")
	if err := s.ListenUnix(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s, path
}

// TestGoQemuClient drives the server with github.com/digitalocean/go-qemu,
// a QMP client written for QEMU.
func TestGoQemuClient(t *testing.T) {
	_, _, path := startServer(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	mon, err := goqmp.NewSocketMonitor("unix", path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatalf("go-qemu handshake: %v", err)
	}
	defer mon.Disconnect()
	if mon.Version.QEMU.Major != 7 {
		t.Errorf("greeting version %+v", mon.Version)
	}
	// go-qemu delivers events on an unbuffered channel from the goroutine
	// that also delivers replies, so drain it concurrently.
	evch, _ := mon.Events(nil)
	events := make(chan goqmp.Event, 16)
	go func() {
		for ev := range evch {
			events <- ev
		}
	}()
	run := func(cmd string) map[string]any {
		t.Helper()
		raw, err := mon.Run([]byte(cmd))
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		var r map[string]any
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := run(`{"execute":"query-status"}`)
	if st := r["return"].(map[string]any)["status"]; st != "running" {
		t.Fatalf("status %v", st)
	}
	run(`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"d1","file":{"driver":"file","filename":"/tmp/x.qcow2"}}}`)
	run(`{"execute":"netdev_add","arguments":{"type":"user","id":"u1","hostfwd":[{"str":"tcp::2222-:22"}]}}`)
	run(`{"execute":"netdev_del","arguments":{"id":"u1"}}`)
	if r := run(`{"execute":"query-rx-filter"}`); len(r["return"].([]any)) != 0 {
		t.Fatalf("query-rx-filter: %v", r)
	}
	run(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"disk1","drive":"d1","addr":"0x5"}}`)
	r = run(`{"execute":"query-pci"}`)
	devs := r["return"].([]any)[0].(map[string]any)["devices"].([]any)
	if len(devs) != 1 || devs[0].(map[string]any)["qdev_id"] != "disk1" || devs[0].(map[string]any)["slot"].(float64) != 5 {
		t.Fatalf("query-pci: %v", devs)
	}
	if _, err := mon.Run([]byte(`{"execute":"device_del","arguments":{"id":"nope"}}`)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("device_del of absent device: %v", err)
	}
	run(`{"execute":"device_del","arguments":{"id":"disk1"}}`)
	select {
	case ev := <-events:
		if ev.Event != "DEVICE_DELETED" || ev.Data["device"] != "disk1" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DEVICE_DELETED")
	}
	run(`{"execute":"stop"}`)
	if ev := <-events; ev.Event != "STOP" {
		t.Fatalf("event %+v", ev)
	}
	run(`{"execute":"cont"}`)
	if ev := <-events; ev.Event != "RESUME" {
		t.Fatalf("event %+v", ev)
	}
}

// client is a raw line client for exact-reply tests.
type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, path string, negotiate bool) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{c, bufio.NewReaderSize(c, 1<<20)}
	g := cl.read(t)
	if _, ok := g["QMP"]; !ok {
		t.Fatalf("greeting %v", g)
	}
	if negotiate {
		cl.send(t, `{"execute":"qmp_capabilities"}`)
		if r := cl.read(t); r["return"] == nil {
			t.Fatalf("qmp_capabilities: %v", r)
		}
	}
	return cl
}

func (c *client) send(t *testing.T, s string) {
	t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (c *client) read(t *testing.T) map[string]any {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return m
}

func errOf(t *testing.T, r map[string]any) (class, desc string) {
	t.Helper()
	e, ok := r["error"].(map[string]any)
	if !ok {
		t.Fatalf("expected an error, got %v", r)
	}
	return e["class"].(string), e["desc"].(string)
}

func TestBadInput(t *testing.T) {
	_, _, path := startServer(t)
	c := dial(t, path, false)
	c.send(t, `{"execute":"query-status"}`)
	if cl, _ := errOf(t, c.read(t)); cl != ClassCommandNotFound {
		t.Fatalf("command before negotiation: class %s", cl)
	}
	c.send(t, `{"execute":"qmp_capabilities","id":7}`)
	if r := c.read(t); r["id"].(float64) != 7 {
		t.Fatalf("id not echoed: %v", r)
	}
	cases := []struct{ in, class, desc string }{
		{`{"execute": "query-status"`, "", ""}, // completed by the next line below
		{`}`, "ok", ""},
		{`{bad json}`, ClassGeneric, "JSON parse error"},
		{`[1,2]`, ClassGeneric, "must be a JSON object"},
		{`42`, ClassGeneric, "must be a JSON object"},
		{`{"arguments":{}}`, ClassGeneric, "lacks member 'execute'"},
		{`{"execute":5}`, ClassGeneric, "'execute' must be a string"},
		{`{"execute":"frobnicate"}`, ClassCommandNotFound, "frobnicate has not been found"},
		{`{"execute":"qmp_capabilities"}`, ClassCommandNotFound, "already complete"},
		{`{"execute":"device_del"}`, ClassGeneric, "Parameter 'id' is missing"},
		{`{"execute":"device_del","arguments":{"id":5}}`, ClassGeneric, "Invalid parameter type for 'id', expected: string"},
		{`{"execute":"device_del","arguments":{"id":"x","y":1}}`, ClassGeneric, "Parameter 'y' is unexpected"},
		{`{"execute":"device_del","arguments":[]}`, ClassGeneric, "'arguments' must be an object"},
		{`{"execute":"device_add","arguments":{"driver":"e1000"}}`, ClassGeneric, "not a valid device model"},
		{`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"a","addr":"0x20"}}`, ClassGeneric, "invalid value"},
		{`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"a","addr":"3.1"}}`, ClassGeneric, "only function 0"},
		{`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"a","bogus":1}}`, ClassGeneric, "Property 'virtio-blk-pci.bogus' not found"},
		{`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"1a"}}`, ClassGeneric, "identifier"},
		{`{"execute":"device_add","arguments":{"driver":"ivshmem-doorbell","id":"a","vectors":"many"}}`, ClassGeneric, "expects an integer"},
		{`{"execute":"device_del","arguments":{"id":"ghost"}}`, ClassDeviceNotFound, "Device 'ghost' not found"},
		{`{"execute":"blockdev-del","arguments":{"node-name":"ghost"}}`, ClassGeneric, "Failed to find node"},
		{`{"execute":"netdev_add","arguments":{"type":"user","id":"u","hostfwd":"tcp::1-:2"}}`, ClassGeneric, "expected: array"},
		{`{"execute":"netdev_add","arguments":{"type":"vde","id":"v"}}`, ClassGeneric, "does not accept value 'vde'"},
		{`{"execute":"netdev_add","arguments":{"type":"user"}}`, ClassGeneric, "Parameter 'id' is missing"},
		{`{"execute":"device_add","arguments":{"driver":"virtio-net-pci","id":"n"}}`, ClassGeneric, "netdev= is required"},
	}
	for _, tc := range cases {
		c.send(t, tc.in+"\n")
		if tc.class == "" {
			continue
		}
		r := c.read(t)
		if tc.class == "ok" {
			if r["return"] == nil {
				t.Errorf("split message: %v", r)
			}
			continue
		}
		cl, desc := errOf(t, r)
		if cl != tc.class || !strings.Contains(desc, tc.desc) {
			t.Errorf("%s: got %s %q, want %s %q", tc.in, cl, desc, tc.class, tc.desc)
		}
	}
	// A 1 MiB line of garbage, then a huge valid-looking message: errors,
	// and the connection keeps working.
	c.send(t, strings.Repeat("x", 1<<20)+"\n")
	if cl, _ := errOf(t, c.read(t)); cl != ClassGeneric {
		t.Fatal(cl)
	}
	c.send(t, `{"execute":"query-status","arguments":{"pad":"`+strings.Repeat("a", 1<<20)+`"}}`)
	if _, desc := errOf(t, c.read(t)); !strings.Contains(desc, "'pad' is unexpected") {
		t.Fatal(desc)
	}
	c.send(t, `{"a":"`+strings.Repeat("b", MaxMessageSize+10)+`"}`)
	if _, desc := errOf(t, c.read(t)); !strings.Contains(desc, "too large") {
		t.Fatal(desc)
	}
	c.send(t, strings.Repeat("[", MaxNesting+5)+strings.Repeat("]", MaxNesting+5))
	if _, desc := errOf(t, c.read(t)); !strings.Contains(desc, "too deep") {
		t.Fatal(desc)
	}
	c.send(t, `{"execute":"query-status"}`)
	if r := c.read(t); r["return"] == nil {
		t.Fatalf("after bad input: %v", r)
	}
}

func TestDisconnectMidCommand(t *testing.T) {
	m, _, path := startServer(t)
	for i := 0; i < 20; i++ {
		c := dial(t, path, i%2 == 0)
		c.send(t, `{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"d`)
		c.c.Close()
	}
	c := dial(t, path, true)
	c.send(t, fmt.Sprintf(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"ok1","file":"/x.img","readonly":"on","num-queues":"2"}}`))
	if r := c.read(t); r["return"] == nil {
		t.Fatalf("next client: %v", r)
	}
	m.mu.Lock()
	d := m.devices["ok1"]
	m.mu.Unlock()
	if !d.ReadOnly || d.NumQueues != 2 || d.Slot != 3 || d.File != "/x.img" {
		t.Fatalf("props not coerced: %+v", d)
	}
	c.send(t, `{"execute":"quit"}`)
	if r := c.read(t); r["return"] == nil {
		t.Fatalf("quit: %v", r)
	}
	if r := c.read(t); r["event"] != "SHUTDOWN" {
		t.Fatalf("after quit: %v", r)
	}
}
