package pseries

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/firmware/fdt"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

var testBoot = Boot{
	Cmdline:     "console=hvc0 root=/dev/ram0",
	InitrdStart: 0x2800000,
	InitrdEnd:   0x2900000,
	RTASBase:    0xfef0000,
	RTASSize:    0x20,
	HTABShift:   24,
}

func TestDeviceTreeContents(t *testing.T) {
	v := newTestVM(t, 2)
	blob, err := v.DeviceTree(testBoot)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := fdt.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Reservations) != 1 || tr.Reservations[0] != (fdt.Reservation{Address: 0xfef0000, Size: 0x20}) {
		t.Fatalf("reservations %+v", tr.Reservations)
	}
	if dt, _ := tr.Root.PropStrings("device_type"); len(dt) != 1 || dt[0] != "chrp" {
		t.Fatalf("root device_type %q", dt)
	}
	cells := func(path, prop string) []uint32 {
		t.Helper()
		n := tr.Lookup(path)
		if n == nil {
			t.Fatalf("no node %s", path)
		}
		c, err := n.PropU32s(prop)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := cells("/memory@0", "reg"); len(got) != 8 || got[3] != testLowSize || got[5] != testHighBase || got[7] != testHighSize {
		t.Fatalf("memory reg %#x", got)
	}
	for i := 0; i < 2; i++ {
		cpu := "/cpus/PowerPC,POWER9@" + string(rune('0'+i))
		if got := cells(cpu, "ibm,ppc-interrupt-server#s"); got[0] != uint32(i) {
			t.Fatalf("%s server %v", cpu, got)
		}
		if got := cells(cpu, "ibm,pft-size"); got[1] != 24 {
			t.Fatalf("pft-size %v", got)
		}
		if got := cells(cpu, "timebase-frequency"); got[0] != DefaultTimebaseHz {
			t.Fatalf("timebase %v", got)
		}
	}
	for _, name := range RTASServiceNames() {
		tok, _ := RTASToken(name)
		if got := cells("/rtas", name); len(got) != 1 || got[0] != tok {
			t.Errorf("/rtas %s = %v, want %#x", name, got, tok)
		}
	}
	if got := cells("/rtas", "linux,rtas-entry"); got[0] != 0xfef0000 {
		t.Fatalf("rtas entry %#x", got)
	}
	hyp, _ := tr.Lookup("/rtas").PropStrings("ibm,hypertas-functions")
	if strings.Join(hyp, ",") != "hcall-term,hcall-set-mode,hcall-debug,hcall-interrupt" {
		t.Fatalf("hypertas %q", hyp)
	}
	qhyp, _ := tr.Lookup("/rtas").PropStrings("qemu,hypertas-functions")
	if len(qhyp) != 1 || qhyp[0] != "hcall-memop1" {
		t.Fatalf("qemu hypertas %q", qhyp)
	}
	vty := tr.Lookup("/vdevice/vty@71000000")
	if vty == nil {
		t.Fatal("no vty")
	}
	if c, _ := vty.PropStrings("compatible"); c[0] != "hvterm1" {
		t.Fatalf("vty compatible %q", c)
	}
	if got := cells("/vdevice/vty@71000000", "reg"); got[0] != VTYReg {
		t.Fatalf("vty reg %#x", got)
	}
	if got := cells("/vdevice/nvram@71000001", "#bytes"); got[0] != DefaultNVRAMSize {
		t.Fatalf("nvram size %v", got)
	}
	if c, _ := tr.Lookup("/vdevice").PropStrings("compatible"); c[0] != "IBM,vdevice" {
		t.Fatalf("vdevice compatible %q", c)
	}
	chosen := tr.Lookup("/chosen")
	if s, _ := chosen.PropStrings("linux,stdout-path"); s[0] != "/vdevice/vty@71000000" {
		t.Fatalf("stdout-path %q", s)
	}
	if s, _ := chosen.PropStrings("bootargs"); s[0] != testBoot.Cmdline {
		t.Fatalf("bootargs %q", s)
	}
	if got := cells("/chosen", "linux,initrd-end"); got[1] != 0x2900000 {
		t.Fatalf("initrd end %#x", got)
	}
	if got := cells("/pci@800000020000000", "reg"); got[0] != 0x08000000 || got[1] != 0x20000000 {
		t.Fatalf("PHB reg (BUID) %#x", got)
	}
	// No initrd: no initrd properties.
	b := testBoot
	b.InitrdEnd = 0
	blob, _ = v.DeviceTree(b)
	tr, _ = fdt.Parse(blob)
	if _, ok := tr.Lookup("/chosen").Prop("linux,initrd-start"); ok {
		t.Fatal("initrd properties without an initrd")
	}
}

// TestDeviceTreeDtc decompiles the pseries tree with dtc: no warnings, and
// the source shows the nodes and properties the guest needs.
func TestDeviceTreeDtc(t *testing.T) {
	dtc := testutil.NeedTool(t, "dtc")
	v := newTestVM(t, 4)
	blob, err := v.DeviceTree(testBoot)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pseries.dtb")
	if err := os.WriteFile(path, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(dtc, "-I", "dtb", "-O", "dts", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dtc: %v\n%s", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("dtc warnings:\n%s", stderr.String())
	}
	for _, want := range []string{
		"/memreserve/\t0x000000000fef0000 0x0000000000000020;",
		`device_type = "chrp";`,
		"PowerPC,POWER9@3 {",
		"ibm,ppc-interrupt-server#s = <0x03>;",
		`ibm,hypertas-functions = "hcall-term\0hcall-set-mode\0hcall-debug\0hcall-interrupt";`,
		`compatible = "IBM,ppc-xics\0IBM,ppc-xicp";`,
		"ibm,interrupt-server-ranges = <0x00 0x04>;",
		`qemu,hypertas-functions = "hcall-memop1";`,
		"vty@71000000 {",
		`compatible = "hvterm1";`,
		`linux,stdout-path = "/vdevice/vty@71000000";`,
		"start-cpu = <0x2006>;",
		"ibm,write-pci-config = <0x2013>;",
		"memory@0 {",
		"reg = <0x00 0x00 0x00 0x100000 0x00 0x200000 0x00 0x100000>;",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dtc output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("dtc output:\n%s", out)
	}
}
