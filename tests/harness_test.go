//go:build amd64

package tests

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
)

// syncBuffer collects serial output written by the vCPU goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// guestRun is the outcome of one whole-VM run.
type guestRun struct {
	Serial  string
	Reason  pc.ExitReason
	Err     error
	Elapsed time.Duration
	Machine *pc.Machine // closed; for host-side views such as PCI()
}

// runTimeout bounds every whole-VM run here.
var runTimeout = testutil.Timeout(20 * time.Second)

// newMachine builds a PC for a guest program; the caller runs it.
func newMachine(t *testing.T, cfg pc.Config) (*pc.Machine, *syncBuffer) {
	t.Helper()
	testutil.NeedKVM(t)
	out := &syncBuffer{}
	cfg.Serial = out
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 64
	}
	m, err := pc.New(cfg)
	if err != nil {
		t.Fatalf("building the machine: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, out
}

// run runs m until the guest stops or runTimeout passes.
func run(t *testing.T, m *pc.Machine, out *syncBuffer) guestRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	t0 := time.Now()
	reason, err := m.Run(ctx)
	r := guestRun{Serial: out.String(), Reason: reason, Err: err, Elapsed: time.Since(t0), Machine: m}
	t.Logf("guest ran %v, exit %v (err %v); serial:\n%s", r.Elapsed.Round(time.Millisecond), reason, err, indent(r.Serial))
	return r
}

// runGuest boots the guest program elf on a fresh PC and runs it.
func runGuest(t *testing.T, elf string, cfg pc.Config) guestRun {
	t.Helper()
	cfg.Kernel = elf
	m, out := newMachine(t, cfg)
	return run(t, m, out)
}

// mustPass fails the test unless the guest reported RESULT PASS and powered off cleanly.
func mustPass(t *testing.T, r guestRun) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("VMM error: %v", r.Err)
	}
	if res := resultLine(r.Serial); res != "RESULT PASS" {
		if res == "" {
			res = "no RESULT line"
		}
		t.Fatalf("guest: %s (exit %v)", res, r.Reason)
	}
	if r.Reason != pc.ExitPowerOff {
		t.Fatalf("exit %v, want power-off", r.Reason)
	}
}

var resultRE = regexp.MustCompile(`(?m)^RESULT (PASS|FAIL.*)$`)

func resultLine(serial string) string {
	m := resultRE.FindAllString(serial, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

// field returns the values of "key=value" tokens in lines starting with prefix.
func lines(serial, prefix string) []string {
	var out []string
	for _, l := range strings.Split(serial, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

func indent(s string) string {
	if len(s) > 8000 {
		s = s[:4000] + fmt.Sprintf("\n... %d bytes ...\n", len(s)-8000) + s[len(s)-4000:]
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
