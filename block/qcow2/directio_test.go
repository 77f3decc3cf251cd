package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// directDir returns a fresh directory on a file system that accepts
// O_DIRECT: t.TempDir() if it does, else one under /var/tmp.
func directDir(t *testing.T) string {
	t.Helper()
	for _, parent := range []string{"", "/var/tmp"} {
		var dir string
		if parent == "" {
			dir = t.TempDir()
		} else {
			d, err := os.MkdirTemp(parent, "petrel-direct-")
			if err != nil {
				continue
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
		fd, err := unix.Open(filepath.Join(dir, "probe"), unix.O_CREAT|unix.O_RDWR|unix.O_DIRECT, 0o644)
		if err == nil {
			unix.Close(fd)
			return dir
		}
	}
	t.Fatal("no directory on a file system supporting O_DIRECT (tried the test temp dir and /var/tmp)")
	return ""
}

// openFlags reads the open flags of fd from /proc/self/fdinfo.
func openFlags(t *testing.T, fd uintptr) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no flags line in fdinfo:\n%s", b)
	return 0
}

// unaligned returns a copy of b whose first byte sits at an odd address,
// as a virtio-blk buffer in guest memory may.
func unaligned(b []byte) []byte {
	s := make([]byte, len(b)+1)[1:]
	copy(s, b)
	return s
}

// directWorkload runs a deterministic mix of unaligned writes, zero writes,
// discards, compressed clusters and snapshots, returning the expected disk.
func directWorkload(t *testing.T, img *Image, seed int64) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	cs := img.ClusterSize()
	model := make([]byte, img.Size())
	randomOps(t, img, model, rng, 60, 3*max(cs, 4096))
	for i := 0; i < 20; i++ {
		off := rng.Int63n(img.Size() - 8192)
		buf := make([]byte, 1+rng.Intn(8191))
		rng.Read(buf)
		if _, err := img.WriteAt(unaligned(buf), off); err != nil {
			t.Fatalf("unaligned write %d+%d: %v", off, len(buf), err)
		}
		copy(model[off:], buf)
	}
	// Compressed clusters land at byte offsets in the file.
	for i := 0; i < 6; i++ {
		off := rng.Int63n(img.Size()/cs) * cs
		buf := bytes.Repeat([]byte{byte(rng.Intn(256)), byte(i), 7}, int(cs/3)+1)[:cs]
		buf[rng.Intn(int(cs))] ^= 0x55
		if err := img.WriteCompressed(unaligned(buf), off); err != nil {
			t.Fatalf("compressed write at %d: %v", off, err)
		}
		copy(model[off:], buf)
	}
	if img.rcBits == 1 {
		return model // snapshots need refcounts above 1
	}
	if err := img.CreateSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	snap := bytes.Clone(model)
	randomOps(t, img, model, rng, 40, 2*max(cs, 4096))
	assertEqual(t, "after snapshot", readAll(t, img), model)
	if err := img.ApplySnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	model = snap
	randomOps(t, img, model, rng, 30, 2*max(cs, 4096))
	if err := img.CreateSnapshot("s2"); err != nil {
		t.Fatal(err)
	}
	if err := img.DeleteSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	randomOps(t, img, model, rng, 20, 2*max(cs, 4096))
	return model
}

