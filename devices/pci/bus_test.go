package pci

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

func cf8(b *Bus, slot, reg int) {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], 0x8000_0000|uint32(slot)<<11|uint32(reg&0xfc))
	b.Write(0xcf8, 0, a[:])
}

func cfgRead32(b *Bus, slot, reg int) uint32 {
	cf8(b, slot, reg)
	var d [4]byte
	b.Read(0xcf8, 4, d[:])
	return binary.LittleEndian.Uint32(d[:])
}

func cfgWrite32(b *Bus, slot, reg int, v uint32) {
	cf8(b, slot, reg)
	var d [4]byte
	binary.LittleEndian.PutUint32(d[:], v)
	b.Write(0xcf8, 4, d[:])
}

func TestBARAssignSizeMoveUnmap(t *testing.T) {
	h := newRecHost()
	b := NewBus(h)
	cfg := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1042, Class: 0x010000, InterruptPin: 1})
	must(t, cfg.SetBAR(0, BAR{Size: 0x4000, Is64: true, Handler: nullDev{}}))
	must(t, cfg.SetBAR(2, BAR{Size: 0x1000, Handler: nullDev{}}))
	must(t, cfg.SetBAR(4, BAR{Size: 0x20, IO: true, Handler: nullDev{}}))
	must(t, b.Add(3, &testDev{cfg}))

	if got := cfgRead32(b, 3, 0); got != 0x1042_1af4 {
		t.Fatalf("vendor/device = %#x", got)
	}
	if got := cfgRead32(b, 4, 0); got != 0xffff_ffff {
		t.Fatalf("absent slot reads %#x, want all ones", got)
	}
	bar0 := cfgRead32(b, 3, 0x10)
	if bar0&0xf != 4 || bar0&^0xf < 0xc000_0000 || bar0&0x3fff != 4 {
		t.Fatalf("BAR0 = %#x, want a 16 KiB aligned 64-bit BAR in the 32-bit window", bar0)
	}
	io := cfgRead32(b, 3, 0x20)
	if io&3 != 1 || io&^3 < 0xc000 || io&0x1f != 1 {
		t.Fatalf("BAR4 = %#x, want an aligned I/O BAR in the I/O window", io)
	}
	// Sizing: all ones reads back the size mask with the type bits.
	cfgWrite32(b, 3, 0x10, 0xffff_ffff)
	cfgWrite32(b, 3, 0x14, 0xffff_ffff)
	if lo, hi := cfgRead32(b, 3, 0x10), cfgRead32(b, 3, 0x14); lo != 0xffff_c004 || hi != 0xffff_ffff {
		t.Fatalf("64-bit sizing read %#x %#x", lo, hi)
	}
	cfgWrite32(b, 3, 0x20, 0xffff_ffff)
	if got := cfgRead32(b, 3, 0x20); got != 0xffff_ffe1 {
		t.Fatalf("I/O sizing read %#x", got)
	}
	if got := h.take(); len(got) != 0 {
		t.Fatalf("mapped with decoding off: %v", got)
	}
	// Program, enable decoding: both kinds map.
	cfgWrite32(b, 3, 0x10, 0xd000_0000)
	cfgWrite32(b, 3, 0x14, 0)
	cfgWrite32(b, 3, 0x20, 0xc100)
	cfgWrite32(b, 3, 4, CmdMemorySpace|CmdIOSpace)
	got := h.take()
	slices.Sort(got)
	bar2 := uint64(cfgRead32(b, 3, 0x18))
	want := []string{"map 3/0 0xd0000000+0x4000", fmt.Sprintf("map 3/2 %#x+0x1000", bar2), "map 3/4 0xc100+0x20"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("mappings %v, want %v", got, want)
	}
	// Move BAR0 above 4 GiB while decoding: unmap then map at the new place.
	cfgWrite32(b, 3, 0x14, 0x10)
	if got := h.take(); !slices.Equal(got, []string{"unmap 3/0 0xd0000000+0x4000", "map 3/0 0x10d0000000+0x4000"}) {
		t.Fatalf("move: %v", got)
	}
	// Disable memory decoding: memory BARs unmap, I/O stays.
	cfgWrite32(b, 3, 4, CmdIOSpace)
	got = h.take()
	slices.Sort(got)
	if len(got) != 2 || got[0] != "unmap 3/0 0x10d0000000+0x4000" {
		t.Fatalf("disable: %v", got)
	}
	must(t, b.Remove(3))
	if got := h.take(); !slices.Equal(got, []string{"unmap 3/4 0xc100+0x20"}) {
		t.Fatalf("remove: %v", got)
	}
	if got := cfgRead32(b, 3, 0); got != 0xffff_ffff {
		t.Fatalf("removed slot reads %#x", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
