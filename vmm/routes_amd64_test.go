package vmm

import (
	"encoding/binary"
	"testing"
)

func TestEncodeRoutesKeepsDefaultPins(t *testing.T) {
	vm := &VM{}
	vm.initArch()
	vm.irqchip = true
	// Same default table CreateIRQChip records.
	for gsi := uint32(0); gsi < ioapicPins; gsi++ {
		vm.routes[gsi] = defaultRoute(gsi)
	}
	vm.routes[24] = route{msi: true, addr: 0x1_fee0_1000, data: 0x4041}
	b := encodeRoutes(vm.routes)
	le := binary.LittleEndian
	n := int(le.Uint32(b))
	if n != 16*2+8+1 || len(b) != 8+n*routingEntrySize {
		t.Fatalf("%d entries in %d bytes, want 41", n, len(b))
	}
	entry := func(i int) []byte { return b[8+i*routingEntrySize:] }
	// GSI 0: PIC master pin 0 then IOAPIC pin 0.
	if e := entry(0); le.Uint32(e) != 0 || le.Uint32(e[4:]) != routeIRQChip || le.Uint32(e[16:]) != irqchipPICMaster {
		t.Fatalf("entry 0 = %x", e[:24])
	}
	if e := entry(1); le.Uint32(e[16:]) != irqchipIOAPIC || le.Uint32(e[20:]) != 0 {
		t.Fatalf("entry 1 = %x", e[:24])
	}
	last := entry(n - 1)
	if le.Uint32(last) != 24 || le.Uint32(last[4:]) != routeMSI || le.Uint32(last[16:]) != 0xfee01000 ||
		le.Uint32(last[20:]) != 1 || le.Uint32(last[24:]) != 0x4041 {
		t.Fatalf("msi entry = %x", last[:32])
	}
}
