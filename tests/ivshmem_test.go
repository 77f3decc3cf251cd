//go:build amd64

package tests

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"github.com/petrel-vmm/petrel/devices/ivshmem/server"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qemuopt"
	"github.com/petrel-vmm/petrel/tests/guest"
)

const ivshmemHostMagic = 0x49565348 // "HSVI": the host's word at offset 0

// ivshmemServer runs an in-process ivshmem server over a /dev/shm object
// and maps that object for the host's own view.
func ivshmemServer(t *testing.T, vectors int) (sock string, shm []byte) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "ivshmem.sock")
	path := fmt.Sprintf("/dev/shm/petrel-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	s, err := server.New(server.Config{SocketPath: sock, ShmPath: path, Size: 1 << 20, Vectors: vectors, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	r, err := hostmem.OpenRegion("host", path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		<-done
		r.Close()
		os.Remove(path)
	})
	binary.LittleEndian.PutUint32(r.Mem, ivshmemHostMagic)
	return sock, r.Mem
}

// ivshmemPC builds a PC running elf with an ivshmem-doorbell device
// connected to sock (no testing.T: benchmarks use it too).
func ivshmemPC(elf, cmdline, sock string, out *syncBuffer) (*pc.Machine, *ivshmem.Device, error) {
	m, err := pc.New(pc.Config{Kernel: elf, Cmdline: cmdline, MemoryMiB: 64, Serial: out})
	if err != nil {
		return nil, nil, err
	}
	var dev *ivshmem.Device
	if _, err := m.Devices().AddPCIDevice("ivshmem0", -1, func(p devmgr.Plumbing) (pci.Device, error) {
		d, err := ivshmem.NewDoorbell(sock, 1, ivshmem.Interrupts{Router: p.Router, Signaler: p.Signaler, IRQ: p.IRQ})
		dev = d
		return d, err
	}); err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, dev, nil
}

// ivshmemGuest is ivshmemPC for tests.
func ivshmemGuest(t *testing.T, elf, cmdline, sock string) (*pc.Machine, *syncBuffer, *ivshmem.Device) {
	t.Helper()
	testutil.NeedKVM(t)
	out := &syncBuffer{}
	m, dev, err := ivshmemPC(elf, cmdline, sock, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, out, dev
}

// runPair runs two guests at once and returns their runs.
func runPair(t *testing.T, ma, mb *pc.Machine, oa, ob *syncBuffer) (guestRun, guestRun) {
	t.Helper()
	var ra, rb guestRun
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ra = run(t, ma, oa) }()
	go func() { defer wg.Done(); rb = run(t, mb, ob) }()
	wg.Wait()
	return ra, rb
}

var pingPongRE = regexp.MustCompile(`PINGPONG rounds=\d+ cycles=\d+ tsc_hz=\d+ ns_per_round=(\d+)`)

func pingPongCmdline(role, mode string, exits bool, rounds int) string {
	c := fmt.Sprintf("role=%s mode=%s rounds=%d", role, mode, rounds)
	if exits {
		c += " exits=1"
	}
	return c
}

func testIvshmemPingPong(t *testing.T, mode string, rounds int) {
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "pingpong.c"))
	sock, shm := ivshmemServer(t, 1)
	ma, oa, da := ivshmemGuest(t, elf, pingPongCmdline("a", mode, false, rounds), sock)
	mb, ob, db := ivshmemGuest(t, elf, pingPongCmdline("b", mode, false, rounds), sock)
	if da.ID() != 0 || db.ID() != 1 {
		t.Fatalf("peer IDs %d and %d, want 0 and 1", da.ID(), db.ID())
	}
	ra, rb := runPair(t, ma, mb, oa, ob)
	mustPass(t, ra)
	mustPass(t, rb)
	// The host's own mapping of the object holds what A wrote and B's ack.
	for i := 0; i < 1024; i++ {
		want := 0xa5000000 ^ uint32(i)*2654435761
		if got := binary.LittleEndian.Uint32(shm[0x1000+4*i:]); got != want {
			t.Fatalf("host sees pattern word %d = %#x, want %#x", i, got, want)
		}
	}
	if got := binary.LittleEndian.Uint32(shm[0x108:]); got != 0xb0b0600d {
		t.Fatalf("host sees ack %#x", got)
	}
	if got := binary.LittleEndian.Uint32(shm[0x104:]); got != 2 {
		t.Fatalf("host sees B's published ID+1 = %d, want 2", got)
	}
	if n := da.DroppedDoorbells.Load() + db.DroppedDoorbells.Load(); n != 0 {
		t.Fatalf("%d doorbells dropped", n)
	}
	// Every doorbell matched an ioeventfd in the kernel.
	if n := da.VMMDoorbells.Load() + db.VMMDoorbells.Load(); n != 0 {
		t.Fatalf("%d doorbells exited to the VMM instead of an ioeventfd", n)
	}
	// In pin mode every event went through the device's poller; with
	// MSI-X the kernel's irqfd took them all.
	want := uint64(0)
	if mode == "pin" {
		want = uint64(rounds) + 1
	}
	if got := db.Interrupts.Load(); got != want {
		t.Fatalf("B's poller took %d events, want %d", got, want)
	}
	if m := pingPongRE.FindStringSubmatch(ra.Serial); m != nil {
		t.Logf("%s doorbell round trip: %s ns", mode, m[1])
	} else {
		t.Fatal("A printed no PINGPONG line")
	}
}

