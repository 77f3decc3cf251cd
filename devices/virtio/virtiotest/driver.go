// Package virtiotest is a virtio 1.x PCI driver written for tests: it
// discovers the transport from the capability list as Linux does, negotiates
// features, lays split virtqueues out in guest memory (a Go byte slice behind
// a real guestmem.Memory) and submits descriptor chains, well-formed or not.
package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// Descriptor flags (virtio 1.2, 2.7.5): the chain continues at next, the
// buffer is device-writable, the buffer is a table of descriptors.
const (
	FNext     = 1
	FWrite    = 2
	FIndirect = 4
)

// Common configuration offsets (virtio 1.2, 4.1.4.3).
const (
	DeviceFeatureSelect = 0x00
	DeviceFeature       = 0x04
	DriverFeatureSelect = 0x08
	DriverFeature       = 0x0c
	ConfigMSIXVector    = 0x10
	NumQueues           = 0x12
	DeviceStatus        = 0x14
	ConfigGeneration    = 0x15
	QueueSelect         = 0x16
	QueueSize           = 0x18
	QueueMSIXVector     = 0x1a
	QueueEnable         = 0x1c
	QueueNotifyOff      = 0x1e
	QueueDesc           = 0x20
	QueueDriver         = 0x28
	QueueDevice         = 0x30
)

// NewMemory returns size bytes of guest RAM at GPA 0.
func NewMemory(size int) (*guestmem.Memory, []byte) {
	ram := make([]byte, size) // large allocations are page aligned
	m := guestmem.New()
	if err := m.Add(0, ram); err != nil {
		panic(err)
	}
	return m, ram
}

// Buf is one buffer of a chain.
type Buf struct {
	Addr uint64 // guest-physical address
	Len  uint32 // in bytes
	// Write marks a device-writable buffer (VIRTQ_DESC_F_WRITE); a
	// well-formed chain has all readable buffers before the writable ones,
	// which Submit does not enforce, so tests can build broken chains.
	Write bool
}

// Queue is the driver's view of one virtqueue.
type Queue struct {
	Index int    // queue number, written to the notify address by Kick
	Size  uint16 // ring size as negotiated: a power of two
	// Desc, Avail and Used are the GPAs of the descriptor table, driver
	// area and device area, each 4 KiB-aligned.
	Desc, Avail, Used uint64
	indirect          uint64 // per-head indirect tables
	// free is a stack of unused descriptor ids; a chain of n takes the
	// top n.
	free []uint16
	// next and count describe each published chain by its head: the
	// descriptor after each id, and the chain's length in the
	// descriptor table (1 for an indirect chain), so Used can free it.
	next  []uint16
	count []uint16
	// availIdx is the driver's free-running avail.idx; lastUsed the used
	// index up to which Used has consumed.
	availIdx, lastUsed uint16
	// notifyAddr is the queue's notify offset in BAR 0:
	// notify_off_multiplier * queue_notify_off (virtio 1.2, 4.1.4.4).
	notifyAddr uint64
}

// Driver drives one virtio.PCI device.
//
// A Driver is not safe for concurrent use; each test drives its device
// from one goroutine, as a guest driver holding its lock would.
type Driver struct {
	Dev *virtio.PCI
	// Mem and RAM are the same guest memory: Mem for the device, RAM for
	// the driver's direct access.
	Mem *guestmem.Memory
	RAM []byte
	// common, notify, isr and devcfg are the offsets in BAR 0 of the four
	// structures the vendor capabilities point at (virtio 1.2, 4.1.4).
	common, notify, isr, devcfg uint64
	notifyMul                   uint32
	msixCap                     int // config space offset of the MSI-X capability
	// Features are the features Init negotiated (wanted & offered).
	Features uint64
	// Queues are the queues Init set up, by index.
	Queues  []*Queue
	next    uint64  // bump allocator
	scratch [8]byte // Read and Write's buffer, so they do not allocate
	// Timeout bounds Wait (default 5 s).
	Timeout time.Duration
}

