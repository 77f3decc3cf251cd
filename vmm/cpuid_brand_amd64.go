package vmm

import (
	"bufio"
	"encoding/binary"
	"os"
	"strings"
)

// DefaultBrand is the processor brand string a guest sees when the host's
// cannot be read.
const DefaultBrand = "Petrel virtual CPU"

// HostBrand is the host processor's brand string (/proc/cpuinfo "model
// name"), or DefaultBrand. KVM_GET_SUPPORTED_CPUID leaves leaves
// 0x80000002-0x80000004 to the VMM (QEMU's -cpu host copies the host's,
// as this does), and Linux shows an empty "model name" without them.
func HostBrand() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return DefaultBrand
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			if v = strings.TrimSpace(v); v != "" {
				return v
			}
		}
	}
	return DefaultBrand
}

// Brand decodes the brand string of leaves 0x80000002-0x80000004.
func Brand(es []CPUIDEntry) string {
	var b []byte
	for leaf := uint32(0x80000002); leaf <= 0x80000004; leaf++ {
		for _, e := range es {
			if e.Function == leaf {
				b = binary.LittleEndian.AppendUint32(b, e.EAX)
				b = binary.LittleEndian.AppendUint32(b, e.EBX)
				b = binary.LittleEndian.AppendUint32(b, e.ECX)
				b = binary.LittleEndian.AppendUint32(b, e.EDX)
			}
		}
	}
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// withBrand gives es the brand string brand (at most 47 bytes and a NUL)
// unless it has one, adding the three leaves and raising the maximum
// extended leaf (0x80000000 EAX) to reach them.
func withBrand(es []CPUIDEntry, brand string) []CPUIDEntry {
	if Brand(es) != "" {
		return es
	}
	var b [48]byte
	copy(b[:47], brand)
	le := binary.LittleEndian
	for i := 0; i < 3; i++ {
		leaf := uint32(0x80000002 + i)
		w := b[16*i:]
		e := CPUIDEntry{Function: leaf, EAX: le.Uint32(w), EBX: le.Uint32(w[4:]), ECX: le.Uint32(w[8:]), EDX: le.Uint32(w[12:])}
		found := false
		for j := range es {
			if es[j].Function == leaf {
				es[j], found = e, true
			}
		}
		if !found {
			es = append(es, e)
		}
	}
	found := false
	for j := range es {
		if es[j].Function == 0x80000000 {
			es[j].EAX = max(es[j].EAX, 0x80000004)
			found = true
		}
	}
	if !found {
		es = append(es, CPUIDEntry{Function: 0x80000000, EAX: 0x80000004})
	}
	return es
}
