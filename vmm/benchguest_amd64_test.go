package vmm_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestBenchGuestRunsAtCPL3 boots the exit-benchmark guest with a few
// iterations: its loops run at CPL3 with IOPL=3 in long mode, so this
// checks that user-mode PIO and unbacked-MMIO exits reach Petrel and that
// the guest's report comes out whole (scripts/bench-exit.sh parses it).
func TestBenchGuestRunsAtCPL3(t *testing.T) {
	testutil.NeedKVM(t)
	k := guest.Flat(t, "bench-guest") // ITER=50
	var serial bytes.Buffer
	m, err := pc.New(pc.Config{MemoryMiB: 32, KernelBytes: k, Serial: &serial})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := m.Run(ctx); err != nil || r != pc.ExitPowerOff {
		t.Fatalf("run: %v, %v (serial %q)", r, err, serial.String())
	}
	out := serial.String()
	for _, want := range []string{"pio_cycles_total=", "mmio_cycles_total=", "iterations=50\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("serial %q lacks %q", out, want)
		}
	}
	v := m.VCPUs()[0]
	// 500 warm-up + 50 timed port writes, plus the report's characters.
	if io := v.IOExits.Load(); io < 550 {
		t.Fatalf("%d IO exits, want at least 550", io)
	}
	if mm := v.MMIOExits.Load(); mm != 550 {
		t.Fatalf("%d MMIO exits, want 550 (500 warm-up + 50)", mm)
	}
	if u := m.MMIO().Unhandled.Load(); u != 550 {
		t.Fatalf("%d unclaimed MMIO accesses, want 550", u)
	}
}
