package virtio

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/devices/pci"
	"golang.org/x/sys/unix"
)

// ISR status bits (section 4.1.4.5).
const (
	isrQueue  = 1
	isrConfig = 2
)

// worker serves one queue on its own goroutine. It sleeps on the queue's
// kick eventfd (written by KVM's ioeventfd or by the notify handler).
type worker struct {
	qi    int
	q     *Queue
	chain *Chain
	kick  *os.File
	stop  atomic.Bool
	buf   [8]byte
	// server, when set, serves the queue itself: the goroutine only
	// forwards driver notifications to it.
	server QueueServer
	// halted is set by the goroutine when it stopped on a broken ring
	// (the device then needs a reset): Resume does not restart it.
	halted bool
}

// activateLocked builds the enabled queues and starts their goroutines.
func (p *PCI) activateLocked() error {
	ws, err := p.newWorkersLocked(p.queues, p.drvFeatures)
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		return errors.New("no queue enabled")
	}
	if err := p.be.Activate(p.drvFeatures); err != nil {
		return err
	}
	p.startLocked(ws)
	return nil
}

// newWorkersLocked builds a queue and its worker for every enabled queue
// of qs under the negotiated features. It changes nothing in p.
func (p *PCI) newWorkersLocked(qs []queueState, feats uint64) ([]*worker, error) {
	var ws []*worker
	for i, s := range qs {
		if !s.enabled {
			continue
		}
		q, err := NewQueue(p.o.Mem, QueueConfig{Size: s.size, Desc: s.desc, Driver: s.driver, Device: s.device,
			EventIdx: feats&FeatureEventIdx != 0, IndirectDescOK: feats&FeatureIndirectDesc != 0})
		if err != nil {
			return nil, fmt.Errorf("queue %d: %w", i, err)
		}
		if s.size > p.be.MaxQueueSize() {
			return nil, fmt.Errorf("queue %d: size %d above the maximum %d", i, s.size, p.be.MaxQueueSize())
		}
		w := &worker{qi: i, q: q, chain: NewChain(), kick: p.kicks[i]}
		if qs, ok := p.be.(QueueServer); ok && qs.ServesQueue(i) {
			w.server = qs
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// startLocked hands the served queues of ws to the backend and makes ws
// the running queues; their goroutines start now, or at Resume while the
// device is quiesced.
func (p *PCI) startLocked(ws []*worker) {
	for _, w := range ws {
		if w.server != nil {
			w.server.StartQueue(w.qi, &ServedQueue{Queue: w.q, p: p, qi: w.qi})
		}
	}
	p.workers = ws
	if !p.quiesced {
		p.runWorkersLocked()
	}
}

// runWorkersLocked starts a goroutine for every queue that has not halted.
func (p *PCI) runWorkersLocked() {
	for _, w := range p.workers {
		if w.halted {
			continue
		}
		w.stop.Store(false)
		p.wg.Add(1)
		go p.run(w)
	}
}

// haltWorkersLocked stops every queue goroutine and waits until in-flight
// requests have completed (each finishes the chain it is serving, and
// raises the interrupt for it); the queues stay, to be saved or resumed.
func (p *PCI) haltWorkersLocked() {
	for _, w := range p.workers {
		w.stop.Store(true)
		unix.Write(p.kickFDs[w.qi], eventfdOne[:])
	}
	p.wg.Wait()
}

// stopWorkersLocked halts the queue goroutines and forgets the queues.
func (p *PCI) stopWorkersLocked() {
	p.haltWorkersLocked()
	p.workers = nil
}

// run is a queue's goroutine. It serves the queue once before waiting
// for the first notification: a queue started or resumed with chains
// already available (their notification came before, or was lost with a
// saved machine's process) serves them at once.
func (p *PCI) run(w *worker) {
	defer p.wg.Done()
	for !w.stop.Load() {
		if w.server != nil {
			w.server.QueueNotified(w.qi)
		} else {
			p.service(w)
		}
		if _, err := w.kick.Read(w.buf[:]); err != nil {
			return // closed by Release
		}
	}
}

// service drains queue w.q, then interrupts the driver if it asked to be.
func (p *PCI) service(w *worker) {
	pushed := false
	for !w.stop.Load() {
		w.q.SuppressNotify()
		for !w.stop.Load() && w.q.Pop(w.chain) {
			if w.chain.Err != nil {
				p.InvalidChains.Add(1)
			}
			n := p.be.HandleChain(w.qi, w.chain)
			if uint64(n) > w.chain.WriteLen {
				n = uint32(w.chain.WriteLen)
			}
			w.q.Push(w.chain.Head, n)
			pushed = true
		}
		if w.chain.Err == ErrAvailIndex {
			p.queueBroken()
			w.halted = true
			w.stop.Store(true)
			break
		}
		if !w.q.EnableNotify() {
			break
		}
	}
	if pushed && w.q.NeedInterrupt() {
		p.interrupt(uint16(p.vectors[w.qi].Load()), isrQueue)
	}
}

// queueBroken marks the device DEVICE_NEEDS_RESET after a driver broke a
// ring's invariants, and tells the driver with a configuration interrupt.
// Not p.mu: a reset holds it while waiting for queue goroutines.
func (p *PCI) queueBroken() {
	p.needsReset.Store(true)
	p.interrupt(uint16(p.configVector.Load()), isrConfig)
}

// interrupt raises vector through MSI-X when it is enabled, else the ISR
// bit and INTx.
func (p *PCI) interrupt(vector uint16, isrBit uint8) {
	if p.msix.Enabled() {
		if vector != NoVector {
			p.msix.Notify(int(vector))
		}
		return
	}
	p.isrMu.Lock()
	defer p.isrMu.Unlock()
	p.isr |= isrBit
	p.setLevelLocked(true)
}

// readISR returns and clears the ISR, deasserting INTx (4.1.4.5.1).
func (p *PCI) readISR() uint8 {
	p.isrMu.Lock()
	defer p.isrMu.Unlock()
	v := p.isr
	p.isr = 0
	p.setLevelLocked(false)
	return v
}

// setLevelLocked drives INTx (isrMu held), honouring INTx disable.
// The status register's interrupt bit shows the pending state even while
// INTx is disabled (PCI 3.0, 6.2.3).
func (p *PCI) setLevelLocked(on bool) {
	p.cfg.SetINTxStatus(on)
	if on && p.cfg.Command()&pci.CmdINTxDisable != 0 {
		on = false
	}
	if on == p.level {
		return
	}
	p.level = on
	if p.o.IRQ != nil {
		p.o.IRQ.SetLevel(on)
	}
}
