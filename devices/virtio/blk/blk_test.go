package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
)

func TestRequests(t *testing.T) {
	img, path := newRawImage(t, false)
	r := newRig(t, img, Options{Serial: "petrel-disk-0001", NumQueues: 2}, 2)

	// OUT: 8 KiB at sector 8 through queue 0, data split over 3 descriptors.
	pattern := make([]byte, 8192)
	for i := range pattern {
		pattern[i] = byte(i*7 + 3)
	}
	copy(r.ram[dataGPA:], pattern)
	if st, n := r.do(0, TypeOut, 8, 8192, true, 3, false); st != StatusOK || n != 1 {
		t.Fatalf("write: status %d len %d", st, n)
	}
	// IN through queue 1 with an indirect table, into cleared memory.
	clear(r.ram[dataGPA : dataGPA+8192])
	if st, n := r.do(1, TypeIn, 8, 8192, false, 4, true); st != StatusOK || n != 8193 {
		t.Fatalf("read: status %d len %d", st, n)
	}
	if !bytes.Equal(r.ram[dataGPA:dataGPA+8192], pattern) {
		t.Fatal("read back differs from what was written")
	}
	if st, _ := r.do(0, TypeFlush, 0, 0, false, 1, false); st != StatusOK {
		t.Fatalf("flush: status %d", st)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk[8*512:8*512+8192], pattern) {
		t.Fatal("file does not hold the written data")
	}
	if onDisk[8*512-1] != patternAt(8*512-1) || onDisk[8*512+8192] != patternAt(8*512+8192) {
		t.Fatal("write touched bytes around the request")
	}

	// GET_ID: 20 bytes, zero padded.
	clear(r.ram[dataGPA : dataGPA+20])
	if st, n := r.do(0, TypeGetID, 0, 20, false, 1, false); st != StatusOK || n != 21 {
		t.Fatalf("get-id: status %d len %d", st, n)
	}
	if got := string(r.ram[dataGPA : dataGPA+20]); got != "petrel-disk-0001\x00\x00\x00\x00" {
		t.Fatalf("serial %q", got)
	}

	// DISCARD then WRITE_ZEROES (unmap) read back as zeroes; neighbours kept.
	for _, tc := range []struct {
		typ    uint32
		sector uint64
		flags  uint32
	}{{TypeDiscard, 300, 0}, {TypeWriteZeroes, 100, unmapFlag}, {TypeWriteZeroes, 200, 0}} {
		seg := r.ram[dataGPA : dataGPA+16]
		binary.LittleEndian.PutUint64(seg[0:], tc.sector)
		binary.LittleEndian.PutUint32(seg[8:], 8)
		binary.LittleEndian.PutUint32(seg[12:], tc.flags)
		if st, n := r.do(0, tc.typ, 0, 16, true, 1, false); st != StatusOK || n != 1 {
			t.Fatalf("type %d: status %d len %d", tc.typ, st, n)
		}
		for i := range 4096 + 512 {
			r.ram[dataGPA+uint64(i)] = 0x5a
		}
		if st, _ := r.do(1, TypeIn, tc.sector, 4096+512, false, 1, false); st != StatusOK {
			t.Fatalf("read after type %d: status %d", tc.typ, st)
		}
		if !bytes.Equal(r.ram[dataGPA:dataGPA+4096], make([]byte, 4096)) {
			t.Fatalf("type %d: range not zero", tc.typ)
		}
		if r.ram[dataGPA+4096] != patternAt(int(tc.sector*512+4096)) {
			t.Fatalf("type %d: sector after the range changed", tc.typ)
		}
	}

	// Errors: unknown type, beyond capacity, partial sector, bad discard flags.
	cases := []struct {
		name   string
		typ    uint32
		sector uint64
		n      uint32
		out    bool
		want   uint8
	}{
		{"unknown type", 99, 0, 0, false, StatusUnsupp},
		{"read past end", TypeIn, diskSize/512 - 1, 1024, false, StatusIOErr},
		{"read at huge sector", TypeIn, 1 << 62, 512, false, StatusIOErr},
		{"write past end", TypeOut, diskSize / 512, 512, true, StatusIOErr},
		{"partial sector", TypeOut, 0, 100, true, StatusIOErr},
	}
	for _, c := range cases {
		if st, n := r.do(0, c.typ, c.sector, c.n, c.out, 1, false); st != c.want || n != 1 {
			t.Errorf("%s: status %d len %d, want %d len 1", c.name, st, n, c.want)
		}
	}
	seg := r.ram[dataGPA : dataGPA+16]
	binary.LittleEndian.PutUint64(seg[0:], 0)
	binary.LittleEndian.PutUint32(seg[8:], 1)
	binary.LittleEndian.PutUint32(seg[12:], unmapFlag)
	if st, _ := r.do(0, TypeDiscard, 0, 16, true, 1, false); st != StatusUnsupp {
		t.Errorf("discard with unmap flag: status %d, want UNSUPP", st)
	}
	binary.LittleEndian.PutUint32(seg[8:], MaxDiscardSectors+1)
	binary.LittleEndian.PutUint32(seg[12:], 0)
	if st, _ := r.do(0, TypeWriteZeroes, 0, 16, true, 1, false); st != StatusIOErr {
		t.Errorf("oversized write-zeroes: status %d, want IOERR", st)
	}

	// Every completion was signalled on the queue's own MSI-X vector.
	if r.msis.count(1) == 0 || r.msis.count(2) == 0 {
		t.Fatalf("MSIs per vector: q0 %d, q1 %d", r.msis.count(1), r.msis.count(2))
	}
}

