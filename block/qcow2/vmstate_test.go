package qcow2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// vmStateData is a deterministic VM state of n bytes: random data with
// runs of zeroes (whole clusters of them and shorter ones), as RAM looks.
func vmStateData(seed int64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewSource(seed))
	r.Read(b)
	for i := 0; i < n/20000; i++ {
		off := r.Intn(n)
		clear(b[off:min(n, off+r.Intn(200000))])
	}
	return b
}

// streamIn returns a state callback writing b in chunks of random sizes
// (single bytes up to several clusters), as a device-by-device encoder
// would.
func streamIn(b []byte, seed int64) func(io.Writer) error {
	return func(w io.Writer) error {
		r := rand.New(rand.NewSource(seed))
		for len(b) > 0 {
			n := min(len(b), []int{1, 7, 4096, 5000, 70000, 1 << 20}[r.Intn(6)])
			if _, err := w.Write(b[:n]); err != nil {
				return err
			}
			b = b[n:]
		}
		return nil
	}
}

// readVMState reads snapshot name's VM state twice (as loadvm does:
// verify, then apply) and fails unless both reads agree.
func readVMState(t testing.TB, img *Image, name string) []byte {
	t.Helper()
	r, size, err := img.VMState(name)
	if err != nil {
		t.Fatalf("VMState(%s): %v", name, err)
	}
	var passes [2][]byte
	for i := range passes {
		b, err := io.ReadAll(bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<20))
		if err != nil {
			t.Fatalf("reading the VM state of %s: %v", name, err)
		}
		passes[i] = b
	}
	if !bytes.Equal(passes[0], passes[1]) {
		t.Fatalf("VM state of %s differs between two reads: %s", name, firstDiff(passes[0], passes[1]))
	}
	return passes[0]
}

// activeTailEmpty fails if the active L1 table maps anything beyond the
// disk (the VM state must leave the active tree after a save).
func activeTailEmpty(t testing.TB, img *Image) {
	t.Helper()
	for i := img.vmStateL1Index(img.hdr.size); i < int64(len(img.l1)); i++ {
		if img.l1[i] != 0 {
			t.Fatalf("active L1 entry %d (beyond the disk) is %#x", i, img.l1[i])
		}
	}
}

// readActiveTail reads n bytes of the active tree from the VM state
// offset on (where qemu-io's read -b reads).
func readActiveTail(t testing.TB, img *Image, n int) []byte {
	t.Helper()
	img.quiesce()
	l1 := append([]uint64(nil), img.l1...)
	base := img.vmStateL1Index(img.hdr.size) * img.l1Span()
	img.unquiesce()
	b := make([]byte, n)
	r := &stateReader{img: img, l1: l1, base: base, size: int64(n)}
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatalf("reading the active tree beyond the disk: %v", err)
	}
	return b
}

func snapshotByName(t testing.TB, img *Image, name string) block.SnapshotInfo {
	t.Helper()
	list, err := img.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range list {
		if sn.Name == name {
			return sn
		}
	}
	t.Fatalf("snapshot %s not listed", name)
	return block.SnapshotInfo{}
}

// ownCheckClean runs the engine's own check and fails on anything found.
func ownCheckClean(t testing.TB, img *Image) {
	t.Helper()
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Corruptions != 0 || res.Leaks != 0 || res.CheckErrors != 0 {
		t.Fatalf("own check: %+v %v %v", res, err, res.Messages)
	}
}

