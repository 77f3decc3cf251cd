package blk

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/raw"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

const (
	diskSize = 4 << 20
	ramSize  = 8 << 20
	// Guest addresses used by requests: header, data, status areas.
	hdrGPA    = 0x400000
	dataGPA   = 0x500000
	statusGPA = 0x480000
)

// wantFeatures is what a Linux driver asks a virtio-blk device for.
const wantFeatures = virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc |
	FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureTopology | FeatureMQ | FeatureDiscard |
	FeatureWriteZeroes | FeatureRO

// msiLog counts injected MSIs per data value (the test driver programs
// vector v with data v), without allocating.
type msiLog struct {
	perVector [16]atomic.Uint64
	bad       atomic.Uint64
}

var errBadMSI = errors.New("MSI to an unexpected address or vector")

func (m *msiLog) SignalMSI(addr uint64, data uint32) error {
	if addr != 0xfee0_0000 || data >= uint32(len(m.perVector)) {
		m.bad.Add(1)
		return errBadMSI
	}
	m.perVector[data].Add(1)
	return nil
}

func (m *msiLog) count(v uint32) int { return int(m.perVector[v].Load()) }

// newRawImage creates a raw image filled with a position-derived pattern.
func newRawImage(t testing.TB, ro bool) (block.Image, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	content := make([]byte, diskSize)
	for i := range content {
		content[i] = patternAt(i)
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := raw.Open(path, block.Options{ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	return img, path
}

type rig struct {
	t    testing.TB
	dev  *virtio.PCI
	blk  *Blk
	drv  *virtiotest.Driver
	msis *msiLog
	ram  []byte
	mem  *guestmem.Memory
}

// newRig builds a virtio-blk PCI device over img and initialises it with a
// test driver: nq queues, MSI-X on.
func newRig(t testing.TB, img block.Image, o Options, nq int) *rig {
	t.Helper()
	mem, ram := virtiotest.NewMemory(ramSize)
	msis := &msiLog{}
	dev, b, err := NewPCI(img, o, virtio.Options{Mem: mem, MSI: msis})
	if err != nil {
		t.Fatal(err)
	}
	drv, err := virtiotest.New(dev, mem, ram)
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Init(wantFeatures, nq, 0, true); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dev: dev, blk: b, drv: drv, msis: msis, ram: ram, mem: mem}
	t.Cleanup(func() { dev.Release() })
	return r
}

func (r *rig) header(typ uint32, sector uint64) {
	binary.LittleEndian.PutUint32(r.ram[hdrGPA:], typ)
	binary.LittleEndian.PutUint32(r.ram[hdrGPA+4:], 0)
	binary.LittleEndian.PutUint64(r.ram[hdrGPA+8:], sector)
	r.ram[statusGPA] = 0xee
}

// do runs a request whose data (n bytes at dataGPA, split into pieces)
// is readable for out and writable otherwise; it returns status and used len.
func (r *rig) do(q int, typ uint32, sector uint64, n uint32, out bool, pieces int, indirect bool) (uint8, uint32) {
	r.t.Helper()
	r.header(typ, sector)
	bufs := []virtiotest.Buf{{Addr: hdrGPA, Len: 16}}
	if n > 0 {
		step := n / uint32(pieces)
		for i := 0; i < pieces; i++ {
			l := step
			if i == pieces-1 {
				l = n - step*uint32(pieces-1)
			}
			bufs = append(bufs, virtiotest.Buf{Addr: dataGPA + uint64(step)*uint64(i), Len: l, Write: !out})
		}
	}
	bufs = append(bufs, virtiotest.Buf{Addr: statusGPA, Len: 1, Write: true})
	used, err := r.drv.Do(r.drv.Queues[q], bufs, indirect)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.ram[statusGPA], used
}

// patternAt is the initial byte at disk offset i.
func patternAt(i int) byte { return byte(i/512) ^ byte(i) }