// New finds the virtio capabilities of dev. Guest memory from 0x10000 up is
// the driver's to allocate.
func New(dev *virtio.PCI, mem *guestmem.Memory, ram []byte) (*Driver, error) {
	d := &Driver{Dev: dev, Mem: mem, RAM: ram, next: 0x10000, Timeout: 5 * time.Second}
	cfg := dev.Config()
	found := 0
	for _, off := range cfg.Capabilities() {
		switch cfg.Uint8(off) {
		case pci.CapMSIX:
			d.msixCap = off
		case pci.CapVendor:
			// struct virtio_pci_cap (virtio 1.2, 4.1.4): cfg_type at +3,
			// bar at +4, offset at +8; the notify capability adds
			// notify_off_multiplier at +16. This driver expects every
			// structure in BAR 0, as Petrel lays them out.
			typ, bar, o := cfg.Uint8(off+3), cfg.Uint8(off+4), uint64(cfg.Uint32(off+8))
			if bar != 0 {
				return nil, fmt.Errorf("virtio cap type %d in BAR %d", typ, bar)
			}
			switch typ {
			case 1:
				d.common = o
			case 2:
				d.notify, d.notifyMul = o, cfg.Uint32(off+16)
			case 3:
				d.isr = o
			case 4:
				d.devcfg = o
			default:
				continue
			}
			found++
		}
	}
	if found != 4 || d.msixCap == 0 {
		return nil, fmt.Errorf("found %d of 4 virtio capabilities, MSI-X at %#x", found, d.msixCap)
	}
	return d, nil
}

// Alloc returns n bytes of zeroed guest memory aligned to 4 KiB.
func (d *Driver) Alloc(n uint64) uint64 {
	a := (d.next + 0xfff) &^ 0xfff
	d.next = a + n
	if d.next > uint64(len(d.RAM)) {
		panic("virtiotest: out of guest memory")
	}
	clear(d.RAM[a : a+n])
	return a
}

// Read and Write access the virtio BAR like MMIO.
func (d *Driver) Read(off uint64, n int) uint64 {
	b := d.scratch[:]
	clear(b)
	d.Dev.Read(0, off, b[:n])
	return binary.LittleEndian.Uint64(b)
}

// Write stores an n-byte value at BAR offset off.
func (d *Driver) Write(off uint64, n int, v uint64) {
	b := d.scratch[:]
	binary.LittleEndian.PutUint64(b, v)
	d.Dev.Write(0, off, b[:n])
}

// Common reads an n-byte common configuration field.
func (d *Driver) Common(field uint64, n int) uint64 { return d.Read(d.common+field, n) }

// SetCommon writes an n-byte common configuration field.
func (d *Driver) SetCommon(field uint64, n int, v uint64) { d.Write(d.common+field, n, v) }

// DeviceConfig reads n bytes of device-specific configuration at off.
func (d *Driver) DeviceConfig(off uint64, n int) uint64 { return d.Read(d.devcfg+off, n) }

// ISR reads (and so clears) the ISR status.
func (d *Driver) ISR() uint8 { return uint8(d.Read(d.isr, 1)) }

// OfferedFeatures reads the 64-bit device feature set.
func (d *Driver) OfferedFeatures() uint64 {
	d.SetCommon(DeviceFeatureSelect, 4, 0)
	lo := d.Common(DeviceFeature, 4)
	d.SetCommon(DeviceFeatureSelect, 4, 1)
	return lo | d.Common(DeviceFeature, 4)<<32
}

// EnableMSIX turns MSI-X on and points vector v at address 0xfee00000 with
// data v, unmasked.
func (d *Driver) EnableMSIX() {
	// Message Control (capability +2): bits 0-10 are the table size minus
	// one, bit 15 MSI-X Enable. A table entry is the message address at
	// +0, data at +8 and vector control at +12, left 0 (unmasked).
	cfg := d.Dev.Config()
	n := int(cfg.Uint16(d.msixCap+2)&0x7ff) + 1
	for v := range n {
		var e [16]byte
		binary.LittleEndian.PutUint64(e[0:], 0xfee0_0000)
		binary.LittleEndian.PutUint32(e[8:], uint32(v))
		d.Dev.MSIX().Write(0, uint64(16*v), e[0:8])
		d.Dev.MSIX().Write(0, uint64(16*v+8), e[8:16])
	}
	var ctl [2]byte
	binary.LittleEndian.PutUint16(ctl[:], cfg.Uint16(d.msixCap+2)|0x8000)
	cfg.Write(d.msixCap+2, ctl[:])
}

