package pci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/vmstate"
)

// obsDev is a device with a 64-bit memory BAR, an MSI-X BAR and an I/O
// BAR that records where the bus tells it its BARs are decoded.
type obsDev struct {
	cfg    *ConfigSpace
	msix   *MSIX
	mapped map[int]uint64
	quiet  int // Quiesce calls minus Resume calls
}

func (d *obsDev) Config() *ConfigSpace           { return d.cfg }
func (d *obsDev) BARMapped(bar int, addr uint64) { d.mapped[bar] = addr }
func (d *obsDev) BARUnmapped(bar int, _ uint64)  { delete(d.mapped, bar) }
func (d *obsDev) Quiesce()                       { d.quiet++ }
func (d *obsDev) Resume()                        { d.quiet-- }

func newObsDev(t testing.TB, deviceID uint16, bar0 uint64, rt EventRouter) *obsDev {
	cfg := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: deviceID, Class: 0x020000, InterruptPin: 1})
	must(t, cfg.SetBAR(0, BAR{Size: bar0, Is64: true, Prefetch: true, Handler: nullDev{}}))
	m, err := NewMSIX(cfg, MSIXConfig{Vectors: 3, TableBAR: 2, TableOffset: 0x100, PBABAR: 2, PBAOffset: 0x800,
		Signaler: &recSignaler{}, Router: rt})
	must(t, err)
	must(t, cfg.SetBAR(2, BAR{Size: 0x1000, Handler: m}))
	must(t, cfg.SetBAR(4, BAR{Size: 0x20, IO: true, Handler: nullDev{}}))
	return &obsDev{cfg: cfg, msix: m, mapped: map[int]uint64{}}
}

// stateMachine is a bus with the host bridge in slot 0 and devices in
// slots 3 and 5, as a machine built from one configuration would have it.
type stateMachine struct {
	bus     *Bus
	host    *recHost
	rt      *recRouter
	d3, d5  *obsDev
	windows Windows
}

func newStateMachine(t testing.TB, dev3 uint16, bar0 uint64) *stateMachine {
	m := &stateMachine{host: newRecHost(), rt: newRecRouter(), windows: testWindows}
	m.bus = NewBus(m.host, m.windows)
	must(t, m.bus.Add(0, NewHostBridge()))
	m.d3 = newObsDev(t, dev3, bar0, m.rt)
	m.d5 = newObsDev(t, 0x1041, 0x4000, m.rt)
	must(t, m.bus.Add(3, m.d3))
	must(t, m.bus.Add(5, m.d5))
	return m
}

// drive puts the machine in an interesting state: slot 3 decoding with
// BAR0 moved by the guest, MSI-X on with vector 1 unmasked and vector 2
// masked and pending; slot 5 with I/O decoding only; the CONFIG_ADDRESS
// latch pointing into slot 3.
func (m *stateMachine) drive() {
	cfgWrite32(m.bus, 3, 0x10, 0xd000_0000)
	cfgWrite32(m.bus, 3, 0x14, 0)
	cfgWrite32(m.bus, 3, RegCommand, CmdMemorySpace|CmdIOSpace|CmdBusMaster)
	cfgWrite32(m.bus, 3, RegCacheLine, 0x2010)
	cfgWrite32(m.bus, 3, RegInterruptLine, 0x10b)
	writeEntry(m.d3.msix, 1, 0xfee0_1000, 0x41, false)
	writeEntry(m.d3.msix, 2, 0xfee0_2000, 0x42, true)
	cf8(m.bus, 3, m.d3.msix.CapOffset())
	m.bus.Write(ConfigPort, 6, []byte{0, 0x80}) // message control: enable
	m.d3.msix.Notify(2)
	cfgWrite32(m.bus, 5, RegCommand, CmdIOSpace)
	cf8(m.bus, 3, 0x10)
}

func saveBus(b *Bus) []byte {
	var e vmstate.Enc
	b.SaveState(&e)
	return e.Data()
}

