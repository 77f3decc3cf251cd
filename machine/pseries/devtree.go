package pseries

import (
	"fmt"

	"github.com/petrel-vmm/petrel/firmware/fdt"
)

// Device tree defaults for the POWER9 model the tree describes.
const (
	DefaultCPUModel   = "PowerPC,POWER9"
	DefaultPVR        = 0x004e1200 // POWER9 DD2.0
	DefaultTimebaseHz = 512_000_000
	DefaultClockHz    = 1_000_000_000
)

// HypertasFunctions is the ibm,hypertas-functions list: the PAPR hcall
// function sets whose every call Petrel serves.
//
//	hcall-term:     H_GET_TERM_CHAR, H_PUT_TERM_CHAR
//	hcall-set-mode: H_SET_MODE
//	hcall-debug:    H_LOGICAL_CI_LOAD/STORE, H_LOGICAL_CACHE_LOAD/STORE,
//	                H_LOGICAL_ICBI, H_LOGICAL_DCBF
//	hcall-interrupt: H_CPPR, H_IPI, H_XIRR, H_EOI, H_IPOLL (the XICS
//	                presentation layer, icp.go)
//
// H_CEDE and H_PROD are served too but their set (hcall-splpar) also needs
// H_REGISTER_VPA and H_CONFER, which Petrel does not serve, so it is not
// listed. The hash page table calls (H_ENTER, H_REMOVE, ...) are KVM's,
// served in the kernel, not Petrel's.
var HypertasFunctions = []string{"hcall-term", "hcall-set-mode", "hcall-debug", "hcall-interrupt"}

// QemuHypertasFunctions lists the private (0xf000 range) sets: hcall-memop1
// is H_LOGICAL_MEMOP. H_RTAS needs no entry: /rtas itself announces it.
var QemuHypertasFunctions = []string{"hcall-memop1"}

// Boot describes what the device tree tells the guest about its boot.
type Boot struct {
	Cmdline                string
	InitrdStart, InitrdEnd uint64 // InitrdEnd 0: no initrd
	RTASBase               uint64 // where the RTAS stub lives
	RTASSize               uint32
	HTABShift              uint32 // log2 of the hash page table size (ibm,pft-size)
	CPUModel               string // "" means DefaultCPUModel
	PVR                    uint32 // 0 means DefaultPVR
}

// The PHB's 32-bit memory window (the layout QEMU's spapr PHB 0 uses).
const (
	PHBMem32Base    = 0x200_8000_0000
	PHBMem32PCIBase = 0x8000_0000
	PHBMem32Size    = 0x8000_0000
)

// vtyPath is the console's node, named by /chosen's stdout-path.
var vtyPath = fmt.Sprintf("/vdevice/vty@%x", VTYReg)

// nvramReg is the NVRAM's unit address in /vdevice (next to the vty, as QEMU).
const nvramReg = VTYReg + 1