// TestIvshmemTwoGuestsMSIX: guest A writes a pattern into BAR2 and rings
// B's doorbell; B takes MSI-X vector 0 (an irqfd), checks the pattern and
// rings back; the host sees the same bytes through its own mapping.
func TestIvshmemTwoGuestsMSIX(t *testing.T) { testIvshmemPingPong(t, "msix", 50) }

// TestIvshmemTwoGuestsPin: the same with MSI-X off: B's device raises
// INTA# with status 1; B reads the status (1, then 0).
func TestIvshmemTwoGuestsPin(t *testing.T) { testIvshmemPingPong(t, "pin", 50) }

// BenchmarkIvshmemRoundTrip: b.N doorbell round trips between two guests
// (A rings B, B's interrupt handler counts, B rings back), reported as
// ns/roundtrip from the guest's PM-timer-calibrated TSC. "spin" guests wait
// at CPL3 without exits; "exits" guests leave the CPU on every spin.
func BenchmarkIvshmemRoundTrip(b *testing.B) {
	for _, mode := range []string{"msix", "pin"} {
		for _, exits := range []bool{false, true} {
			name := mode + "/spin"
			if exits {
				name = mode + "/exits"
			}
			b.Run(name, func(b *testing.B) { benchPingPong(b, mode, exits) })
		}
	}
}

func benchPingPong(b *testing.B, mode string, exits bool) {
	testutil.NeedKVM(b)
	elf := guest.Build(b, filepath.Join(guest.Dir(), "ivshmem", "pingpong.c"))
	sock := filepath.Join(b.TempDir(), "ivshmem.sock")
	path := fmt.Sprintf("/dev/shm/petrel-bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	defer os.Remove(path)
	s, err := server.New(server.Config{SocketPath: sock, ShmPath: path, Size: 1 << 20, Vectors: 1})
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	r, err := hostmem.OpenRegion("host", path, 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	binary.LittleEndian.PutUint32(r.Mem, ivshmemHostMagic)
	var outs [2]*syncBuffer
	var ms [2]*pc.Machine
	for i, role := range []string{"a", "b"} {
		outs[i] = &syncBuffer{}
		m, _, err := ivshmemPC(elf, pingPongCmdline(role, mode, exits, b.N), sock, outs[i])
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		ms[i] = m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); m.Run(ctx) }()
	}
	wg.Wait()
	b.StopTimer()
	for _, o := range outs {
		if resultLine(o.String()) != "RESULT PASS" {
			b.Fatalf("guest failed:\n%s", o.String())
		}
	}
	m := pingPongRE.FindStringSubmatch(outs[0].String())
	if m == nil {
		b.Fatalf("no PINGPONG line:\n%s", outs[0].String())
	}
	ns, _ := strconv.ParseFloat(m[1], 64)
	b.ReportMetric(ns, "ns/roundtrip")
}

// TestIvshmemHostileGuest: random values to every BAR0 offset and width;
// the device counts them and keeps working, the VMM does not fail.
func TestIvshmemHostileGuest(t *testing.T) {
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "hostile.c"))
	sock, shm := ivshmemServer(t, 1)
	m, out, dev := ivshmemGuest(t, elf, "", sock)
	r := run(t, m, out)
	mustPass(t, r)
	if dev.BadAccesses.Load() == 0 {
		t.Fatal("no odd accesses counted")
	}
	if got := binary.LittleEndian.Uint32(shm[64:]); got != 0x12345678 {
		t.Fatalf("host sees %#x at BAR2+64", got)
	}
	t.Logf("bad accesses %d, dropped doorbells %d", dev.BadAccesses.Load(), dev.DroppedDoorbells.Load())
}

