// Package net is virtio-net (virtio 1.2, section 5.1) over a
// netdev.Backend: one receive and one transmit queue, a control queue for
// the receive filter, mergeable receive buffers, and checksum and TCP
// segmentation offloads when the backend carries a virtio net header
// (tap). Frames move between guest memory and the backend without
// allocating; every guest buffer is validated by the transport's chain
// parser first.
package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/netdev"
)

// Feature bits (5.1.3).
const (
	FeatureCsum        = 1 << 0  // VIRTIO_NET_F_CSUM: device takes partial checksums
	FeatureGuestCsum   = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: driver takes partial checksums
	FeatureMTU         = 1 << 3  // VIRTIO_NET_F_MTU: the configuration holds the MTU to use
	FeatureMAC         = 1 << 5  // VIRTIO_NET_F_MAC
	FeatureGuestTSO4   = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureGuestTSO6   = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestECN    = 1 << 9  // VIRTIO_NET_F_GUEST_ECN
	FeatureGuestUFO    = 1 << 10 // VIRTIO_NET_F_GUEST_UFO
	FeatureHostTSO4    = 1 << 11 // VIRTIO_NET_F_HOST_TSO4
	FeatureHostTSO6    = 1 << 12 // VIRTIO_NET_F_HOST_TSO6
	FeatureHostECN     = 1 << 13 // VIRTIO_NET_F_HOST_ECN
	FeatureHostUFO     = 1 << 14 // VIRTIO_NET_F_HOST_UFO
	FeatureMrgRxbuf    = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
	FeatureStatus      = 1 << 16 // VIRTIO_NET_F_STATUS
	FeatureCtrlVQ      = 1 << 17 // VIRTIO_NET_F_CTRL_VQ
	FeatureCtrlRx      = 1 << 18 // VIRTIO_NET_F_CTRL_RX
	FeatureCtrlMACAddr = 1 << 23 // VIRTIO_NET_F_CTRL_MAC_ADDR
)

// offloadFeatures need a backend that carries the virtio net header.
const offloadFeatures = FeatureCsum | FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 |
	FeatureGuestECN | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN

// Queues (5.1.2, without VIRTIO_NET_F_MQ).
const (
	rxQueue   = 0
	txQueue   = 1
	ctrlQueue = 2
	numQueues = 3
)

// struct virtio_net_config (5.1.4): mac[6], status le16,
// max_virtqueue_pairs le16, mtu le16 (present with VIRTIO_NET_F_MTU).
const (
	cfgMAC        = 0
	cfgStatus     = 6
	cfgMaxVQPairs = 8
	cfgMTU        = 10
	configSize    = 12
	// stateCfgSize is the part of the configuration a saved state holds:
	// the MTU is the backend's, not the guest's.
	stateCfgSize = 10
	statusLinkUp = 1

	deviceType    = 1
	classEthernet = 0x020000
	// ethMax is the longest frame without segmentation offload: 1500
	// bytes of MTU, an Ethernet and a VLAN header.
	ethMax = 1518
	ethMin = 14 // an Ethernet header
	// maxGSOFrame is the longest frame with TSO: 64 KiB of IP packet.
	maxGSOFrame = 65535 + 18
)

// mtuBackend is a backend whose network takes packets larger than
// Ethernet's 1500 bytes (netdev/user's stack: 65520, as slirp4netns and
// passt use): the device offers VIRTIO_NET_F_MTU with it, so a driver
// that knows the feature sends and receives fewer, larger frames.
type mtuBackend interface{ MTU() int }

// Options configure a virtio-net device.
type Options struct {
	// MAC is the address offered in the configuration space
	// (VIRTIO_NET_F_MAC) and the receive filter's initial own address.
	MAC [6]byte
	// QueueSize is each queue's maximum size (default 256).
	QueueSize uint16
}

// Stats count what the device dropped and why; the backend counts what
// it moved.
type Stats struct {
	// TxFrames and RxFrames count frames passed to the backend and placed
	// in the guest's buffers.
	TxFrames, RxFrames atomic.Uint64
	// TxDropped: malformed chains, bad headers, runt or oversized frames,
	// backend send errors.
	TxDropped atomic.Uint64
	// RxDropped: frames from the host the guest could not take (no driver,
	// backlog full, frame larger than the guest's buffers, malformed).
	RxDropped atomic.Uint64
	// RxFiltered: frames the receive filter refused.
	RxFiltered atomic.Uint64
	// CtrlErrors: control commands answered VIRTIO_NET_ERR.
	CtrlErrors atomic.Uint64
}

