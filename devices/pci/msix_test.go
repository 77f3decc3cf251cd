package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// recRouter is an EventRouter recording routes and irqfds as KVM would
// hold them.
type recRouter struct {
	mu     sync.Mutex
	next   uint32
	routes map[uint32]string
	irqfds map[uint32]int
	log    []string
}

func newRecRouter() *recRouter {
	return &recRouter{next: 30, routes: map[uint32]string{}, irqfds: map[uint32]int{}}
}

func (r *recRouter) AddIoeventfd(int, uint64, uint32, bool, *uint64) error    { return nil }
func (r *recRouter) RemoveIoeventfd(int, uint64, uint32, bool, *uint64) error { return nil }

func (r *recRouter) AddMSIRoute(addr uint64, data uint32) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.next
	r.next++
	r.routes[g] = fmt.Sprintf("%#x:%#x", addr, data)
	r.log = append(r.log, fmt.Sprintf("route %d %s", g, r.routes[g]))
	return g, nil
}

func (r *recRouter) UpdateMSIRoute(gsi uint32, addr uint64, data uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.routes[gsi]; !ok {
		return errors.New("no route")
	}
	r.routes[gsi] = fmt.Sprintf("%#x:%#x", addr, data)
	r.log = append(r.log, fmt.Sprintf("update %d %s", gsi, r.routes[gsi]))
	return nil
}

func (r *recRouter) RemoveMSIRoute(gsi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.routes, gsi)
	return nil
}

func (r *recRouter) AddIrqfd(fd int, gsi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.routes[gsi]; !ok {
		return errors.New("irqfd without route")
	}
	r.irqfds[gsi] = fd
	r.log = append(r.log, fmt.Sprintf("irqfd %d", gsi))
	return nil
}

func (r *recRouter) RemoveIrqfd(fd int, gsi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.irqfds[gsi] != fd {
		return errors.New("no such irqfd")
	}
	delete(r.irqfds, gsi)
	r.log = append(r.log, fmt.Sprintf("unirqfd %d", gsi))
	return nil
}

func (r *recRouter) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.log
	r.log = nil
	return l
}

func msixSetup(t *testing.T, sig MSISignaler, rt EventRouter) (*ConfigSpace, *MSIX) {
	cfg := NewConfigSpace(Header{VendorID: 1})
	m, err := NewMSIX(cfg, MSIXConfig{Vectors: 3, TableBAR: 1, TableOffset: 0x100, PBABAR: 1, PBAOffset: 0x800,
		Signaler: sig, Router: rt})
	must(t, err)
	return cfg, m
}

func writeEntry(m *MSIX, v int, addr uint64, data uint32, masked bool) {
	var e [16]byte
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], data)
	if masked {
		e[12] = 1
	}
	m.Write(0, 0x100+uint64(16*v), e[0:8]) // one 8-byte access
	m.Write(0, 0x100+uint64(16*v)+8, e[8:12])
	m.Write(0, 0x100+uint64(16*v)+12, e[12:16])
}

func msgCtl(cfg *ConfigSpace, m *MSIX, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	cfg.Write(m.CapOffset()+2, b[:])
}

