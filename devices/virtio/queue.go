package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// Split virtqueue layout (virtio 1.2, 2.7): descriptor table of 16-byte
// entries {addr le64, len le32, flags le16, next le16}; available ring
// {flags, idx, ring[size], used_event}; used ring {flags, idx,
// ring[size]{id le32, len le32}, avail_event}.
const (
	descSize      = 16
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4

	availFNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	usedFNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY

	// MaxQueueSize bounds queue sizes and chain lengths (QEMU's
	// VIRTQUEUE_MAX_SIZE).
	MaxQueueSize = 1024
)

// Chain validation errors. They are sentinels so that a bad chain costs no
// allocation either.
var (
	ErrDescOutOfRange   = errors.New("virtio: descriptor buffer outside guest memory")
	ErrDescIndex        = errors.New("virtio: descriptor index beyond the table")
	ErrChainLoop        = errors.New("virtio: descriptor chain loops")
	ErrChainTooLong     = errors.New("virtio: descriptor chain too long")
	ErrWriteBeforeRead  = errors.New("virtio: readable descriptor after a writable one")
	ErrNestedIndirect   = errors.New("virtio: indirect descriptor inside an indirect table")
	ErrIndirectSize     = errors.New("virtio: indirect table length zero or not a multiple of 16")
	ErrIndirectNext     = errors.New("virtio: indirect descriptor with NEXT set")
	ErrIndirectDisabled = errors.New("virtio: indirect descriptor without VIRTIO_F_INDIRECT_DESC")
	ErrAvailIndex       = errors.New("virtio: available index moved by more than the queue size")
)

// Segment is one descriptor's buffer. Buf aliases guest memory (nil when
// the descriptor points outside it, in which case the chain's Err is set).
type Segment struct {
	Addr  uint64 // guest-physical address, as the descriptor gives it
	Len   uint32 // length in bytes
	Write bool   // device-writable (VIRTQ_DESC_F_WRITE), else device-readable
	// Buf is guest memory itself, not a copy: the driver may change it
	// while the device reads, so a device copies what it must validate.
	Buf []byte
}

// Chain is one parsed descriptor chain. It is reused from request to
// request: parsing into it does not allocate.
type Chain struct {
	// Head is the chain's first descriptor index, the id returned in the
	// used ring.
	Head uint16
	// Segs are the buffers in chain order, an indirect table's expanded
	// in its place.
	Segs []Segment
	// ReadLen and WriteLen sum the device-readable and -writable lengths.
	ReadLen, WriteLen uint64
	// Err is the first validation error; Segs then holds the descriptors
	// walked before the walk stopped.
	Err error
	// Complete is set when the walk reached the chain's last descriptor:
	// after a bad buffer address or ordering error the chain's shape is
	// still known (a device may report its error status), after a loop or
	// a bad index or table it is not.
	Complete bool
}

// NewChain returns a Chain with room for the longest valid chain.
func NewChain() *Chain { return &Chain{Segs: make([]Segment, 0, MaxQueueSize)} }

// reset empties c for a new chain starting at head, keeping Segs' storage.
func (c *Chain) reset(head uint16) {
	c.Head, c.Segs, c.ReadLen, c.WriteLen, c.Err, c.Complete = head, c.Segs[:0], 0, 0, nil, false
}

// fail records err unless an earlier error is already recorded: the first
// problem is the one reported.
func (c *Chain) fail(err error) {
	if c.Err == nil {
		c.Err = err
	}
}

// QueueConfig is what the driver programs through common configuration.
type QueueConfig struct {
	Size                 uint16 // entries, a power of two up to MaxQueueSize
	Desc, Driver, Device uint64 // descriptor table, available and used ring GPAs
	// EventIdx and IndirectDescOK are the negotiated VIRTIO_F_EVENT_IDX
	// and VIRTIO_F_INDIRECT_DESC: the first switches interrupt and
	// notification suppression to used_event/avail_event, the second
	// allows indirect descriptors (ErrIndirectDisabled otherwise).
	EventIdx, IndirectDescOK bool
}

// Queue is a split virtqueue being served. It is used by one goroutine at a
// time; the guest shares its rings, so index fields are accessed atomically
// (acquire on avail.idx, release on used.idx) and every descriptor is copied
// before it is validated.
type Queue struct {
	mem  *guestmem.Memory
	cfg  QueueConfig
	desc []byte // the descriptor table, aliasing guest memory
	// availW and usedW alias the rings from their 4-byte aligned start to
	// a 4-byte aligned end, so that 16-bit index fields can be loaded and
	// stored through the aligned 32-bit word holding them.
	availW, usedW     []byte
	availOff, usedOff int // offset of the ring start within availW/usedW

	// lastAvail is the next available ring slot to pop (free-running,
	// like avail.idx); usedIdx the device's used.idx, published after
	// each batch of used elements.
	lastAvail  uint16
	usedIdx    uint16
	lastSignal uint16 // used idx at the last interrupt (EVENT_IDX)
	signalOK   bool   // lastSignal is meaningful

	// Invalid counts malformed chains returned to the guest.
	Invalid atomic.Uint64
}