// Init resets the device (status 0) and runs the initialisation sequence
// of virtio 1.2, 3.1.1: features want&offered, nq queues of size qsize (0:
// the maximum), queue i on MSI-X vector i+1 and config on 0 when msix,
// DRIVER_OK. It fails if the device refuses FEATURES_OK or sets
// DEVICE_NEEDS_RESET. Queue memory comes from Alloc and is never freed, so
// each Init uses fresh memory.
func (d *Driver) Init(want uint64, nq int, qsize uint16, msix bool) error {
	d.SetCommon(DeviceStatus, 1, 0)
	d.SetCommon(DeviceStatus, 1, virtio.StatusAcknowledge)
	d.SetCommon(DeviceStatus, 1, virtio.StatusAcknowledge|virtio.StatusDriver)
	d.Features = want & d.OfferedFeatures()
	d.SetCommon(DriverFeatureSelect, 4, 0)
	d.SetCommon(DriverFeature, 4, d.Features&0xffff_ffff)
	d.SetCommon(DriverFeatureSelect, 4, 1)
	d.SetCommon(DriverFeature, 4, d.Features>>32)
	st := uint64(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	d.SetCommon(DeviceStatus, 1, st)
	if d.Common(DeviceStatus, 1)&virtio.StatusFeaturesOK == 0 {
		return errors.New("device refused FEATURES_OK")
	}
	if msix {
		d.EnableMSIX()
		d.SetCommon(ConfigMSIXVector, 2, 0)
	}
	d.Queues = nil
	for i := range nq {
		d.SetCommon(QueueSelect, 2, uint64(i))
		max := uint16(d.Common(QueueSize, 2))
		size := qsize
		if size == 0 || size > max {
			size = max
		}
		// Split ring sizes (virtio 1.2, 2.7): 16 bytes per descriptor;
		// flags, idx, ring and used_event in the driver area; flags, idx,
		// 8-byte used elements and avail_event in the device area.
		q := &Queue{Index: i, Size: size}
		q.Desc = d.Alloc(16 * uint64(size))
		q.Avail = d.Alloc(6 + 2*uint64(size))
		q.Used = d.Alloc(6 + 8*uint64(size))
		q.indirect = d.Alloc(16 * uint64(size) * 16)
		q.next = make([]uint16, size)
		q.count = make([]uint16, size)
		for j := int(size) - 1; j >= 0; j-- {
			q.free = append(q.free, uint16(j))
		}
		q.notifyAddr = d.notify + uint64(d.notifyMul)*d.Common(QueueNotifyOff, 2)
		d.SetCommon(QueueSize, 2, uint64(size))
		d.SetCommon(QueueDesc, 8, q.Desc)
		d.SetCommon(QueueDriver, 4, q.Avail) // two halves, as Linux writes them
		d.SetCommon(QueueDriver+4, 4, q.Avail>>32)
		d.SetCommon(QueueDevice, 8, q.Used)
		if msix {
			d.SetCommon(QueueMSIXVector, 2, uint64(i+1))
		}
		d.SetCommon(QueueEnable, 2, 1)
		d.Queues = append(d.Queues, q)
	}
	d.SetCommon(DeviceStatus, 1, st|virtio.StatusDriverOK)
	if s := d.Common(DeviceStatus, 1); s&virtio.StatusDeviceNeedsReset != 0 {
		return fmt.Errorf("device status %#x after DRIVER_OK", s)
	}
	return nil
}

// WriteDesc stores descriptor idx of the descriptor table at GPA table (a
// queue's Desc or an indirect table), for hand-built chains.
func (d *Driver) WriteDesc(table uint64, idx int, addr uint64, n uint32, flags, next uint16) {
	e := d.RAM[table+16*uint64(idx):]
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], n)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

// Publish makes head available and advances the available index.
func (d *Driver) Publish(q *Queue, head uint16) {
	binary.LittleEndian.PutUint16(d.RAM[q.Avail+4+2*uint64(q.availIdx%q.Size):], head)
	q.availIdx++
	store16(d.RAM, q.Avail+2, q.availIdx)
}

// SetAvailIdx stores an arbitrary available index (to test broken drivers).
func (d *Driver) SetAvailIdx(q *Queue, v uint16) { q.availIdx = v; store16(d.RAM, q.Avail+2, v) }

// SetUsedEvent stores used_event (EVENT_IDX).
func (d *Driver) SetUsedEvent(q *Queue, v uint16) {
	store16(d.RAM, q.Avail+4+2*uint64(q.Size), v)
}

