package vmm_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
)

// TestBenchGuestRunsAtCPL3 boots the exit-benchmark guest with a few
// iterations: its loops run at CPL3 with IOPL=3 in long mode, so this
// checks that user-mode PIO and unbacked-MMIO exits reach Petrel and that
// the guest's report comes out whole (scripts/bench-exit.sh parses it).
func TestBenchGuestRunsAtCPL3(t *testing.T) {
	testutil.NeedKVM(t)
	as := testutil.NeedTool(t, "as")
	ld := testutil.NeedTool(t, "ld")
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "g.o"), filepath.Join(dir, "g.bin")
	if out, err := exec.Command(as, "--64", "--defsym", "ITER=50", "-o", obj, "testdata/bench-guest.S").CombinedOutput(); err != nil {
		t.Fatalf("as: %v\n%s", err, out)
	}
	if out, err := exec.Command(ld, "-m", "elf_x86_64", "-Ttext=0x100000", "-e", "0x100000", "--oformat", "binary",
		"-o", bin, obj).CombinedOutput(); err != nil {
		t.Fatalf("ld: %v\n%s", err, out)
	}
	k, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
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
