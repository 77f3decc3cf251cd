//go:build amd64

package pc

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	dev "github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// The execution tests load Petrel's DSDT into acpiexec (ACPICA, the AML
// interpreter Linux uses) together with a test SSDT that reaches the
// hotplug registers through its own OperationRegion at dev.HotplugBase.
// acpiexec simulates I/O space as a buffer per address range, so what the
// SSDT writes is what the DSDT's fields read, which also proves the DSDT's
// region sits at the device's ports.
func testSSDT() string {
	return fmt.Sprintf(`DefinitionBlock ("", "SSDT", 2, "PETREL", "TEST", 1) {
	OperationRegion (TREG, SystemIO, 0x%X, 0x%X)
	Field (TREG, DWordAcc, NoLock, Preserve) { TUP, 32, TDN, 32, TEJ, 32, TRM, 32 }
	Method (\TSET, 3) { Store (Arg0, TUP) Store (Arg1, TDN) Store (Arg2, TRM) Store (Zero, TEJ) }
	Method (\TEJR) { Return (TEJ) }
}`, dev.HotplugBase, dev.HotplugLen)
}

// acpiexec runs acpiexec in batch mode on the DSDT for cfg plus the test
// SSDT and returns its output, failing on any ACPICA error other than the
// ones in allowed.
func acpiexec(t *testing.T, cfg tablesCase, cmds []string, allowed ...string) string {
	t.Helper()
	tool := testutil.NeedTool(t, "acpiexec")
	iasl := testutil.NeedTool(t, "iasl")
	tables := cfg.build(t)
	dir := t.TempDir()
	dsdt := filepath.Join(dir, "dsdt.dat")
	if err := os.WriteFile(dsdt, tables.DSDT, 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "ssdt.asl")
	if err := os.WriteFile(src, []byte(testSSDT()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(iasl, "-p", filepath.Join(dir, "ssdt"), src).CombinedOutput(); err != nil {
		t.Fatalf("compiling test SSDT: %v\n%s", err, out)
	}
	// A trailing evaluation lets acpiexec's notify thread drain.
	cmds = append(cmds, `evaluate \TEJR`, `evaluate \TEJR`)
	out, err := exec.Command(tool, "-b", strings.Join(cmds, "; "), dsdt, filepath.Join(dir, "ssdt.aml")).CombinedOutput()
	if err != nil {
		t.Fatalf("acpiexec: %v\n%s", err, out)
	}
	s := string(out)
	for _, line := range strings.Split(s, "\n") {
		bad := strings.Contains(line, "AE_") || strings.Contains(line, "ACPI Error") || strings.Contains(line, "ACPI Warning")
		for _, a := range allowed {
			if strings.Contains(line, a) {
				bad = false
			}
		}
		if bad {
			t.Errorf("acpiexec reported: %s", line)
		}
	}
	if !strings.Contains(s, "2 ACPI AML tables successfully acquired and loaded") {
		t.Fatalf("acpiexec did not load the tables:\n%s", s)
	}
	return s
}

var notifyRE = regexp.MustCompile(`Notify on \[(\w{4})\] \S+ Value (0x[0-9A-Fa-f]+)`)

// notifications returns "NAME=0xVV" for every Notify acpiexec received, sorted
// (acpiexec delivers them from a thread, so their order is not kept).
func notifications(out string) []string {
	var n []string
	for _, m := range notifyRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseUint(m[2], 0, 8)
		n = append(n, fmt.Sprintf("%s=%#x", strings.TrimRight(m[1], "_"), v))
	}
	sort.Strings(n)
	return n
}

// result returns the integers printed for the evaluation of path.
func result(t *testing.T, out, path string) []uint64 {
	t.Helper()
	i := strings.Index(out, "Evaluating "+path+"\n")
	if i < 0 {
		t.Fatalf("no evaluation of %s in:\n%s", path, out)
	}
	block := out[i+len("Evaluating "+path+"\n"):]
	if j := strings.Index(block, "Evaluating "); j >= 0 {
		block = block[:j]
	}
	var vals []uint64
	for _, m := range regexp.MustCompile(`\[Integer\] = ([0-9A-F]+)`).FindAllStringSubmatch(block, -1) {
		v, err := strconv.ParseUint(m[1], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	return vals
}

func allSlots() tablesCase { return tablesCase{cpus: 2, hotplug: hotplugSlots} }

// hotplugRegs plugs and unplugs slots on a real devices/acpi controller and
// returns its up, down and removable registers as the guest reads them.
func hotplugRegs(t *testing.T, mask uint32, plug, unplug []int) (up, down, rmv uint32) {
	t.Helper()
	h, err := dev.NewHotplug(dev.NewGPE(nil), mask, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range plug {
		if err := h.Plug(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range unplug {
		if err := h.Unplug(s); err != nil {
			t.Fatal(err)
		}
	}
	read := func(off uint64) uint32 {
		d := make([]byte, 4)
		h.Read(dev.HotplugBase, off, d)
		return binary.LittleEndian.Uint32(d)
	}
	return read(dev.HotplugUpOffset), read(dev.HotplugDownOffset), read(dev.HotplugRemovableOffset)
}

// The registers of the Go controller, fed to the DSDT's GPE handler, make
// exactly the Notify calls the host asked for.
func TestACPIExecHotplugEvent(t *testing.T) {
	cfg := allSlots()
	up, down, rmv := hotplugRegs(t, cfg.hotplug, []int{3, 31}, []int{3, 5})
	out := acpiexec(t, cfg, []string{
		fmt.Sprintf(`execute \TSET %d %d %d`, up, down, rmv),
		fmt.Sprintf(`execute \_GPE._E%02X`, dev.GPEPCIHotplug),
	})
	got := notifications(out)
	want := []string{"S03=0x1", "S03=0x3", "S05=0x3", "S1F=0x1"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("notifications %v, want %v\n%s", got, want, out)
	}
}

func TestACPIExecHotplugOnlyHotpluggableSlots(t *testing.T) {
	// Slot 3 is fixed: its pending bits raise no Notify and it has no _EJ0.
	cfg := tablesCase{cpus: 1, hotplug: 1<<2 | 1<<4}
	out := acpiexec(t, cfg, []string{
		`execute \TSET 0x1C 0x1C 0`,
		fmt.Sprintf(`execute \_GPE._E%02X`, dev.GPEPCIHotplug),
		`execute \_SB.PCI0.S03._EJ0 0`,
	}, `\_SB.PCI0.S03._EJ0 failed with status AE_NOT_FOUND`)
	got := notifications(out)
	want := []string{"S02=0x1", "S02=0x3", "S04=0x1", "S04=0x3"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("notifications %v, want %v", got, want)
	}
	if !strings.Contains(out, `\_SB.PCI0.S03._EJ0 failed with status AE_NOT_FOUND`) {
		t.Fatal("fixed slot 3 has an _EJ0")
	}
}

// A slot's _EJ0 writes the value that makes the Go controller eject that
// slot (and clear its pending bits).
func TestACPIExecEject(t *testing.T) {
	for _, slot := range []int{1, 7, 31} {
		out := acpiexec(t, allSlots(), []string{
			`execute \TSET 0 0 0`,
			fmt.Sprintf(`execute \_SB.PCI0.S%02X._EJ0 0`, slot),
			`evaluate \TEJR`,
		})
		got := result(t, out, `\TEJR`)
		if len(got) != 1 || got[0] != 1<<slot {
			t.Fatalf("slot %d: eject register = %x, want %#x", slot, got, uint64(1)<<slot)
		}
		var ejected []int
		h, err := dev.NewHotplug(dev.NewGPE(nil), allSlots().hotplug, func(s int) { ejected = append(ejected, s) })
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Unplug(slot); err != nil {
			t.Fatal(err)
		}
		d := binary.LittleEndian.AppendUint32(nil, uint32(got[0]))
		h.Write(dev.HotplugBase, dev.HotplugEjectOffset, d)
		if up, down := h.Pending(); len(ejected) != 1 || ejected[0] != slot || up|down != 0 {
			t.Fatalf("slot %d: controller ejected %v, pending %#x/%#x", slot, ejected, up, down)
		}
	}
}

func TestACPIExecRemovable(t *testing.T) {
	_, _, rmv := hotplugRegs(t, 1<<1|1<<31, nil, nil)
	out := acpiexec(t, allSlots(), []string{
		fmt.Sprintf(`execute \TSET 0 0 %d`, rmv),
		`evaluate \_SB.PCI0.S01._RMV`, `evaluate \_SB.PCI0.S02._RMV`, `evaluate \_SB.PCI0.S1F._RMV`,
	})
	for path, want := range map[string]uint64{`\_SB.PCI0.S01._RMV`: 1, `\_SB.PCI0.S02._RMV`: 0, `\_SB.PCI0.S1F._RMV`: 1} {
		if got := result(t, out, path); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %v, want %d", path, got, want)
		}
	}
}

func TestACPIExecPowerButton(t *testing.T) {
	out := acpiexec(t, allSlots(), []string{fmt.Sprintf(`execute \_GPE._E%02X`, dev.GPEPowerButton)})
	if got := notifications(out); len(got) != 1 || got[0] != "PWRB=0x80" {
		t.Fatalf("notifications %v, want [PWRB=0x80]", got)
	}
}

func TestACPIExecObjects(t *testing.T) {
	out := acpiexec(t, tablesCase{cpus: 3, hotplug: hotplugSlots}, []string{
		`evaluate \_S5`, `evaluate \_SB.PCI0._PRT`, `evaluate \_SB.PCI0._HID`, `evaluate \_SB.PCI0.S1F._ADR`,
		`evaluate \_SB.PCI0.S1F._SUN`, `evaluate \_SB.PWRB._HID`, `evaluate \_SB.C002._UID`,
		`resources \_SB.PCI0`, `resources \_SB.COM1`,
	}, "AcpiSetCurrentResources failed: AE_NOT_FOUND") // no _SRS: resources are fixed
	if got := result(t, out, `\_S5`); fmt.Sprint(got) != "[5 5 0 0]" {
		t.Errorf(`\_S5 = %v`, got)
	}
	prt := result(t, out, `\_SB.PCI0._PRT`)
	if len(prt) != 4*32 {
		t.Fatalf("_PRT has %d integers, want 128", len(prt))
	}
	for s := 0; s < 32; s++ {
		e := prt[4*s : 4*s+4]
		if e[0] != uint64(s)<<16|0xffff || e[1] != 0 || e[2] != 0 || e[3] != uint64(16+s%8) {
			t.Errorf("_PRT entry %d = %#x", s, e)
		}
	}
	for path, want := range map[string]uint64{
		`\_SB.PCI0._HID`: 0x030ad041, `\_SB.PCI0.S1F._ADR`: 0x1f0000, `\_SB.PCI0.S1F._SUN`: 31,
		`\_SB.PWRB._HID`: 0x0c0cd041, `\_SB.C002._UID`: 2,
	} {
		if got := result(t, out, path); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %#x, want %#x", path, got, want)
		}
	}
	// ACPICA's resource manager (Linux's) decodes the windows.
	for _, want := range []string{
		"Address Maximum : 00FF", "Address Minimum : 0CF8", "Address Maximum : 0CF7",
		"Address Minimum : C000", "Address Maximum : FFFF",
		"Address Minimum : C0000000", "Address Maximum : FBFFFFFF",
		"Address Minimum : 0000000100000000", "Address Maximum : 00000008FFFFFFFF",
		"Address Minimum : 03F8", "Interrupt Count : 01",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("decoded resources lack %q", want)
		}
	}
}

// TestACPIExecWithFADT loads the placed FADT, DSDT and MADT the way an OS
// does (ACPICA's table manager reads the FADT, sets up the GPE0 block from
// it and wires the SCI) and runs a hotplug event through it.
func TestACPIExecWithFADT(t *testing.T) {
	tool := testutil.NeedTool(t, "acpiexec")
	blob, l, tables := allSlots().place(t)
	dir := t.TempDir()
	var files []string
	for name, data := range map[string][]byte{"facp": table(t, blob, l.FADT), "dsdt": tables.DSDT, "apic": tables.MADT} {
		p := filepath.Join(dir, name+".dat")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	sort.Strings(files)
	args := append([]string{"-b", fmt.Sprintf(`gpes; execute \_GPE._E%02X; gpes`, dev.GPEPowerButton)}, files...)
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("acpiexec: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"FACP", "(v06 PETREL PETRELPC", "APIC",
		"Initialized GPE 00 to 0F [_GPE] 2 regs on interrupt 0x9 (SCI)",
		"Status 000000000000AFE0 Enable 000000000000AFE2",
		"Status 000000000000AFE1 Enable 000000000000AFE3",
		"Received a Device Notify on [PWRB]",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("acpiexec output lacks %q", want)
		}
	}
	// acpiexec's built-in self-tests poke PM2_CNT.ARB_DIS (no PM2 block
	// here, as on QEMU's PIIX4) and GPE numbers beyond this 16-GPE block.
	allowed := regexp.MustCompile(`Unexpected (AE_BAD_ADDRESS from Acpi(Write|Read)BitRegister|AE_BAD_PARAMETER from Acpi(InstallGpeHandler|EnableGpe|DisableGpe)) \(aetests-`)
	for _, line := range strings.Split(s, "\n") {
		if (strings.Contains(line, "AE_") || strings.Contains(line, "ACPI Error")) && !allowed.MatchString(line) {
			t.Errorf("acpiexec reported: %s", line)
		}
	}
}
