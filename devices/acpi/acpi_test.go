package acpi

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/vmm"
)

// recLine records SCI level changes.
type recLine struct {
	mu     sync.Mutex
	levels []bool
}

func (l *recLine) SetLevel(a bool) {
	l.mu.Lock()
	l.levels = append(l.levels, a)
	l.mu.Unlock()
}

func (l *recLine) last() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.levels) == 0 {
		return false, 0
	}
	return l.levels[len(l.levels)-1], len(l.levels)
}

// Both devices must be usable on a vmm.Bus.
var (
	_ vmm.BusDevice = (*GPE)(nil)
	_ vmm.BusDevice = (*Hotplug)(nil)
)

func newBus(t *testing.T, eject func(int)) (*vmm.Bus, *GPE, *Hotplug, *recLine) {
	t.Helper()
	line := &recLine{}
	g := NewGPE(line)
	h, err := NewHotplug(g, 0xfffffffe, eject)
	if err != nil {
		t.Fatal(err)
	}
	var bus vmm.Bus
	if err := bus.Insert(GPE0Base, GPE0Len, g); err != nil {
		t.Fatal(err)
	}
	if err := bus.Insert(HotplugBase, HotplugLen, h); err != nil {
		t.Fatal(err)
	}
	return &bus, g, h, line
}

func inb(b *vmm.Bus, port uint64) byte {
	d := []byte{0}
	b.Read(port, d)
	return d[0]
}

func outb(b *vmm.Bus, port uint64, v byte) { b.Write(port, []byte{v}) }

func inl(b *vmm.Bus, port uint64) uint32 {
	d := make([]byte, 4)
	b.Read(port, d)
	return binary.LittleEndian.Uint32(d)
}

func outl(b *vmm.Bus, port uint64, v uint32) {
	d := make([]byte, 4)
	binary.LittleEndian.PutUint32(d, v)
	b.Write(port, d)
}

func TestGPEStatusEnableAndSCI(t *testing.T) {
	bus, g, _, line := newBus(t, nil)
	for i := uint64(0); i < GPE0Len; i++ {
		if v := inb(bus, GPE0Base+i); v != 0 {
			t.Fatalf("reset value of %#x = %#x, want 0", GPE0Base+i, v)
		}
	}
	g.Raise(GPEPowerButton)
	if v := inb(bus, GPE0Base); v != 1<<GPEPowerButton {
		t.Fatalf("status after power button = %#x", v)
	}
	if _, n := line.last(); n != 0 {
		t.Fatal("SCI asserted while the bit is disabled")
	}
	outb(bus, GPE0Base+2, 1<<GPEPowerButton) // enable
	if v := inb(bus, GPE0Base+2); v != 1<<GPEPowerButton {
		t.Fatalf("enable read back %#x", v)
	}
	if lv, _ := line.last(); !lv || !g.Asserted() {
		t.Fatal("SCI not asserted with status&enable != 0")
	}
	// Writing 0 to status clears nothing; writing another bit neither.
	outb(bus, GPE0Base, 0)
	outb(bus, GPE0Base, 1<<GPEPCIHotplug)
	if v := inb(bus, GPE0Base); v != 1<<GPEPowerButton {
		t.Fatalf("status changed by writing other bits: %#x", v)
	}
	outb(bus, GPE0Base, 1<<GPEPowerButton) // write 1 to clear
	if v := inb(bus, GPE0Base); v != 0 {
		t.Fatalf("status after clear = %#x", v)
	}
	if lv, n := line.last(); lv || n != 2 {
		t.Fatalf("SCI after clear: level %v after %d changes, want deasserted after 2", lv, n)
	}
	// Disabling with status pending deasserts; re-enabling reasserts.
	g.Raise(GPEPowerButton)
	outb(bus, GPE0Base+2, 0)
	if g.Asserted() {
		t.Fatal("SCI asserted with enable cleared")
	}
	outb(bus, GPE0Base+2, 0xff)
	if !g.Asserted() {
		t.Fatal("SCI not reasserted on enable")
	}
	// High byte: bit 9 lives in status byte 1 and enable byte 3.
	g.Raise(9)
	if v := inb(bus, GPE0Base+1); v != 2 {
		t.Fatalf("status byte 1 = %#x, want 2", v)
	}
	outb(bus, GPE0Base+3, 0x02)
	if s, e := g.Status(); s != 1<<9|1<<GPEPowerButton || e != 0x02ff {
		t.Fatalf("status/enable = %#x/%#x", s, e)
	}
}