// AvailEvent reads avail_event (EVENT_IDX).
func (d *Driver) AvailEvent(q *Queue) uint16 {
	return load16(d.RAM, q.Used+4+8*uint64(q.Size))
}

// Submit builds a chain from bufs (as one indirect table when indirect),
// publishes it and returns its head. It does not allocate. An indirect
// chain takes one descriptor and its head's fixed 16-entry table, so at
// most 16 buffers; the device is not notified (Kick).
func (d *Driver) Submit(q *Queue, bufs []Buf, indirect bool) (uint16, error) {
	need := len(bufs)
	if indirect {
		need = 1
	}
	if need == 0 || need > len(q.free) || (indirect && len(bufs) > 16) {
		return 0, fmt.Errorf("no room for a %d-buffer chain", len(bufs))
	}
	ids := q.free[len(q.free)-need:]
	head := ids[need-1]
	if indirect {
		table := q.indirect + uint64(head)*16*16 // 16 descriptors per head
		for i, b := range bufs {
			flags := uint16(0)
			if b.Write {
				flags |= FWrite
			}
			if i < len(bufs)-1 {
				flags |= FNext
			}
			d.WriteDesc(table, i, b.Addr, b.Len, flags, uint16(i+1))
		}
		d.WriteDesc(q.Desc, int(head), table, uint32(16*len(bufs)), FIndirect, 0)
	} else {
		for i, b := range bufs {
			id := ids[need-1-i]
			flags := uint16(0)
			if b.Write {
				flags |= FWrite
			}
			var next uint16
			if i < len(bufs)-1 {
				flags |= FNext
				next = ids[need-2-i]
			}
			q.next[id] = next
			d.WriteDesc(q.Desc, int(id), b.Addr, b.Len, flags, next)
		}
	}
	q.count[head] = uint16(need)
	q.free = q.free[:len(q.free)-need]
	d.Publish(q, head)
	return head, nil
}

// Kick notifies queue q through its notify address.
func (d *Driver) Kick(q *Queue) { d.Write(q.notifyAddr, 2, uint64(q.Index)) }

// UsedIdx reads the used ring's index, which the device moves, without
// consuming anything.
func (d *Driver) UsedIdx(q *Queue) uint16 { return load16(d.RAM, q.Used+2) }

// Used returns the next used element if there is one: the chain's head id
// and the bytes the device wrote (used.len). Consuming it frees the chain's
// descriptors; an id Submit did not publish frees nothing.
func (d *Driver) Used(q *Queue) (id uint16, n uint32, ok bool) {
	if load16(d.RAM, q.Used+2) == q.lastUsed {
		return 0, 0, false
	}
	e := d.RAM[q.Used+4+8*uint64(q.lastUsed%q.Size):]
	id, n = uint16(binary.LittleEndian.Uint32(e)), binary.LittleEndian.Uint32(e[4:])
	q.lastUsed++
	if d.Features&virtio.FeatureEventIdx != 0 {
		d.SetUsedEvent(q, q.lastUsed) // interrupt me for the next one, as Linux does
	}
	if int(id) < len(q.count) && q.count[id] != 0 {
		c := q.count[id]
		q.count[id] = 0
		for k := id; c > 0; c-- {
			q.free = append(q.free, k)
			k = q.next[k]
		}
	}
	return id, n, true
}

// Wait polls for the next used element.
func (d *Driver) Wait(q *Queue) (id uint16, n uint32, err error) {
	deadline := time.Now().Add(d.Timeout)
	for spins := 0; ; spins++ {
		if id, n, ok := d.Used(q); ok {
			return id, n, nil
		}
		if spins%64 == 63 && time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("queue %d: no used element after %v", q.Index, d.Timeout)
		}
		if spins < 256 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond) // lets the scheduler poll the network poller
		}
	}
}

// Do submits bufs, kicks and waits for the chain to come back.
func (d *Driver) Do(q *Queue, bufs []Buf, indirect bool) (uint32, error) {
	head, err := d.Submit(q, bufs, indirect)
	if err != nil {
		return 0, err
	}
	d.Kick(q)
	id, n, err := d.Wait(q)
	if err == nil && id != head {
		err = fmt.Errorf("used id %d, want %d", id, head)
	}
	return n, err
}
