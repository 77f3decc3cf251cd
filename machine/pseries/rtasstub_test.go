package pseries

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestRTASStubDisassembles checks the hand-encoded RTAS stub with GNU
// objdump for POWER (Debian binutils-powerpc64le-linux-gnu), read as
// big-endian since the kernel always enters RTAS big-endian.
func TestRTASStubDisassembles(t *testing.T) {
	objdump := testutil.NeedTool(t, "powerpc64le-linux-gnu-objdump")
	path := filepath.Join(t.TempDir(), "stub.bin")
	if err := os.WriteFile(path, RTASStub(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(objdump, "-b", "binary", "-m", "powerpc:common64", "-EB", "-D", path).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump: %v\n%s", err, out)
	}
	var insns []string
	line := regexp.MustCompile(`^\s+[0-9a-f]+:\s+(?:[0-9a-f]{2} ){4}\s*(.*)$`)
	for _, l := range strings.Split(string(out), "\n") {
		if m := line.FindStringSubmatch(l); m != nil {
			insns = append(insns, strings.Join(strings.Fields(m[1]), " "))
		}
	}
	want := []string{"mr r4,r3", "lis r3,0", "ori r3,r3,61440", "sc 1", "blr"}
	if strings.Join(insns, "; ") != strings.Join(want, "; ") {
		t.Fatalf("stub disassembles to %q, want %q", insns, want)
	}
	if HRTAS != 61440 {
		t.Fatal("H_RTAS changed; the stub loads 0xf000")
	}
}

// TestE2EGuestAgrees keeps the e2e guest program (testdata/guest/hello.S,
// run by scripts/e2e-pseries.sh on nested KVM) in step with the machine:
// it hard-codes the power-off token and the vty's termno, and must
// assemble for big-endian POWER.
func TestE2EGuestAgrees(t *testing.T) {
	src, err := os.ReadFile("testdata/guest/hello.S")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := RTASToken("power-off")
	if tok != 0x2003 || !strings.Contains(string(src), ".long	0x2003") {
		t.Fatalf("power-off token %#x; hello.S must use the same", tok)
	}
	if VTYReg != 0x71000000 || !strings.Contains(string(src), "lis	4, 0x7100") {
		t.Fatal("hello.S must name the vty's termno")
	}
	// smp.S names its hypercalls and RTAS tokens with .set lines.
	smp, err := os.ReadFile("testdata/guest/smp.S")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		"H_PUT_TERM_CHAR": HPutTermChar, "H_EOI": HEOI, "H_CPPR": HCPPR, "H_IPI": HIPI,
		"H_XIRR": HXIRR, "H_LOGICAL_MEMOP": HLogicalMemop, "H_REGISTER_PROC_TBL": HRegisterProcTbl,
	}
	for name, svc := range map[string]string{
		"RTAS_GET_TIME_OF_DAY": "get-time-of-day", "RTAS_POWER_OFF": "power-off",
		"RTAS_QUERY_CPU_STOPPED_STATE": "query-cpu-stopped-state", "RTAS_START_CPU": "start-cpu",
		"RTAS_STOP_SELF": "stop-self", "RTAS_NVRAM_FETCH": "nvram-fetch", "RTAS_NVRAM_STORE": "nvram-store",
	} {
		tok, ok := RTASToken(svc)
		if !ok {
			t.Fatalf("no service %s", svc)
		}
		want[name] = uint64(tok)
	}
	set := regexp.MustCompile(`(?m)^\s*\.set\s+(\w+),\s*(0x[0-9a-f]+)`)
	got := map[string]uint64{}
	for _, m := range set.FindAllStringSubmatch(string(smp), -1) {
		v, _ := strconv.ParseUint(m[2][2:], 16, 64)
		got[m[1]] = v
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("smp.S: %s = %#x, machine uses %#x", name, got[name], v)
		}
	}
	as := testutil.NeedTool(t, "powerpc64le-linux-gnu-as")
	for _, g := range []string{"hello", "smp"} {
		obj := filepath.Join(t.TempDir(), g+".o")
		if out, err := exec.Command(as, "-a64", "-mbig", "-mpower8", "testdata/guest/"+g+".S", "-o", obj).CombinedOutput(); err != nil {
			t.Fatalf("assembling %s.S: %v\n%s", g, err, out)
		}
	}
}
