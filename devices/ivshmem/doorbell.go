package ivshmem

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
)

// maxIoeventfds bounds the doorbell ioeventfds one device registers (KVM
// allows 1000 devices per bus for the whole VM); doorbells beyond it take
// the slower path through Write.
const maxIoeventfds = 256

// startDoorbell takes over the connected client: it runs the server message
// loop and the poller for our own vectors.
func (d *Device) startDoorbell(c *proto.Client) error {
	p, err := newPoller(d)
	if err != nil {
		return err
	}
	d.client, d.poll = c, p
	d.id = int32(c.ID())
	c.BeforeClose = d.peerLeaving
	d.awaitSetup(c)
	// Vectors announced during the handshake (peers that were there before
	// us) are already in the client.
	for _, peer := range c.Peers() {
		for v := range c.Vectors(peer) {
			fd, _ := c.VectorFD(peer, v)
			d.vectorAdded(peer, v, fd)
		}
	}
	d.events.Add(1)
	go d.serverLoop()
	return nil
}

// setupWait bounds how long a new doorbell device waits for the server's
// setup burst (a variable so that fuzzing a silent server stays fast).
var setupWait = time.Second

// awaitSetup applies server messages until the first of our own vectors
// arrives, as QEMU's ivshmem does before the guest runs. The server sends
// the vectors of every peer already connected and then ours, in one burst
// at accept; once ours is here every earlier peer is known. Without this a
// fast guest can read a peer's ID from shared memory and ring it before the
// VMM has read that peer's eventfd, and the doorbell is dropped. A server
// that sends no vectors costs at most setupWait; serverLoop does the rest.
func (d *Device) awaitSetup(c *proto.Client) {
	c.SetReadDeadline(time.Now().Add(setupWait))
	defer c.SetReadDeadline(time.Time{})
	for c.Vectors(c.ID()) == 0 {
		if _, err := c.Next(); err != nil {
			if errors.Is(err, proto.ErrProtocol) {
				d.ServerErrors.Add(1)
				continue
			}
			return // deadline or a closed connection: serverLoop reports it
		}
	}
}

// serverLoop applies server messages until the connection ends. Losing the
// server does not stop the guest: the known peers stay reachable.
func (d *Device) serverLoop() {
	defer d.events.Done()
	for {
		ev, err := d.client.Next()
		if err != nil {
			if errors.Is(err, proto.ErrProtocol) {
				d.ServerErrors.Add(1)
				continue
			}
			d.mu.Lock()
			released := d.released
			d.mu.Unlock()
			if !released {
				log.Printf("ivshmem-doorbell %d: server connection: %v", d.ID(), err)
			}
			return
		}
		if ev.Kind == proto.VectorAdded {
			d.vectorAdded(ev.Peer, ev.Vector, ev.FD)
		}
		// PeerLeft was handled by peerLeaving before the fds closed.
	}
}

func doorbellValue(peer, vector int) uint32 { return uint32(peer)<<16 | uint32(vector) }

// vectorAdded registers a peer's eventfd: a doorbell ioeventfd for it, and
// for our own vectors the interrupt path.
func (d *Device) vectorAdded(peer, vector, fd int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.released {
		return
	}
	d.addIoeventfdLocked(doorbellValue(peer, vector), fd)
	if peer != int(d.id) {
		return
	}
	if vector >= d.msix.Vectors() || vector != len(d.own) {
		// More vectors than the device has (QEMU refuses these): the
		// peers' doorbells for it are dropped.
		d.ServerErrors.Add(1)
		return
	}
	d.own = append(d.own, fd)
	d.routeVectorLocked(vector)
}

// peerLeaving is the client's BeforeClose hook: unregister the departing
// peer's ioeventfds while their fds are still open.
func (d *Device) peerLeaving(peer int, fds []int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.removeIoeventfdsLocked(func(v uint32) bool { return int(v>>16) == peer })
}