func TestConfigSpace(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{NumQueues: 3, QueueSize: 128}, 3)
	d := r.drv
	for _, c := range []struct {
		name string
		off  uint64
		n    int
		want uint64
	}{
		{"capacity", cfgCapacity, 8, diskSize / 512},
		{"seg_max", cfgSegMax, 4, 126},
		{"blk_size", cfgBlkSize, 4, 512},
		{"min_io_size", cfgMinIOSize, 2, 1},
		{"num_queues", cfgNumQueues, 2, 3},
		{"max_discard_sectors", cfgMaxDiscardSectors, 4, MaxDiscardSectors},
		{"max_discard_seg", cfgMaxDiscardSeg, 4, MaxDiscardSegs},
		{"discard_sector_alignment", cfgDiscardAlignment, 4, 1},
		{"max_write_zeroes_sectors", cfgMaxWriteZeroesSecs, 4, MaxDiscardSectors},
		{"write_zeroes_may_unmap", cfgWriteZeroesMayUnmap, 1, 1},
	} {
		if got := d.DeviceConfig(c.off, c.n); got != c.want {
			t.Errorf("%s = %d, want %d", c.name, got, c.want)
		}
	}
	if d.Features&FeatureRO != 0 {
		t.Error("RO offered for a writable disk")
	}
	if len(d.Queues) != 3 || d.Queues[0].Size != 128 {
		t.Fatalf("queues %d size %d", len(d.Queues), d.Queues[0].Size)
	}
}

func TestReadOnly(t *testing.T) {
	img, path := newRawImage(t, true)
	r := newRig(t, img, Options{}, 1)
	if r.drv.Features&FeatureRO == 0 {
		t.Fatal("VIRTIO_BLK_F_RO not offered for a read-only image")
	}
	copy(r.ram[dataGPA:], bytes.Repeat([]byte{0xab}, 512))
	if st, _ := r.do(0, TypeOut, 0, 512, true, 1, false); st != StatusIOErr {
		t.Fatalf("write to read-only disk: status %d, want IOERR", st)
	}
	binary.LittleEndian.PutUint64(r.ram[dataGPA:], 0)
	binary.LittleEndian.PutUint32(r.ram[dataGPA+8:], 1)
	binary.LittleEndian.PutUint32(r.ram[dataGPA+12:], 0)
	if st, _ := r.do(0, TypeDiscard, 0, 16, true, 1, false); st != StatusIOErr {
		t.Fatalf("discard on read-only disk: status %d, want IOERR", st)
	}
	if st, _ := r.do(0, TypeIn, 0, 512, false, 1, false); st != StatusOK {
		t.Fatalf("read from read-only disk: status %d", st)
	}
	if st, _ := r.do(0, TypeFlush, 0, 0, false, 1, false); st != StatusOK {
		t.Fatalf("flush of read-only disk: status %d", st)
	}
	onDisk, _ := os.ReadFile(path)
	if onDisk[0] != 0 || onDisk[1] != 1 {
		t.Fatal("read-only disk was modified")
	}
	if r.drv.DeviceConfig(cfgWriteZeroesMayUnmap, 1) != 0 {
		t.Error("write_zeroes_may_unmap set on a read-only disk")
	}
}

// failingImage is a real raw image whose data path fails after Arm, to
// prove backend errors become VIRTIO_BLK_S_IOERR.
type failingImage struct {
	block.Image
	fail bool
}

func (f *failingImage) ReadAt(p []byte, off int64) (int, error) {
	if f.fail {
		return 0, os.ErrDeadlineExceeded
	}
	return f.Image.ReadAt(p, off)
}

func (f *failingImage) WriteAt(p []byte, off int64) (int, error) {
	if f.fail {
		return 0, os.ErrDeadlineExceeded
	}
	return f.Image.WriteAt(p, off)
}

func (f *failingImage) Flush() error {
	if f.fail {
		return os.ErrDeadlineExceeded
	}
	return f.Image.Flush()
}