func saveMSIX(m *MSIX) []byte {
	var e vmstate.Enc
	m.SaveState(&e)
	return e.Data()
}

// configDump reads every slot's 256 bytes through mechanism 1, the guest's
// view, and the CONFIG_ADDRESS latch first (the reads move it).
func configDump(b *Bus) []byte {
	var out []byte
	var a [4]byte
	b.Read(ConfigPort, 0, a[:])
	out = append(out, a[:]...)
	for s := range NumSlots {
		for reg := 0; reg < ConfigSize; reg += 4 {
			out = binary.LittleEndian.AppendUint32(out, cfgRead32(b, s, reg))
		}
	}
	return out
}

// savedMachine is a driven machine, its bus and slot 3's MSI-X states and
// its configuration spaces as the guest reads them.
func savedMachine(t *testing.T) (a *stateMachine, busState, msixState, dump []byte) {
	a = newStateMachine(t, 0x1042, 0x4000)
	a.drive()
	busState, msixState = saveBus(a.bus), saveMSIX(a.d3.msix)
	return a, busState, msixState, configDump(a.bus)
}

func TestBusStateRoundTrip(t *testing.T) {
	a, busState, msixState, want := savedMachine(t)

	b := newStateMachine(t, 0x1042, 0x4000)
	b.host.take()
	must(t, b.bus.LoadState(vmstate.NewDec("pci", busState)))
	must(t, b.d3.msix.LoadState(vmstate.NewDec("msix", msixState)))
	if got := configDump(b.bus); !bytes.Equal(got, want) {
		t.Fatalf("config spaces differ after load:\n got %x\nwant %x", got, want)
	}
	if len(a.host.active) != len(b.host.active) {
		t.Fatalf("host mappings %v, saved machine had %v", b.host.active, a.host.active)
	}
	for addr, m := range a.host.active {
		if bm, ok := b.host.active[addr]; !ok || bm.Slot != m.Slot || bm.BAR != m.BAR || bm.Size != m.Size || bm.IO != m.IO {
			t.Fatalf("mapping at %#x: %+v, saved machine had %+v", addr, bm, m)
		}
	}
	if len(b.host.active) != 4 || b.d3.mapped[0] != 0xd000_0000 || !maps.Equal(a.d3.mapped, b.d3.mapped) ||
		!maps.Equal(a.d5.mapped, b.d5.mapped) {
		t.Fatalf("BAR observers: slot 3 %v (saved %v), slot 5 %v (saved %v)", b.d3.mapped, a.d3.mapped, b.d5.mapped, a.d5.mapped)
	}
	// MSI-X: enabled, vector 1 routed with an irqfd, vector 2 pending.
	m := b.d3.msix
	if !m.Enabled() || m.Masked(1) || !m.Masked(2) || pba(m) != 4 {
		t.Fatalf("MSI-X after load: enabled %v masked %v/%v PBA %#x", m.Enabled(), m.Masked(1), m.Masked(2), pba(m))
	}
	if got := b.rt.take(); !slices.Equal(got, []string{"route 30 0xfee01000:0x41", "irqfd 30"}) {
		t.Fatalf("routes after load: %v", got)
	}
	m.Notify(1)
	if readEventfd(t, b.rt.irqfds[30]) != 1 {
		t.Fatal("vector 1 not delivered through its re-created irqfd")
	}
	writeEntry(m, 2, 0xfee0_2000, 0x42, false) // unmasking delivers the pending vector
	if pba(m) != 0 || readEventfd(t, b.rt.irqfds[31]) != 1 {
		t.Fatal("pending vector 2 not delivered on unmask after load")
	}
	// A reset returns BARs to the addresses Add gave in the saved machine.
	b.bus.Reset()
	a.bus.Reset()
	for _, s := range []int{3, 5} {
		for i := range NumBARs {
			if x, y := a.bus.Device(s).Config().BARAddress(i), b.bus.Device(s).Config().BARAddress(i); x != y {
				t.Fatalf("slot %d BAR %d after reset at %#x, saved machine %#x", s, i, y, x)
			}
		}
	}
	// Quiesce and Resume reach the devices that implement Quiescer.
	b.bus.Quiesce()
	if b.d3.quiet != 1 || b.d5.quiet != 1 {
		t.Fatal("Quiesce did not reach the devices")
	}
	b.bus.Resume()
	if b.d3.quiet != 0 || b.d5.quiet != 0 {
		t.Fatal("Resume did not reach the devices")
	}
}

