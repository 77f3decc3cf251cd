package vmm

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// CPUIDEntry mirrors struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
	_                      [3]uint32
}

// cpuidFlagSignificantIndex marks leaves whose subleaf (Index) matters.
const cpuidFlagSignificantIndex = 1

const (
	cpuidEntrySize  = 40
	maxCPUIDEntries = 256
)

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID.
func (k *KVM) SupportedCPUID() ([]CPUIDEntry, error) {
	b := make([]byte, 8+maxCPUIDEntries*cpuidEntrySize)
	binary.LittleEndian.PutUint32(b, maxCPUIDEntries)
	if _, err := ioctlBytes(k.fd, ioctlGetSupportedCPUID, b); err != nil {
		return nil, fmt.Errorf("getting supported cpuid: %w", err)
	}
	return decodeCPUID(b)
}

// SetCPUID installs entries on the vCPU (KVM_SET_CPUID2).
func (v *VCPU) SetCPUID(es []CPUIDEntry) error {
	b := make([]byte, 8+len(es)*cpuidEntrySize)
	binary.LittleEndian.PutUint32(b, uint32(len(es)))
	for i, e := range es {
		o := b[8+i*cpuidEntrySize:]
		for j, x := range []uint32{e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX} {
			binary.LittleEndian.PutUint32(o[4*j:], x)
		}
	}
	if _, err := ioctlBytes(v.fd, ioctlSetCPUID2, b); err != nil {
		return fmt.Errorf("vcpu %d: setting cpuid (%d entries): %w", v.ID, len(es), err)
	}
	return nil
}

// CPUID reads back the vCPU's CPUID table (KVM_GET_CPUID2). A host may
// override entries it set: kvm_pvm forces leaf 1 and 7 bits outside its
// supported mask to the host's values, because its guests' CPL3 code
// executes CPUID natively.
func (v *VCPU) CPUID() ([]CPUIDEntry, error) {
	b := make([]byte, 8+maxCPUIDEntries*cpuidEntrySize)
	binary.LittleEndian.PutUint32(b, maxCPUIDEntries)
	if _, err := ioctlBytes(v.fd, ioctlGetCPUID2, b); err != nil {
		return nil, fmt.Errorf("vcpu %d: reading cpuid: %w", v.ID, err)
	}
	return decodeCPUID(b)
}

func decodeCPUID(b []byte) ([]CPUIDEntry, error) {
	n := binary.LittleEndian.Uint32(b)
	if n > maxCPUIDEntries {
		return nil, fmt.Errorf("cpuid: kernel returned %d entries", n)
	}
	es := make([]CPUIDEntry, n)
	for i := range es {
		o := b[8+i*cpuidEntrySize:]
		u := func(j int) uint32 { return binary.LittleEndian.Uint32(o[4*j:]) }
		es[i] = CPUIDEntry{Function: u(0), Index: u(1), Flags: u(2), EAX: u(3), EBX: u(4), ECX: u(5), EDX: u(6)}
	}
	return es, nil
}

// HasFeature reports whether the named feature is set in es.
func HasFeature(es []CPUIDEntry, name string) bool {
	f, ok := Features[name]
	if !ok {
		return false
	}
	for i := range es {
		e := &es[i]
		if e.Function == f.Leaf && (e.Flags&cpuidFlagSignificantIndex == 0 || e.Index == f.Subleaf) {
			return *e.reg(f.Reg)&(1<<f.Bit) != 0
		}
	}
	return false
}

// Overridden lists the features whose state in got differs from want:
// what the host changed after KVM_SET_CPUID2.
func Overridden(want, got []CPUIDEntry) []string {
	var out []string
	for _, n := range sortedFeatureNames() {
		if HasFeature(want, n) != HasFeature(got, n) {
			out = append(out, n)
		}
	}
	return out
}

func sortedFeatureNames() []string {
	ns := make([]string, 0, len(Features))
	for n := range Features {
		ns = append(ns, n)
	}
	sortStrings(ns)
	return ns
}

// cpuidReg names a register of a CPUID leaf.
type cpuidReg int

const (
	regEAX cpuidReg = iota
	regEBX
	regECX
	regEDX
)

// Feature is one named CPUID feature bit.
type Feature struct {
	Leaf, Subleaf uint32
	Reg           cpuidReg
	Bit           uint
}

