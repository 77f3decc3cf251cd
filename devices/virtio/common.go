package virtio

import (
	"encoding/binary"
)

// struct virtio_pci_common_cfg field offsets (section 4.1.4.3).
const (
	ccDeviceFeatureSelect = 0x00
	ccDeviceFeature       = 0x04
	ccDriverFeatureSelect = 0x08
	ccDriverFeature       = 0x0c
	ccConfigMSIXVector    = 0x10
	ccNumQueues           = 0x12
	ccDeviceStatus        = 0x14
	ccConfigGeneration    = 0x15
	ccQueueSelect         = 0x16
	ccQueueSize           = 0x18
	ccQueueMSIXVector     = 0x1a
	ccQueueEnable         = 0x1c
	ccQueueNotifyOff      = 0x1e
	ccQueueDesc           = 0x20
	ccQueueDriver         = 0x28
	ccQueueDevice         = 0x30
)

// snapshotLocked renders the common configuration structure as the driver
// sees it now.
func (p *PCI) snapshotLocked(b *[commonSize]byte) {
	le := binary.LittleEndian
	le.PutUint32(b[ccDeviceFeatureSelect:], p.devFeatSel)
	if p.devFeatSel < 2 {
		le.PutUint32(b[ccDeviceFeature:], uint32(p.offer>>(32*p.devFeatSel)))
	}
	le.PutUint32(b[ccDriverFeatureSelect:], p.drvFeatSel)
	if p.drvFeatSel < 2 {
		le.PutUint32(b[ccDriverFeature:], uint32(p.drvFeatures>>(32*p.drvFeatSel)))
	}
	le.PutUint16(b[ccConfigMSIXVector:], uint16(p.configVector.Load()))
	le.PutUint16(b[ccNumQueues:], uint16(p.nq))
	b[ccDeviceStatus] = p.status
	if p.needsReset.Load() {
		b[ccDeviceStatus] |= StatusDeviceNeedsReset
	}
	b[ccConfigGeneration] = p.generation
	le.PutUint16(b[ccQueueSelect:], p.queueSel)
	if q := int(p.queueSel); q < p.nq {
		s := &p.queues[q]
		le.PutUint16(b[ccQueueSize:], s.size)
		le.PutUint16(b[ccQueueMSIXVector:], uint16(p.vectors[q].Load()))
		if s.enabled {
			le.PutUint16(b[ccQueueEnable:], 1)
		}
		le.PutUint16(b[ccQueueNotifyOff:], uint16(q))
		le.PutUint64(b[ccQueueDesc:], s.desc)
		le.PutUint64(b[ccQueueDriver:], s.driver)
		le.PutUint64(b[ccQueueDevice:], s.device)
	}
}

func (p *PCI) readCommon(off int, data []byte) {
	var b [commonSize]byte
	p.mu.Lock()
	p.snapshotLocked(&b)
	p.mu.Unlock()
	copy(data, b[off:])
}

// writeCommon overlays the write on the current values and applies every
// field it touched, so 64-bit fields may be written as two 32-bit halves.
func (p *PCI) writeCommon(off int, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return
	}
	var b [commonSize]byte
	p.snapshotLocked(&b)
	copy(b[off:], data)
	end := off + len(data)
	touched := func(field, size int) bool { return off < field+size && field < end }
	le := binary.LittleEndian
	q := int(p.queueSel)
	var s *queueState
	if q < p.nq && !p.queues[q].enabled {
		s = &p.queues[q] // queue fields are frozen once enabled
	}
	switch {
	case touched(ccDeviceFeatureSelect, 4):
		p.devFeatSel = le.Uint32(b[ccDeviceFeatureSelect:])
	case touched(ccDriverFeatureSelect, 4):
		p.drvFeatSel = le.Uint32(b[ccDriverFeatureSelect:])
	case touched(ccDriverFeature, 4):
		if p.drvFeatSel < 2 && p.status&StatusFeaturesOK == 0 {
			sh := 32 * p.drvFeatSel
			p.drvFeatures = p.drvFeatures&^(0xffff_ffff<<sh) | uint64(le.Uint32(b[ccDriverFeature:]))<<sh
		}
	case touched(ccConfigMSIXVector, 2):
		p.configVector.Store(uint32(p.checkVector(le.Uint16(b[ccConfigMSIXVector:]))))
	case touched(ccDeviceStatus, 1):
		p.setStatusLocked(b[ccDeviceStatus])
	case touched(ccQueueSelect, 2):
		p.queueSel = le.Uint16(b[ccQueueSelect:])
	case touched(ccQueueMSIXVector, 2):
		if q < p.nq {
			p.vectors[q].Store(uint32(p.checkVector(le.Uint16(b[ccQueueMSIXVector:]))))
		}
	case s == nil:
		p.BadAccesses.Add(1)
	case touched(ccQueueSize, 2):
		s.size = le.Uint16(b[ccQueueSize:])
	case touched(ccQueueEnable, 2):
		s.enabled = le.Uint16(b[ccQueueEnable:]) == 1
	case touched(ccQueueDesc, 8):
		s.desc = le.Uint64(b[ccQueueDesc:])
	case touched(ccQueueDriver, 8):
		s.driver = le.Uint64(b[ccQueueDriver:])
	case touched(ccQueueDevice, 8):
		s.device = le.Uint64(b[ccQueueDevice:])
	default:
		p.BadAccesses.Add(1) // read-only field
	}
}

// checkVector returns v, or NoVector when the table has no such entry (the
// driver reads NoVector back and knows the mapping failed, 4.1.5.1.2).
func (p *PCI) checkVector(v uint16) uint16 {
	if v != NoVector && int(v) >= p.msix.Vectors() {
		return NoVector
	}
	return v
}

// setStatusLocked runs the device status state machine (section 3.1).
func (p *PCI) setStatusLocked(v uint8) {
	if v == 0 {
		p.resetLocked()
		return
	}
	old := p.status
	if v&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		// Accept only a subset of the offer that includes VERSION_1;
		// otherwise FEATURES_OK reads back clear (3.1.1 step 6).
		if p.drvFeatures&^p.offer != 0 || p.drvFeatures&FeatureVersion1 == 0 {
			v &^= StatusFeaturesOK
		}
	}
	if v&StatusDriverOK != 0 && old&StatusDriverOK == 0 {
		if v&StatusFeaturesOK == 0 || p.activateLocked() != nil {
			v |= StatusDeviceNeedsReset
		}
	}
	p.status = v | old&StatusDeviceNeedsReset
}

// resetLocked returns the device to its initial state: queues stopped and
// forgotten, MSI-X vector assignments cleared, features and ISR zero.
func (p *PCI) resetLocked() {
	p.stopWorkersLocked()
	p.be.Reset()
	p.devFeatSel, p.drvFeatSel, p.drvFeatures = 0, 0, 0
	p.status, p.queueSel = 0, 0
	p.configVector.Store(NoVector)
	p.needsReset.Store(false)
	for i := range p.queues {
		p.queues[i] = queueState{size: p.be.MaxQueueSize()}
		p.vectors[i].Store(NoVector)
	}
	p.isrMu.Lock()
	p.isr = 0
	p.setLevelLocked(false)
	p.isrMu.Unlock()
}

// ConfigChanged tells the driver that device configuration changed (for
// example a resized disk): the generation moves and a config interrupt is
// raised.
func (p *PCI) ConfigChanged() {
	p.mu.Lock()
	p.generation++
	vec := uint16(p.configVector.Load())
	running := p.status&StatusDriverOK != 0
	p.mu.Unlock()
	if running {
		p.interrupt(vec, isrConfig)
	}
}
