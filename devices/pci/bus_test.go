package pci

import (
	"encoding/binary"
	"errors"
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
	b := NewBus(h, testWindows)
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

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type releasingDev struct {
	testDev
	released int
}

func (d *releasingDev) Release() error { d.released++; return nil }

func TestAssignmentWindows(t *testing.T) {
	h := newRecHost()
	b := NewBus(h, testWindows)
	ram := make([]byte, 128<<20)
	big := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1110, Class: 0x050000})
	must(t, big.SetBAR(0, BAR{Size: 0x100, Handler: nullDev{}}))
	must(t, big.SetBAR(1, BAR{Size: 0x1000, Handler: nullDev{}}))
	must(t, big.SetBAR(2, BAR{Size: 128 << 20, Is64: true, Prefetch: true, RAM: ram}))
	dev := &releasingDev{testDev: testDev{big}}
	must(t, b.Add(5, dev))
	if a := big.BARAddress(2); a < testWindows.Mem64.Base || a%(128<<20) != 0 {
		t.Fatalf("large prefetchable 64-bit BAR at %#x, want the 64-bit window, aligned", a)
	}
	// A second device's BARs avoid the first's.
	other := NewConfigSpace(Header{VendorID: 1})
	must(t, other.SetBAR(0, BAR{Size: 0x100, Handler: nullDev{}}))
	must(t, other.SetBAR(1, BAR{Size: 0x1000, Handler: nullDev{}}))
	must(t, b.Add(6, &testDev{other}))
	type rng struct{ a, e uint64 }
	var all []rng
	for _, c := range []*ConfigSpace{big, other} {
		for i := range NumBARs {
			if d := c.BARDef(i); d.Size != 0 {
				a := c.BARAddress(i)
				if a%d.Size != 0 || a < testWindows.Mem32.Base {
					t.Fatalf("BAR at %#x size %#x misplaced", a, d.Size)
				}
				for _, r := range all {
					if a < r.e && r.a < a+d.Size {
						t.Fatalf("BAR at %#x overlaps %#x", a, r.a)
					}
				}
				all = append(all, rng{a, a + d.Size})
			}
		}
	}
	// The RAM BAR maps with its memory.
	b.ConfigWrite(5, RegCommand, []byte{CmdMemorySpace, 0})
	if m, ok := h.active[big.BARAddress(2)]; !ok || len(m.RAM) != len(ram) || m.Handler != nil || !m.Prefetch {
		t.Fatalf("RAM BAR mapping %+v", m)
	}
	infos := b.Devices()
	if len(infos) != 2 || infos[0].Slot != 5 || infos[0].DeviceID != 0x1110 || infos[0].Class != 0x050000 ||
		len(infos[0].BARs) != 3 || !infos[0].BARs[2].Mapped || infos[0].BARs[2].Addr != big.BARAddress(2) ||
		!infos[0].BARs[2].Is64 || infos[1].BARs[0].Mapped {
		t.Fatalf("Devices() = %+v", infos)
	}
	// Hot-unplug: unmapped, released, slot free again.
	must(t, b.Remove(5))
	if dev.released != 1 || len(h.active) != 0 || b.Device(5) != nil || b.FreeSlot() != 1 {
		t.Fatalf("after remove: released %d active %v", dev.released, h.active)
	}
	if err := b.Remove(5); !errors.Is(err, ErrSlotEmpty) {
		t.Fatalf("second remove: %v", err)
	}
	if err := b.Add(6, &testDev{NewConfigSpace(Header{})}); !errors.Is(err, ErrSlotBusy) {
		t.Fatalf("busy slot: %v", err)
	}
	if err := b.Add(32, &testDev{NewConfigSpace(Header{})}); !errors.Is(err, ErrBadSlot) {
		t.Fatalf("slot 32: %v", err)
	}
	// Re-plug into the freed slot.
	must(t, b.Add(5, dev))
}

func TestWindowExhaustion(t *testing.T) {
	b := NewBus(newRecHost(), Windows{IO: Window{0xc000, 0x100}, Mem32: Window{0xc000_0000, 0x2000}})
	for i := 1; i <= 2; i++ {
		c := NewConfigSpace(Header{})
		must(t, c.SetBAR(0, BAR{Size: 0x1000, Handler: nullDev{}}))
		must(t, b.Add(i, &testDev{c}))
	}
	c := NewConfigSpace(Header{})
	must(t, c.SetBAR(0, BAR{Size: 0x1000, Handler: nullDev{}}))
	if err := b.Add(3, &testDev{c}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("full window: %v", err)
	}
	if b.Device(3) != nil {
		t.Fatal("device added despite the error")
	}
	must(t, b.Remove(1))
	must(t, b.Add(3, &testDev{c}))
}