// Features are the names -cpu host,+name,-name accepts (Linux
// /proc/cpuinfo spelling).
var Features = map[string]Feature{
	"sse3":         {1, 0, regECX, 0},
	"pclmulqdq":    {1, 0, regECX, 1},
	"ssse3":        {1, 0, regECX, 9},
	"fma":          {1, 0, regECX, 12},
	"cx16":         {1, 0, regECX, 13},
	"pcid":         {1, 0, regECX, 17},
	"sse4_1":       {1, 0, regECX, 19},
	"sse4_2":       {1, 0, regECX, 20},
	"x2apic":       {1, 0, regECX, 21},
	"movbe":        {1, 0, regECX, 22},
	"popcnt":       {1, 0, regECX, 23},
	"tsc-deadline": {1, 0, regECX, 24},
	"aes":          {1, 0, regECX, 25},
	"xsave":        {1, 0, regECX, 26},
	"osxsave":      {1, 0, regECX, 27},
	"avx":          {1, 0, regECX, 28},
	"f16c":         {1, 0, regECX, 29},
	"rdrand":       {1, 0, regECX, 30},
	"hypervisor":   {1, 0, regECX, 31},
	"fsgsbase":     {7, 0, regEBX, 0},
	"bmi1":         {7, 0, regEBX, 3},
	"avx2":         {7, 0, regEBX, 5},
	"smep":         {7, 0, regEBX, 7},
	"bmi2":         {7, 0, regEBX, 8},
	"erms":         {7, 0, regEBX, 9},
	"invpcid":      {7, 0, regEBX, 10},
	"avx512f":      {7, 0, regEBX, 16},
	"rdseed":       {7, 0, regEBX, 18},
	"adx":          {7, 0, regEBX, 19},
	"smap":         {7, 0, regEBX, 20},
	"pku":          {7, 0, regECX, 3},
	"umip":         {7, 0, regECX, 2},
	"la57":         {7, 0, regECX, 16},
	"rdpid":        {7, 0, regECX, 22},
	"pdpe1gb":      {0x80000001, 0, regEDX, 26},
	"rdtscp":       {0x80000001, 0, regEDX, 27},
	"lahf_lm":      {0x80000001, 0, regECX, 0},
	"abm":          {0x80000001, 0, regECX, 5},
}

// xsaveDependents are hidden with xsave: they need XSAVE-managed state.
var xsaveDependents = []string{"osxsave", "avx", "fma", "f16c", "avx2", "avx512f", "pku"}

// CPUIDConfig describes how the guest CPUID is derived from the host's.
type CPUIDConfig struct {
	CPUs int
	// PVM hides what kvm_pvm cannot execute at CPL0 (cx16, xsave family).
	PVM bool
	// Set and Clear force named features on or off (applied last).
	Set, Clear []string
	// Brand is the processor brand string for a host whose supported
	// CPUID has none (HostBrand; DefaultBrand when empty).
	Brand string
}

// ParseCPUFlag parses "-cpu host[,+feat,-feat,feat=on|off]" into Set and
// Clear lists.
func ParseCPUFlag(s string) (set, clear []string, err error) {
	parts := strings.Split(s, ",")
	if parts[0] != "host" && parts[0] != "max" {
		return nil, nil, fmt.Errorf("cpu model %q: only host (or max) is supported", parts[0])
	}
	for _, p := range parts[1:] {
		name, on := p, true
		switch {
		case strings.HasPrefix(p, "+"):
			name = p[1:]
		case strings.HasPrefix(p, "-"):
			name, on = p[1:], false
		case strings.HasSuffix(p, "=on"):
			name = strings.TrimSuffix(p, "=on")
		case strings.HasSuffix(p, "=off"):
			name, on = strings.TrimSuffix(p, "=off"), false
		}
		name = strings.ReplaceAll(name, ".", "_")
		if _, ok := Features[name]; !ok {
			if n2 := strings.ReplaceAll(name, "-", "_"); Features[n2] != (Feature{}) {
				name = n2
			} else {
				return nil, nil, fmt.Errorf("cpu feature %q: unknown (known: %s)", name, knownFeatures())
			}
		}
		if on {
			set = append(set, name)
		} else {
			clear = append(clear, name)
		}
	}
	return set, clear, nil
}

func knownFeatures() string { return strings.Join(sortedFeatureNames(), " ") }

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func (e *CPUIDEntry) reg(r cpuidReg) *uint32 {
	switch r {
	case regEAX:
		return &e.EAX
	case regEBX:
		return &e.EBX
	case regECX:
		return &e.ECX
	}
	return &e.EDX
}