// TestVMStateSaveLoad saves VM states with snapshots across cluster sizes,
// extended L2, v2 and lazy refcounts, and checks that each reads back
// exactly, that the disk is untouched, that apply restores the disk only,
// that delete frees the state, and that qemu-img check stays clean
// throughout.
func TestVMStateSaveLoad(t *testing.T) {
	cases := []block.CreateOptions{
		{Size: 8 << 20, ClusterSize: 4096},
		{Size: 8<<20 + 512},
		{Size: 6 << 20, ClusterSize: 32768, ExtendedL2: true},
		{Size: 4 << 20, ClusterSize: 4096, Compat: "0.10"},
		{Size: 4 << 20, ClusterSize: 4096, LazyRefcounts: true},
		{Size: 4 << 20, ClusterSize: 512, RefcountBits: 4},
	}
	for _, o := range cases {
		t.Run(fmt.Sprintf("cs%d_ext%v_%s_lazy%v_rb%d", o.ClusterSize, o.ExtendedL2, o.Compat, o.LazyRefcounts, o.RefcountBits), func(t *testing.T) {
			t.Parallel()
			img, path := mustCreate(t, o)
			defer func() { img.Close() }()
			rng := rand.New(rand.NewSource(o.Size))
			model1 := make([]byte, img.Size())
			randomOps(t, img, model1, rng, 60, 3*img.ClusterSize())
			st1 := vmStateData(1, 3<<20+777)
			const clock = 3723_456_789_012
			if err := img.CreateSnapshotWithState("vm1", clock, streamIn(st1, 1)); err != nil {
				t.Fatal(err)
			}
			activeTailEmpty(t, img)
			assertEqual(t, "disk after saving", readAll(t, img), model1)
			sn := snapshotByName(t, img, "vm1")
			if sn.VMStateSize != int64(len(st1)) || sn.VMClock.Nanoseconds() != clock || sn.ICount != -1 || sn.DiskSize != img.Size() {
				t.Fatalf("snapshot vm1: %+v", sn)
			}
			assertEqual(t, "VM state vm1", readVMState(t, img, "vm1"), st1)
			img.Flush()
			qemuCheck(t, path, false)
			ownCheckClean(t, img)

			// A disk-only save, then a second, shorter state.
			model2 := append([]byte(nil), model1...)
			randomOps(t, img, model2, rng, 40, 3*img.ClusterSize())
			if err := img.CreateSnapshotWithState("disk", 5, nil); err != nil {
				t.Fatal(err)
			}
			if sn := snapshotByName(t, img, "disk"); sn.VMStateSize != 0 || sn.VMClock != 5 || sn.ICount != -1 {
				t.Fatalf("disk-only snapshot: %+v", sn)
			}
			if r, n, err := img.VMState("disk"); err != nil || n != 0 {
				t.Fatalf("VMState of a disk-only snapshot: %v %d %v", r, n, err)
			}
			st3 := vmStateData(3, 100<<10+3)
			if err := img.CreateSnapshotWithState("vm3", 7, streamIn(st3, 3)); err != nil {
				t.Fatal(err)
			}
			activeTailEmpty(t, img)
			assertEqual(t, "VM state vm1 after vm3", readVMState(t, img, "vm1"), st1)
			assertEqual(t, "VM state vm3", readVMState(t, img, "3"), st3) // by ID
			img.Flush()
			qemuCheck(t, path, false)

			// Apply takes the whole tree, as QEMU's goto: the disk, and
			// vm1's state beyond it; the states stay readable.
			if err := img.ApplySnapshot("vm1"); err != nil {
				t.Fatal(err)
			}
			assertEqual(t, "disk after applying vm1", readAll(t, img), model1)
			assertEqual(t, "active tree beyond the disk after applying vm1", readActiveTail(t, img, len(st1)), st1)
			assertEqual(t, "VM state vm1 after apply", readVMState(t, img, "vm1"), st1)
			img.Flush()
			qemuCheck(t, path, false)
			if err := img.CreateSnapshot("after-apply"); err != nil {
				t.Fatal(err)
			}

			// Reopened, the states read the same.
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			ro, err := Open(path, block.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			assertEqual(t, "VM state vm3 read-only", readVMState(t, ro, "vm3"), st3)
			ro.Close()
			if img, err = Open(path, block.Options{}); err != nil {
				t.Fatal(err)
			}
			if err := img.DeleteSnapshot("vm1"); err != nil {
				t.Fatal(err)
			}
			assertEqual(t, "VM state vm3 after deleting vm1", readVMState(t, img, "vm3"), st3)
			img.Flush()
			qemuCheck(t, path, false)
			for _, name := range []string{"disk", "vm3", "after-apply"} {
				if err := img.DeleteSnapshot(name); err != nil {
					t.Fatal(err)
				}
			}
			assertEqual(t, "disk at the end", readAll(t, img), model1)
			img.Flush()
			qemuCheck(t, path, false)
			ownCheckClean(t, img)
		})
	}
}

// TestVMStateZeroClustersFree: a 32 MiB state that is all zeroes but for
// three clusters allocates only those (and their L2 tables), and still
// reads back whole.
func TestVMStateZeroClustersFree(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 4 << 20, ClusterSize: 4096})
	defer img.Close()
	st := make([]byte, 32<<20)
	for _, off := range []int{0, 5<<20 + 17, 32<<20 - 1} {
		st[off] = 0xa5
	}
	before, _ := os.Stat(path)
	if err := img.CreateSnapshotWithState("sparse", 1, streamIn(st, 9)); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	// 3 data clusters, 3 L2 tables, L1 copies and growth, refcount
	// blocks, the snapshot table: a few dozen clusters, not 8192.
	if grown := after.Size() - before.Size(); grown > 48*4096 {
		t.Fatalf("a state of zeroes but for 3 clusters grew the file by %d bytes", grown)
	}
	assertEqual(t, "sparse VM state", readVMState(t, img, "sparse"), st)
	img.Flush()
	qemuCheck(t, path, false)
}

