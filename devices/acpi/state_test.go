package acpi

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil/statetest"
	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmstate"
)

var (
	save = statetest.Save
	load = statetest.Load
)

// busyBus is the GPE block and hotplug controller with a guest's state:
// GPE bits 1, 2, 9 and 15 enabled, the power button handled (its status
// cleared), a hotplug event pending (GPE.1 raised, the SCI up) for two
// insertions and a removal request.
func busyBus(t *testing.T) (*vmm.Bus, *GPE, *Hotplug, *recLine) {
	bus, g, h, line := newBus(t, nil)
	if err := makeBusy(g, h); err != nil {
		t.Fatal(err)
	}
	return bus, g, h, line
}

func makeBusy(g *GPE, h *Hotplug) error {
	g.Write(GPE0Base, 2, []byte{1<<GPEPCIHotplug | 1<<GPEPowerButton})
	g.Write(GPE0Base, 3, []byte{0x82})
	g.PressPowerButton()
	g.Write(GPE0Base, 0, []byte{1 << GPEPowerButton})
	return errors.Join(h.Plug(3), h.Plug(5), h.Unplug(7))
}

// readAll reads every GPE byte and hotplug register as a guest does.
func readAll(bus *vmm.Bus) string {
	var b strings.Builder
	for i := uint64(0); i < GPE0Len; i++ {
		fmt.Fprintf(&b, "gpe%d=%#x ", i, inb(bus, GPE0Base+i))
	}
	for off := uint64(0); off < HotplugLen; off += 4 {
		fmt.Fprintf(&b, "hp%#x=%#x ", off, inl(bus, HotplugBase+off))
	}
	return b.String()
}

func TestStateRoundTrip(t *testing.T) {
	bus, g, h, line := busyBus(t)
	if up, _ := line.last(); !up {
		t.Fatal("busy GPE block has the SCI down")
	}
	gst, hst := save(g), save(h)
	bus2, g2, h2, line2 := newBus(t, nil)
	if err := load(g2, gst); err != nil {
		t.Fatal(err)
	}
	if err := load(h2, hst); err != nil {
		t.Fatal(err)
	}
	if _, n := line2.last(); n != 0 {
		t.Fatal("LoadState drove the SCI")
	}
	g2.SyncIRQ()
	if up, _ := line2.last(); !up || !g2.Asserted() {
		t.Fatal("SyncIRQ did not assert the SCI of a pending GPE")
	}
	if !bytes.Equal(save(g2), gst) || !bytes.Equal(save(h2), hst) {
		t.Fatal("state saved again differs")
	}
	if got, want := readAll(bus2), readAll(bus); got != want {
		t.Fatalf("registers after load:\n%s\nwant\n%s", got, want)
	}
	// The guest goes on as it would have: clearing GPE.1 drops the SCI,
	// ejecting slot 7 clears its request.
	outb(bus2, GPE0Base, 1<<GPEPCIHotplug)
	outl(bus2, HotplugBase+HotplugEjectOffset, 1<<7)
	if up, _ := line2.last(); up {
		t.Fatal("SCI still up after the guest cleared GPE.1")
	}
	if up, down := h2.Pending(); up != 1<<3|1<<5 || down != 0 {
		t.Fatalf("pending up %#x down %#x after eject", up, down)
	}
	// An idle block syncs the line low.
	g3 := NewGPE(line2)
	line2.SetLevel(true)
	g3.SyncIRQ()
	if up, _ := line2.last(); up {
		t.Fatal("SyncIRQ of an idle block left the SCI up")
	}
}

func TestHotplugStateOtherMachine(t *testing.T) {
	_, _, h, _ := busyBus(t)
	h2, err := NewHotplug(NewGPE(nil), 0xfe, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = load(h2, save(h))
	if err == nil || errors.Is(err, vmstate.ErrCorrupt) || !strings.Contains(err.Error(), "0xfffffffe") {
		t.Fatalf("loading into other hot-pluggable slots: %v", err)
	}
	if up, down := h2.Pending(); up|down != 0 {
		t.Fatal("refused state changed the controller")
	}
}

// loaders name the package's Staters, each built fresh.
var loaders = []func() vmstate.Stater{
	func() vmstate.Stater { return NewGPE(&recLine{}) },
	func() vmstate.Stater {
		h, _ := NewHotplug(NewGPE(nil), 0xfffffffe, nil)
		return h
	},
}

func TestLoadStateBadInput(t *testing.T) {
	_, g, h, _ := busyBus(t)
	statetest.CheckBadInput(t, save(g), gpeStateVersion, loaders[0])
	statetest.CheckBadInput(t, save(h), hotplugStateVersion, loaders[1])
	// Slot 0 pending (up at 8, down at 12) is not a state of the controller.
	statetest.CheckRefused(t, save(h), loaders[1], [][2]int{{8, 1}, {12, 1}})
}

// FuzzLoadState: any payload loads into the GPE block (which even) or the
// hotplug controller (odd) to an error or to a state that saves back to
// the same bytes.
func FuzzLoadState(f *testing.F) {
	g := NewGPE(nil)
	h, err := NewHotplug(g, 0xfffffffe, nil)
	if err == nil {
		err = makeBusy(g, h)
	}
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(0), save(g))
	f.Add(uint8(1), save(h))
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		statetest.Canonical(t, loaders[int(which)%len(loaders)](), b)
	})
}