func setFeature(es []CPUIDEntry, f Feature, on bool) {
	for i := range es {
		e := &es[i]
		if e.Function != f.Leaf || (e.Flags&cpuidFlagSignificantIndex != 0 && e.Index != f.Subleaf) {
			continue
		}
		if on {
			*e.reg(f.Reg) |= 1 << f.Bit
		} else {
			*e.reg(f.Reg) &^= 1 << f.Bit
		}
	}
}

// GuestCPUID derives vCPU id's CPUID from the host-supported entries:
// hypervisor bit, APIC ids, leaf 0xB topology (one thread per core, CPUs
// cores), kvm_pvm restrictions, then the user's +/- features. host is not
// modified.
func GuestCPUID(host []CPUIDEntry, id int, c CPUIDConfig) []CPUIDEntry {
	cpus := c.CPUs
	if cpus < 1 {
		cpus = 1
	}
	es := make([]CPUIDEntry, 0, len(host)+2)
	hideXsave := c.PVM
	for _, n := range c.Clear {
		if n == "xsave" {
			hideXsave = true
		}
	}
	for _, n := range c.Set {
		if n == "xsave" {
			hideXsave = false
		}
	}
	for _, e := range host {
		if e.Function == 0xd && hideXsave {
			continue // no XSAVE state components without XSAVE
		}
		if e.Function == 0xb || e.Function == 0x1f {
			continue // topology: 0xB is rebuilt below, 0x1F (v2) left out
		}
		es = append(es, e)
	}
	// Core-level shift: bits needed for cpus APIC ids.
	shift := uint32(0)
	for (1 << shift) < cpus {
		shift++
	}
	for _, sub := range []uint32{0, 1} {
		e := CPUIDEntry{Function: 0xb, Index: sub, Flags: cpuidFlagSignificantIndex, EDX: uint32(id)}
		if sub == 0 { // SMT level: one thread per core
			e.EAX, e.EBX, e.ECX = 0, 1, 1<<8|sub
		} else { // core level
			e.EAX, e.EBX, e.ECX = shift, uint32(cpus), 2<<8|sub
		}
		es = append(es, e)
	}
	for i := range es {
		e := &es[i]
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x0000ffff | uint32(id)<<24 | uint32(cpus&0xff)<<16
			e.ECX |= 1 << 31 // hypervisor
			if cpus > 1 {
				e.EDX |= 1 << 28 // HTT: EBX[23:16] is valid
			}
		case 4:
			// Cores per package minus one in EAX[31:26].
			e.EAX = e.EAX&0x03ffffff | uint32((cpus-1)&0x3f)<<26
		case 0x80000008:
			// AMD: cores per package minus one in ECX[7:0], APIC id bits
			// for the core in ECX[15:12].
			e.ECX = e.ECX&^0xf0ff | uint32((cpus-1)&0xff) | shift<<12
		}
	}
	if c.PVM {
		setFeature(es, Features["cx16"], false)
	}
	if hideXsave {
		setFeature(es, Features["xsave"], false)
		for _, n := range xsaveDependents {
			setFeature(es, Features[n], false)
		}
	}
	for _, n := range c.Clear {
		setFeature(es, Features[n], false)
	}
	for _, n := range c.Set {
		setFeature(es, Features[n], true)
	}
	brand := c.Brand
	if brand == "" {
		brand = DefaultBrand
	}
	return withBrand(es, brand)
}

// Vendor is the CPU vendor string of leaf 0 ("GenuineIntel",
// "AuthenticAMD", ...), or "" when es has no leaf 0. In
// KVM_GET_SUPPORTED_CPUID it is the host's.
func Vendor(es []CPUIDEntry) string {
	for _, e := range es {
		if e.Function == 0 {
			var b []byte
			for _, r := range []uint32{e.EBX, e.EDX, e.ECX} {
				b = binary.LittleEndian.AppendUint32(b, r)
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// ShutdownResetsVCPU reports whether KVM resets a vCPU before it returns
// KVM_EXIT_SHUTDOWN, so that its registers then read as the reset state
// (rip 0xfff0, cs 0xf000) rather than where the triple fault happened.
// KVM's SVM code (AMD, Hygon) does: the VMCB is undefined after a
// shutdown intercept, so it re-initialises it. VMX (Intel) leaves the
// registers as they were at the fault; kvm_pvm uses neither.
func ShutdownResetsVCPU(host []CPUIDEntry, pvm bool) bool {
	v := Vendor(host)
	return !pvm && (v == "AuthenticAMD" || v == "HygonGenuine")
}
