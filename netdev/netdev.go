// Package netdev is the host side of guest network devices: a Backend
// carries Ethernet frames between a NIC model (devices/virtio/net) and the
// host, a tap device (netdev/tap) or a user-mode network stack
// (netdev/user).
package netdev

import (
	"errors"
	"sync"
	"sync/atomic"
)

// VnetHdrLen is the size of the virtio 1.x struct virtio_net_hdr (with
// num_buffers) that frames carry when Backend.VnetHdr is true (virtio 1.2,
// 5.1.6): tap devices are told to use this size with TUNSETVNETHDRSZ.
const VnetHdrLen = 12

// MaxFrame is the longest frame a backend moves: a 64 KiB GSO frame with
// its Ethernet and VLAN header and the virtio_net_hdr.
const MaxFrame = VnetHdrLen + 14 + 4 + 65535

// Offloads the guest accepts on receive; a backend with a vnet header
// delivers partially checksummed or segmentation-offloaded frames only of
// these kinds (tap: TUNSETOFFLOAD).
type Offloads struct {
	Csum, TSO4, TSO6, ECN, UFO bool
}

// Receiver takes frames from a backend. Receive runs on the backend's
// goroutine; frame (with the vnet header first when the backend has one)
// is valid only during the call.
type Receiver interface {
	Receive(frame []byte)
}

// Backend is one host network endpoint (QEMU's -netdev).
type Backend interface {
	// ID is the -netdev id.
	ID() string
	// VnetHdr reports whether frames carry a leading VnetHdrLen-byte
	// virtio_net_hdr (little-endian) in both directions. Only such a
	// backend can take checksum and segmentation offloads.
	VnetHdr() bool
	// MaxFrame is the longest frame Receive can deliver, vnet header
	// included.
	MaxFrame() int
	// SetOffloads tells the backend what the guest accepts on receive.
	SetOffloads(Offloads) error
	// Send transmits one frame gathered from segs, which it must not keep.
	// It does not allocate.
	Send(segs [][]byte) error
	// Attach makes r the receiver of every frame from now on; a backend
	// has at most one. Detach returns only when r is no longer running,
	// and frames arriving without a receiver are dropped and counted.
	Attach(r Receiver) error
	Detach()
	// Attached reports whether a NIC uses the backend.
	Attached() bool
	// Stats returns the frame counters.
	Stats() *Stats
	// Close stops the backend and releases its host resources.
	Close() error
}

// Stats count a backend's frames.
type Stats struct {
	TxFrames, TxBytes, TxErrors atomic.Uint64
	RxFrames, RxBytes           atomic.Uint64
	// RxUnattached counts frames dropped because no NIC was attached.
	RxUnattached atomic.Uint64
}

// ErrAttached is returned by Attach when a NIC already uses the backend.
var ErrAttached = errors.New("netdev: already attached to a device")

// Port is the receiver bookkeeping shared by backends: one receiver, and
// a delivery that Detach waits out.
type Port struct {
	mu    sync.Mutex
	recv  Receiver
	stats Stats
}

// Attach implements Backend.Attach.
func (p *Port) Attach(r Receiver) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recv != nil {
		return ErrAttached
	}
	p.recv = r
	return nil
}

// Detach implements Backend.Detach.
func (p *Port) Detach() {
	p.mu.Lock()
	p.recv = nil
	p.mu.Unlock()
}

// Attached implements Backend.Attached.
func (p *Port) Attached() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recv != nil
}

// Stats implements Backend.Stats.
func (p *Port) Stats() *Stats { return &p.stats }

// Deliver hands frame to the receiver, or counts it dropped.
func (p *Port) Deliver(frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recv == nil {
		p.stats.RxUnattached.Add(1)
		return
	}
	p.stats.RxFrames.Add(1)
	p.stats.RxBytes.Add(uint64(len(frame)))
	p.recv.Receive(frame)
}
