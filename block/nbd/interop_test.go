package nbd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// openSock opens export "exp" of the qemu-nbd on sock.
func openSock(t *testing.T, sock string, readOnly bool) *Image {
	t.Helper()
	img, err := Open(Config{Unix: sock, Export: "exp", HasExport: true}, "raw", block.Options{ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Reads through qemu-nbd return the bytes qemu-img reads from the image
// qemu-io wrote: data, a zeroed range, unallocated space, an unaligned
// tail and a read crossing the end.
func TestReadsQemuWrittenImage(t *testing.T) {
	path := qemuImage(t, "3M", "write -P 0xa5 0 64k", "write -P 0x3c 1000k 100k", "write -z 2M 64k", "write -P 0x11 3070k 2k")
	want := qemuRaw(t, path)
	sock, _ := serve(t, "-f", "qcow2", "-r", path)
	img := openSock(t, sock, true)
	defer img.Close()
	if img.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", img.Size(), len(want))
	}
	got := make([]byte, len(want))
	if n, err := img.ReadAt(got, 0); err != nil || n != len(got) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes read over NBD differ from qemu-img's")
	}
	part := make([]byte, 3000)
	if _, err := img.ReadAt(part, 1000<<10-7); err != nil || !bytes.Equal(part, want[1000<<10-7:][:3000]) {
		t.Fatalf("unaligned read: %v", err)
	}
	tail := make([]byte, 4096)
	if n, err := img.ReadAt(tail, img.Size()-1024); n != 1024 || err == nil || !bytes.Equal(tail[:n], want[len(want)-1024:]) {
		t.Fatalf("read across the end: %d, %v", n, err)
	}
	if err := img.WriteZeroes(0, 512, false); err == nil {
		t.Fatal("write to a read-only export succeeded")
	}
}

// Block status over base:allocation gives qemu-img map's view of the
// export: the extents petrel sees are the ones qemu-img map prints.
func TestBlockStatusMatchesQemuMap(t *testing.T) {
	path := qemuImage(t, "4M", "write -P 1 0 512k", "write -z 1M 256k", "write -P 2 3M 64k")
	sock, _ := serve(t, "-f", "qcow2", "-r", path)
	var entries []struct {
		Start, Length int64
		Zero, Data    bool
	}
	out := run(t, "qemu-img", "map", "-f", "raw", "--output=json", "nbd+unix:///exp?socket="+sock)
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	img := openSock(t, sock, true)
	defer img.Close()
	var got []string
	for off := int64(0); off < img.Size(); {
		e, err := img.BlockStatus(off, img.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%d+%d zero=%t data=%t", off, e.Length, e.Flags&block.ExtentZero != 0, e.Flags&block.ExtentData != 0)
		got = append(got, s)
		off += e.Length
	}
	var want []string
	for _, e := range entries {
		want = append(want, fmt.Sprintf("%d+%d zero=%t data=%t", e.Start, e.Length, e.Zero, e.Data))
	}
	if fmt.Sprint(merge(got)) != fmt.Sprint(want) {
		t.Fatalf("block status\n got %v\nwant %v", merge(got), want)
	}
}

// merge joins adjacent extents with the same flags, as qemu-img map does.
func merge(exts []string) []string {
	var out []string
	var start, length int64
	var flags string
	for i, s := range exts {
		var off, n int64
		var f1, f2 string
		fmt.Sscanf(s, "%d+%d %s %s", &off, &n, &f1, &f2)
		if i > 0 && f1+" "+f2 == flags && start+length == off {
			length += n
			continue
		}
		if i > 0 {
			out = append(out, fmt.Sprintf("%d+%d %s", start, length, flags))
		}
		start, length, flags = off, n, f1+" "+f2
	}
	if len(exts) > 0 {
		out = append(out, fmt.Sprintf("%d+%d %s", start, length, flags))
	}
	return out
}

// Writes, zero writes and discards through qemu-nbd land in the qcow2
// image it serves: qemu-img check finds it clean and qemu-img reads back
// exactly what was written.
func TestWritesReachQcow2(t *testing.T) {
	path := qemuImage(t, "4M", "write -P 0x77 0 4M")
	sock, stop := serve(t, "-f", "qcow2", "--discard=unmap", path)
	img := openSock(t, sock, false)
	want := bytes.Repeat([]byte{0x77}, 4<<20)
	rng := rand.New(rand.NewSource(7))
	for range 20 {
		off, n := rng.Int63n(4<<20), 1+rng.Int63n(200<<10)
		n = min(n, 4<<20-off)
		p := make([]byte, n)
		rng.Read(p)
		if _, err := img.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	if err := img.WriteZeroes(1<<20, 300<<10, false); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 1<<20+300<<10])
	if err := img.WriteZeroes(3<<20, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	clear(want[3<<20:])
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	run(t, "qemu-img", "check", path)
	if got := qemuRaw(t, path); !bytes.Equal(got, want) {
		t.Fatal("qemu-img reads other bytes than petrel wrote over NBD")
	}
}

// x-dirty-bitmap reads block status from another context, here qemu-nbd
// -A's qemu:allocation-depth: depth 1 (local) is a hole, depth 2 (from
// the backing file) zero, depth 0 (unallocated) data, as iotest
// nbd-qemu-allocation relies on.
func TestDirtyBitmapContext(t *testing.T) {
	base := qemuImage(t, "4M", "write 0 2M")
	top := qemuImage(t, "4M")
	run(t, "qemu-img", "rebase", "-u", "-F", "qcow2", "-b", base, top)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write 1M 2M", top)
	sock, _ := serve(t, "-f", "qcow2", "-r", "-A", top)
	img, err := Open(Config{Unix: sock, Export: "exp", HasExport: true, DirtyBitmap: "qemu:allocation-depth"}, "nbd", block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, c := range []struct {
		off, length int64
		flags       int
	}{
		{0, 1 << 20, block.ExtentData | block.ExtentZero | block.ExtentAllocated},
		{1 << 20, 2 << 20, 0},
		{3 << 20, 1 << 20, block.ExtentData | block.ExtentAllocated},
	} {
		e, err := img.BlockStatus(c.off, img.Size()-c.off)
		if err != nil || e.Length != c.length || e.Flags != c.flags {
			t.Errorf("at %d: %+v %v, want length %d flags %#x", c.off, e, err, c.length, c.flags)
		}
	}
	if _, err := Open(Config{Unix: sock, Export: "exp", HasExport: true, DirtyBitmap: "qemu:dirty-bitmap:nope"}, "nbd", block.Options{ReadOnly: true}); err == nil {
		t.Error("a context the server lacks was accepted")
	}
}

// Several goroutines (as a VM's virtio queues) write and read their own
// quarter of the export through one Image at once; each reads back its
// own writes, and qemu-img finds every byte in the image afterwards.
func TestConcurrentRequests(t *testing.T) {
	path := qemuImage(t, "4M")
	sock, stop := serve(t, "-f", "qcow2", path)
	img := openSock(t, sock, false)
	want := make([]byte, 4<<20)
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewSource(int64(g)))
			base := int64(g) << 20
			for range 40 {
				off, n := rng.Int63n(1<<20), 1+rng.Int63n(64<<10)
				n = min(n, 1<<20-off)
				p := make([]byte, n)
				rng.Read(p)
				if _, err := img.WriteAt(p, base+off); err != nil {
					errs <- err
					return
				}
				copy(want[base+off:], p)
				back := make([]byte, n)
				if _, err := img.ReadAt(back, base+off); err != nil || !bytes.Equal(back, p) {
					errs <- fmt.Errorf("goroutine %d: read back at %d: %v", g, base+off, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	run(t, "qemu-img", "check", path)
	if !bytes.Equal(qemuRaw(t, path), want) {
		t.Fatal("qemu-img reads other bytes than the goroutines wrote")
	}
}