// NewQueue validates the ring placement and returns a queue ready to serve.
func NewQueue(mem *guestmem.Memory, c QueueConfig) (*Queue, error) {
	n := uint64(c.Size)
	// Ring alignment (virtio 1.2, 2.7 "Split Virtqueues"): descriptor
	// table 16 bytes, available ring 2, used ring 4.
	switch {
	case n == 0 || n > MaxQueueSize || n&(n-1) != 0:
		return nil, fmt.Errorf("virtqueue size %d: not a power of two up to %d", n, MaxQueueSize)
	case c.Desc%16 != 0 || c.Driver%2 != 0 || c.Device%4 != 0:
		return nil, fmt.Errorf("virtqueue rings %#x/%#x/%#x: misaligned", c.Desc, c.Driver, c.Device)
	}
	q := &Queue{mem: mem, cfg: c}
	var err error
	if q.desc, err = mem.Slice(c.Desc, n*descSize); err != nil {
		return nil, fmt.Errorf("virtqueue descriptor table: %w", err)
	}
	if q.availW, q.availOff, err = alignedSlice(mem, c.Driver, 6+2*n); err != nil {
		return nil, fmt.Errorf("virtqueue available ring: %w", err)
	}
	if q.usedW, q.usedOff, err = alignedSlice(mem, c.Device, 6+8*n); err != nil {
		return nil, fmt.Errorf("virtqueue used ring: %w", err)
	}
	return q, nil
}

// alignedSlice returns guest memory covering [gpa, gpa+n) widened to 4-byte
// boundaries, and gpa's offset in it.
func alignedSlice(mem *guestmem.Memory, gpa, n uint64) ([]byte, int, error) {
	start := gpa &^ 3
	end := (gpa + n + 3) &^ 3
	s, err := mem.Slice(start, end-start)
	if err != nil {
		return nil, 0, err
	}
	if !aligned4(s) {
		return nil, 0, fmt.Errorf("guest memory at %#x not 4-byte aligned on the host", start)
	}
	return s, int(gpa - start), nil
}

// queueIndices is the device's private position in a running queue, the
// part of its state that is not in guest memory.
type queueIndices struct {
	lastAvail, usedIdx, lastSignal uint16
	signalOK                       bool
}

// indices and setIndices save and restore the device's position, for
// quiesce/resume and for saved machine state: a queue rebuilt from the
// same registers continues where the old one stopped.
func (q *Queue) indices() queueIndices {
	return queueIndices{q.lastAvail, q.usedIdx, q.lastSignal, q.signalOK}
}

func (q *Queue) setIndices(x queueIndices) {
	q.lastAvail, q.usedIdx, q.lastSignal, q.signalOK = x.lastAvail, x.usedIdx, x.lastSignal, x.signalOK
}

// Size is the queue size.
func (q *Queue) Size() uint16 { return q.cfg.Size }

// availIdx loads avail.idx, the driver's free-running count of chains made
// available; the atomic load orders the ring entries the driver wrote
// before it (the driver's write barrier, virtio 1.2, 2.7.13 "Supplying
// Buffers to The Device").
func (q *Queue) availIdx() uint16 { return q.load16(q.availW, q.availOff+2) }

// Pending reports whether the driver made chains available that have not
// been popped.
func (q *Queue) Pending() bool { return q.availIdx() != q.lastAvail }

// Available is how many chains the driver made available that have not
// been popped (a device short of buffers compares it before and after
// EnableNotify to learn whether more came).
func (q *Queue) Available() int { return int(q.availIdx() - q.lastAvail) }

// Pop parses the next available chain into c. It reports false when the
// ring is empty, or with ErrAvailIndex in c.Err when the driver's index is
// impossible (the queue is then broken until reset).
func (q *Queue) Pop(c *Chain) bool {
	avail := q.availIdx() // acquire: ring entries and descriptors are visible
	if avail == q.lastAvail {
		return false
	}
	if avail-q.lastAvail > q.cfg.Size {
		c.reset(0)
		c.fail(ErrAvailIndex)
		return false
	}
	slot := int(q.lastAvail % q.cfg.Size)
	head := binary.LittleEndian.Uint16(q.availW[q.availOff+4+2*slot:])
	q.lastAvail++
	q.parse(head, c)
	if c.Err != nil {
		q.Invalid.Add(1)
	}
	return true
}