// TestIvshmemQMPDeviceAdd: device_add ivshmem-plain (shm=, size=) and
// ivshmem-doorbell (socket=) through the machine's qmp.Machine side; the
// guest then finds the plain device and the host sees its writes.
func TestIvshmemQMPDeviceAdd(t *testing.T) {
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "plain.c"))
	sock, _ := ivshmemServer(t, 1)
	m, out := newMachine(t, pc.Config{Kernel: elf})
	file := filepath.Join(t.TempDir(), "plain")
	add := func(driver string, props map[string]any) error {
		args := map[string]any{"driver": driver, "id": driver}
		for k, v := range props {
			args[k] = v
		}
		spec, err := qemuopt.DeviceFromQMP(args)
		if err != nil {
			return err
		}
		_, err = m.Devices().AddDevice(spec, true)
		return err
	}
	for _, bad := range []struct {
		driver string
		props  map[string]any
	}{
		{"ivshmem-plain", map[string]any{"memdev": "m0"}},
		{"ivshmem-plain", map[string]any{"shm": file, "size": "3M"}},
		{"ivshmem-plain", map[string]any{"size": "64K"}},
		{"ivshmem-doorbell", map[string]any{"chardev": "c"}},
		{"ivshmem-doorbell", map[string]any{"socket": filepath.Join(t.TempDir(), "none")}},
		{"ivshmem-doorbell", map[string]any{"socket": sock, "vectors": json.Number("99")}},
	} {
		if err := add(bad.driver, bad.props); err == nil {
			t.Fatalf("device_add %s %v succeeded", bad.driver, bad.props)
		}
	}
	if err := add("ivshmem-plain", map[string]any{"shm": file, "size": "64K"}); err != nil {
		t.Fatal(err)
	}
	if err := add("ivshmem-doorbell", map[string]any{"socket": sock, "vectors": json.Number("2")}); err != nil {
		t.Fatal(err)
	}
	var plain, bell *ivshmem.Device
	for _, d := range m.PCI().Devices() {
		if dev, ok := m.PCI().Device(d.Slot).(*ivshmem.Device); ok {
			if dev.MSIX() == nil {
				plain = dev
			} else {
				bell = dev
			}
		}
	}
	if plain == nil || bell == nil || bell.ID() != 0 || bell.MSIX().Vectors() != 2 {
		t.Fatalf("device_add did not plug both devices (plain %v, doorbell %v)", plain != nil, bell != nil)
	}
	binary.LittleEndian.PutUint32(plain.Memory(), ivshmemHostMagic)
	r := run(t, m, out)
	mustPass(t, r)
	data, err := os.ReadFile(file)
	if err != nil || binary.LittleEndian.Uint32(data[0x2000:]) != 0x5a5a0000 {
		t.Fatalf("the guest's write is not in %s (%v)", file, err)
	}
}

// TestIvshmemHotUnplug: a device_add'ed ivshmem-doorbell is used by the
// guest (MSI-X irqfd, doorbell ioeventfd, BAR2 memory slot) and then
// ejected by it. The machine emits DEVICE_DELETED, and Release runs at once:
// a Go peer on the same server sees the device leave while the machine is
// still open, and the guest sees the old BARs decode nothing.
func TestIvshmemHotUnplug(t *testing.T) {
	elf := guest.Build(t, filepath.Join(guest.Dir(), "ivshmem", "unplug.c"))
	sock, shm := ivshmemServer(t, 1)
	var mu sync.Mutex
	var events []string
	cfg := pc.Config{Kernel: elf, Events: func(ev string, data any) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, fmt.Sprint(ev, data))
	}}
	m, out := newMachine(t, cfg)
	if _, err := m.Devices().AddDevice(qemuopt.DeviceSpec{Driver: "ivshmem-doorbell", ID: "iv0", Slot: 5,
		Socket: sock, Vectors: 1}, true); err != nil {
		t.Fatal(err)
	}
	peer, err := proto.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	evs := peerEvents(peer)
	r := run(t, m, out)
	mustPass(t, r)
	if !strings.Contains(r.Serial, "UNPLUG slot=5 id=0") {
		t.Fatal("guest did not report the unplug of slot 5")
	}
	expectEvent(t, evs, proto.VectorAdded, 0, 0) // the device
	expectEvent(t, evs, proto.VectorAdded, 1, 0) // the peer itself
	expectEvent(t, evs, proto.PeerLeft, 0, 0)    // the device, released at eject
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(events, "\n"), "DEVICE_DELETED") {
		t.Fatalf("no DEVICE_DELETED event: %q", events)
	}
	if got := binary.LittleEndian.Uint32(shm[0x300:]); got != 0xfeedf00d {
		t.Fatalf("host sees %#x", got)
	}
	if m.PCI().Device(5) != nil {
		t.Fatal("slot 5 still holds a device")
	}
}