// Net is the virtio-net device model; it implements virtio.Backend and
// virtio.QueueServer (the receive queue waits for frames) and
// netdev.Receiver.
type Net struct {
	be netdev.Backend
	o  Options
	// cfg is struct virtio_net_config as the driver reads it: mac,
	// status (link up), max_virtqueue_pairs, mtu.
	cfg [configSize]byte
	mtu int // offered with VIRTIO_NET_F_MTU; 0: not offered

	// features are the negotiated features, read by the queue goroutines
	// and the backend's receive path.
	features atomic.Uint64
	// maxTx is the longest frame (without the net header) the driver may
	// transmit under the negotiated features.
	maxTx atomic.Uint32

	// Transmit state, used only on the transmit queue's goroutine.
	txSegs [virtio.MaxQueueSize][]byte

	// rxMu serialises the receive queue between the backend's goroutine
	// (Receive) and the queue's (QueueNotified), and guards the receive
	// filter the control queue sets. Lock order: virtio PCI.mu (held by
	// Reset) before rxMu; rxMu before pci.MSIX.
	rxMu   sync.Mutex
	rx     rxState
	filter filter
	// released is set by Release; frames from the backend are then
	// dropped.
	released bool

	Stats Stats
}

// New returns a virtio-net backend on be and attaches it to be's frames.
func New(be netdev.Backend, o Options) (*Net, error) {
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if q := o.QueueSize; q < 4 || q > virtio.MaxQueueSize || q&(q-1) != 0 {
		return nil, fmt.Errorf("virtio-net: queue size %d not a power of two in 4..%d", q, virtio.MaxQueueSize)
	}
	if o.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("virtio-net: MAC %s is a multicast address", FormatMAC(o.MAC))
	}
	n := &Net{be: be, o: o}
	copy(n.cfg[cfgMAC:], o.MAC[:])
	binary.LittleEndian.PutUint16(n.cfg[cfgStatus:], statusLinkUp)
	binary.LittleEndian.PutUint16(n.cfg[cfgMaxVQPairs:], 1)
	if mb, ok := be.(mtuBackend); ok {
		if mtu := mb.MTU(); mtu > ethMax-18 && mtu+18 <= be.MaxFrame() && mtu <= 65535 {
			n.mtu = mtu
			binary.LittleEndian.PutUint16(n.cfg[cfgMTU:], uint16(mtu))
		}
	}
	n.rx.init(be.MaxFrame(), o.QueueSize)
	n.filter.reset(o.MAC)
	if err := be.Attach(n); err != nil {
		return nil, fmt.Errorf("virtio-net: netdev %s: %w", be.ID(), err)
	}
	return n, nil
}

// NewPCI returns the virtio-net PCI function on be.
func NewPCI(be netdev.Backend, o Options, vo virtio.Options) (*virtio.PCI, *Net, error) {
	n, err := New(be, o)
	if err != nil {
		return nil, nil, err
	}
	p, err := virtio.NewPCI(n, vo)
	if err != nil {
		be.Detach()
		return nil, nil, err
	}
	return p, n, nil
}

// Backend is the netdev the device is attached to.
func (n *Net) Backend() netdev.Backend { return n.be }

// MAC is the device's current MAC address.
func (n *Net) MAC() [6]byte {
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	return n.filter.mac
}

// DeviceType implements virtio.Backend.
func (n *Net) DeviceType() uint16 { return deviceType }

// Class implements virtio.Backend.
func (n *Net) Class() uint32 { return classEthernet }

// DeviceFeatures implements virtio.Backend.
func (n *Net) DeviceFeatures() uint64 {
	f := uint64(FeatureMAC | FeatureStatus | FeatureMrgRxbuf | FeatureCtrlVQ | FeatureCtrlRx | FeatureCtrlMACAddr)
	if n.mtu != 0 {
		f |= FeatureMTU
	}
	if n.be.VnetHdr() {
		f |= offloadFeatures
	}
	return f
}

// NumQueues implements virtio.Backend.
func (n *Net) NumQueues() int { return numQueues }

// MaxQueueSize implements virtio.Backend.
func (n *Net) MaxQueueSize() uint16 { return n.o.QueueSize }

// ConfigSize implements virtio.Backend: the mtu field only where the
// feature is offered.
func (n *Net) ConfigSize() int {
	if n.mtu != 0 {
		return configSize
	}
	return cfgMTU
}

// ReadConfig implements virtio.Backend.
func (n *Net) ReadConfig(off int, data []byte) {
	clear(data)
	if off < 0 || off >= n.ConfigSize() {
		return
	}
	n.rxMu.Lock()
	c := n.cfg
	copy(c[cfgMAC:], n.filter.mac[:])
	n.rxMu.Unlock()
	copy(data, c[off:])
}

// WriteConfig implements virtio.Backend: the configuration is read-only
// for a virtio 1.x driver (it sets the MAC with the control queue).
func (n *Net) WriteConfig(int, []byte) {}

