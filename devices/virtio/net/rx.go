package net

import (
	"github.com/petrel-vmm/petrel/devices/virtio"
)

// backlogBytes bounds the memory that holds frames while the driver has
// no receive buffers for them; beyond it frames are dropped and counted.
const backlogBytes = 1 << 20

// rxState is the receive side: the running queue (nil while the driver is
// not ready), a fixed ring of frames waiting for guest buffers, and the
// chains of the frame being placed. Guarded by Net.rxMu.
type rxState struct {
	q        *virtio.ServedQueue
	features uint64 // negotiated at start: decides num_buffers and offloads
	// frames waiting for buffers: slots[(head+i)%len] for i < count.
	slots [][]byte
	lens  []int // bytes used in each slot
	// head is the oldest waiting frame's slot, count how many wait.
	head, count int
	// first holds the first chain of a frame (its header gets num_buffers
	// last), cur the others.
	first, cur *virtio.Chain
	hdr        [hdrLen]byte
	// paused: the device is quiesced (Net.Quiesce); frames only go to
	// the backlog.
	paused bool
}

// init allocates the backlog: as many maxFrame-byte slots as fit in
// backlogBytes, but at least 8 and at most 256. queueSize is unused.
func (r *rxState) init(maxFrame int, queueSize uint16) {
	n := min(max(backlogBytes/maxFrame, 8), 256)
	r.slots = make([][]byte, n)
	for i := range r.slots {
		r.slots[i] = make([]byte, maxFrame)
	}
	r.lens = make([]int, n)
	r.first, r.cur = virtio.NewChain(), virtio.NewChain()
}

// start attaches the running receive queue (at DRIVER_OK) with the
// features the driver negotiated; frames in the backlog then flow.
func (r *rxState) start(q *virtio.ServedQueue, features uint64) {
	r.q, r.features = q, features
}

// stop forgets the queue and drops the frames waiting for it.
func (r *rxState) stop(st *Stats) {
	r.q = nil
	st.RxDropped.Add(uint64(r.count))
	r.head, r.count = 0, 0
}

// Receive implements netdev.Receiver: frame (virtio net header first when
// the backend has one) goes to the driver's buffers, or waits in the
// backlog behind earlier frames, or is dropped and counted. It never
// blocks the backend.
func (n *Net) Receive(frame []byte) {
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	r := &n.rx
	if r.q == nil {
		n.Stats.RxDropped.Add(1)
		return
	}
	if r.count == 0 && !r.paused {
		delivered, done := n.deliverLocked(frame)
		if delivered > 0 {
			r.q.Interrupt()
		}
		if done {
			return
		}
	}
	if r.count == len(r.slots) || len(frame) > len(r.slots[0]) {
		n.Stats.RxDropped.Add(1)
	} else {
		i := (r.head + r.count) % len(r.slots)
		r.lens[i] = copy(r.slots[i], frame)
		r.count++
	}
	n.drainLocked()
}

// drainLocked moves backlog frames into guest buffers while there are
// some, and asks the driver for a notification when it runs dry.
func (n *Net) drainLocked() {
	r := &n.rx
	if r.paused {
		return
	}
	pushed := 0
	for r.q != nil && r.count > 0 {
		got, done := n.deliverLocked(r.slots[r.head][:r.lens[r.head]])
		pushed += got
		if !done {
			// Out of buffers: re-arm notifications, then look again
			// (a buffer posted meanwhile sent no notification).
			had := r.q.Available()
			r.q.EnableNotify()
			if r.q.Available() > had {
				continue
			}
			break
		}
		r.head = (r.head + 1) % len(r.slots)
		r.count--
	}
	if r.q != nil && pushed > 0 {
		r.q.Interrupt()
	}
	if r.q != nil && r.count == 0 {
		r.q.SuppressNotify() // nothing waits for buffers
	}
}

// deliverLocked places one frame. done is false when the driver has not
// posted enough buffers (nothing was consumed); a frame the driver can
// never take is dropped, counted and done. delivered is how many frames
// were published (0 or 1).
func (n *Net) deliverLocked(frame []byte) (delivered int, done bool) {
	r := &n.rx
	var payload []byte
	var h Hdr
	if n.be.VnetHdr() {
		if len(frame) < hdrLen {
			n.Stats.RxDropped.Add(1)
			return 0, true
		}
		h, payload = DecodeHdr(frame), frame[hdrLen:]
		if !rxHdrFix(&h, r.features) {
			n.Stats.RxDropped.Add(1)
			return 0, true
		}
	} else {
		payload = frame
	}
	if len(payload) < ethMin {
		n.Stats.RxDropped.Add(1)
		return 0, true
	}
	if !n.filter.accept(payload) {
		n.Stats.RxFiltered.Add(1)
		return 0, true
	}
	total := uint64(hdrLen + len(payload))
	mergeable := r.features&FeatureMrgRxbuf != 0
	q := r.q
	// Chains: the first carries the header; without mergeable buffers it
	// must hold the whole frame.
	if !q.Pop(r.first) {
		if r.first.Err != nil { // impossible available index
			q.Broken()
			r.q = nil
			n.Stats.RxDropped.Add(1)
			return 0, true
		}
		return 0, false
	}
	if !n.rxChainOK(r.first) {
		return 0, true
	}
	if !mergeable && r.first.WriteLen < total {
		// The driver's buffers can never hold it: give the chain back
		// empty and drop the frame.
		q.Fill(0, r.first.Head, 0)
		q.Publish(1)
		n.Stats.RxDropped.Add(1)
		return 1, true
	}
	off := uint64(0)
	put := func(c *virtio.Chain, room uint64) uint64 { // bytes of frame stored in c
		w := uint64(0)
		if c == r.first {
			w = hdrLen // the header goes in last, with num_buffers
		}
		k := min(room-w, uint64(len(payload))-off)
		c.Scatter(w, payload[off:off+k])
		off += k
		return w + k
	}
	used := put(r.first, r.first.WriteLen)
	q.Fill(0, r.first.Head, uint32(used))
	bufs := 1
	for off < uint64(len(payload)) {
		if bufs == int(q.Size()) || !q.Pop(r.cur) {
			if r.cur.Err == virtio.ErrAvailIndex {
				q.Broken()
				r.q = nil
				n.Stats.RxDropped.Add(1)
				return 0, true
			}
			q.Unpop(bufs) // wait for more buffers; they are parsed again
			return 0, false
		}
		if !n.rxChainOK(r.cur) {
			return 0, true
		}
		q.Fill(bufs, r.cur.Head, uint32(put(r.cur, r.cur.WriteLen)))
		bufs++
	}
	// Without MRG_RXBUF bufs is 1, which 5.1.6.4.1 requires then.
	h.NumBuffers = uint16(bufs)
	h.Encode(r.hdr[:])
	r.first.Scatter(0, r.hdr[:])
	q.Publish(bufs)
	n.Stats.RxFrames.Add(1)
	return 1, true
}

// rxChainOK checks a receive chain: complete, valid, device-writable only,
// room for the header. A bad one means a broken driver: the device stops
// serving the queue and asks for a reset, as QEMU's virtio_error does
// (the VM and the backend go on).
func (n *Net) rxChainOK(c *virtio.Chain) bool {
	if c.Err == nil && c.Complete && c.ReadLen == 0 && c.WriteLen >= hdrLen {
		return true
	}
	n.rx.q.Broken()
	n.rx.q = nil
	n.Stats.RxDropped.Add(1)
	return false
}