func TestGPEBadAccesses(t *testing.T) {
	_, g, _, _ := newBus(t, nil)
	g.Raise(GPEPCIHotplug)
	for _, width := range []int{2, 4, 8} {
		for off := uint64(0); off < GPE0Len; off++ {
			d := make([]byte, width)
			g.Read(GPE0Base, off, d)
			for _, b := range d {
				if b != 0xff {
					t.Fatalf("width %d offset %d read %x, want all 0xff", width, off, d)
				}
			}
			for i := range d {
				d[i] = 0xff
			}
			g.Write(GPE0Base, off, d)
		}
	}
	d := []byte{0xff}
	g.Write(GPE0Base, 4, d) // outside the block
	g.Read(GPE0Base, 7, d)
	if d[0] != 0xff {
		t.Fatal("read outside the block did not return 0xff")
	}
	g.Raise(GPEBits) // no such bit
	if s, e := g.Status(); s != 1<<GPEPCIHotplug || e != 0 {
		t.Fatalf("bad accesses changed state: %#x/%#x", s, e)
	}
	if n := g.BadAccesses.Load(); n != 3*GPE0Len*2+3 {
		t.Fatalf("BadAccesses = %d, want %d", n, 3*GPE0Len*2+3)
	}
}

func TestHotplugPlugUnplugEject(t *testing.T) {
	var ejected []int
	bus, g, h, _ := newBus(t, func(s int) { ejected = append(ejected, s) })
	if v := inl(bus, HotplugBase+HotplugRemovableOffset); v != 0xfffffffe {
		t.Fatalf("removable = %#x", v)
	}
	if v := inl(bus, HotplugBase+HotplugEjectOffset); v != 0 {
		t.Fatalf("feature set = %#x, want 0", v)
	}
	if err := h.Plug(3); err != nil {
		t.Fatal(err)
	}
	if s, _ := g.Status(); s != 1<<GPEPCIHotplug {
		t.Fatalf("GPE status after plug = %#x", s)
	}
	// Reads do not clear (PIIX4 behaviour): read twice.
	for i := 0; i < 2; i++ {
		if v := inl(bus, HotplugBase+HotplugUpOffset); v != 1<<3 {
			t.Fatalf("read %d of up = %#x, want %#x", i, v, 1<<3)
		}
	}
	outb(bus, GPE0Base, 1<<GPEPCIHotplug)
	if err := h.Unplug(3); err != nil {
		t.Fatal(err)
	}
	if err := h.Unplug(5); err != nil {
		t.Fatal(err)
	}
	if v := inl(bus, HotplugBase+HotplugDownOffset); v != 1<<3|1<<5 {
		t.Fatalf("down = %#x", v)
	}
	if s, _ := g.Status(); s != 1<<GPEPCIHotplug {
		t.Fatalf("GPE status after unplug = %#x", s)
	}
	// Writes to read-only registers are ignored.
	outl(bus, HotplugBase+HotplugUpOffset, 0)
	outl(bus, HotplugBase+HotplugDownOffset, 0)
	outl(bus, HotplugBase+HotplugRemovableOffset, 0)
	if up, down := h.Pending(); up != 1<<3 || down != 1<<3|1<<5 {
		t.Fatalf("read-only registers changed: up %#x down %#x", up, down)
	}
	// The guest ejects slot 3: callback, both bits of slot 3 clear, slot 5 stays.
	outl(bus, HotplugBase+HotplugEjectOffset, 1<<3)
	if len(ejected) != 1 || ejected[0] != 3 {
		t.Fatalf("ejected %v, want [3]", ejected)
	}
	if up, down := h.Pending(); up != 0 || down != 1<<5 {
		t.Fatalf("after eject: up %#x down %#x", up, down)
	}
	// Several bits at once, in slot order.
	outl(bus, HotplugBase+HotplugEjectOffset, 1<<31|1<<5)
	if len(ejected) != 3 || ejected[1] != 5 || ejected[2] != 31 {
		t.Fatalf("ejected %v, want [3 5 31]", ejected)
	}
	if bad := h.BadAccesses.Load(); bad != 3 {
		t.Fatalf("BadAccesses = %d, want 3", bad)
	}
}

