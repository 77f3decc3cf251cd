package ivshmem

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/internal/testutil/statetest"
	"github.com/petrel-vmm/petrel/vmstate"
)

func save(d *Device) []byte          { return statetest.Save(d) }
func load(d *Device, b []byte) error { return statetest.Load(d, b) }

// readRegs reads the four registers as a guest does, the status twice
// (reading clears it) and INTA# after each read.
func readRegs(d *Device, irq *line) string {
	var b strings.Builder
	for _, off := range []uint64{RegIntrMask, RegIVPosition, RegDoorbell, RegIntrStatus, RegIntrStatus} {
		v := rd(d, off)
		l, _ := irq.get()
		fmt.Fprintf(&b, "%d=%#x/%v ", off, v, l)
	}
	return b.String()
}

func TestPlainStateRoundTrip(t *testing.T) {
	irq := &line{}
	d, _ := newPlain(t, 1<<20)
	plug(t, d)
	d.SetIRQLine(irq)
	wr(d, RegIntrMask, 0xffff0001)
	wr(d, RegIntrStatus, 1) // a self-interrupt: INTA# up
	if l, _ := irq.get(); !l {
		t.Fatal("busy device has INTA# low")
	}
	st := save(d)

	irq2 := &line{}
	d2, _ := newPlain(t, 1<<20)
	plug(t, d2)
	d2.SetIRQLine(irq2)
	if err := load(d2, st); err != nil {
		t.Fatal(err)
	}
	if _, n := irq2.get(); n != 0 {
		t.Fatal("LoadState drove INTA#")
	}
	d2.SyncIRQ()
	if l, _ := irq2.get(); !l {
		t.Fatal("SyncIRQ did not raise INTA# for a pending unmasked status")
	}
	if !bytes.Equal(save(d2), st) {
		t.Fatal("state saved again differs")
	}
	if got, want := readRegs(d2, irq2), readRegs(d, irq); got != want {
		t.Fatalf("registers after load: %s, want %s", got, want)
	}
}

func TestDoorbellStateRoundTrip(t *testing.T) {
	sock := startServer(t, 1)
	irq := &line{}
	d := newDoorbell(t, sock, 1, Interrupts{Router: newRouter(t), IRQ: irq})
	b := plug(t, d)
	enableMSIX(b, d, 0, 0xfee00000, 0x31)
	wr(d, RegIntrMask, 1)
	wr(d, RegIntrStatus, 1)
	st := save(d)

	// The new process connects anew and gets another ID.
	r2, irq2 := newRouter(t), &line{}
	d2 := newDoorbell(t, sock, 1, Interrupts{Router: r2, IRQ: irq2})
	if d2.ID() == d.ID() {
		t.Fatal("second connection got the same ID")
	}
	plug(t, d2)
	// The bus's load restores MSI-X enabled in the config space, not
	// through a guest config write (which would also run the device's
	// hook and move the vector itself); the table comes with the device's
	// own state.
	m := d2.MSIX()
	d2.Config().PutUint16(m.CapOffset()+2, d2.Config().Uint16(m.CapOffset()+2)|0x8000)
	if err := load(d2, st); err != nil {
		t.Fatal(err)
	}
	entry := make([]byte, 16)
	for i := 0; i < 16; i += 4 {
		m.Read(0, uint64(i), entry[i:i+4])
	}
	if a, v := binary.LittleEndian.Uint64(entry), binary.LittleEndian.Uint32(entry[8:]); a != 0xfee00000 || v != 0x31 {
		t.Fatalf("MSI-X entry 0 after load: address %#x data %#x, want 0xfee00000 0x31", a, v)
	}
	// ownIrqfd: is the server's eventfd for our vector 0 what the
	// kernel injects MSI-X vector 0 from?
	ownIrqfd := func() bool {
		d2.mu.Lock()
		fd := d2.own[0]
		d2.mu.Unlock()
		r2.mu.Lock()
		defer r2.mu.Unlock()
		for _, f := range r2.irqfds {
			if f == fd {
				return len(r2.irqfds) == 1
			}
		}
		return false
	}
	if ownIrqfd() || !m.Enabled() {
		t.Fatalf("test setup: own vector already on an irqfd, or MSI-X enabled %v", m.Enabled())
	}
	d2.SyncIRQ()
	if !ownIrqfd() {
		t.Fatalf("own vector not on the MSI-X irqfd after SyncIRQ (irqfds %v)", r2.irqfds)
	}
	if l, _ := irq2.get(); !l {
		t.Fatal("SyncIRQ did not raise INTA#")
	}
	want := strings.Replace(readRegs(d, irq), fmt.Sprintf("8=%#x", d.ID()), fmt.Sprintf("8=%#x", d2.ID()), 1)
	if got := readRegs(d2, irq2); got != want {
		t.Fatalf("registers after load: %s, want %s (IVPosition is the new connection's)", got, want)
	}
}

func TestStateOtherDevice(t *testing.T) {
	plain, _ := newPlain(t, 1<<20)
	wr(plain, RegIntrMask, 7)
	bigger, _ := newPlain(t, 2<<20)
	if err := load(bigger, save(plain)); err == nil || !strings.Contains(err.Error(), "1048576") {
		t.Fatalf("loading 1 MiB state into 2 MiB device: %v", err)
	}
	sock := startServer(t, 2)
	db := newDoorbell(t, sock, 2, Interrupts{})
	if err := load(db, save(plain)); err == nil || !strings.Contains(err.Error(), "0 MSI-X vectors") {
		t.Fatalf("loading plain state into a doorbell device: %v", err)
	}
	if rd(bigger, RegIntrMask) != 0 || rd(db, RegIntrMask) != 0 {
		t.Fatal("a refused state changed the device")
	}
}

func TestLoadStateBadInput(t *testing.T) {
	src, _ := newPlain(t, 1<<20)
	wr(src, RegIntrMask, 0x8001)
	wr(src, RegIntrStatus, 3)
	// LoadState replaces the whole state, so one device serves every load.
	d, _ := newPlain(t, 1<<20)
	statetest.CheckBadInput(t, save(src), stateVersion, func() vmstate.Stater { return d })
}

// FuzzLoadState: any payload loads into an ivshmem-plain device to an
// error or to a state that saves back to the same bytes.
func FuzzLoadState(f *testing.F) {
	r, err := hostmem.OpenRegion("m0", filepath.Join(f.TempDir(), "shm"), 1<<16)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	d, err := NewPlain(r, Interrupts{IRQ: &line{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(save(d))
	wr(d, RegIntrMask, 1)
	wr(d, RegIntrStatus, 1)
	f.Add(save(d))
	f.Fuzz(func(t *testing.T, b []byte) { statetest.Canonical(t, d, b) })
}