// Loading into a bus that runs already (loadvm into a live machine):
// existing mappings go first, so BARs may swap places.
func TestBusStateLoadIntoLiveBus(t *testing.T) {
	a := newStateMachine(t, 0x1042, 0x4000)
	a.drive()
	busState := saveBus(a.bus)
	b := newStateMachine(t, 0x1042, 0x4000)
	cfgWrite32(b.bus, 5, 0x10, 0xd000_0000) // where slot 3's BAR0 goes
	cfgWrite32(b.bus, 5, 0x14, 0)
	cfgWrite32(b.bus, 5, RegCommand, CmdMemorySpace)
	must(t, b.bus.LoadState(vmstate.NewDec("pci", busState)))
	if b.bus.MapErrors.Load() != 0 || b.host.active[0xd000_0000].Slot != 3 || len(b.d5.mapped) != 1 {
		t.Fatalf("map errors %d, at 0xd0000000 %+v, slot 5 mapped %v", b.bus.MapErrors.Load(),
			b.host.active[0xd000_0000], b.d5.mapped)
	}
}

func TestBusStateMismatch(t *testing.T) {
	a := newStateMachine(t, 0x1042, 0x4000)
	a.drive()
	busState := saveBus(a.bus)
	for _, c := range []struct {
		name, want string
		build      func(t *testing.T) *stateMachine
	}{
		{"other device", "slot 3 holds device 1af4:1043", func(t *testing.T) *stateMachine {
			return newStateMachine(t, 0x1043, 0x4000)
		}},
		{"other BAR size", "slot 3 (1af4:1042) BAR 0 is prefetchable 64-bit memory of 0x8000 bytes, prefetchable 64-bit memory of 0x4000 bytes in the saved state", func(t *testing.T) *stateMachine {
			return newStateMachine(t, 0x1042, 0x8000)
		}},
		{"empty slot", "slot 5 is empty", func(t *testing.T) *stateMachine {
			m := newStateMachine(t, 0x1042, 0x4000)
			must(t, m.bus.Remove(5))
			return m
		}},
		{"extra device", "slot 7 holds a device", func(t *testing.T) *stateMachine {
			m := newStateMachine(t, 0x1042, 0x4000)
			must(t, m.bus.Add(7, newObsDev(t, 0x1041, 0x4000, nil)))
			return m
		}},
		{"other windows", "outside this machine's PCI windows", func(t *testing.T) *stateMachine {
			m := &stateMachine{host: newRecHost(), rt: newRecRouter()}
			w := testWindows
			w.Mem32.Base += 0x1000_0000
			w.Mem32.Size -= 0x1000_0000
			m.bus = NewBus(m.host, w)
			must(t, m.bus.Add(0, NewHostBridge()))
			must(t, m.bus.Add(3, newObsDev(t, 0x1042, 0x4000, nil)))
			must(t, m.bus.Add(5, newObsDev(t, 0x1041, 0x4000, nil)))
			return m
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.build(t)
			cfgWrite32(m.bus, 3, RegCommand, CmdMemorySpace)
			before, mapped := configDump(m.bus), len(m.host.active)
			cf8(m.bus, 3, RegCommand) // the latch as configDump found it
			err := m.bus.LoadState(vmstate.NewDec("pci", busState))
			if !errors.Is(err, ErrStateMismatch) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load: %v, want %q", err, c.want)
			}
			if after := configDump(m.bus); !bytes.Equal(before, after) || len(m.host.active) != mapped {
				t.Fatal("a refused load changed the bus")
			}
		})
	}
	// MSI-X state for another table size.
	cfg := NewConfigSpace(Header{VendorID: 1})
	m, err := NewMSIX(cfg, MSIXConfig{Vectors: 4, TableBAR: 2, PBABAR: 2, PBAOffset: 0x800})
	must(t, err)
	if err := m.LoadState(vmstate.NewDec("msix", saveMSIX(a.d3.msix))); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("MSI-X state of 3 vectors into 4: %v", err)
	}
}

