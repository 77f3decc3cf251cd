package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// VM state in internal snapshots, across Petrel and QEMU: each lists the
// other's saved states alike, checks them clean, applies and deletes
// them, and QEMU's loadvm accepts a state Petrel wrote.

// vmStateHolder opens path read-write as a block.VMStateHolder.
func vmStateHolder(t *testing.T, path string) (block.Image, block.VMStateHolder) {
	t.Helper()
	img, err := block.Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, ok := img.(block.VMStateHolder)
	if !ok {
		t.Fatalf("%s engine keeps no VM state", img.Format())
	}
	return img, h
}

// savedState reads a snapshot's VM state through the interface.
func savedState(t *testing.T, h block.VMStateHolder, name string) []byte {
	t.Helper()
	r, size, err := h.VMState(name)
	if err != nil {
		t.Fatalf("VMState(%s): %v", name, err)
	}
	b, err := io.ReadAll(bufio.NewReader(io.NewSectionReader(r, 0, size)))
	if err != nil {
		t.Fatalf("reading VM state %s: %v", name, err)
	}
	return b
}

// sameListings compares `snapshot -l` and `info` (human and JSON) of
// qemu-img and Petrel on path.
func sameListings(t *testing.T, path string) string {
	t.Helper()
	q, p := run(t, "qemu-img", "snapshot", "-l", path), mustPetrel(t, "snapshot", "-l", path)
	if q != p {
		t.Fatalf("snapshot lists differ:\nqemu-img:\n%s\npetrel:\n%s", q, p)
	}
	compareInfoJSON(t, path, false)
	return q
}

