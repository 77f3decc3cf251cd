package virtio

import (
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/vmstate"
)

// Quiesce implements pci.Quiescer. Each queue goroutine finishes the
// chain it is serving, publishes it in the used ring and raises the
// interrupt the driver asked for, then stops; chains the driver made
// available but the device has not popped stay in the available ring. A
// backend that implements pci.Quiescer (virtio-net's receive path) is
// quiesced after. From then on the device touches neither guest memory
// nor its interrupts: "no I/O in flight" is every popped chain used
// (virtio-blk requests run synchronously on the queue goroutines, so the
// image has no request of the device's outstanding either). Guest
// accesses to the registers are still served; the vCPUs are expected to
// be paused. Quiesce on a quiesced device does nothing.
func (p *PCI) Quiesce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.quiesceLocked()
}

// Resume implements pci.Quiescer: the backend goes on and the queue
// goroutines start again. Each starts with one pass over its queue, as if
// notified (run), so a driver notification that came while the device was
// quiesced, or was lost with the process that saved the state, is served.
func (p *PCI) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resumeLocked()
}

func (p *PCI) quiesceLocked() {
	if p.quiesced {
		return
	}
	p.quiesced = true
	p.haltWorkersLocked()
	if q, ok := p.be.(pci.Quiescer); ok {
		q.Quiesce()
	}
}

func (p *PCI) resumeLocked() {
	if !p.quiesced {
		return
	}
	p.quiesced = false
	if q, ok := p.be.(pci.Quiescer); ok {
		q.Resume()
	}
	p.runWorkersLocked()
}

// pciStateVersion is the version of the transport's section. Version 1:
//
//	u32 version, u64 device features offered, u16 queue count,
//	u32 device feature select, u32 driver feature select, u64 driver
//	features, u8 device status, u8 config generation, bool ring broken
//	(DEVICE_NEEDS_RESET), u16 config MSI-X vector, u16 queue select, u8 ISR,
//	per queue: u16 size, bool enabled, u64 descriptor table, u64 driver
//	area, u64 device area, u16 MSI-X vector, bool running, u16 last
//	available index, u16 used index, u16 used index at the last interrupt,
//	bool that one is valid, bool halted (stopped on a broken ring);
//	then the MSI-X state and the backend's state, each a byte string
//	(the backend's empty when it keeps none).
const pciStateVersion = 1

// maxNested bounds the nested MSI-X and backend sections.
const maxNested = 1 << 20

// savedQueue is one queue of a decoded transport section.
type savedQueue struct {
	queueState
	vector          uint16
	running, halted bool
	ix              queueIndices
}

// pciState is a decoded transport section.
type pciState struct {
	offer                  uint64
	devFeatSel, drvFeatSel uint32
	drvFeatures            uint64
	status, generation     uint8
	needsReset             bool
	configVector, queueSel uint16
	isr                    uint8
	queues                 []savedQueue
	msix, backend          []byte
}

// SaveState implements vmstate.Stater: the transport registers, each
// queue's addresses and ring position, the MSI-X table and PBA, and the
// backend's state when it implements vmstate.Stater. The machine calls it
// on a quiesced device; a device that is not is quiesced for the time of
// the save.
func (p *PCI) SaveState(e *vmstate.Enc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.quiesced {
		p.quiesceLocked()
		defer p.resumeLocked()
	}
	running := make([]*worker, p.nq)
	for _, w := range p.workers {
		running[w.qi] = w
	}
	e.U32(pciStateVersion)
	e.U64(p.offer)
	e.U16(uint16(p.nq))
	e.U32(p.devFeatSel)
	e.U32(p.drvFeatSel)
	e.U64(p.drvFeatures)
	e.U8(p.status)
	e.U8(p.generation)
	e.Bool(p.needsReset.Load())
	e.U16(uint16(p.configVector.Load()))
	e.U16(p.queueSel)
	p.isrMu.Lock()
	e.U8(p.isr)
	p.isrMu.Unlock()
	for i, s := range p.queues {
		e.U16(s.size)
		e.Bool(s.enabled)
		e.U64(s.desc)
		e.U64(s.driver)
		e.U64(s.device)
		e.U16(uint16(p.vectors[i].Load()))
		w := running[i]
		var ix queueIndices
		if w != nil {
			ix = w.q.indices()
		}
		e.Bool(w != nil)
		e.U16(ix.lastAvail)
		e.U16(ix.usedIdx)
		e.U16(ix.lastSignal)
		e.Bool(ix.signalOK)
		e.Bool(w != nil && w.halted)
	}
	var m vmstate.Enc
	p.msix.SaveState(&m)
	e.Bytes(m.Data())
	var b vmstate.Enc
	if st, ok := p.be.(vmstate.Stater); ok {
		st.SaveState(&b)
	}
	e.Bytes(b.Data())
}

// decodeState reads a transport section; the sticky error is d's.
func (p *PCI) decodeState(d *vmstate.Dec) (*pciState, error) {
	st := &pciState{}
	d.Version(pciStateVersion)
	st.offer = d.U64()
	if nq := d.U16(); d.Err() == nil && int(nq) != p.nq {
		return nil, fmt.Errorf("virtio-pci: %d queues saved, this device has %d: %w", nq, p.nq, pci.ErrStateMismatch)
	}
	st.devFeatSel, st.drvFeatSel, st.drvFeatures = d.U32(), d.U32(), d.U64()
	st.status, st.generation, st.needsReset = d.U8(), d.U8(), d.Bool()
	st.configVector, st.queueSel, st.isr = d.U16(), d.U16(), d.U8()
	st.queues = make([]savedQueue, p.nq)
	for i := range st.queues {
		q := &st.queues[i]
		q.size, q.enabled = d.U16(), d.Bool()
		q.desc, q.driver, q.device = d.U64(), d.U64(), d.U64()
		q.vector, q.running = d.U16(), d.Bool()
		q.ix = queueIndices{lastAvail: d.U16(), usedIdx: d.U16(), lastSignal: d.U16(), signalOK: d.Bool()}
		q.halted = d.Bool()
	}
	st.msix = d.Bytes(maxNested)
	st.backend = d.Bytes(maxNested)
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return st, p.checkState(d, st)
}

