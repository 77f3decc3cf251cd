package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// qemuSaysCorrupt reports `qemu-img info`'s "corrupt" field (the
// incompatible corrupt bit) and fails when the field is missing.
func qemuSaysCorrupt(t *testing.T, path string) bool {
	t.Helper()
	info := run(t, "qemu-img", "info", "--output=json", path)
	switch {
	case strings.Contains(info, `"corrupt": true`):
		return true
	case strings.Contains(info, `"corrupt": false`):
		return false
	}
	t.Fatalf("qemu-img info shows no corrupt field:\n%s", info)
	return false
}

// setCorruptBit sets incompatible feature bit 1 in a v3 header.
func setCorruptBit(t *testing.T, path string) {
	t.Helper()
	incompat := readU64(t, path, 72, true)
	var b [8]byte
	for i := range b {
		b[i] = byte((incompat | 2) >> (56 - 8*i))
	}
	patchFile(t, path, 72, b[:])
}

// corruptFixture is a qemu-written image with data at 0 and 1 MiB, and its
// content before damage.
func corruptFixture(t *testing.T) (path string, want []byte, rt, rb int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "c.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "4M")
	run(t, "qemu-io", "-c", "write -P 0x11 0 256k", "-c", "write -P 0x22 1M 128k", path)
	want = qemuRaw(t, path)
	rt = int64(readU64(t, path, 48, true))
	rb = int64(readU64(t, path, rt, true))
	return path, want, rt, rb
}

