package blk

import (
	"bytes"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
)

// desc is one hand-built descriptor: index in the table, then its fields.
type desc struct {
	idx   int
	addr  uint64
	n     uint32
	flags uint16
	next  uint16
}

const (
	fN = virtiotest.FNext
	fW = virtiotest.FWrite
	fI = virtiotest.FIndirect
)

// Each bad chain comes back to the driver: with IOERR in its status byte
// when the walk reached one, else with used length 0. None touches memory
// outside the guest, and a good request works afterwards.
func TestMalformedChains(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{}, 1)
	q := r.drv.Queues[0]
	outside := uint64(ramSize) + 0x1000
	const ind = 0x600000 // an indirect table
	const ind2 = 0x610000
	cases := []struct {
		name     string
		head     uint16
		main     []desc
		indirect []desc // written at ind
		nested   []desc // written at ind2
		wantLen  uint32
	}{
		{"data outside guest memory", 10, []desc{
			{10, hdrGPA, 16, fN, 11}, {11, outside, 512, fW | fN, 12}, {12, statusGPA, 1, fW, 0}}, nil, nil, 1},
		{"data straddling the end of memory", 10, []desc{
			{10, hdrGPA, 16, fN, 11}, {11, ramSize - 256, 512, fW | fN, 12}, {12, statusGPA, 1, fW, 0}}, nil, nil, 1},
		{"header outside guest memory", 10, []desc{
			{10, outside, 16, fN, 11}, {11, statusGPA, 1, fW, 0}}, nil, nil, 1},
		{"address wraps around", 10, []desc{
			{10, hdrGPA, 16, fN, 11}, {11, ^uint64(0) - 10, 512, fW | fN, 12}, {12, statusGPA, 1, fW, 0}}, nil, nil, 1},
		{"loop", 10, []desc{
			{10, hdrGPA, 16, fN, 11}, {11, dataGPA, 512, fW | fN, 10}}, nil, nil, 0},
		{"self loop", 10, []desc{{10, statusGPA, 1, fW | fN, 10}}, nil, nil, 0},
		{"next beyond the table", 10, []desc{
			{10, hdrGPA, 16, fN, 11}, {11, statusGPA, 1, fW | fN, 4000}}, nil, nil, 0},
		{"head beyond the table", 300, nil, nil, nil, 0},
		{"writable before readable", 10, []desc{
			{10, hdrGPA, 16, fN, 11}, {11, dataGPA, 512, fW | fN, 12}, {12, dataGPA, 512, fN, 13},
			{13, statusGPA, 1, fW, 0}}, nil, nil, 1},
		{"indirect inside indirect", 10, []desc{{10, ind, 32, fI, 0}},
			[]desc{{0, hdrGPA, 16, fN, 1}, {1, ind2, 32, fI, 0}},
			[]desc{{0, dataGPA, 512, fW | fN, 1}, {1, statusGPA, 1, fW, 0}}, 0},
		{"zero-length indirect table", 10, []desc{{10, ind, 0, fI, 0}}, nil, nil, 0},
		{"indirect length not a multiple of 16", 10, []desc{{10, ind, 40, fI, 0}},
			[]desc{{0, hdrGPA, 16, fN, 1}, {1, statusGPA, 1, fW, 0}}, nil, 0},
		{"indirect table outside memory", 10, []desc{{10, outside, 32, fI, 0}}, nil, nil, 0},
		{"indirect with NEXT", 10, []desc{{10, ind, 32, fI | fN, 11}, {11, statusGPA, 1, fW, 0}},
			[]desc{{0, hdrGPA, 16, fN, 1}, {1, statusGPA, 1, fW, 0}}, nil, 0},
		{"indirect table too long", 10, []desc{{10, ind, 16 * (virtio.MaxQueueSize + 1), fI, 0}}, nil, nil, 0},
		{"loop inside indirect table", 10, []desc{{10, ind, 48, fI, 0}},
			[]desc{{0, hdrGPA, 16, fN, 1}, {1, dataGPA, 16, fN, 2}, {2, statusGPA, 1, fW | fN, 1}}, nil, 0},
	}
	for i, c := range cases {
		r.header(TypeIn, 0)
		clear(r.ram[ind : ind+0x20000])
		for _, d := range c.main {
			r.drv.WriteDesc(q.Desc, d.idx, d.addr, d.n, d.flags, d.next)
		}
		for _, d := range c.indirect {
			r.drv.WriteDesc(ind, d.idx, d.addr, d.n, d.flags, d.next)
		}
		for _, d := range c.nested {
			r.drv.WriteDesc(ind2, d.idx, d.addr, d.n, d.flags, d.next)
		}
		r.drv.Publish(q, c.head)
		r.drv.Kick(q)
		id, n, err := r.drv.Wait(q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if id != c.head || n != c.wantLen {
			t.Errorf("%s: used id %d len %d, want %d len %d", c.name, id, n, c.head, c.wantLen)
		}
		if st := r.ram[statusGPA]; c.wantLen == 1 && st != StatusIOErr || st == StatusOK {
			t.Errorf("%s: status %d", c.name, st)
		}
		if got := r.dev.InvalidChains.Load(); got != uint64(i+1) {
			t.Errorf("%s: invalid chain count %d, want %d", c.name, got, i+1)
		}
	}
	// The queue still works.
	copy(r.ram[dataGPA:], bytes.Repeat([]byte{0x77}, 1024))
	if st, _ := r.do(0, TypeOut, 2, 1024, true, 2, false); st != StatusOK {
		t.Fatalf("good write after bad chains: status %d", st)
	}
	clear(r.ram[dataGPA : dataGPA+1024])
	if st, n := r.do(0, TypeIn, 2, 1024, false, 2, true); st != StatusOK || n != 1025 ||
		!bytes.Equal(r.ram[dataGPA:dataGPA+1024], bytes.Repeat([]byte{0x77}, 1024)) {
		t.Fatalf("good read after bad chains: status %d len %d", st, n)
	}
}

// A driver that moves avail.idx by more than the queue size breaks the
// queue: the device sets DEVICE_NEEDS_RESET and works again after a reset.
func TestAvailIndexJump(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{}, 1)
	q := r.drv.Queues[0]
	r.drv.SetAvailIdx(q, q.Size+5)
	r.drv.Kick(q)
	for i := 0; r.drv.Common(virtiotest.DeviceStatus, 1)&virtio.StatusDeviceNeedsReset == 0; i++ {
		if i > 1e6 {
			t.Fatal("DEVICE_NEEDS_RESET never set")
		}
	}
	// The flag is set before the interrupt is sent: allow it to arrive.
	for deadline := time.Now().Add(5 * time.Second); r.msis.count(0) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no config interrupt for DEVICE_NEEDS_RESET")
		}
	}
	if err := r.drv.Init(wantFeatures, 1, 0, true); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.do(0, TypeIn, 0, 512, false, 1, false); st != StatusOK {
		t.Fatalf("read after reset: status %d", st)
	}
}
