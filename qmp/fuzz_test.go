package qmp

import (
	"bufio"
	"bytes"
	"io"
	"sync"
	"testing"
)

type rwPair struct {
	io.Reader
	io.Writer
}

// lockedBuffer collects a connection's output: the events of a job still
// running arrive after ServeConn has returned.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// FuzzServe feeds arbitrary client bytes to a connection: every message must
// get a JSON reply or be skipped, never a panic or a hang.
func FuzzServe(f *testing.F) {
	for _, s := range []string{
		`{"execute":"qmp_capabilities"}{"execute":"query-status"}`,
		`{"execute":"qmp_capabilities"}{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"a","addr":"0x3"}}`,
		`{"execute":"qmp_capabilities"}{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"n","file":"/f"}}`,
		`{"execute":"qmp_capabilities"} [[[ "\"}" ]]] 42 {"execute":"device_del","arguments":{"id":"a"}}`,
		`{"execute":"qmp_capabilities"}{"execute":"snapshot-save","arguments":{"job-id":"j","tag":"t","vmstate":"d","devices":["d"]}}` +
			`{"execute":"query-jobs"}{"execute":"job-dismiss","arguments":{"id":"j"}}`,
		`{"execute":"qmp_capabilities"}{"execute":"snapshot-delete","arguments":{"job-id":"j","tag":"t","devices":[1]}}` +
			`{"execute":"snapshot-load","arguments":{"job-id":"j","tag":"t","vmstate":"d","devices":[]}}{"execute":"snapshot-load","arguments":{"job-id":"j"}}`,
		`{"execute":"qmp_capabilities"}{"execute":"human-monitor-command","arguments":{"command-line":"savevm \"a b\""}}` +
			`{"execute":"human-monitor-command","arguments":{"command-line":"info snapshots","cpu-index":0}}`,
		`{"exec`, `}}}]]`, `"unterminated`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m := newRec()
		s := NewServer(m)
		m.srv = s
		var out lockedBuffer
		s.ServeConn(rwPair{bytes.NewReader(in), &out})
		// Every line out must be valid JSON.
		sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			if !bytes.HasPrefix(sc.Bytes(), []byte("{")) {
				t.Fatalf("non-object reply %q", sc.Bytes())
			}
		}
	})
}

// FuzzHMP feeds arbitrary command lines to the human monitor: it must
// answer with bounded text, never panic or hang.
func FuzzHMP(f *testing.F) {
	for _, s := range []string{"savevm", `savevm "a\"b"`, "loadvm x y", "info snapshots", "help info", "i  frob", "c", `delvm "\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m := newRec()
		s := NewServer(m)
		m.srv = s
		if out := s.HMP(line); len(out) > 4096+2*len(line) {
			t.Fatalf("%d bytes of output for %d of input", len(out), len(line))
		}
	})
}

// FuzzSplitter checks the message splitter never loses sync badly: the
// messages it returns are never larger than the limit.
func FuzzSplitter(f *testing.F) {
	f.Add([]byte(`{"a":"}"} [1,[2]] "x" 7 {`))
	f.Fuzz(func(t *testing.T, in []byte) {
		sp := newSplitter(bufio.NewReader(bytes.NewReader(in)))
		for i := 0; i < len(in)+2; i++ {
			msg, err := sp.next()
			if err == io.EOF {
				return
			}
			if err != nil && err != errTooLarge && err != errTooDeep {
				t.Fatal(err)
			}
			if len(msg) > MaxMessageSize {
				t.Fatal("oversized message")
			}
		}
		t.Fatal("splitter did not reach EOF")
	})
}