// snapshotJSON returns qemu-img info's JSON entry of snapshot name.
func qemuSnapshotJSON(t *testing.T, path, name string) map[string]any {
	t.Helper()
	var info struct {
		Snapshots []map[string]any `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Snapshots {
		if s["name"] == name {
			return s
		}
	}
	t.Fatalf("qemu-img info lists no snapshot %s", name)
	return nil
}

// TestPetrelVMStateQemuReads: a VM state Petrel saves is listed by
// qemu-img with its size and clock (no icount, as QEMU's savevm), passes
// qemu-img check, and survives qemu-img snapshot -a and -d; a save over
// the state qemu-img's apply copied into the active image frees it.
func TestPetrelVMStateQemuReads(t *testing.T) {
	needQemu(t)
	for _, o := range []block.CreateOptions{{}, {ClusterSize: 4096}, {ClusterSize: 16384, ExtendedL2: true}} {
		p := filepath.Join(t.TempDir(), "vm.qcow2")
		o.Size = diskSize
		if err := block.Create("qcow2", p, o); err != nil {
			t.Fatal(err)
		}
		img, h := vmStateHolder(t, p)
		disk := writePattern(t, img, 21, nil)
		st := make([]byte, 1<<20+4321)
		rand.New(rand.NewSource(1)).Read(st[:600<<10])
		const clock = 3723_456_789_012 // 01:02:03.456
		if err := h.CreateSnapshotWithState("vm", clock, func(w io.Writer) error { _, err := w.Write(st); return err }); err != nil {
			t.Fatal(err)
		}
		img.Close()
		qemuCheckClean(t, p)
		list := sameListings(t, p)
		if !strings.Contains(list, "  1 MiB") || !strings.Contains(list, "01:02:03.456") {
			t.Fatalf("snapshot list lacks the VM size or clock:\n%s", list)
		}
		js := qemuSnapshotJSON(t, p, "vm")
		if js["vm-state-size"] != float64(len(st)) || js["vm-clock-sec"] != float64(3723) || js["icount"] != nil {
			t.Fatalf("qemu-img info's snapshot: %v", js)
		}

		// qemu-img's apply copies the state into the active image, as
		// QEMU's loadvm needs it there.
		run(t, "qemu-img", "snapshot", "-a", "vm", p)
		qemuCheckClean(t, p)
		sameBytes(t, "disk after qemu-img snapshot -a", qemuRaw(t, p), disk)
		img, h = vmStateHolder(t, p)
		sameBytes(t, "VM state after qemu-img snapshot -a", savedState(t, h, "vm"), st)
		st2 := bytes.Repeat([]byte("petrel "), 50000)
		if err := h.CreateSnapshotWithState("vm2", 1, func(w io.Writer) error { _, err := w.Write(st2); return err }); err != nil {
			t.Fatal(err)
		}
		img.Close()
		qemuCheckClean(t, p)
		sameListings(t, p)
		run(t, "qemu-img", "snapshot", "-d", "vm", p)
		qemuCheckClean(t, p)
		img, h = vmStateHolder(t, p)
		sameBytes(t, "VM state vm2 after qemu-img deleted vm", savedState(t, h, "vm2"), st2)
		img.Close()
		run(t, "qemu-img", "snapshot", "-d", "vm2", p)
		qemuCheckClean(t, p)
		sameBytes(t, "disk at the end", qemuRaw(t, p), disk)
	}
}

// qemuMonitor runs QEMU (TCG, pc, 64 MiB, a virtio disk on image, stopped
// at start) with the HMP monitor on stdin: it sends cmds one by one
// ("sleep" pauses 300 ms) and then quit, and returns the monitor output.
func qemuMonitor(t *testing.T, image string, cmds ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "64",
		"-nographic", "-S", "-nodefaults", "-drive", "file="+image+",if=virtio,format=qcow2", "-monitor", "stdio")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(cmds, "quit") {
		if c == "sleep" {
			time.Sleep(300 * time.Millisecond)
			continue
		}
		io.WriteString(in, c+"\n")
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("qemu-system-x86_64 %s: %v\n%s", strings.Join(cmds, "; "), err, out.String())
	}
	return out.String()
}

// checkQemuStream checks that b is a whole QEMU migration stream as
// savevm writes it: the "QEVM" magic and version 3 at the start, and at
// the end the JSON machine description (QEMU_VM_VMDESCRIPTION 0x06, its
// be32 length, then JSON up to the last byte).
func checkQemuStream(t *testing.T, b []byte) {
	t.Helper()
	if len(b) < 8 || string(b[:4]) != "QEVM" || binary.BigEndian.Uint32(b[4:]) != 3 {
		t.Fatalf("VM state does not start with QEMU's stream header: % x", b[:min(len(b), 8)])
	}
	for i := bytes.LastIndexByte(b, 6); i > 0; i = bytes.LastIndexByte(b[:i], 6) {
		if n := len(b) - i - 5; n > 0 && binary.BigEndian.Uint32(b[i+1:]) == uint32(n) && json.Valid(b[i+5:]) {
			return
		}
	}
	t.Fatalf("VM state of %d bytes does not end with QEMU's machine description", len(b))
}

// TestQemuVMStatePetrelReads: a real QEMU savevm is listed by Petrel as by
// qemu-img, and Petrel reads QEMU's exact stream: written back by Petrel
// into another snapshot (QEMU's own deleted), QEMU's loadvm accepts it,
// while the same stream with its header damaged is refused. Petrel
// deleting QEMU's snapshot leaves the image clean.
func TestQemuVMStatePetrelReads(t *testing.T) {
	needQemu(t)
	testutil.NeedTool(t, "qemu-system-x86_64")
	p := filepath.Join(t.TempDir(), "q.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "8M")
	qemuPattern(t, p, "qcow2", 40)
	if out := qemuMonitor(t, p, "cont", "sleep", "stop", "savevm qtag"); strings.Contains(out, "Error") {
		t.Fatalf("savevm:\n%s", out)
	}
	qemuCheckClean(t, p)
	sameListings(t, p)
	size := qemuSnapshotJSON(t, p, "qtag")["vm-state-size"].(float64)

	img, h := vmStateHolder(t, p)
	st := savedState(t, h, "qtag")
	img.Close()
	if len(st) != int(size) {
		t.Fatalf("VMState gave %d bytes, qemu-img says %v", len(st), size)
	}
	checkQemuStream(t, st)

	cp := cloneFile(t, p)
	img, h = vmStateHolder(t, cp)
	if err := img.(block.Snapshotter).DeleteSnapshot("qtag"); err != nil {
		t.Fatal(err)
	}
	if err := h.CreateSnapshotWithState("ptag", 1e9, func(w io.Writer) error { _, err := w.Write(st); return err }); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), st...)
	bad[2] ^= 0xff // the magic
	if err := h.CreateSnapshotWithState("bad", 1e9, func(w io.Writer) error { _, err := w.Write(bad); return err }); err != nil {
		t.Fatal(err)
	}
	img.Close()
	qemuCheckClean(t, cp)
	sameListings(t, cp)
	if out := qemuMonitor(t, cp, "loadvm ptag", "info status"); strings.Contains(out, "Error") || !strings.Contains(out, "VM status: paused") {
		t.Fatalf("QEMU's loadvm of the state Petrel wrote:\n%s", out)
	}
	if out := qemuMonitor(t, cp, "loadvm bad"); !strings.Contains(out, "Error") {
		t.Fatalf("QEMU's loadvm accepted a damaged state:\n%s", out)
	}
	qemuCheckClean(t, cp)

	mustPetrel(t, "snapshot", "-d", "qtag", p)
	qemuCheckClean(t, p)
	if out := run(t, "qemu-img", "snapshot", "-l", p); strings.Contains(out, "qtag") {
		t.Fatalf("deleted snapshot still listed:\n%s", out)
	}
}