// TestRepairCorruptMarkedImage: an image carrying the corrupt bit and real
// damage is refused for normal writable opens, checked read-only (exit 2,
// file untouched) without -r, and repaired by `petrel img check -r all`
// into one qemu-img checks clean, with the corrupt bit cleared and the
// intact data unchanged.
func TestRepairCorruptMarkedImage(t *testing.T) {
	needQemu(t)
	const cs = 65536
	for _, c := range []struct {
		name string
		// damage breaks the image and returns the guest range whose data
		// is lost (length 0: none).
		damage func(t *testing.T, path string, rt, rb int64) (lostOff, lostLen int)
	}{
		{"refcount-zero-bit-set", func(t *testing.T, path string, rt, rb int64) (int, int) {
			// A referenced data cluster with refcount 0, marked corrupt.
			l1 := int64(readU64(t, path, 40, true))
			l2 := int64(readU64(t, path, l1, true) &^ (1 << 63))
			data := int64(readU64(t, path, l2, true)&0x00fffffffffffe00) / cs
			patchFile(t, path, rb+2*data, []byte{0, 0})
			setCorruptBit(t, path)
			return 0, 0
		}},
		{"qemu-marked-overlap", func(t *testing.T, path string, rt, rb int64) (int, int) {
			// The L2 entry of guest cluster 1 MiB points at the refcount
			// block; QEMU's overlap check refuses the next write there
			// and marks the image corrupt itself.
			l1 := int64(readU64(t, path, 40, true))
			l2 := int64(readU64(t, path, l1, true) &^ (1 << 63))
			var e [8]byte
			for i := range e {
				e[i] = byte(uint64(rb) >> (56 - 8*i))
			}
			e[0] |= 0x80 // copied
			patchFile(t, path, l2+8*(1<<20/cs), e[:])
			exitCode(t, "qemu-io", "-c", "write -P 0x33 1M 4k", path)
			return 1 << 20, cs
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, want, rt, rb := corruptFixture(t)
			lostOff, lostLen := c.damage(t, path, rt, rb)
			if !qemuSaysCorrupt(t, path) {
				t.Fatal("test setup: qemu-img info does not report the image corrupt")
			}
			if rc, out := exitCode(t, "qemu-img", "check", path); rc != 2 {
				t.Fatalf("test setup: qemu-img check exit %d, want 2\n%s", rc, out)
			}
			before, _ := os.ReadFile(path)

			// Without -r: read-only, corruption reported, nothing written.
			rc, o, e := petrel("check", path)
			if rc != 2 || !strings.Contains(o, "errors were found on the image") {
				t.Fatalf("petrel img check: exit %d, want 2\n%s%s", rc, o, e)
			}
			// A normal writable open is refused with a clear message.
			if img, err := block.Open(path, block.Options{}); err == nil {
				img.Close()
				t.Fatal("writable open of a corrupt-marked image succeeded")
			} else if !strings.Contains(err.Error(), "marked corrupt") {
				t.Fatalf("writable open error does not say why: %v", err)
			}
			// A repair open reads, but refuses every change but Check.
			img, err := block.Open(path, block.Options{Repair: true})
			if err != nil {
				t.Fatalf("repair open: %v", err)
			}
			buf := make([]byte, 4096)
			if _, err := img.ReadAt(buf, 0); err != nil || buf[0] != 0x11 {
				t.Fatalf("read on a repair open: %v %#x", err, buf[0])
			}
			if _, err := img.WriteAt(buf, 2<<20); err == nil || !strings.Contains(err.Error(), "marked corrupt") {
				t.Fatalf("write on a corrupt image opened for repair: %v", err)
			}
			if err := img.WriteZeroes(0, 4096, true); err == nil {
				t.Fatal("write zeroes on a corrupt image opened for repair succeeded")
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Fatal("check without -r, refused opens or refused writes changed the file")
			}

			rc, o, e = petrel("check", "-r", "all", path)
			if rc != 0 || !strings.Contains(o, "inconsistencies were found and repaired") {
				t.Fatalf("petrel img check -r all: exit %d\n%s%s", rc, o, e)
			}
			qemuCheckClean(t, path)
			if qemuSaysCorrupt(t, path) {
				t.Fatal("corrupt bit still set after repair")
			}
			got := qemuRaw(t, path)
			if lostLen > 0 {
				copy(got[lostOff:lostOff+lostLen], want[lostOff:lostOff+lostLen])
			}
			sameBytes(t, "intact data after repair", got, want)

			// The repaired image takes writes again and stays clean.
			img, err = block.Open(path, block.Options{})
			if err != nil {
				t.Fatalf("writable open after repair: %v", err)
			}
			if _, err := img.WriteAt(bytes.Repeat([]byte{0x44}, 8192), 3<<20); err != nil {
				t.Fatalf("write after repair: %v", err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheckClean(t, path)
		})
	}
}

// TestRepairLeaksCorruptMarked: -r leaks clears the corrupt bit when leaks
// were the only damage (as qemu-img), and keeps it when corruption remains
// (here a refcount of 0, which -r leaks gives up on as qemu-img does).
func TestRepairLeaksCorruptMarked(t *testing.T) {
	needQemu(t)
	const cs = 65536
	path, want, _, rb := corruptFixture(t)
	st, _ := os.Stat(path)
	end := st.Size() / cs
	os.Truncate(path, (end+1)*cs)
	patchFile(t, path, rb+2*end, []byte{0, 1}) // a leaked cluster
	setCorruptBit(t, path)

	bad := cloneFile(t, path)
	l1 := int64(readU64(t, bad, 40, true))
	l2 := int64(readU64(t, bad, l1, true) &^ (1 << 63))
	data := int64(readU64(t, bad, l2, true)&0x00fffffffffffe00) / cs
	patchFile(t, bad, rb+2*data, []byte{0, 0}) // and a real corruption

	if rc, o, e := petrel("check", "-r", "leaks", path); rc != 0 {
		t.Fatalf("petrel img check -r leaks on a leak-only image: exit %d\n%s%s", rc, o, e)
	}
	qemuCheckClean(t, path)
	if qemuSaysCorrupt(t, path) {
		t.Fatal("corrupt bit still set after a -r leaks repair left the image clean")
	}
	sameBytes(t, "data after -r leaks", qemuRaw(t, path), want)

	// A referenced cluster with refcount 0 needs a rebuild, which -r
	// leaks does not do: qemu-img's check fails (exit 1, "Check failed:
	// Input/output error") and changes nothing.
	qrc, qout := exitCode(t, "qemu-img", "check", "-r", "leaks", cloneFile(t, bad))
	if rc, o, e := petrel("check", "-r", "leaks", bad); rc != qrc || rc != 1 {
		t.Fatalf("petrel img check -r leaks with a corruption left: exit %d, qemu-img %d\n%s%s\nqemu-img:\n%s", rc, qrc, o, e, qout)
	}
	if !qemuSaysCorrupt(t, bad) {
		t.Fatal("-r leaks cleared the corrupt bit although corruption remains")
	}
}
