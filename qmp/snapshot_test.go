package qmp

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// snapState is the recording machine's snapshot store. gate, when set,
// holds every operation until it is closed; entered, when set, receives
// each operation's name as it starts, and onEnter is called then.
type snapState struct {
	smu       sync.Mutex
	snaps     []VMSnapshot
	snapReqs  []string
	gate      chan struct{}
	entered   chan string
	onEnter   func()
	active    int
	maxActive int
}

// snapOp records r, waits at the gate, then runs f with the store locked.
func (m *recMachine) snapOp(name string, r SnapshotRequest, f func() error) error {
	devs := "nil"
	if r.Devices != nil {
		devs = fmt.Sprintf("%q", r.Devices)
	}
	m.smu.Lock()
	m.active++
	m.maxActive = max(m.maxActive, m.active)
	m.snapReqs = append(m.snapReqs, fmt.Sprintf("%s tag=%q vmstate=%q devices=%s overwrite=%v", name, r.Tag, r.VMState, devs, r.Overwrite))
	gate, entered, onEnter := m.gate, m.entered, m.onEnter
	m.smu.Unlock()
	if onEnter != nil {
		onEnter()
	}
	if entered != nil {
		entered <- name
	}
	if gate != nil {
		<-gate
	}
	time.Sleep(time.Millisecond) // widen the window for overlapping operations
	m.smu.Lock()
	defer m.smu.Unlock()
	m.active--
	return f()
}

func (m *recMachine) find(tag string) int {
	for i, s := range m.snaps {
		if s.Tag == tag {
			return i
		}
	}
	return -1
}

func (m *recMachine) SaveVM(r SnapshotRequest) error {
	m.srv.Emit("STOP", nil)
	defer m.srv.Emit("RESUME", nil)
	return m.snapOp("save", r, func() error {
		i := m.find(r.Tag)
		if i >= 0 && !r.Overwrite {
			return fmt.Errorf("Snapshot '%s' already exists in one or more devices", r.Tag)
		}
		if i >= 0 {
			m.snaps = append(m.snaps[:i], m.snaps[i+1:]...)
		}
		m.snaps = append(m.snaps, VMSnapshot{ID: fmt.Sprint(len(m.snaps) + 1), Tag: r.Tag, VMStateSize: 4096})
		return nil
	})
}

func (m *recMachine) LoadVM(r SnapshotRequest) error {
	return m.snapOp("load", r, func() error {
		if m.find(r.Tag) < 0 {
			// A QMP error's class is not part of the job's error text.
			return Errorf("Snapshot '%s' does not exist in one or more devices", r.Tag)
		}
		return nil
	})
}

func (m *recMachine) DeleteVM(r SnapshotRequest) error {
	return m.snapOp("delete", r, func() error {
		if i := m.find(r.Tag); i >= 0 {
			m.snaps = append(m.snaps[:i], m.snaps[i+1:]...)
		}
		return nil
	})
}

func (m *recMachine) VMSnapshots() ([]VMSnapshot, error) {
	m.smu.Lock()
	defer m.smu.Unlock()
	return append([]VMSnapshot(nil), m.snaps...), nil
}

func (m *recMachine) takeReqs() []string {
	m.smu.Lock()
	defer m.smu.Unlock()
	r := m.snapReqs
	m.snapReqs = nil
	return r
}