func TestBackendErrors(t *testing.T) {
	img, _ := newRawImage(t, false)
	fi := &failingImage{Image: img}
	r := newRig(t, fi, Options{}, 1)
	fi.fail = true
	for _, c := range []struct {
		typ uint32
		out bool
	}{{TypeIn, false}, {TypeOut, true}, {TypeFlush, false}} {
		n := uint32(512)
		if c.typ == TypeFlush {
			n = 0
		}
		if st, _ := r.do(0, c.typ, 0, n, c.out, 1, false); st != StatusIOErr {
			t.Errorf("type %d on failing backend: status %d, want IOERR", c.typ, st)
		}
	}
	fi.fail = false
	if st, _ := r.do(0, TypeIn, 0, 512, false, 1, false); st != StatusOK {
		t.Fatalf("after recovery: status %d", st)
	}
	if r.blk.Errors.Load() != 3 {
		t.Fatalf("error counter %d, want 3", r.blk.Errors.Load())
	}
}

func TestReleaseFlushesAndCloses(t *testing.T) {
	img, path := newRawImage(t, false)
	r := newRig(t, img, Options{}, 1)
	copy(r.ram[dataGPA:], bytes.Repeat([]byte{0xcd}, 512))
	if st, _ := r.do(0, TypeOut, 3, 512, true, 1, false); st != StatusOK {
		t.Fatal(st)
	}
	if err := r.dev.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("image still open after Release")
	}
	onDisk, _ := os.ReadFile(path)
	if !bytes.Equal(onDisk[3*512:4*512], bytes.Repeat([]byte{0xcd}, 512)) {
		t.Fatal("data written before Release is not in the file")
	}
}

func TestResize(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{}, 1)
	if r.blk.RefreshCapacity() {
		t.Fatal("capacity changed without a resize")
	}
	if err := img.(block.Resizer).Resize(2 * diskSize); err != nil {
		t.Fatal(err)
	}
	if !r.blk.RefreshCapacity() {
		t.Fatal("resize not noticed")
	}
	r.dev.ConfigChanged()
	if got := r.drv.DeviceConfig(cfgCapacity, 8); got != 2*diskSize/512 {
		t.Fatalf("capacity %d after resize", got)
	}
	if r.drv.Common(virtiotest.ConfigGeneration, 1) != 1 || r.msis.count(0) != 1 {
		t.Fatal("config change not signalled (generation, config vector)")
	}
	// The new space is usable.
	copy(r.ram[dataGPA:], bytes.Repeat([]byte{9}, 512))
	if st, _ := r.do(0, TypeOut, diskSize/512+5, 512, true, 1, false); st != StatusOK {
		t.Fatalf("write into the grown area: status %d", st)
	}
}

func TestReleaseKeepImageOpen(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{KeepImageOpen: true}, 1)
	if err := r.dev.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("image closed despite KeepImageOpen: %v", err)
	}
	img.Close()
}

// A request with seg_max (queue size - 2) data descriptors, each 512 bytes
// at scattered addresses, reads and writes correctly.
func TestSegMaxChain(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{QueueSize: 128}, 1)
	segs := int(r.drv.DeviceConfig(cfgSegMax, 4))
	if segs != 126 {
		t.Fatalf("seg_max %d", segs)
	}
	build := func(typ uint32) []virtiotest.Buf {
		r.header(typ, 40)
		bufs := []virtiotest.Buf{{Addr: hdrGPA, Len: 16}}
		for i := range segs {
			// every other 1 KiB slot, backwards: scattered and out of order
			bufs = append(bufs, virtiotest.Buf{Addr: dataGPA + uint64(segs-1-i)*1024, Len: 512, Write: typ == TypeIn})
		}
		return append(bufs, virtiotest.Buf{Addr: statusGPA, Len: 1, Write: true})
	}
	for i := range segs {
		for j := range 512 {
			r.ram[dataGPA+uint64(i)*1024+uint64(j)] = byte(i) ^ byte(j*3)
		}
	}
	want := append([]byte(nil), r.ram[dataGPA:dataGPA+uint64(segs)*1024]...)
	if n, err := r.drv.Do(r.drv.Queues[0], build(TypeOut), false); err != nil || r.ram[statusGPA] != StatusOK || n != 1 {
		t.Fatalf("write: %v status %d len %d", err, r.ram[statusGPA], n)
	}
	clear(r.ram[dataGPA : dataGPA+uint64(segs)*1024])
	if n, err := r.drv.Do(r.drv.Queues[0], build(TypeIn), false); err != nil || r.ram[statusGPA] != StatusOK ||
		n != uint32(segs*512+1) {
		t.Fatalf("read: %v status %d len %d", err, r.ram[statusGPA], n)
	}
	for i := range segs {
		a := uint64(i) * 1024
		if !bytes.Equal(r.ram[dataGPA+a:dataGPA+a+512], want[a:a+512]) {
			t.Fatalf("segment %d differs", i)
		}
	}
	// On disk the first descriptor's data comes first.
	first := make([]byte, 512)
	if _, err := img.ReadAt(first, 40*512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, want[uint64(segs-1)*1024:uint64(segs-1)*1024+512]) {
		t.Fatal("segments not written in chain order")
	}
}
