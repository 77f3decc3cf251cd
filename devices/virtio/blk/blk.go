// Package blk is virtio-blk (virtio 1.2, section 5.2) over a block.Image:
// multi-queue, read/write/flush/get-id/discard/write-zeroes, read-only
// disks, with data moved straight between the image and guest memory.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/devices/virtio"
)

// Feature bits (5.2.3).
const (
	FeatureSegMax      = 1 << 2
	FeatureRO          = 1 << 5
	FeatureBlkSize     = 1 << 6
	FeatureFlush       = 1 << 9
	FeatureTopology    = 1 << 10
	FeatureMQ          = 1 << 12
	FeatureDiscard     = 1 << 13
	FeatureWriteZeroes = 1 << 14
)

// Request types and status values (5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeDiscard     = 11
	TypeWriteZeroes = 13

	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// Sizes and limits.
const (
	SectorSize  = 512
	IDBytes     = 20 // VIRTIO_BLK_ID_BYTES
	headerSize  = 16 // struct virtio_blk_req header: type, reserved, sector
	segmentSize = 16 // struct virtio_blk_discard_write_zeroes
	// MaxDiscardSectors bounds one discard or write-zeroes segment (QEMU's
	// BDRV_REQUEST_MAX_SECTORS rounded to 4 MiB sectors).
	MaxDiscardSectors = 0x3f_ffff
	// MaxDiscardSegs is how many segments one request may carry.
	MaxDiscardSegs = 16
	unmapFlag      = 1

	deviceType = 2
	classSCSI  = 0x010000 // mass storage, SCSI: what QEMU's virtio-blk reports
)

// struct virtio_blk_config offsets (5.2.4).
const (
	cfgCapacity            = 0
	cfgSegMax              = 12
	cfgBlkSize             = 20
	cfgPhysBlockExp        = 24
	cfgMinIOSize           = 26
	cfgNumQueues           = 34
	cfgMaxDiscardSectors   = 36
	cfgMaxDiscardSeg       = 40
	cfgDiscardAlignment    = 44
	cfgMaxWriteZeroesSecs  = 48
	cfgMaxWriteZeroesSeg   = 52
	cfgWriteZeroesMayUnmap = 56
	configSize             = 60
)

// Options configure a virtio-blk device.
type Options struct {
	// Serial is what GET_ID returns (at most 20 bytes are used).
	Serial string
	// NumQueues is the number of request queues (default 1).
	NumQueues int
	// QueueSize is each queue's maximum size (default 256).
	QueueSize uint16
	// ReadOnly offers VIRTIO_BLK_F_RO; it is implied by a read-only image.
	ReadOnly bool
	// KeepImageOpen makes Release flush but not close the image, for an
	// image owned elsewhere (a QMP blockdev-add node outlives device_del).
	KeepImageOpen bool
}

// Blk is the virtio-blk device model; it implements virtio.Backend.
type Blk struct {
	img block.Image
	o   Options // with New's defaults filled in
	// readOnly offers VIRTIO_BLK_F_RO and refuses writes, discards and
	// write-zeroes with IOERR (a flush succeeds, doing nothing):
	// Options.ReadOnly or a read-only image.
	readOnly bool
	// serial is GET_ID's answer: Options.Serial truncated or NUL-padded to
	// VIRTIO_BLK_ID_BYTES (the driver treats it as NUL-terminated only
	// when shorter).
	serial   [IDBytes]byte
	config   [configSize]byte // all but capacity: fixed at New
	capacity atomic.Uint64    // in sectors; changes when the image is resized
	// features are the negotiated features, read by the queue workers.
	features atomic.Uint64

	// Errors counts requests completed with VIRTIO_BLK_S_IOERR or UNSUPP.
	Errors atomic.Uint64

	// bounce[q] is queue q's buffer for coalescing a request's segments
	// (transfer); only q's worker goroutine touches it (virtio/worker.go).
	bounce [][]byte
}