// Truncated sections always fail; a flipped bit fails or loads, never
// panics. Either way a failed load leaves the bus as it was.
func TestBusStateDamaged(t *testing.T) {
	_, busState, msixState, want := savedMachine(t)
	b := newStateMachine(t, 0x1042, 0x4000)
	for n := range len(busState) {
		if err := b.bus.LoadState(vmstate.NewDec("pci", busState[:n])); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("bus state cut at %d: %v", n, err)
		}
	}
	for n := range len(msixState) {
		if err := b.d3.msix.LoadState(vmstate.NewDec("msix", msixState[:n])); err == nil {
			t.Fatalf("MSI-X state cut at %d loaded", n)
		}
	}
	if err := b.bus.LoadState(vmstate.NewDec("pci", append(slices.Clone(busState), 0))); !errors.Is(err, vmstate.ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	flips := 0
	tried := 0
	for i := 0; i < len(busState); i += 1 + i%5 { // every byte would take seconds
		tried++
		for _, bit := range []byte{0x01, 0x80} {
			x := slices.Clone(busState)
			x[i] ^= bit
			if b.bus.LoadState(vmstate.NewDec("pci", x)) != nil {
				flips++
			}
		}
	}
	for i := range len(msixState) {
		x := slices.Clone(msixState)
		x[i] ^= 0x80
		b.d3.msix.LoadState(vmstate.NewDec("msix", x))
	}
	// Flips in read-only bytes, slot flags and the header are caught.
	if flips < 2*16*2 {
		t.Fatalf("only %d of %d bit flips refused", flips, 2*tried)
	}
	// The damaged loads that failed changed nothing; the good one loads.
	must(t, b.bus.LoadState(vmstate.NewDec("pci", busState)))
	must(t, b.d3.msix.LoadState(vmstate.NewDec("msix", msixState)))
	if !bytes.Equal(want, configDump(b.bus)) {
		t.Fatal("state differs after damaged loads and a good one")
	}
}

// FuzzBusState loads fuzzed bus sections into a machine's bus and fuzzed
// MSI-X sections into its device: an error or a consistent bus, never a
// panic, and the host holds exactly the mappings the bus believes in.
func FuzzBusState(f *testing.F) {
	a := newStateMachine(f, 0x1042, 0x4000)
	a.drive()
	f.Add(saveBus(a.bus), saveMSIX(a.d3.msix))
	f.Add(saveBus(NewBus(newRecHost(), testWindows)), []byte{1, 0, 0, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, busState, msixState []byte) {
		m := newStateMachine(t, 0x1042, 0x4000)
		if m.bus.LoadState(vmstate.NewDec("pci", busState)) == nil {
			if cfgRead32(m.bus, 3, 0) != 0x1042_1af4 {
				t.Fatal("identity changed by a load")
			}
		}
		m.d3.msix.LoadState(vmstate.NewDec("msix", msixState))
		m.d3.msix.Notify(1)
		n := 0
		for _, d := range m.bus.Devices() {
			for _, bar := range d.BARs {
				if bar.Mapped {
					n++
					if mm, ok := m.host.active[bar.Addr]; !ok || mm.Size != bar.Size {
						t.Fatalf("BAR %d mapped at %#x but host has %+v", bar.Index, bar.Addr, mm)
					}
				}
			}
		}
		if n != len(m.host.active) {
			t.Fatalf("%d mapped BARs, host has %d", n, len(m.host.active))
		}
		must(t, m.d3.msix.Close())
	})
}