func pba(m *MSIX) uint64 {
	var b [8]byte
	m.Read(0, 0x800, b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func TestMSIXCapabilityAndTable(t *testing.T) {
	cfg, m := msixSetup(t, &recSignaler{}, nil)
	off := m.CapOffset()
	if cfg.Uint8(off) != CapMSIX || cfg.Uint16(off+2) != 2 || cfg.Uint32(off+4) != 0x101 || cfg.Uint32(off+8) != 0x801 {
		t.Fatalf("capability %x", cfg.Uint32(off))
	}
	// Only enable and function mask are writable in message control.
	msgCtl(cfg, m, 0xffff)
	if cfg.Uint16(off+2) != 0xc002 {
		t.Fatalf("message control %#x", cfg.Uint16(off+2))
	}
	// Entries start masked; reserved vector-control bits read zero.
	var b [4]byte
	m.Read(0, 0x100+12, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 1 {
		t.Fatalf("vector control at reset %#x", binary.LittleEndian.Uint32(b[:]))
	}
	m.Write(0, 0x100+12, []byte{0xff, 0xff, 0xff, 0xff})
	m.Read(0, 0x100+12, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 1 {
		t.Fatalf("vector control %#x", binary.LittleEndian.Uint32(b[:]))
	}
	// 8-byte access reads the address; 1- and 2-byte accesses are ignored.
	writeEntry(m, 1, 0xfee0_1000, 0x41, true)
	var q [8]byte
	m.Read(0, 0x110, q[:])
	if binary.LittleEndian.Uint64(q[:]) != 0xfee0_1000 {
		t.Fatalf("8-byte read %#x", binary.LittleEndian.Uint64(q[:]))
	}
	m.Write(0, 0x118, []byte{0x99})
	m.Write(0, 0x118, []byte{0x99, 0x99})
	m.Read(0, 0x118, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0x41 {
		t.Fatal("narrow write changed the table")
	}
	var one [1]byte
	m.Read(0, 0x118, one[:])
	if one[0] != 0xff {
		t.Fatal("narrow read answered")
	}
	// The PBA is read-only.
	m.Write(0, 0x800, []byte{0xff, 0xff, 0xff, 0xff})
	if pba(m) != 0 {
		t.Fatal("PBA writable")
	}
}

func TestMSIXMaskingAndPending(t *testing.T) {
	sig := &recSignaler{}
	cfg, m := msixSetup(t, sig, nil)
	writeEntry(m, 0, 0xfee0_0000, 0x30, false)
	writeEntry(m, 2, 0xfee0_2000, 0x32, true)
	// Disabled: Notify only sets pending.
	m.Notify(0)
	if got := sig.take(); len(got) != 0 || pba(m) != 1 {
		t.Fatalf("delivered while disabled: %v, PBA %#x", got, pba(m))
	}
	// Enabling delivers the pending unmasked vector.
	msgCtl(cfg, m, 0x8000)
	if got := sig.take(); !slices.Equal(got, []string{"0xfee00000:0x30"}) || pba(m) != 0 {
		t.Fatalf("on enable: %v, PBA %#x", got, pba(m))
	}
	m.Notify(0)
	m.Notify(2) // entry-masked
	if got := sig.take(); !slices.Equal(got, []string{"0xfee00000:0x30"}) || pba(m) != 4 {
		t.Fatalf("masked vector: %v, PBA %#x", got, pba(m))
	}
	if !m.Masked(2) || !m.Pending(2) {
		t.Fatal("Masked/Pending disagree with the table")
	}
	// Function mask holds everything back.
	msgCtl(cfg, m, 0xc000)
	m.Notify(0)
	writeEntry(m, 2, 0xfee0_2000, 0x32, false)
	if got := sig.take(); len(got) != 0 || pba(m) != 5 {
		t.Fatalf("function masked: %v, PBA %#x", got, pba(m))
	}
	msgCtl(cfg, m, 0x8000)
	got := sig.take()
	slices.Sort(got)
	if !slices.Equal(got, []string{"0xfee00000:0x30", "0xfee02000:0x32"}) || pba(m) != 0 {
		t.Fatalf("function unmask: %v, PBA %#x", got, pba(m))
	}
	m.Notify(7) // out of range
	m.Notify(-1)
	if m.Dropped.Load() != 2 {
		t.Fatalf("dropped %d", m.Dropped.Load())
	}
}

// With an EventRouter each unmasked vector gets a GSI route and an irqfd;
// Notify writes the irqfd; masking detaches it; rewriting an entry
// re-targets the route; an external eventfd raised while masked shows in
// the PBA and is delivered on unmask.
func TestMSIXIrqfd(t *testing.T) {
	rt := newRecRouter()
	sig := &recSignaler{}
	cfg, m := msixSetup(t, sig, rt)
	writeEntry(m, 0, 0xfee0_0000, 0x30, false)
	msgCtl(cfg, m, 0x8000)
	if got := rt.take(); !slices.Equal(got, []string{"route 30 0xfee00000:0x30", "irqfd 30"}) {
		t.Fatalf("enable: %v", got)
	}
	fd := rt.irqfds[30]
	m.Notify(0)
	if n := readEventfd(t, fd); n != 1 {
		t.Fatalf("irqfd count %d", n)
	}
	// Rewrite the entry while unmasked: route follows.
	writeEntry(m, 0, 0xfee0_1000, 0x31, false)
	if got := rt.take(); !slices.Contains(got, "update 30 0xfee01000:0x31") {
		t.Fatalf("rewrite: %v", got)
	}
	// Mask: irqfd detached, Notify goes pending, unmask re-attaches and delivers.
	writeEntry(m, 0, 0xfee0_1000, 0x31, true)
	m.Notify(0)
	if pba(m) != 1 || len(rt.irqfds) != 0 {
		t.Fatalf("masked: PBA %#x irqfds %v", pba(m), rt.irqfds)
	}
	writeEntry(m, 0, 0xfee0_1000, 0x31, false)
	if pba(m) != 0 || readEventfd(t, rt.irqfds[30]) != 1 {
		t.Fatal("pending vector not delivered through the irqfd on unmask")
	}
	if len(sig.take()) != 0 {
		t.Fatal("KVM_SIGNAL_MSI used despite the irqfd")
	}
	// External eventfd (an ivshmem peer) on vector 1, masked.
	ext, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	must(t, err)
	defer unix.Close(ext)
	writeEntry(m, 1, 0xfee0_0000, 0x40, true)
	must(t, m.SetIrqfd(1, ext))
	rt.take()
	var one [8]byte
	one[0] = 1
	unix.Write(ext, one[:]) // the peer rings while masked
	if pba(m) != 2 {
		t.Fatalf("PBA %#x after a masked external signal", pba(m))
	}
	writeEntry(m, 1, 0xfee0_0000, 0x40, false)
	log := rt.take()
	if len(log) != 2 || log[1] != "irqfd 31" || rt.irqfds[31] != ext {
		t.Fatalf("unmask external: %v", log)
	}
	if readEventfd(t, ext) != 1 {
		t.Fatal("pending external signal not re-raised on the irqfd")
	}
	must(t, m.ClearIrqfd(1))
	must(t, m.Close())
	if len(rt.irqfds) != 0 || len(rt.routes) != 0 {
		t.Fatalf("Close left %v %v", rt.irqfds, rt.routes)
	}
}

func readEventfd(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	n, err := unix.Read(fd, b[:])
	if err == unix.EAGAIN {
		return 0
	}
	if err != nil || n != 8 {
		t.Fatalf("reading eventfd: %v", err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func TestNewMSIXRejects(t *testing.T) {
	for _, c := range []MSIXConfig{
		{Vectors: 0},
		{Vectors: 2049},
		{Vectors: 4, TableOffset: 4},
		{Vectors: 4, TableBAR: 6},
		{Vectors: 4, TableOffset: 0, PBAOffset: 0x20},
	} {
		if _, err := NewMSIX(NewConfigSpace(Header{}), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