// norm re-encodes JSON so that equal values compare equal as strings.
func norm(t *testing.T, v any) string {
	t.Helper()
	if s, ok := v.(string); ok {
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("bad expected JSON %s: %v", s, err)
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// expect reads one message and compares it with want: `event NAME DATA`,
// `return JSON` or `error DESC`.
func (c *client) expect(t *testing.T, want string) {
	t.Helper()
	r := c.read(t)
	kind, rest, _ := strings.Cut(want, " ")
	var got string
	switch kind {
	case "event":
		name, data, _ := strings.Cut(rest, " ")
		if r["event"] != name || (data != "" && norm(t, r["data"]) != norm(t, data)) {
			got = "unexpected"
		}
	case "return":
		if _, ok := r["return"]; !ok || norm(t, r["return"]) != norm(t, rest) {
			got = "unexpected"
		}
	case "error":
		if _, desc := errOf(t, r); desc != rest {
			got = "unexpected"
		}
	}
	if got != "" {
		t.Fatalf("got %s, want %s", norm(t, r), want)
	}
}

func jobEvent(id, status string) string {
	return fmt.Sprintf(`event JOB_STATUS_CHANGE {"status":%q,"id":%q}`, status, id)
}

func TestSnapshotJobLifecycle(t *testing.T) {
	m, _, path := startServer(t)
	m.gate, m.entered = make(chan struct{}), make(chan string, 1)
	c := dial(t, path, true)

	c.send(t, `{"execute":"snapshot-save","arguments":{"job-id":"save0","tag":"snap0","vmstate":"disk0","devices":["disk0","disk1"]}}`)
	// As QEMU: the job's first events come before the reply.
	c.expect(t, jobEvent("save0", "created"))
	c.expect(t, jobEvent("save0", "running"))
	c.expect(t, `return {}`)
	c.expect(t, `event STOP`)
	<-m.entered
	c.send(t, `{"execute":"query-jobs"}`)
	c.expect(t, `return [{"id":"save0","type":"snapshot-save","status":"running","current-progress":0,"total-progress":1}]`)
	c.send(t, `{"execute":"job-dismiss","arguments":{"id":"save0"}}`)
	c.expect(t, `error Job 'save0' in state 'running' cannot accept command verb 'dismiss'`)
	close(m.gate)
	c.expect(t, `event RESUME`)
	for _, st := range []string{"waiting", "pending", "concluded"} {
		c.expect(t, jobEvent("save0", st))
	}
	c.send(t, `{"execute":"query-jobs"}`)
	c.expect(t, `return [{"id":"save0","type":"snapshot-save","status":"concluded","current-progress":1,"total-progress":1}]`)
	if got := m.takeReqs(); len(got) != 1 || got[0] != `save tag="snap0" vmstate="disk0" devices=["disk0" "disk1"] overwrite=false` {
		t.Fatalf("machine requests %q", got)
	}

	// A failed job concludes through aborting and keeps its error.
	m.gate, m.entered = nil, nil
	c.send(t, `{"execute":"snapshot-load","arguments":{"job-id":"load0","tag":"nope","vmstate":"disk0","devices":[]}}`)
	c.expect(t, jobEvent("load0", "created"))
	c.expect(t, jobEvent("load0", "running"))
	c.expect(t, `return {}`)
	c.expect(t, jobEvent("load0", "aborting"))
	c.expect(t, jobEvent("load0", "concluded"))
	c.send(t, `{"execute":"query-jobs"}`)
	c.expect(t, `return [
		{"id":"load0","type":"snapshot-load","status":"concluded","current-progress":1,"total-progress":1,
		 "error":"Snapshot 'nope' does not exist in one or more devices"},
		{"id":"save0","type":"snapshot-save","status":"concluded","current-progress":1,"total-progress":1}]`)
	if got := m.takeReqs(); len(got) != 1 || got[0] != `load tag="nope" vmstate="disk0" devices=[] overwrite=false` {
		t.Fatalf("machine requests %q (QMP's empty devices must stay empty, not nil)", got)
	}

	// A job id stays in use until the job is dismissed.
	c.send(t, `{"execute":"snapshot-delete","arguments":{"job-id":"save0","tag":"snap0","devices":["disk0"]}}`)
	c.expect(t, `error Job ID 'save0' already in use`)
	c.send(t, `{"execute":"job-dismiss","arguments":{"id":"save0"}}`)
	c.expect(t, jobEvent("save0", "null"))
	c.expect(t, `return {}`)
	c.send(t, `{"execute":"job-dismiss","arguments":{"id":"save0"}}`)
	c.expect(t, `error Job not found`)
	c.send(t, `{"execute":"snapshot-delete","arguments":{"job-id":"save0","tag":"snap0","devices":["disk0"]}}`)
	c.expect(t, jobEvent("save0", "created"))
	c.expect(t, jobEvent("save0", "running"))
	c.expect(t, `return {}`)
	for _, st := range []string{"waiting", "pending", "concluded"} {
		c.expect(t, jobEvent("save0", st))
	}
	if got, _ := m.VMSnapshots(); len(got) != 0 {
		t.Fatalf("snapshot not deleted: %v", got)
	}
	for _, id := range []string{"save0", "load0"} {
		c.send(t, fmt.Sprintf(`{"execute":"job-dismiss","arguments":{"id":%q}}`, id))
		c.expect(t, jobEvent(id, "null"))
		c.expect(t, `return {}`)
	}
	c.send(t, `{"execute":"query-jobs"}`)
	c.expect(t, `return []`)
}

func TestSnapshotBadArguments(t *testing.T) {
	m, _, path := startServer(t)
	c := dial(t, path, true)
	save := func(args string) string { return `{"execute":"snapshot-save","arguments":{` + args + `}}` }
	for _, tc := range []struct{ in, desc string }{
		{save(`"tag":"t","vmstate":"d","devices":[]`), "Parameter 'job-id' is missing"},
		// Fields are checked in the schema's order: job-id's absence
		// first, though tag has the wrong type.
		{save(`"tag":5`), "Parameter 'job-id' is missing"},
		{save(`"job-id":"j","vmstate":"d","devices":[]`), "Parameter 'tag' is missing"},
		{save(`"job-id":"j","tag":"t","devices":[]`), "Parameter 'vmstate' is missing"},
		{save(`"job-id":"j","tag":"t","vmstate":"d"`), "Parameter 'devices' is missing"},
		{save(`"job-id":"j","tag":true,"vmstate":"d","devices":[]`), "Invalid parameter type for 'tag', expected: string"},
		{save(`"job-id":"j","tag":"t","vmstate":null,"devices":[]`), "Invalid parameter type for 'vmstate', expected: string"},
		{save(`"job-id":"j","tag":"t","vmstate":"d","devices":"disk0"`), "Invalid parameter type for 'devices', expected: array"},
		{save(`"job-id":"j","tag":"t","vmstate":"d","devices":["a",1]`), "Invalid parameter type for 'devices[1]', expected: string"},
		{save(`"job-id":"j","tag":"t","vmstate":"d","devices":[],"force":true`), "Parameter 'force' is unexpected"},
		{save(`"job-id":"1j","tag":"t","vmstate":"d","devices":[]`), "Invalid job ID '1j'"},
		{save(`"job-id":"","tag":"t","vmstate":"d","devices":[]`), "Invalid job ID ''"},
		{save(`"job-id":"j k","tag":"t","vmstate":"d","devices":[]`), "Invalid job ID 'j k'"},
		{`{"execute":"snapshot-delete","arguments":{"job-id":"j","tag":"t","vmstate":"d","devices":[]}}`, "Parameter 'vmstate' is unexpected"},
		{`{"execute":"snapshot-load","arguments":{"job-id":"j","tag":"t","vmstate":"d"}}`, "Parameter 'devices' is missing"},
		{`{"execute":"job-dismiss"}`, "Parameter 'id' is missing"},
		{`{"execute":"job-dismiss","arguments":{"id":["x"]}}`, "Invalid parameter type for 'id', expected: string"},
		{`{"execute":"human-monitor-command"}`, "Parameter 'command-line' is missing"},
		{`{"execute":"human-monitor-command","arguments":{"command-line":1}}`, "Invalid parameter type for 'command-line', expected: string"},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info status","cpu-index":"0"}}`, "Invalid parameter type for 'cpu-index', expected: integer"},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info status","cpu-index":-1}}`, "Parameter 'cpu-index' expects a CPU number"},
	} {
		c.send(t, tc.in)
		if cl, desc := errOf(t, c.read(t)); cl != ClassGeneric || desc != tc.desc {
			t.Errorf("%s: got %s %q, want %q", tc.in, cl, desc, tc.desc)
		}
	}
	// A refused command creates no job and emits nothing.
	c.send(t, `{"execute":"query-jobs"}`)
	c.expect(t, `return []`)
	if r := m.takeReqs(); len(r) != 0 {
		t.Fatalf("machine called: %q", r)
	}
}

// TestSnapshotOperationsSerialised checks that jobs and HMP commands never
// run the machine's snapshot operations at the same time.
func TestSnapshotOperationsSerialised(t *testing.T) {
	m, s, path := startServer(t)
	c := dial(t, path, true)
	for i := range 4 {
		c.send(t, fmt.Sprintf(`{"execute":"snapshot-save","arguments":{"job-id":"j%d","tag":"t%d","vmstate":"d","devices":["d"]}}`, i, i))
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out := s.HMP(fmt.Sprintf("savevm h%d", i)); out != "" {
				t.Errorf("savevm: %q", out)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		done := 0
		for _, j := range s.jobs.query() {
			if j.Status == jobConcluded && j.Error == nil {
				done++
			}
		}
		if done == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs: %+v", s.jobs.query())
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.smu.Lock()
	defer m.smu.Unlock()
	if m.maxActive != 1 || len(m.snaps) != 8 {
		t.Fatalf("%d operations at once, %d snapshots", m.maxActive, len(m.snaps))
	}
}

func TestJobTransitions(t *testing.T) {
	// Every transition the table allows is one of QEMU's JobSTT.
	qemu := map[string]string{ // from -> allowed targets, job.c
		"":          "created",
		"created":   "running aborting null",
		"running":   "paused ready waiting aborting",
		"waiting":   "pending aborting",
		"pending":   "concluded aborting",
		"aborting":  "concluded aborting",
		"concluded": "null",
	}
	for from, tos := range jobNext {
		for _, to := range tos {
			if !strings.Contains(" "+qemu[from]+" ", " "+to+" ") {
				t.Errorf("%q -> %q is not a QEMU transition", from, to)
			}
		}
	}
	for id, ok := range map[string]bool{"a": true, "A-1._b": true, "": false, "1a": false, "a b": false, "é": false, "_a": false} {
		if jobIDWellFormed(id) != ok {
			t.Errorf("jobIDWellFormed(%q) = %v", id, !ok)
		}
	}
}

// orderWriter records what the server writes, slowly for replies, so that
// work started before a reply is written would be seen before it. With
// fail, writing the second reply fails, as when the client has gone.
type orderWriter struct {
	mu      sync.Mutex
	log     []string
	fail    bool
	replies int
}

func (w *orderWriter) add(s string) {
	w.mu.Lock()
	w.log = append(w.log, s)
	w.mu.Unlock()
}

func (w *orderWriter) Write(b []byte) (int, error) {
	if strings.Contains(string(b), `"return"`) {
		time.Sleep(20 * time.Millisecond)
		w.mu.Lock()
		w.replies++
		failed := w.fail && w.replies == 2
		w.mu.Unlock()
		if failed {
			w.add("failed reply")
			return 0, io.ErrClosedPipe
		}
	}
	w.add(string(b))
	return len(b), nil
}

// TestSnapshotWorkStartsAfterReply checks that a job's work starts only once
// the command's reply is out, as QEMU's job coroutine, and also when the
// reply could not be written (the client has gone).
func TestSnapshotWorkStartsAfterReply(t *testing.T) {
	for _, fail := range []bool{false, true} {
		m := newRec()
		s := NewServer(m)
		m.srv = s
		w := &orderWriter{fail: fail}
		done := make(chan struct{})
		m.onEnter = func() { w.add("work"); close(done) }
		s.ServeConn(rwPair{strings.NewReader(`{"execute":"qmp_capabilities"}` +
			`{"execute":"snapshot-delete","arguments":{"job-id":"d","tag":"t","devices":[]}}`), w})
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("fail=%v: the job never ran", fail)
		}
		w.mu.Lock()
		n := len(w.log)
		if n < 2 || w.log[n-1] != "work" || !(strings.Contains(w.log[n-2], `"return"`) || w.log[n-2] == "failed reply") {
			t.Errorf("fail=%v: writes %q", fail, w.log)
		}
		w.mu.Unlock()
	}
}