// featureDeps are the dependencies of 5.1.3.1: a feature needs all bits of
// at least one bit of its mask.
var featureDeps = []struct{ f, needs uint64 }{
	{FeatureGuestTSO4, FeatureGuestCsum},
	{FeatureGuestTSO6, FeatureGuestCsum},
	{FeatureGuestECN, FeatureGuestTSO4 | FeatureGuestTSO6},
	{FeatureHostTSO4, FeatureCsum},
	{FeatureHostTSO6, FeatureCsum},
	{FeatureHostECN, FeatureHostTSO4 | FeatureHostTSO6},
	{FeatureCtrlRx, FeatureCtrlVQ},
	{FeatureCtrlMACAddr, FeatureCtrlVQ},
}

// ErrFeatureDeps is returned by Activate for a feature set that breaks
// the dependencies of 5.1.3.1.
var ErrFeatureDeps = errors.New("virtio-net: negotiated features break their dependencies")

// Activate implements virtio.Backend.
func (n *Net) Activate(f uint64) error {
	for _, d := range featureDeps {
		if f&d.f != 0 && f&d.needs == 0 {
			return ErrFeatureDeps
		}
	}
	n.features.Store(f)
	maxTx := uint32(ethMax)
	if f&(FeatureHostTSO4|FeatureHostTSO6) != 0 {
		maxTx = maxGSOFrame
	}
	if f&FeatureMTU != 0 {
		maxTx = max(maxTx, uint32(n.mtu+18))
	}
	n.maxTx.Store(maxTx)
	if n.be.VnetHdr() {
		err := n.be.SetOffloads(netdev.Offloads{Csum: f&FeatureGuestCsum != 0, TSO4: f&FeatureGuestTSO4 != 0,
			TSO6: f&FeatureGuestTSO6 != 0, ECN: f&FeatureGuestECN != 0})
		if err != nil {
			return fmt.Errorf("virtio-net: %w", err)
		}
	}
	return nil
}

// Reset implements virtio.Backend: the receive queue is dropped with the
// frames waiting for it, the filter returns to its power-on state (QEMU's:
// promiscuous), offloads go off.
func (n *Net) Reset() {
	n.rxMu.Lock()
	n.rx.stop(&n.Stats)
	n.filter.reset(n.o.MAC)
	n.rxMu.Unlock()
	n.features.Store(0)
	if n.be.VnetHdr() {
		n.be.SetOffloads(netdev.Offloads{})
	}
}

// Release implements virtio.Backend: the device lets go of its netdev,
// which stays open for another device or netdev_del.
func (n *Net) Release() error {
	n.be.Detach()
	n.rxMu.Lock()
	n.rx.stop(&n.Stats)
	n.released = true
	n.rxMu.Unlock()
	return nil
}

// ServesQueue implements virtio.QueueServer: the receive queue.
func (n *Net) ServesQueue(qi int) bool { return qi == rxQueue }

// StartQueue implements virtio.QueueServer.
func (n *Net) StartQueue(qi int, q *virtio.ServedQueue) {
	if qi != rxQueue {
		return
	}
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	if !n.released {
		n.rx.start(q, n.features.Load())
	}
}

// QueueNotified implements virtio.QueueServer: the driver posted receive
// buffers; frames waiting for them go now.
func (n *Net) QueueNotified(qi int) {
	if qi != rxQueue {
		return
	}
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	n.drainLocked()
}

// HandleChain implements virtio.Backend for the transmit and control
// queues.
func (n *Net) HandleChain(qi int, c *virtio.Chain) uint32 {
	switch qi {
	case txQueue:
		n.transmit(c)
		return 0
	case ctrlQueue:
		return n.control(c)
	}
	return 0
}

// FormatMAC renders a MAC address as QEMU does (lower-case, colons).
func FormatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// ParseMAC parses "52:54:00:12:34:56": exactly six two-digit hex bytes,
// either case, separated by colons. A multicast address (bit 0 of the
// first byte set) is refused: a NIC's own address must be unicast.
func ParseMAC(s string) ([6]byte, error) {
	var m [6]byte
	if len(s) != 17 {
		return m, fmt.Errorf("MAC %q: want six hex bytes separated by colons", s)
	}
	for i := range 6 {
		if i > 0 && s[3*i-1] != ':' {
			return m, fmt.Errorf("MAC %q: want six hex bytes separated by colons", s)
		}
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 {
			return m, fmt.Errorf("MAC %q: bad hex digit", s)
		}
		m[i] = hi<<4 | lo
	}
	if m[0]&1 != 0 {
		return m, fmt.Errorf("MAC %q: multicast bit set", s)
	}
	return m, nil
}

// unhex decodes one hex digit of a MAC address, either case.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