func TestHotplugFixedSlots(t *testing.T) {
	var ejected []int
	g := NewGPE(nil)
	if _, err := NewHotplug(g, 1, nil); !errors.Is(err, ErrSlotNotHotpluggable) {
		t.Fatalf("slot 0 hot-pluggable accepted: %v", err)
	}
	if _, err := NewHotplug(nil, 2, nil); err == nil {
		t.Fatal("nil GPE accepted")
	}
	h, err := NewHotplug(g, 1<<4, func(s int) { ejected = append(ejected, s) })
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{-1, 0, 3, 5, 32, 1000} {
		if err := h.Plug(s); !errors.Is(err, ErrSlotNotHotpluggable) {
			t.Errorf("Plug(%d) = %v", s, err)
		}
		if err := h.Unplug(s); !errors.Is(err, ErrSlotNotHotpluggable) {
			t.Errorf("Unplug(%d) = %v", s, err)
		}
	}
	if s, _ := g.Status(); s != 0 {
		t.Fatalf("refused plug raised GPE: %#x", s)
	}
	d := make([]byte, 4)
	binary.LittleEndian.PutUint32(d, 0xffffffff)
	h.Write(HotplugBase, HotplugEjectOffset, d)
	if len(ejected) != 1 || ejected[0] != 4 {
		t.Fatalf("eject of all bits ejected %v, want only hot-pluggable slot 4", ejected)
	}
	if h.BadAccesses.Load() != 1 {
		t.Fatalf("eject of fixed slots not counted")
	}
}

func TestHotplugBadWidthsAndOffsets(t *testing.T) {
	var ejected []int
	_, _, h, _ := newBus(t, func(s int) { ejected = append(ejected, s) })
	if err := h.Plug(7); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, width := range []int{1, 2, 8} {
		for off := uint64(0); off < HotplugLen; off++ {
			d := make([]byte, width)
			h.Read(HotplugBase, off, d)
			for _, b := range d {
				if b != 0xff {
					t.Fatalf("width %d offset %d read %x, want all 0xff", width, off, d)
				}
			}
			for i := range d {
				d[i] = 0xff
			}
			h.Write(HotplugBase, off, d)
			n += 2
		}
	}
	for _, off := range []uint64{1, 2, 3, 5, 9, 13, 16, 20} { // misaligned or outside
		d := []byte{0xff, 0xff, 0xff, 0xff}
		h.Read(HotplugBase, off, d)
		if binary.LittleEndian.Uint32(d) != 0xffffffff {
			t.Fatalf("offset %d read %x", off, d)
		}
		h.Write(HotplugBase, off, d)
		n += 2
	}
	if len(ejected) != 0 {
		t.Fatalf("odd accesses ejected %v", ejected)
	}
	if up, down := h.Pending(); up != 1<<7 || down != 0 {
		t.Fatalf("odd accesses changed state: up %#x down %#x", up, down)
	}
	if got := h.BadAccesses.Load(); got != uint64(n) {
		t.Fatalf("BadAccesses = %d, want %d", got, n)
	}
}

// The eject callback may plug a new device into the slot it just released.
func TestHotplugEjectCallbackMayPlug(t *testing.T) {
	var h *Hotplug
	g := NewGPE(nil)
	h, err := NewHotplug(g, 1<<2, func(s int) {
		if err := h.Plug(s); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	d := []byte{4, 0, 0, 0}
	h.Write(HotplugBase, HotplugEjectOffset, d)
	if up, _ := h.Pending(); up != 1<<2 {
		t.Fatalf("up = %#x after re-plug from callback", up)
	}
}

func TestPowerButton(t *testing.T) {
	line := &recLine{}
	g := NewGPE(line)
	g.Write(GPE0Base, 2, []byte{1 << GPEPowerButton})
	g.PressPowerButton()
	if lv, _ := line.last(); !lv {
		t.Fatal("power button did not assert the SCI")
	}
	d := []byte{0}
	g.Read(GPE0Base, 0, d)
	if d[0] != 1<<GPEPowerButton {
		t.Fatalf("status = %#x", d[0])
	}
}

func TestReset(t *testing.T) {
	line := &recLine{}
	g := NewGPE(line)
	h, err := NewHotplug(g, 0xfffffffe, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Write(GPE0Base, 2, []byte{0xff})
	if err := h.Plug(4); err != nil {
		t.Fatal(err)
	}
	if err := h.Unplug(6); err != nil {
		t.Fatal(err)
	}
	if !g.Asserted() {
		t.Fatal("SCI not asserted before reset")
	}
	h.Reset()
	g.Reset()
	if s, e := g.Status(); s != 0 || e != 0 || g.Asserted() {
		t.Fatalf("after reset: status %#x enable %#x SCI %v", s, e, g.Asserted())
	}
	if lv, _ := line.last(); lv {
		t.Fatal("SCI line still asserted after reset")
	}
	if up, down := h.Pending(); up|down != 0 {
		t.Fatalf("after reset: up %#x down %#x", up, down)
	}
	if h.Removable() != 0xfffffffe {
		t.Fatal("reset changed the removable slots")
	}
}