func TestGuestBARPlacementErrors(t *testing.T) {
	h := newRecHost()
	b := NewBus(h, testWindows)
	for _, s := range []int{1, 2} {
		c := NewConfigSpace(Header{})
		must(t, c.SetBAR(0, BAR{Size: 0x1000, Handler: nullDev{}}))
		must(t, b.Add(s, &testDev{c}))
		b.ConfigWrite(s, RegCommand, []byte{CmdMemorySpace, 0})
	}
	a1 := b.Device(1).Config().BARAddress(0)
	// The guest moves slot 2's BAR onto slot 1's: the host refuses, the
	// BAR stays undecoded, the error is counted; moving it away maps it.
	cfgWrite32(b, 2, 0x10, uint32(a1))
	if b.MapErrors.Load() != 1 || len(h.active) != 1 {
		t.Fatalf("overlap: errors %d active %d", b.MapErrors.Load(), len(h.active))
	}
	cfgWrite32(b, 2, 0x10, 0xd000_0000)
	if _, ok := h.active[0xd000_0000]; !ok {
		t.Fatal("BAR not mapped after moving it to a free place")
	}
	// A 32-bit BAR at the top of the address space is not decoded.
	cfgWrite32(b, 2, 0x10, 0xffff_f000)
	if _, ok := h.active[0xffff_f000]; !ok {
		t.Fatal("BAR ending exactly at 4 GiB should decode")
	}
	cfgWrite32(b, 2, 0x10, 0)
	if len(h.active) != 1 {
		t.Fatal("BAR at address 0 decoded")
	}
}

func TestResetControl(t *testing.T) {
	b := NewBus(newRecHost(), testWindows)
	n := 0
	b.SetResetHandler(func() { n++; b.Devices() }) // may use the bus
	b.Write(0xcf8, 1, []byte{0x02})
	b.Write(0xcf8, 1, []byte{0x06})
	if n != 1 {
		t.Fatalf("reset handler called %d times", n)
	}
}

func TestHostBridge(t *testing.T) {
	b := NewBus(newRecHost(), testWindows)
	must(t, b.Add(0, NewHostBridge()))
	if got := cfgRead32(b, 0, 8) >> 8; got != ClassHostBridge {
		t.Fatalf("class %#x", got)
	}
}

type resettingDev struct {
	testDev
	resets int
}

func (d *resettingDev) Reset() { d.resets++ }

func TestBusReset(t *testing.T) {
	h := newRecHost()
	b := NewBus(h, testWindows)
	cfg := NewConfigSpace(Header{VendorID: 1})
	must(t, cfg.SetBAR(0, BAR{Size: 0x1000, Handler: nullDev{}}))
	m, err := NewMSIX(cfg, MSIXConfig{Vectors: 2, TableBAR: 0, PBABAR: 0, PBAOffset: 0x800, Signaler: &recSignaler{}})
	must(t, err)
	dev := &resettingDev{testDev: testDev{cfg}}
	must(t, b.Add(1, dev))
	orig := cfg.BARAddress(0)
	cfgWrite32(b, 1, 0x10, 0xd000_0000)
	cfgWrite32(b, 1, 4, CmdMemorySpace|CmdBusMaster)
	cfgWrite32(b, 1, 0x3c, 0x0b)
	m.Write(0, 0x1c, []byte{0, 0, 0, 0}) // unmask vector 1
	msgCtl(cfg, m, 0xc000)
	m.Notify(1)
	h.take()
	b.Reset()
	m.Reset()
	if got := h.take(); len(got) != 1 || got[0] != "unmap 1/0 0xd0000000+0x1000" {
		t.Fatalf("reset mappings: %v", got)
	}
	if cfg.BARAddress(0) != orig || cfg.Command() != 0 || cfg.Uint8(RegInterruptLine) != 0 || dev.resets != 1 {
		t.Fatalf("after reset: BAR %#x command %#x line %d resets %d", cfg.BARAddress(0), cfg.Command(),
			cfg.Uint8(RegInterruptLine), dev.resets)
	}
	if m.Enabled() || !m.Masked(0) || !m.Masked(1) || m.Pending(1) || cfg.Uint16(m.CapOffset()+2) != 1 {
		t.Fatal("MSI-X not back to its power-on state")
	}
}