// TestDirectIO opens images with DirectIO (cache=none) and checks that the
// file really is O_DIRECT, that the engine's results match qemu-img, and
// that the host file is byte for byte what the same workload produces
// through the page cache (so bouncing and tail handling changed nothing,
// including the file size).
func TestDirectIO(t *testing.T) {
	cases := []struct {
		o block.CreateOptions
		// align4k raises the O_DIRECT alignment to 4096 so that with
		// 512-byte clusters metadata and data share blocks and every
		// write is a read-modify-write.
		align4k bool
	}{
		{o: block.CreateOptions{Size: 4 << 20, ClusterSize: 512, RefcountBits: 1}},
		{o: block.CreateOptions{Size: 8 << 20, ClusterSize: 65536, RefcountBits: 16}},
		{o: block.CreateOptions{Size: 24 << 20, ClusterSize: 2 << 20, RefcountBits: 16}},
		{o: block.CreateOptions{Size: 8<<20 + 512, ClusterSize: 16384, RefcountBits: 16, ExtendedL2: true}},
		{o: block.CreateOptions{Size: 4<<20 + 512, ClusterSize: 512, RefcountBits: 16}, align4k: true},
	}
	for _, c := range cases {
		o, align4k := c.o, c.align4k
		t.Run(fmt.Sprintf("cs%d_rb%d_l2x%v_4k%v", o.ClusterSize, o.RefcountBits, o.ExtendedL2, align4k), func(t *testing.T) {
			t.Parallel()
			dir := directDir(t)
			var files [2][]byte
			var model []byte
			for i, direct := range []bool{false, true} {
				path := filepath.Join(dir, fmt.Sprintf("d%v.qcow2", direct))
				if err := Create(path, o); err != nil {
					t.Fatal(err)
				}
				img, err := Open(path, block.Options{DirectIO: direct})
				if err != nil {
					t.Fatalf("open direct=%v: %v", direct, err)
				}
				hf := img.f.(*block.HostFile)
				if align4k {
					if err := hf.RaiseAlignment(4096); err != nil {
						t.Fatal(err)
					}
				}
				flags := openFlags(t, hf.File().Fd())
				if got := flags&unix.O_DIRECT != 0; got != direct {
					t.Fatalf("direct=%v: fd flags %#o", direct, flags)
				}
				model = directWorkload(t, img, int64(o.ClusterSize))
				assertEqual(t, "engine read-back", readAll(t, img), model)
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				qemuCheck(t, path, false)
				assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
				if files[i], err = os.ReadFile(path); err != nil {
					t.Fatal(err)
				}
			}
			// Snapshot entries hold the wall-clock time of their creation.
			for i := range files {
				maskSnapshotTable(t, files[i], o.ClusterSize)
			}
			assertEqual(t, "host file direct vs buffered", files[1], files[0])
			img, err := Open(filepath.Join(dir, "dtrue.qcow2"), block.Options{DirectIO: true, ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			assertEqual(t, "direct read-only reopen", readAll(t, img), model)
		})
	}
}

// maskSnapshotTable zeroes the snapshot table of a v3 image file.
func maskSnapshotTable(t *testing.T, b []byte, cs int64) {
	t.Helper()
	nb := binary.BigEndian.Uint32(b[60:])
	off := int64(binary.BigEndian.Uint64(b[64:]))
	_, n, err := parseSnapshots(bytes.NewReader(b), off, nb, int64(len(b)), tableParse{v3: true})
	if err != nil {
		t.Fatal(err)
	}
	clear(b[off : off+n])
}

// TestDirectIOConcurrentSubBlock has many goroutines write disjoint
// unaligned pieces of the same few host blocks at once: read-modify-write
// must not lose any of them.
func TestDirectIOConcurrentSubBlock(t *testing.T) {
	path := filepath.Join(directDir(t), "c.qcow2")
	if err := Create(path, block.CreateOptions{Size: 1 << 20, ClusterSize: 512}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{DirectIO: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.f.(*block.HostFile).RaiseAlignment(4096); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, img.Size())
	// Allocate the clusters first so that the writers race on data blocks.
	if _, err := img.WriteAt(make([]byte, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 64; i++ {
				off := int64(i*1000 + g*100 + 3) // pieces of 100 bytes, 8 per 1000
				p := bytes.Repeat([]byte{byte(g + 1)}, 97)
				if _, err := img.WriteAt(unaligned(p), off); err != nil {
					errs <- err
					return
				}
			}
		}()
		for i := 0; i < 64; i++ {
			off := i*1000 + g*100 + 3
			for k := 0; k < 97; k++ {
				model[off+k] = byte(g + 1)
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	assertEqual(t, "read-back", readAll(t, img), model)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
}

// TestDirectIOUnsupported opens an image with DirectIO on ramfs, which has
// no O_DIRECT: the open must fail with QEMU's message rather than fall back
// to the page cache. Mounting ramfs needs root; without it this is skipped.
func TestDirectIOUnsupported(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot mount ramfs (CI runs as root, so it should): %v", err)
		}
		t.Skipf("SKIPPING: cannot mount ramfs (needs root) to get a file system without O_DIRECT: %v", err)
	}
	defer unix.Unmount(dir, 0)
	path := filepath.Join(dir, "x.qcow2")
	if err := Create(path, block.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{DirectIO: true})
	if err == nil {
		img.Close()
		t.Fatal("DirectIO open on ramfs succeeded")
	}
	if !errors.Is(err, block.ErrNoDirectIO) || !strings.Contains(err.Error(), "filesystem does not support O_DIRECT") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not say the file system lacks O_DIRECT", err)
	}
	img, err = Open(path, block.Options{})
	if err != nil {
		t.Fatalf("buffered open on ramfs: %v", err)
	}
	img.Close()
}
