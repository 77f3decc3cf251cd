//go:build amd64

package tests

import (
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestACPIPowerOff: the guest reaches CPL3, reads its command line and
// powers off through PM1a_CNT (SLP_TYP 5 | SLP_EN); the VMM stops cleanly.
func TestACPIPowerOff(t *testing.T) {
	elf := guest.Build(t, "poweroff.c")
	r := runGuest(t, elf, pc.Config{Cmdline: "petrel-test poweroff"})
	mustPass(t, r)
	if !strings.Contains(r.Serial, "cpl=3 if=1 cmdline=petrel-test poweroff") {
		t.Fatalf("guest did not report CPL3 with interrupts on and the command line")
	}
}

// TestGuestArgs: guest_arg/guest_arg_u64 read key=value words, hex and
// bare flags from the PVH command line, and a mismatch fails the guest.
func TestGuestArgs(t *testing.T) {
	elf := guest.Build(t, "poweroff.c")
	r := runGuest(t, elf, pc.Config{Cmdline: "petrel-test n=0x2a flag want=42"})
	mustPass(t, r)
	if !strings.Contains(r.Serial, "arg want=42 n=42 flag=yes") {
		t.Fatal("arguments not parsed")
	}
	r = runGuest(t, elf, pc.Config{Cmdline: "petrel-test want=5"})
	if res := resultLine(r.Serial); !strings.HasPrefix(res, "RESULT FAIL want 5 but n=7") {
		t.Fatalf("mismatched argument: %q, want a failure", res)
	}
}

// TestGuestFailureIsReported: a guest exception reaches the kit's handler,
// which reports the vector and fails, so a broken guest cannot pass.
func TestGuestFailureIsReported(t *testing.T) {
	elf := guest.Build(t, "fault.c")
	r := runGuest(t, elf, pc.Config{})
	if r.Err != nil {
		t.Fatalf("VMM error: %v", r.Err)
	}
	if !strings.Contains(r.Serial, "EXCEPTION vector 14") || !strings.HasPrefix(resultLine(r.Serial), "RESULT FAIL exception 14") {
		t.Fatalf("page fault not reported")
	}
	if r.Reason != pc.ExitPowerOff {
		t.Fatalf("exit %v, want power-off after the failure report", r.Reason)
	}
}