// DeviceTree builds the flattened device tree the guest boots with.
func (m *Machine) DeviceTree(b Boot) ([]byte, error) {
	model, pvr := b.CPUModel, b.PVR
	if model == "" {
		model = DefaultCPUModel
	}
	if pvr == 0 {
		pvr = DefaultPVR
	}
	t := fdt.NewBuilder()
	intc := t.AllocPhandle()
	t.SetBootCPU(m.cpus[0].Server)
	if b.RTASSize > 0 {
		t.Reserve(b.RTASBase, uint64(b.RTASSize))
	}
	t.BeginNode("")
	t.PropertyU32("#address-cells", 2)
	t.PropertyU32("#size-cells", 2)
	// Linux's pseries_probe requires device_type "chrp" on the root.
	t.PropertyString("device_type", "chrp")
	t.PropertyString("model", "IBM pSeries (emulated by Petrel)")
	t.PropertyString("compatible", "petrel,pseries")
	t.PropertyU32("interrupt-parent", intc)

	// The XICS: sources programmed through RTAS (ibm,set-xive, ...),
	// presentation through hcall-interrupt; interrupt specifiers are
	// <source number, sense> (0 edge, 1 level).
	t.BeginNode("interrupt-controller")
	t.PropertyString("device_type", "PowerPC-External-Interrupt-Presentation")
	t.PropertyStrings("compatible", "IBM,ppc-xics", "IBM,ppc-xicp")
	t.PropertyEmpty("interrupt-controller")
	t.PropertyU32("#interrupt-cells", 2)
	t.PropertyU32("#address-cells", 0)
	t.PropertyU32("ibm,interrupt-server-ranges", 0, uint32(len(m.cpus)))
	t.PropertyU32("phandle", intc)
	t.PropertyU32("linux,phandle", intc)
	t.EndNode()

	t.BeginNode("chosen")
	t.PropertyString("bootargs", b.Cmdline)
	t.PropertyString("linux,stdout-path", vtyPath)
	t.PropertyString("stdout-path", vtyPath)
	if b.InitrdEnd > b.InitrdStart {
		t.PropertyU64("linux,initrd-start", b.InitrdStart)
		t.PropertyU64("linux,initrd-end", b.InitrdEnd)
	}
	t.EndNode()

	t.BeginNode("memory@0")
	t.PropertyString("device_type", "memory")
	var reg []uint64
	for _, r := range m.mem.Regions() {
		reg = append(reg, r.GPA, uint64(len(r.Host)))
	}
	t.PropertyU64("reg", reg...)
	t.EndNode()

	t.BeginNode("cpus")
	t.PropertyU32("#address-cells", 1)
	t.PropertyU32("#size-cells", 0)
	for _, c := range m.cpus {
		t.BeginNode(fmt.Sprintf("%s@%x", model, c.Server))
		t.PropertyString("device_type", "cpu")
		t.PropertyU32("reg", c.Server)
		t.PropertyU32("ibm,ppc-interrupt-server#s", c.Server)
		t.PropertyU32("cpu-version", pvr)
		t.PropertyU32("clock-frequency", DefaultClockHz)
		t.PropertyU32("timebase-frequency", DefaultTimebaseHz)
		// POWER8/9 L1 geometry: 128-byte blocks and lines, 32 KiB
		// caches; a 32-entry SLB. Linux sizes its cache flushes and
		// SLB handling from these.
		t.PropertyU32("d-cache-block-size", 128)
		t.PropertyU32("i-cache-block-size", 128)
		t.PropertyU32("d-cache-line-size", 128)
		t.PropertyU32("i-cache-line-size", 128)
		t.PropertyU32("d-cache-size", 0x8000)
		t.PropertyU32("i-cache-size", 0x8000)
		t.PropertyU32("ibm,slb-size", 32)
		// ibm,pft-size is <0, log2 of the hash page table's size>;
		// Linux reads the second cell. Left out when KVM gives the
		// guest no hash table (radix only, under nested HV).
		if b.HTABShift != 0 {
			t.PropertyU32("ibm,pft-size", 0, b.HTABShift)
		}
		t.PropertyString("status", "okay")
		t.EndNode()
	}
	t.EndNode()

	t.BeginNode("rtas")
	t.PropertyStrings("ibm,hypertas-functions", HypertasFunctions...)
	t.PropertyStrings("qemu,hypertas-functions", QemuHypertasFunctions...)
	for _, name := range RTASServiceNames() {
		tok, _ := RTASToken(name)
		t.PropertyU32(name, tok)
	}
	// The kernel finds the stub (loader.go) here and calls it at its
	// base in real mode; every service name above is a property whose
	// value is its token. rtas-error-log-max and rtas-event-scan-rate
	// (calls per minute Linux's rtasd makes) are QEMU's values.
	t.PropertyU32("rtas-size", b.RTASSize)
	t.PropertyU32("linux,rtas-base", uint32(b.RTASBase))
	t.PropertyU32("linux,rtas-entry", uint32(b.RTASBase))
	t.PropertyU32("rtas-error-log-max", 2048)
	t.PropertyU32("rtas-event-scan-rate", 1)
	t.EndNode()

	t.BeginNode("vdevice")
	t.PropertyString("device_type", "vdevice")
	t.PropertyString("compatible", "IBM,vdevice")
	t.PropertyU32("#address-cells", 1)
	t.PropertyU32("#size-cells", 0)
	t.BeginNode(fmt.Sprintf("vty@%x", VTYReg))
	t.PropertyString("name", "vty")
	t.PropertyString("device_type", "serial")
	t.PropertyString("compatible", "hvterm1")
	t.PropertyU32("reg", VTYReg)
	t.EndNode()
	t.BeginNode(fmt.Sprintf("nvram@%x", nvramReg))
	t.PropertyString("name", "nvram")
	t.PropertyString("device_type", "nvram")
	t.PropertyString("compatible", "qemu,spapr-nvram")
	t.PropertyU32("reg", nvramReg)
	t.PropertyU32("#bytes", uint32(m.nvram.Size()))
	t.EndNode()
	t.EndNode()

	// The PHB the RTAS PCI configuration services reach, with one 32-bit
	// memory window (PCI 0x80000000 at PHBMem32Base). No function behind
	// it has BARs yet, so nothing answers in the window: vmm's loop, which
	// has no MMIO bus for pseries, reads all ones there, like a master
	// abort.
	t.BeginNode(fmt.Sprintf("pci@%x", uint64(DefaultBUID)))
	t.PropertyString("device_type", "pci")
	t.PropertyString("compatible", "IBM,Logical_PHB")
	t.PropertyU64("reg", DefaultBUID, 0)
	t.PropertyU32("#address-cells", 3)
	t.PropertyU32("#size-cells", 2)
	t.PropertyU32("bus-range", 0, 0xff)
	t.PropertyU32("ranges",
		0x02000000, 0, PHBMem32PCIBase, // 32-bit memory space, PCI address
		uint32(PHBMem32Base>>32), uint32(PHBMem32Base&0xffffffff), // CPU address
		0, PHBMem32Size) // size
	t.PropertyU32("ibm,pci-config-space-type", 1)
	t.EndNode()

	t.EndNode()
	blob, err := t.Finish()
	if err != nil {
		return nil, fmt.Errorf("building pseries device tree: %w", err)
	}
	return blob, nil
}
