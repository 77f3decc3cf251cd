//go:build amd64

package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// blkPattern is virtio_blk.c's pattern(): byte i of sector s.
func blkPattern(s uint64, i uint32) byte { return byte((s*131 + uint64(i)*7 + uint64(i>>8)) ^ 0xa5) }

var wroteRE = regexp.MustCompile(`(?m)^WROTE sector=(\d+) count=(\d+) mode=(\w+)$`)

// TestVirtioBlkQcow2: the guest driver writes a pattern into a qcow2 disk
// (polled, then with MSI-X interrupts, then with the INTx pin through the
// IOAPIC) and reads it back; afterwards the
// image is consistent for qemu-img check and a raw conversion holds the
// pattern exactly where the guest wrote it, and zeros elsewhere.
func TestVirtioBlkQcow2(t *testing.T) {
	elf := guest.Build(t, "virtio_blk.c")
	disk := newQcow2(t, "16M")
	r := runGuest(t, elf, pc.Config{Disks: []pc.DiskConfig{{Path: disk, Serial: "petrel-disk-0"}}})
	mustPass(t, r)
	if !strings.Contains(r.Serial, "CAPACITY sectors=32768") {
		t.Errorf("capacity not 32768 sectors")
	}
	if !strings.Contains(r.Serial, "SERIAL petrel-disk-0") {
		t.Errorf("GET_ID did not return the disk serial")
	}
	if err := r.Machine.Close(); err != nil {
		t.Fatalf("closing the machine (flushes the image): %v", err)
	}

	qimg := testutil.NeedTool(t, "qemu-img")
	if out, err := exec.Command(qimg, "check", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if out, err := exec.Command(qimg, "convert", "-O", "raw", disk, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	written := make([]bool, len(data)/512)
	ms := wroteRE.FindAllStringSubmatch(r.Serial, -1)
	if len(ms) != 8 {
		t.Fatalf("guest reported %d writes, want 8", len(ms))
	}
	for _, m := range ms {
		s, _ := strconv.ParseUint(m[1], 10, 64)
		n, _ := strconv.ParseUint(m[2], 10, 64)
		for k := s; k < s+n; k++ {
			written[k] = true
			for i := uint32(0); i < 512; i++ {
				if got, want := data[k*512+uint64(i)], blkPattern(k, i); got != want {
					t.Fatalf("sector %d byte %d: %#x, want %#x", k, i, got, want)
				}
			}
		}
	}
	for k, w := range written {
		if w {
			continue
		}
		for _, b := range data[k*512 : k*512+512] {
			if b != 0 {
				t.Fatalf("sector %d, never written, is not zero", k)
			}
		}
	}
}
