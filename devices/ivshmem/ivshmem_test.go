package ivshmem

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"github.com/petrel-vmm/petrel/devices/pci"
	"golang.org/x/sys/unix"
)

// testWindows are BAR windows for a test bus (the PC's 32- and 64-bit
// windows; machine/pc owns the real ones).
var testWindows = pci.Windows{
	IO:    pci.Window{Base: 0xc000, Size: 0x4000},
	Mem32: pci.Window{Base: 0xc000_0000, Size: 0x3c00_0000},
	Mem64: pci.Window{Base: 1 << 40, Size: 1 << 40},
}

const slot = 3

func rd(d *Device, off uint64) uint32 {
	var b [4]byte
	d.Read(0, off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr(d *Device, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	d.Write(0, off, b[:])
}

func plug(t *testing.T, d *Device) *pci.Bus {
	t.Helper()
	b := pci.NewBus(host{}, testWindows)
	if err := b.Add(slot, d); err != nil {
		t.Fatal(err)
	}
	b.ConfigWrite(slot, pci.RegCommand, []byte{pci.CmdMemorySpace | pci.CmdBusMaster, 0})
	return b
}

func cfg16(b *pci.Bus, off int) uint16 {
	var v [2]byte
	b.ConfigRead(slot, off, v[:])
	return binary.LittleEndian.Uint16(v[:])
}

// enableMSIX programs vector v's table entry and sets MSI-X enable.
func enableMSIX(b *pci.Bus, d *Device, v int, addr uint64, data uint32) {
	m := d.MSIX()
	e := make([]byte, 16)
	binary.LittleEndian.PutUint64(e, addr)
	binary.LittleEndian.PutUint32(e[8:], data)
	for i := 0; i < 16; i += 4 {
		m.Write(0, uint64(v*16+i), e[i:i+4]) // vector control 0: unmasked
	}
	b.ConfigWrite(slot, m.CapOffset()+3, []byte{0x80})
}

func newPlain(t *testing.T, size uint64) (*Device, *hostmem.Region) {
	t.Helper()
	r, err := hostmem.OpenRegion("m0", filepath.Join(t.TempDir(), "shm"), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	d, err := NewPlain(r, Interrupts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Release() })
	return d, r
}

func TestPlainIdentityAndBARs(t *testing.T) {
	d, r := newPlain(t, 1<<20)
	b := plug(t, d)
	if v, id := cfg16(b, pci.RegVendorID), cfg16(b, pci.RegDeviceID); v != VendorID || id != DeviceID {
		t.Fatalf("vendor/device %#x/%#x", v, id)
	}
	var c [4]byte
	b.ConfigRead(slot, pci.RegRevision, c[:])
	if got := binary.LittleEndian.Uint32(c[:]); got != ClassMemory<<8|Revision {
		t.Fatalf("class/revision %#x", got)
	}
	b.ConfigRead(slot, pci.RegBAR0+4*MemBAR, c[:])
	if c[0]&0xf != 0xc {
		t.Fatalf("BAR2 type bits %#x, want 64-bit prefetchable memory (0xc)", c[0]&0xf)
	}
	if def := d.Config().BARDef(MemBAR); def.Size != 1<<20 || &def.RAM[0] != &r.Mem[0] {
		t.Fatalf("BAR2 is not the backend's mapping (size %d)", def.Size)
	}
	if def := d.Config().BARDef(MSIXBAR); def.Size != 0 {
		t.Fatal("ivshmem-plain has an MSI-X BAR")
	}
	if got := rd(d, RegIVPosition); got != 0xffffffff {
		t.Fatalf("plain IVPosition %#x, want -1", got)
	}
	// The BAR memory is the object: a write through it is in the file.
	copy(d.Memory()[4096:], "shared bytes")
	got, err := os.ReadFile(r.Path)
	if err != nil || string(got[4096:4108]) != "shared bytes" {
		t.Fatalf("backing object does not hold the BAR2 write (%v)", err)
	}
	wr(d, RegDoorbell, 0x10000)
	if d.DroppedDoorbells.Load() != 1 {
		t.Fatal("doorbell on a plain device not counted as dropped")
	}
}

func TestBackendSizeChecks(t *testing.T) {
	dir := t.TempDir()
	if _, err := hostmem.OpenRegion("x", filepath.Join(dir, "a"), 3<<20); !errors.Is(err, hostmem.ErrSize) {
		t.Fatalf("non-power-of-two size: %v", err)
	}
	r, err := hostmem.OpenRegion("x", filepath.Join(dir, "b"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := hostmem.OpenRegion("x", filepath.Join(dir, "b"), 2<<20); !errors.Is(err, hostmem.ErrSize) {
		t.Fatalf("size mismatch with an existing object: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "b")); st.Size() != 1<<20 {
		t.Fatalf("existing object was resized to %d", st.Size())
	}
	r, err = hostmem.OpenRegion("x", filepath.Join(dir, "b"), 1<<20)
	if err != nil {
		t.Fatalf("reopening with the right size: %v", err)
	}
	r.Close()
	if _, err := NewPlain(nil, Interrupts{}); err == nil {
		t.Fatal("NewPlain without memory succeeded")
	}
	if _, err := hostmem.ShmPath("a/b"); err == nil {
		t.Fatal("shm name with a slash accepted")
	}
	if p, err := hostmem.ShmPath("/ivshmem"); err != nil || p != "/dev/shm/ivshmem" {
		t.Fatalf("ShmPath(/ivshmem) = %q, %v", p, err)
	}
}

func newDoorbell(t *testing.T, sock string, vectors int, irqs Interrupts) *Device {
	t.Helper()
	d, err := NewDoorbell(sock, vectors, irqs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Release(); err != nil {
			t.Errorf("release: %v", err)
		}
	})
	return d
}

func dialPeer(t *testing.T, sock string) *proto.Client {
	t.Helper()
	c, err := proto.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		for {
			if _, err := c.Next(); err != nil && !errors.Is(err, proto.ErrProtocol) {
				return
			}
		}
	}()
	return c
}

func readCount(fd int) uint64 {
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		return 0
	}
	return binary.NativeEndian.Uint64(b[:])
}

func TestPinInterruptStatusAndMask(t *testing.T) {
	sock := startServer(t, 2)
	irq := &line{}
	d := newDoorbell(t, sock, 2, Interrupts{IRQ: irq})
	plug(t, d)
	if got := rd(d, RegIVPosition); got != 0 {
		t.Fatalf("IVPosition %d, want the server's ID 0", got)
	}
	peer := dialPeer(t, sock)
	eventually(t, "peer to learn our vectors", func() bool { return peer.Vectors(0) == 2 })

	// Masked: the event sets the status but the pin stays low.
	if err := peer.Notify(0, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the poller to take the event", func() bool { return d.Interrupts.Load() == 1 })
	if lvl, _ := irq.get(); lvl {
		t.Fatal("pin raised while masked")
	}
	// Unmasking with status set raises it; reading the status returns 1,
	// clears it and lowers the pin.
	wr(d, RegIntrMask, 1)
	if lvl, n := irq.get(); !lvl || n != 1 {
		t.Fatalf("pin %v after unmask (raises %d)", lvl, n)
	}
	if got := d.Config().Uint16(pci.RegStatus) & pci.StatusINTx; got == 0 {
		t.Fatal("config status does not show the pending INTx")
	}
	if got := rd(d, RegIntrStatus); got != 1 {
		t.Fatalf("status %d, want 1", got)
	}
	if lvl, _ := irq.get(); lvl {
		t.Fatal("pin still high after reading the status")
	}
	if got := rd(d, RegIntrStatus); got != 0 {
		t.Fatalf("status %d after read-to-clear", got)
	}
	// Unmasked: a doorbell raises the pin at once.
	peer.Notify(0, 0)
	eventually(t, "pin", func() bool { l, n := irq.get(); return l && n == 2 })
	// INTx Disable in the command register holds the pin low.
	d.Config().Write(pci.RegCommand, []byte{pci.CmdMemorySpace, pci.CmdINTxDisable >> 8})
	if lvl, _ := irq.get(); lvl {
		t.Fatal("pin high with INTx disabled")
	}
	d.Config().Write(pci.RegCommand, []byte{pci.CmdMemorySpace, 0})
	if lvl, _ := irq.get(); !lvl {
		t.Fatal("pin not restored after INTx enable")
	}
	wr(d, RegIntrMask, 0)
	if lvl, _ := irq.get(); lvl {
		t.Fatal("pin high after masking")
	}
	if got := rd(d, RegIntrMask); got != 0 {
		t.Fatalf("mask reads %d", got)
	}
	// The guest may write the status itself (QEMU does the same).
	wr(d, RegIntrMask, 0xffffffff)
	wr(d, RegIntrStatus, 0)
	if lvl, _ := irq.get(); lvl {
		t.Fatal("pin high after status write 0")
	}
}

func TestDoorbellRouting(t *testing.T) {
	sock := startServer(t, 2)
	d := newDoorbell(t, sock, 2, Interrupts{})
	peer := dialPeer(t, sock)
	pid := peer.ID()
	eventually(t, "device and peer to learn the peer's vectors", func() bool {
		return d.client.Vectors(pid) == 2 && peer.Vectors(pid) == 2
	})
	fd0, _ := peer.VectorFD(pid, 0)
	fd1, _ := peer.VectorFD(pid, 1)
	wr(d, RegDoorbell, uint32(pid)<<16|1)
	eventually(t, "peer vector 1", func() bool { return readCount(fd1) == 1 })
	if readCount(fd0) != 0 {
		t.Fatal("vector 0 fired for a doorbell to vector 1")
	}
	wr(d, RegDoorbell, uint32(pid)<<16|0)
	eventually(t, "peer vector 0", func() bool { return readCount(fd0) == 1 })
	// Absent peer, absent vector, wrong width: counted, nothing fires.
	wr(d, RegDoorbell, 77<<16)
	wr(d, RegDoorbell, uint32(pid)<<16|2)
	d.Write(0, RegDoorbell, []byte{0, 0})
	if got := d.DroppedDoorbells.Load(); got != 2 {
		t.Fatalf("dropped doorbells %d, want 2", got)
	}
	if got := d.BadAccesses.Load(); got != 1 {
		t.Fatalf("bad accesses %d, want 1", got)
	}
	if readCount(fd0) != 0 || readCount(fd1) != 0 {
		t.Fatal("a dropped doorbell fired")
	}
	peer.Close()
	eventually(t, "device to see the peer leave", func() bool { return len(d.Peers()) == 1 })
	wr(d, RegDoorbell, uint32(pid)<<16)
	if got := d.DroppedDoorbells.Load(); got != 3 {
		t.Fatalf("doorbell to departed peer: dropped %d, want 3", got)
	}
}

func TestMSIXWithoutRouterUsesSignaler(t *testing.T) {
	sock := startServer(t, 2)
	sig, irq := &signaler{}, &line{}
	d := newDoorbell(t, sock, 2, Interrupts{Signaler: sig, IRQ: irq})
	b := plug(t, d)
	enableMSIX(b, d, 1, 0xfee00000, 0x41)
	peer := dialPeer(t, sock)
	eventually(t, "peer to learn our vectors", func() bool { return peer.Vectors(0) == 2 })
	wr(d, RegIntrMask, 1)
	peer.Notify(0, 1)
	eventually(t, "MSI", func() bool { return len(sig.list()) == 1 })
	if got := sig.list()[0]; got != "0xfee00000:0x41" {
		t.Fatalf("MSI %s", got)
	}
	if lvl, n := irq.get(); lvl || n != 0 {
		t.Fatal("pin raised in MSI-X mode")
	}
	if got := rd(d, RegIntrStatus); got != 0 {
		t.Fatalf("status %d in MSI-X mode, want 0 (MSI-X sets no status)", got)
	}
}

func TestFastPathsWithRouter(t *testing.T) {
	sock := startServer(t, 3)
	r := newRouter(t)
	d := newDoorbell(t, sock, 3, Interrupts{Router: r, IRQ: &line{}})
	peer := dialPeer(t, sock)
	eventually(t, "device to learn the peer", func() bool { return len(d.Peers()) == 2 })
	if n, _ := r.counts(); n != 0 {
		t.Fatalf("%d ioeventfds before BAR0 is mapped", n)
	}
	b := plug(t, d)
	bar0 := d.Config().BARAddress(RegsBAR)
	eventually(t, "ioeventfds", func() bool { n, _ := r.counts(); return n == 6 })
	for _, want := range []uint32{0<<16 | 0, 0<<16 | 2, 1<<16 | 1} {
		if !r.hasIoevent(bar0+RegDoorbell, want) {
			t.Fatalf("no doorbell ioeventfd for %#x at %#x", want, bar0+RegDoorbell)
		}
	}
	// MSI-X on: own vectors become irqfds; off again: back to the poller.
	enableMSIX(b, d, 0, 0xfee00000, 0x30)
	if _, n := r.counts(); n != 1 {
		t.Fatalf("%d irqfds with one unmasked vector, want 1", n)
	}
	b.ConfigWrite(slot, d.MSIX().CapOffset()+3, []byte{0})
	if _, n := r.counts(); n != 0 {
		t.Fatalf("%d irqfds after MSI-X disable", n)
	}
	// A peer leaving takes its ioeventfds along, while its fds are open
	// (the fake router fails the test otherwise).
	peer.Close()
	eventually(t, "peer ioeventfds removed", func() bool { n, _ := r.counts(); return n == 3 })
	// Moving BAR0: the ioeventfds follow it.
	b.ConfigWrite(slot, pci.RegCommand, []byte{0, 0})
	if n, _ := r.counts(); n != 0 {
		t.Fatalf("%d ioeventfds with decoding off", n)
	}
	b.ConfigWrite(slot, pci.RegCommand, []byte{pci.CmdMemorySpace, 0})
	if !r.hasIoevent(bar0+RegDoorbell, 0<<16|1) {
		t.Fatal("ioeventfds not restored when decoding came back")
	}
	if err := b.Remove(slot); err != nil {
		t.Fatal(err)
	}
	if n, m := r.counts(); n != 0 || m != 0 {
		t.Fatalf("after unplug: %d ioeventfds, %d irqfds", n, m)
	}
}

func TestReleaseClosesEverything(t *testing.T) {
	sock := startServer(t, 4)
	before := countFDs(t)
	for range 5 {
		d, err := NewDoorbell(sock, 4, Interrupts{Router: newRouter(t), IRQ: &line{}})
		if err != nil {
			t.Fatal(err)
		}
		b := plug(t, d)
		enableMSIX(b, d, 2, 0xfee00000, 0x33)
		if err := b.Remove(slot); err != nil {
			t.Fatal(err)
		}
		if d.Memory() != nil {
			t.Fatal("memory still mapped after release")
		}
		if err := d.Release(); err != nil {
			t.Fatalf("second release: %v", err)
		}
	}
	eventually(t, "fds to be closed", func() bool { return countFDs(t) == before })
	if _, err := NewDoorbell(filepath.Join(t.TempDir(), "none"), 1, Interrupts{}); err == nil {
		t.Fatal("NewDoorbell without a server succeeded")
	}
	if _, err := NewDoorbell(sock, 0, Interrupts{}); err == nil {
		t.Fatal("NewDoorbell with 0 vectors succeeded")
	}
	if countFDs(t) != before {
		t.Fatal("failed constructors leaked fds")
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestMachineReset(t *testing.T) {
	sock := startServer(t, 1)
	r, irq := newRouter(t), &line{}
	d := newDoorbell(t, sock, 1, Interrupts{Router: r, IRQ: irq})
	b := plug(t, d)
	enableMSIX(b, d, 0, 0xfee00000, 0x30)
	wr(d, RegIntrMask, 1)
	wr(d, RegIntrStatus, 1)
	if _, n := r.counts(); n != 1 {
		t.Fatalf("%d irqfds with MSI-X on", n)
	}
	b.Reset()
	if _, n := r.counts(); n != 0 {
		t.Fatalf("%d irqfds after reset", n)
	}
	if rd(d, RegIntrMask) != 0 || rd(d, RegIntrStatus) != 0 || rd(d, RegIVPosition) != 0 {
		t.Fatal("registers not at power-on values (IVPosition must stay)")
	}
	if lvl, _ := irq.get(); lvl {
		t.Fatal("pin high after reset")
	}
	// After reset, with MSI-X off, our vector is the poller's again.
	peer := dialPeer(t, sock)
	eventually(t, "peer to learn our vector", func() bool { return peer.Vectors(0) == 1 })
	wr(d, RegIntrMask, 1)
	peer.Notify(0, 0)
	eventually(t, "pin after reset", func() bool { l, _ := irq.get(); return l })
}

// TestRegisterAccessDoesNotAllocate: the exit path (every register, good
// and bad doorbells, odd widths) allocates nothing.
func TestRegisterAccessDoesNotAllocate(t *testing.T) {
	sock := startServer(t, 1)
	d := newDoorbell(t, sock, 1, Interrupts{IRQ: &line{}})
	peer := dialPeer(t, sock)
	eventually(t, "device to learn the peer", func() bool { return d.client.Vectors(peer.ID()) == 1 })
	b4, b2 := make([]byte, 4), make([]byte, 2)
	good := uint32(peer.ID()) << 16
	allocs := testing.AllocsPerRun(200, func() {
		for off := uint64(0); off < 16; off += 4 {
			d.Read(0, off, b4)
		}
		d.Read(0, 64, b4)
		d.Read(0, 1, b2)
		binary.LittleEndian.PutUint32(b4, 1)
		d.Write(0, RegIntrMask, b4)
		binary.LittleEndian.PutUint32(b4, good)
		d.Write(0, RegDoorbell, b4)
		binary.LittleEndian.PutUint32(b4, 77<<16)
		d.Write(0, RegDoorbell, b4)
		d.Write(0, RegDoorbell, b2)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round of register accesses", allocs)
	}
}