// activated reports whether a device in status st serves its queues: the
// driver set DRIVER_OK and activation did not fail (which sets
// DEVICE_NEEDS_RESET in the status itself, setStatusLocked).
func activated(status uint8) bool {
	return status&StatusDriverOK != 0 && status&StatusDeviceNeedsReset == 0
}

// checkState refuses values this device could not have been in.
func (p *PCI) checkState(d *vmstate.Dec, st *pciState) error {
	if st.offer != p.offer {
		return fmt.Errorf("virtio-pci: saved device offered features %#x, this one offers %#x: %w",
			st.offer, p.offer, pci.ErrStateMismatch)
	}
	vecOK := func(v uint16) bool { return v == NoVector || int(v) < p.msix.Vectors() }
	on := activated(st.status)
	switch {
	case !vecOK(st.configVector):
		d.Failf("config MSI-X vector %d beyond the table", st.configVector)
	case st.isr&^(isrQueue|isrConfig) != 0:
		d.Failf("ISR %#x", st.isr)
	case on && (st.status&StatusFeaturesOK == 0 || st.drvFeatures&^p.offer != 0):
		d.Failf("driver OK with features %#x not accepted", st.drvFeatures)
	}
	running := 0
	for i, q := range st.queues {
		switch {
		case !vecOK(q.vector):
			d.Failf("queue %d MSI-X vector %d beyond the table", i, q.vector)
		case q.running && !(on && q.enabled):
			// A queue the driver enables after DRIVER_OK is enabled
			// but not running, so the converse holds only this way.
			d.Failf("queue %d running with device status %#x, enabled %v", i, st.status, q.enabled)
		case q.halted && !q.running:
			d.Failf("queue %d halted but not running", i)
		}
		if q.running {
			running++
		}
	}
	if on && running == 0 {
		d.Failf("driver OK without a running queue")
	}
	return d.Err()
}

// LoadState implements vmstate.Stater; it runs after the bus's LoadState
// (which restored configuration space and mapped the BARs, so the notify
// ioeventfds are registered). It loads the backend's state, then the
// MSI-X table and PBA (re-creating GSI routes and irqfds for the vectors
// the guest unmasked), restores the transport registers and the ISR (INTx
// asserted again if it was), rebuilds the running queues at their saved
// ring positions and activates the backend with the negotiated features.
// The device is left quiesced: the machine calls Resume once every device
// is loaded, which starts the queues, each with one pass as if notified.
//
// A malformed section, one from a device with other features or queue
// count, or a backend state the backend refuses (virtio-net: another MAC)
// fails before anything changes beyond quiescing. A damaged MSI-X state
// or a backend refusing the loaded features fails with the device reset.
func (p *PCI) LoadState(d *vmstate.Dec) error {
	st, err := p.decodeState(d)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return fmt.Errorf("virtio-pci: loading state into a released device")
	}
	qs, run := make([]queueState, p.nq), make([]queueState, p.nq)
	for i, q := range st.queues {
		qs[i], run[i] = q.queueState, q.queueState
		run[i].enabled = q.running
	}
	ws, err := p.newWorkersLocked(run, st.drvFeatures)
	if err != nil {
		return fmt.Errorf("virtio-pci: saved %w", err)
	}
	for _, w := range ws {
		w.q.setIndices(st.queues[w.qi].ix)
		w.halted = st.queues[w.qi].halted
	}
	p.quiesceLocked()
	if err := p.loadBackendLocked(st.backend); err != nil {
		return err
	}
	if err := p.msix.LoadState(vmstate.NewDec("virtio MSI-X", st.msix)); err != nil {
		return p.failLoadLocked(err)
	}
	p.workers = nil // halted by quiesceLocked
	p.devFeatSel, p.drvFeatSel, p.drvFeatures = st.devFeatSel, st.drvFeatSel, st.drvFeatures
	p.status, p.generation, p.queueSel = st.status, st.generation, st.queueSel
	p.needsReset.Store(st.needsReset)
	p.configVector.Store(uint32(st.configVector))
	copy(p.queues, qs)
	for i, q := range st.queues {
		p.vectors[i].Store(uint32(q.vector))
	}
	if len(ws) > 0 {
		if err := p.be.Activate(st.drvFeatures); err != nil {
			return p.failLoadLocked(fmt.Errorf("virtio-pci: activating the loaded device: %w", err))
		}
		p.startLocked(ws)
	}
	p.isrMu.Lock()
	p.isr = st.isr
	p.setLevelLocked(st.isr != 0)
	p.isrMu.Unlock()
	return nil
}

// failLoadLocked resets the device, MSI-X included, after a load that
// failed half-way, and returns err.
func (p *PCI) failLoadLocked(err error) error {
	p.resetLocked()
	p.msix.Reset()
	return err
}

// loadBackendLocked hands the backend its saved state.
func (p *PCI) loadBackendLocked(b []byte) error {
	st, ok := p.be.(vmstate.Stater)
	switch {
	case ok:
		return st.LoadState(vmstate.NewDec("virtio backend", b))
	case len(b) != 0:
		return fmt.Errorf("virtio-pci: saved backend state of %d bytes for a backend that keeps none: %w", len(b), pci.ErrStateMismatch)
	}
	return nil
}
