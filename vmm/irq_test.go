package vmm

import (
	"encoding/binary"
	"testing"
)

func TestEncodeRoutesKeepsDefaultPins(t *testing.T) {
	vm := &VM{routes: map[uint32]route{}}
	vm.irqchip = true
	// Same default table CreateIRQChip records.
	for gsi := uint32(0); gsi < ioapicPins; gsi++ {
		r := route{}
		if gsi < 8 {
			r.pins[r.npins] = [2]uint32{irqchipPICMaster, gsi}
			r.npins++
		} else if gsi < 16 {
			r.pins[r.npins] = [2]uint32{irqchipPICSlave, gsi - 8}
			r.npins++
		}
		r.pins[r.npins] = [2]uint32{irqchipIOAPIC, gsi}
		r.npins++
		vm.routes[gsi] = r
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

func TestIoeventfdArg(t *testing.T) {
	v := uint64(7)
	a, err := ioeventfdArg(5, 0xc010, 2, true, &v)
	if err != nil || a.Flags != ioeventfdPIO|ioeventfdDatamatch || a.Datamatch != 7 || a.Len != 2 || a.FD != 5 {
		t.Fatalf("%+v, %v", a, err)
	}
	if _, err := ioeventfdArg(5, 0, 3, false, nil); err == nil {
		t.Fatal("size 3 accepted")
	}
	if _, err := ioeventfdArg(5, 0, 0, false, &v); err == nil {
		t.Fatal("datamatch with size 0 accepted")
	}
}