// New returns a virtio-blk backend serving img.
func New(img block.Image, o Options) (*Blk, error) {
	if o.NumQueues == 0 {
		o.NumQueues = 1
	}
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if o.NumQueues < 1 || o.NumQueues > 64 {
		return nil, fmt.Errorf("virtio-blk: %d queues out of range 1..64", o.NumQueues)
	}
	if q := o.QueueSize; q < 4 || q > virtio.MaxQueueSize || q&(q-1) != 0 {
		return nil, fmt.Errorf("virtio-blk: queue size %d not a power of two in 4..%d", q, virtio.MaxQueueSize)
	}
	b := &Blk{img: img, o: o, readOnly: o.ReadOnly || img.ReadOnly(), bounce: make([][]byte, o.NumQueues)}
	copy(b.serial[:], o.Serial)
	le := binary.LittleEndian
	c := b.config[:]
	b.capacity.Store(uint64(img.Size() / SectorSize))
	le.PutUint32(c[cfgSegMax:], uint32(o.QueueSize-2))
	le.PutUint32(c[cfgBlkSize:], SectorSize)
	c[cfgPhysBlockExp] = 0
	le.PutUint16(c[cfgMinIOSize:], 1)
	le.PutUint16(c[cfgNumQueues:], uint16(o.NumQueues))
	le.PutUint32(c[cfgMaxDiscardSectors:], MaxDiscardSectors)
	le.PutUint32(c[cfgMaxDiscardSeg:], MaxDiscardSegs)
	le.PutUint32(c[cfgDiscardAlignment:], 1)
	le.PutUint32(c[cfgMaxWriteZeroesSecs:], MaxDiscardSectors)
	le.PutUint32(c[cfgMaxWriteZeroesSeg:], MaxDiscardSegs)
	if !b.readOnly {
		c[cfgWriteZeroesMayUnmap] = 1
	}
	return b, nil
}

// NewPCI returns the virtio-blk PCI function for img.
func NewPCI(img block.Image, o Options, vo virtio.Options) (*virtio.PCI, *Blk, error) {
	b, err := New(img, o)
	if err != nil {
		return nil, nil, err
	}
	p, err := virtio.NewPCI(b, vo)
	if err != nil {
		return nil, nil, err
	}
	return p, b, nil
}

// DeviceType implements virtio.Backend.
func (b *Blk) DeviceType() uint16 { return deviceType }

// Class implements virtio.Backend.
func (b *Blk) Class() uint32 { return classSCSI }

// DeviceFeatures implements virtio.Backend.
func (b *Blk) DeviceFeatures() uint64 {
	f := uint64(FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureTopology | FeatureMQ |
		FeatureDiscard | FeatureWriteZeroes)
	if b.readOnly {
		f |= FeatureRO
	}
	return f
}

// NumQueues implements virtio.Backend.
func (b *Blk) NumQueues() int { return b.o.NumQueues }

// MaxQueueSize implements virtio.Backend.
func (b *Blk) MaxQueueSize() uint16 { return b.o.QueueSize }

// ConfigSize implements virtio.Backend.
func (b *Blk) ConfigSize() int { return configSize }

// ReadConfig implements virtio.Backend.
func (b *Blk) ReadConfig(off int, data []byte) {
	clear(data)
	if off < 0 || off >= configSize {
		return
	}
	c := b.config
	binary.LittleEndian.PutUint64(c[cfgCapacity:], b.capacity.Load())
	copy(data, c[off:])
}

// WriteConfig implements virtio.Backend: the config is read-only here
// (writeback is not offered).
func (b *Blk) WriteConfig(int, []byte) {}

// Activate implements virtio.Backend.
func (b *Blk) Activate(features uint64) error {
	b.features.Store(features)
	return nil
}

// Reset implements virtio.Backend: requests run synchronously on the queue
// goroutines, which have stopped, so nothing is in flight.
func (b *Blk) Reset() {}

// Release implements virtio.Backend: flush, then close the image (unless
// KeepImageOpen).
func (b *Blk) Release() error {
	var errs []error
	if !b.img.ReadOnly() {
		if err := b.img.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("virtio-blk: flushing on release: %w", err))
		}
	}
	if b.o.KeepImageOpen {
		return errors.Join(errs...)
	}
	if err := b.img.Close(); err != nil {
		errs = append(errs, fmt.Errorf("virtio-blk: closing image: %w", err))
	}
	return errors.Join(errs...)
}

// Capacity is the disk size in sectors.
func (b *Blk) Capacity() uint64 { return b.capacity.Load() }

// RefreshCapacity re-reads the image size after a resize (QMP
// block_resize). When it changed, the caller tells the driver with
// (*virtio.PCI).ConfigChanged, as QEMU's virtio_blk_resize does.
func (b *Blk) RefreshCapacity() (changed bool) {
	n := uint64(b.img.Size() / SectorSize)
	return b.capacity.Swap(n) != n
}