// ioevent is one doorbell value's eventfd, registered with KVM while BAR0
// is mapped.
type ioevent struct {
	fd         int
	registered bool
}

func (d *Device) addIoeventfdLocked(val uint32, fd int) {
	e := ioevent{fd: fd}
	if d.irqs.Router != nil && d.bar0Mapped && d.registered < maxIoeventfds {
		m := uint64(val)
		// On failure the write exits to Write instead.
		if err := d.irqs.Router.AddIoeventfd(fd, d.bar0+RegDoorbell, 4, false, &m); err == nil {
			e.registered = true
			d.registered++
		}
	}
	d.ioevents[val] = e
}

// unregisterLocked removes e's KVM registration.
func (d *Device) unregisterLocked(val uint32, e *ioevent) error {
	if !e.registered {
		return nil
	}
	e.registered = false
	d.registered--
	m := uint64(val)
	if err := d.irqs.Router.RemoveIoeventfd(e.fd, d.bar0+RegDoorbell, 4, false, &m); err != nil {
		return fmt.Errorf("removing doorbell ioeventfd %#x: %w", val, err)
	}
	return nil
}

// removeIoeventfdsLocked forgets the doorbell values sel picks.
func (d *Device) removeIoeventfdsLocked(sel func(uint32) bool) []error {
	var errs []error
	for val, e := range d.ioevents {
		if !sel(val) {
			continue
		}
		if err := d.unregisterLocked(val, &e); err != nil {
			errs = append(errs, err)
		}
		delete(d.ioevents, val)
	}
	return errs
}

// BARMapped implements pci.BARObserver: with BAR0 decoded, doorbell writes
// for every known (peer, vector) are matched in the kernel.
func (d *Device) BARMapped(bar int, addr uint64) {
	if bar != RegsBAR {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.released {
		return
	}
	d.bar0, d.bar0Mapped = addr, true
	for val, e := range d.ioevents {
		if !e.registered {
			d.addIoeventfdLocked(val, e.fd)
		}
	}
}

// BARUnmapped implements pci.BARObserver.
func (d *Device) BARUnmapped(bar int, addr uint64) {
	if bar != RegsBAR {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for val, e := range d.ioevents {
		if err := d.unregisterLocked(val, &e); err != nil {
			log.Printf("ivshmem: %v", err)
		}
		d.ioevents[val] = e
	}
	d.bar0Mapped = false
}

// routeVectorLocked sends own vector v's events where they belong: to the
// MSI-X irqfd while MSI-X is enabled (and the router can carry it), else to
// the poller, which raises the pin or calls MSIX.Notify.
func (d *Device) routeVectorLocked(v int) {
	fd := d.own[v]
	if d.msixMode && d.irqs.Router != nil {
		d.poll.remove(fd)
		if err := d.msix.SetIrqfd(v, fd); err == nil {
			return
		}
	}
	d.msix.ClearIrqfd(v)
	d.poll.add(fd, v)
}

// vectorFired is the poller's callback for own vector v.
func (d *Device) vectorFired(v int) {
	d.Interrupts.Add(1)
	if d.msix.Enabled() {
		d.msix.Notify(v)
		return
	}
	d.raiseStatus()
}

// msixEnableHook follows the MSI-X enable bit: own vectors move between the
// irqfd fast path and the poller.
type msixEnableHook struct{ d *Device }

func (msixEnableHook) ConfigRead(int, []byte) {}

func (h msixEnableHook) ConfigWrite(int, []byte) { h.d.followMSIXEnable() }

// followMSIXEnable moves own vectors to the irqfd fast path or back to the
// poller when the MSI-X enable bit changed.
func (d *Device) followMSIXEnable() {
	on := d.msix.Enabled()
	d.mu.Lock()
	defer d.mu.Unlock()
	if on == d.msixMode || d.released || d.poll == nil {
		return
	}
	d.msixMode = on
	for v := range d.own {
		d.routeVectorLocked(v)
	}
}
