package pc

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

func runGuest(t *testing.T, cfg Config) (ExitReason, string, error) {
	t.Helper()
	testutil.NeedKVM(t)
	var out bytes.Buffer
	cfg.Serial = &out
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 64
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := m.Run(ctx)
	return r, out.String(), err
}

func TestPVHSerialAndPowerOff(t *testing.T) {
	code := concat(outCOM1('O'), outCOM1('K'), outCOM1('\n'), acpiPowerOff, hlt)
	r, out, err := runGuest(t, Config{KernelBytes: pvhELF(code, 0x100000)})
	if err != nil || r != ExitPowerOff {
		t.Fatalf("run: %v, %v", r, err)
	}
	if out != "OK\n" {
		t.Fatalf("serial output %q, want %q", out, "OK\n")
	}
}

func TestTripleFaultIsAnError(t *testing.T) {
	// lidt of a zero-limit IDT, then int 3: no handler -> #GP -> #DF -> triple fault.
	// Loading an empty IDT and dividing by zero does the same with fewer
	// unemulated instructions: xor ecx,ecx; div ecx.
	code := concat([]byte{0x0f, 0x01, 0x1d}, le32(0x100100), []byte{0x31, 0xc9, 0xf7, 0xf1}, hlt)
	code = append(code, make([]byte, 0x100-len(code))...)
	code = append(code, 0, 0, 0, 0, 0, 0) // IDT pseudo-descriptor: limit 0, base 0
	r, _, err := runGuest(t, Config{KernelBytes: pvhELF(code, 0x100000)})
	t.Logf("run: %v, %v", r, err)
	if r != ExitTripleFault || err == nil {
		t.Fatalf("run: %v, %v; want a triple fault error", r, err)
	}
	if !strings.Contains(err.Error(), "rip=") {
		t.Fatalf("error lacks the register dump: %v", err)
	}
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