// TestVMStateFailedSave: a state callback that fails leaves no snapshot,
// no leak and the disk as it was; bad names and read-only images are
// refused before the callback runs.
func TestVMStateFailedSave(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 4 << 20, ClusterSize: 4096})
	defer img.Close()
	model := make([]byte, img.Size())
	randomOps(t, img, model, rand.New(rand.NewSource(5)), 30, 16384)
	boom := errors.New("device refused")
	err := img.CreateSnapshotWithState("half", 1, func(w io.Writer) error {
		w.Write(vmStateData(2, 2<<20))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed save: %v, want the callback's error", err)
	}
	if list, _ := img.Snapshots(); len(list) != 0 {
		t.Fatalf("a failed save left snapshots %+v", list)
	}
	activeTailEmpty(t, img)
	assertEqual(t, "disk after a failed save", readAll(t, img), model)
	img.Flush()
	qemuCheck(t, path, false)
	called := false
	if err := img.CreateSnapshotWithState("", 1, func(io.Writer) error { called = true; return nil }); err == nil || called {
		t.Fatalf("empty name: err %v, callback called %v", err, called)
	}
	if _, _, err := img.VMState("nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("VMState of a missing snapshot: %v", err)
	}
	img.Close()
	ro, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.CreateSnapshotWithState("x", 1, nil); !errors.Is(err, errReadOnly) {
		t.Fatalf("read-only save: %v", err)
	}
}

// patchBE64 overwrites 8 bytes of a file with v, big endian.
func patchBE64(t testing.TB, path string, off int64, v uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(b[off:], v)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestVMStateBadSize: a vm_state_size or disk_size that puts the state
// beyond the snapshot's L1 table (up to absurd 64-bit values) is a clear
// error; a state that ends inside the table but beyond what was written
// reads as zeroes there. Nothing is allocated by size.
func TestVMStateBadSize(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 4 << 20, ClusterSize: 4096})
	st := vmStateData(4, 300<<10)
	if err := img.CreateSnapshotWithState("vm", 1, streamIn(st, 4)); err != nil {
		t.Fatal(err)
	}
	snaps, _, err := img.readSnapshots()
	if err != nil {
		t.Fatal(err)
	}
	// The state may reach the end of what the snapshot's L1 table maps.
	room := uint64((int64(snaps[0].l1Size) - img.vmStateL1Index(4<<20)) * img.l1Span())
	entry := int64(img.hdr.snapOff) // the only snapshot table entry
	img.Close()
	for _, c := range []struct {
		at   int64 // 40: vm_state_size, 48: disk_size (spec "Snapshots", extra data)
		v    uint64
		want string // "" = readable, zeroes after the saved bytes
	}{
		{40, 1 << 62, "goes beyond its L1 table"},
		{40, 1<<64 - 1, "goes beyond its L1 table"},
		{40, room + 1, "goes beyond its L1 table"},
		{40, room, ""},
		{48, 1 << 63, "goes beyond its L1 table"},
		{48, 1<<64 - 512, "goes beyond its L1 table"},
	} {
		patchBE64(t, path, entry+40, uint64(len(st)))
		patchBE64(t, path, entry+48, 4<<20)
		patchBE64(t, path, entry+c.at, c.v)
		ro, err := Open(path, block.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ro.Snapshots(); err != nil {
			t.Fatalf("listing with field %d = %#x: %v", c.at, c.v, err)
		}
		r, size, err := ro.VMState("vm")
		if c.want != "" {
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("field %d = %#x: VMState gave %v, %d, %v", c.at, c.v, r, size, err)
			}
			ro.Close()
			continue
		}
		if err != nil || size != int64(c.v) {
			t.Fatalf("field %d = %#x: VMState gave %d, %v", c.at, c.v, size, err)
		}
		want := append(append([]byte(nil), st...), make([]byte, int(c.v)-len(st))...)
		assertEqual(t, "VM state padded with zeroes", readVMState(t, ro, "vm"), want)
		ro.Close()
	}
}

