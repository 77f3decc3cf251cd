// Package virtio is Petrel's virtio 1.x transport: the modern virtio-pci
// interface (virtio 1.2, section 4.1) and split virtqueues (section 2.7)
// with descriptor-chain validation. Device models (devices/virtio/blk)
// implement Backend and get one goroutine per queue.
package virtio

// Feature bits the transport handles (virtio 1.2, section 6).
const (
	FeatureIndirectDesc = 1 << 28 // VIRTIO_F_INDIRECT_DESC
	FeatureEventIdx     = 1 << 29 // VIRTIO_F_EVENT_IDX
	FeatureVersion1     = 1 << 32 // VIRTIO_F_VERSION_1
	transportFeatures   = FeatureIndirectDesc | FeatureEventIdx | FeatureVersion1
)

// Device status bits (section 2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 0x40
	StatusFailed           = 0x80
)

// NoVector is VIRTIO_MSI_NO_VECTOR.
const NoVector = 0xffff

// PCI identity (section 4.1.2): vendor 0x1af4, device 0x1040 + type.
const (
	VendorID     = 0x1af4
	DeviceIDBase = 0x1040
)

// Backend is a virtio device model behind the PCI transport.
type Backend interface {
	// DeviceType is the virtio device ID (2 for block).
	DeviceType() uint16
	// Class is the PCI class code (class<<16 | subclass<<8 | prog-if).
	Class() uint32
	// DeviceFeatures are the device-specific feature bits offered; the
	// transport adds VERSION_1, EVENT_IDX and INDIRECT_DESC.
	DeviceFeatures() uint64
	NumQueues() int
	MaxQueueSize() uint16
	// ConfigSize is the size of the device-specific configuration space.
	ConfigSize() int
	ReadConfig(off int, data []byte)
	WriteConfig(off int, data []byte)
	// Activate is called when the driver sets DRIVER_OK, with the
	// negotiated features, before any queue is served.
	Activate(features uint64) error
	// HandleChain serves one request; it is called only from queue's own
	// goroutine and returns how many bytes it wrote into the chain's
	// writable buffers (the used element's len). c.Err is non-nil for a
	// malformed chain: the backend reports its device-specific error if it
	// can and returns the bytes written.
	HandleChain(queue int, c *Chain) (written uint32)
	// Reset is called after every queue goroutine stopped (driver reset).
	Reset()
	// Release flushes and closes backing resources (hot-unplug).
	Release() error
}