// parse walks the chain at head, following one level of indirection.
func (q *Queue) parse(head uint16, c *Chain) {
	c.reset(head)
	table, entries := q.desc, int(q.cfg.Size)
	idx, walked, indirect := int(head), 0, false
	for {
		if idx >= entries {
			c.fail(ErrDescIndex)
			return
		}
		if walked++; walked > entries {
			c.fail(ErrChainLoop)
			return
		}
		var d [descSize]byte // one snapshot: the guest may rewrite the table
		copy(d[:], table[idx*descSize:])
		addr := binary.LittleEndian.Uint64(d[0:])
		n := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descFIndirect != 0 {
			switch {
			case indirect:
				c.fail(ErrNestedIndirect)
				return
			case !q.cfg.IndirectDescOK:
				c.fail(ErrIndirectDisabled)
				return
			case flags&descFNext != 0:
				c.fail(ErrIndirectNext)
				return
			case n == 0 || n%descSize != 0:
				c.fail(ErrIndirectSize)
				return
			case n/descSize > MaxQueueSize:
				c.fail(ErrChainTooLong)
				return
			}
			t, err := q.mem.Slice(addr, uint64(n))
			if err != nil {
				c.fail(ErrDescOutOfRange)
				return
			}
			table, entries, idx, walked, indirect = t, int(n/descSize), 0, 0, true
			continue
		}
		write := flags&descFWrite != 0
		if !write && c.WriteLen > 0 {
			c.fail(ErrWriteBeforeRead)
		}
		if len(c.Segs) == cap(c.Segs) || c.ReadLen+c.WriteLen+uint64(n) > 1<<32-1 {
			c.fail(ErrChainTooLong)
			return
		}
		buf, err := q.mem.Slice(addr, uint64(n))
		if err != nil {
			c.fail(ErrDescOutOfRange)
			buf = nil
		}
		c.Segs = append(c.Segs, Segment{Addr: addr, Len: n, Write: write, Buf: buf})
		if write {
			c.WriteLen += uint64(n)
		} else {
			c.ReadLen += uint64(n)
		}
		if flags&descFNext == 0 {
			c.Complete = true
			return
		}
		idx = int(next)
	}
}

// Push returns chain head to the driver with len bytes written, publishing
// the used element before the index (release).
func (q *Queue) Push(head uint16, written uint32) {
	q.Fill(0, head, written)
	q.Publish(1)
}

// Fill stores used element i places past the published used index without
// publishing it: a device that returns several chains as one unit (a
// virtio-net frame spread over mergeable receive buffers, 5.1.6.3.2) fills
// them all, then publishes them with one index update, so the driver never
// sees a partial frame.
func (q *Queue) Fill(i int, head uint16, written uint32) {
	slot := int((q.usedIdx + uint16(i)) % q.cfg.Size)
	e := q.usedW[q.usedOff+4+8*slot:]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
}

// Publish makes the n used elements stored by Fill visible (release).
func (q *Queue) Publish(n int) {
	q.usedIdx += uint16(n)
	q.store16(q.usedW, q.usedOff+2, q.usedIdx)
}

// Unpop gives the last n popped chains back: the next Pop parses them
// again. Chains stay in the available ring until they are used, so a device
// that found too few buffers for a frame can wait for more.
func (q *Queue) Unpop(n int) { q.lastAvail -= uint16(n) }

// SuppressNotify asks the driver not to notify while the device is busy
// (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX the device just stops moving
// avail_event).
func (q *Queue) SuppressNotify() {
	if !q.cfg.EventIdx {
		q.store16(q.usedW, q.usedOff, usedFNoNotify)
	}
}

// EnableNotify re-arms driver notifications and reports whether chains
// arrived meanwhile (the caller then keeps serving). The atomic store and
// load order the re-arm before the re-check (virtio 1.2, 2.7.10).
func (q *Queue) EnableNotify() (morePending bool) {
	if q.cfg.EventIdx {
		q.store16(q.usedW, q.usedOff+4+8*int(q.cfg.Size), q.lastAvail) // avail_event
	} else {
		q.store16(q.usedW, q.usedOff, 0)
	}
	return q.Pending()
}

// NeedInterrupt reports whether the driver wants an interrupt for the used
// entries pushed since the last one, and records that one is being sent.
func (q *Queue) NeedInterrupt() bool {
	if !q.cfg.EventIdx {
		flags := q.load16(q.availW, q.availOff)
		return flags&availFNoInterrupt == 0
	}
	old, now := q.lastSignal, q.usedIdx
	valid := q.signalOK
	q.lastSignal, q.signalOK = now, true
	event := q.load16(q.availW, q.availOff+4+2*int(q.cfg.Size)) // used_event
	// vring_need_event: (new - event - 1) < (new - old), in 16-bit arithmetic.
	return !valid || now-event-1 < now-old
}

// Gather copies the chain's device-readable bytes from offset off into
// dst (zeros past their end).
func (c *Chain) Gather(off uint64, dst []byte) {
	clear(dst)
	for i := range c.Segs {
		s := &c.Segs[i]
		if s.Write || len(dst) == 0 {
			continue
		}
		if off >= uint64(s.Len) {
			off -= uint64(s.Len)
			continue
		}
		k := copy(dst, s.Buf[off:])
		dst, off = dst[k:], 0
	}
}

// Scatter copies src into the chain's device-writable bytes from offset
// off and returns how many bytes it stored.
func (c *Chain) Scatter(off uint64, src []byte) int {
	done := 0
	for i := range c.Segs {
		s := &c.Segs[i]
		if !s.Write || len(src) == 0 {
			continue
		}
		if off >= uint64(s.Len) {
			off -= uint64(s.Len)
			continue
		}
		k := copy(s.Buf[off:], src)
		src, off, done = src[k:], 0, done+k
	}
	return done
}