// TestResizeDropsStaleState: VM state that an interrupted save left in
// the active tree beyond the disk does not show up when the disk grows.
func TestResizeDropsStaleState(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 2 << 20, ClusterSize: 4096})
	defer img.Close()
	writeStaleTail(t, img, bytes.Repeat([]byte{0xee}, 8192))
	if err := img.Resize(8 << 20); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "grown disk", readAll(t, img), make([]byte, 8<<20))
	img.Flush()
	qemuCheck(t, path, false)
}

// writeStaleTail puts data into the active tree beyond the disk, as a save
// killed before its end leaves it (or qemu-img snapshot -a, which copies a
// snapshot's VM state into the active tree).
func writeStaleTail(t testing.TB, img *Image, data []byte) {
	t.Helper()
	img.quiesce()
	err := img.writeBeyondDisk(data, img.vmStateL1Index(img.hdr.size)*img.l1Span())
	if err == nil {
		err = img.flushLocked()
	}
	img.unquiesce()
	if err != nil {
		t.Fatal(err)
	}
}

// TestVMStateOverStaleTail: a save over state left in the active tree
// beyond the disk frees it, and the new state's zero clusters read as
// zeroes, not as the old state.
func TestVMStateOverStaleTail(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 2 << 20, ClusterSize: 4096})
	defer img.Close()
	writeStaleTail(t, img, bytes.Repeat([]byte{0xee}, 64<<10))
	st := make([]byte, 128<<10)
	st[100<<10] = 1
	if err := img.CreateSnapshotWithState("vm", 1, streamIn(st, 1)); err != nil {
		t.Fatal(err)
	}
	activeTailEmpty(t, img)
	assertEqual(t, "VM state over a stale one", readVMState(t, img, "vm"), st)
	img.Flush()
	qemuCheck(t, path, false)
}

// TestApplySnapshotTakesVMStateArea is iotest 029 with Debian's qemu-io as
// the judge: applying a snapshot copies its whole L1 table into the active
// one, so the snapshot's VM state area reads back through the active tree
// (qemu-io read -b), whether the state came from QEMU (qemu-io write -b
// far beyond the disk) or from a save by this engine; when the active L1
// is the longer one, its tail reads as zeroes afterwards.
func TestApplySnapshotTakesVMStateArea(t *testing.T) {
	testutil.NeedTool(t, "qemu-io")
	img, path := mustCreate(t, block.CreateOptions{Size: 64 << 20})
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, path, "qcow2", "write -b -P 0x11 1T 4k")
	reopen := func() *Image {
		img, err := Open(path, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	img = reopen()
	if err := img.CreateSnapshot("foo"); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("foo"); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	qemuIO(t, path, "qcow2", "read -b -P 0x11 1T 4k") // foo's state, now active

	// A save by this engine (it first drops what lies beyond the disk in
	// the active tree, then writes its state there), applied after QEMU's
	// state came back: the active tree shows the save's state and nothing
	// at 1T (the active L1 was longer than vm's: its tail is zeroed).
	img = reopen()
	st := bytes.Repeat([]byte{0x5a}, 8192)
	if err := img.CreateSnapshotWithState("vm", 1, streamIn(st, 1)); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("foo"); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("vm"); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	qemuIO(t, path, "qcow2", "read -b -P 0x5a 0 8k", "read -b -P 0 8k 56k", "read -b -P 0 1T 4k")
	img = reopen()
	if err := img.ApplySnapshot("foo"); err != nil {
		t.Fatal(err)
	}
	ownCheckClean(t, img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	qemuIO(t, path, "qcow2", "read -b -P 0x11 1T 4k")
}
