package net

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/vmstate"
)

// netStateVersion is the version of virtio-net's state, nested in the
// transport's section. Version 1:
//
//	u32 version, the device configuration (stateCfgSize bytes: MAC, link
//	status, max queue pairs), then the receive filter: MAC (6 bytes),
//	bools promiscuous, all-multicast, unicast overflow, multicast
//	overflow, u8 unicast and u8 multicast entry counts, the entries (6
//	bytes each, unicast first).
//
// Negotiated features are the transport's (Activate restores them).
// Frames waiting in the backlog for receive buffers are not saved: a
// network may lose frames.
const netStateVersion = 1

// SaveState implements vmstate.Stater.
func (n *Net) SaveState(e *vmstate.Enc) {
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	e.U32(netStateVersion)
	e.Fixed(n.cfg[:stateCfgSize])
	f := &n.filter
	e.Fixed(f.mac[:])
	e.Bool(f.promisc)
	e.Bool(f.allmulti)
	e.Bool(f.uniOverflow)
	e.Bool(f.multiOverflow)
	e.U8(uint8(f.nUni))
	e.U8(uint8(f.nMulti))
	for _, m := range f.uni[:f.nUni] {
		e.Fixed(m[:])
	}
	for _, m := range f.multi[:f.nMulti] {
		e.Fixed(m[:])
	}
}

// LoadState implements vmstate.Stater: the device must have the saved
// configured MAC address; the receive path is reset (the transport hands
// the loaded receive queue back with StartQueue) and the filter and link
// status are the saved ones. A malformed or mismatched state changes
// nothing.
func (n *Net) LoadState(d *vmstate.Dec) error {
	d.Version(netStateVersion)
	var cfg [stateCfgSize]byte
	d.FixedInto(cfg[:])
	var f filter
	d.FixedInto(f.mac[:])
	f.promisc, f.allmulti, f.uniOverflow, f.multiOverflow = d.Bool(), d.Bool(), d.Bool(), d.Bool()
	f.nUni, f.nMulti = int(d.U8()), int(d.U8())
	if d.Err() == nil && f.nUni+f.nMulti > MACTableEntries {
		d.Failf("%d+%d MAC filter entries, at most %d", f.nUni, f.nMulti, MACTableEntries)
	}
	if d.Err() == nil {
		for i := range f.nUni {
			d.FixedInto(f.uni[i][:])
		}
		for i := range f.nMulti {
			d.FixedInto(f.multi[i][:])
		}
	}
	if err := d.Finish(); err != nil {
		return err
	}
	if [6]byte(cfg[cfgMAC:]) != n.o.MAC {
		return fmt.Errorf("virtio-net: saved MAC %s, this device has %s: %w",
			FormatMAC([6]byte(cfg[cfgMAC:])), FormatMAC(n.o.MAC), pci.ErrStateMismatch)
	}
	if p := binary.LittleEndian.Uint16(cfg[cfgMaxVQPairs:]); p != 1 {
		return fmt.Errorf("virtio-net: saved %d queue pairs, this device has 1: %w", p, pci.ErrStateMismatch)
	}
	if f.mac[0]&1 != 0 || binary.LittleEndian.Uint16(cfg[cfgStatus:])&^statusLinkUp != 0 {
		d.Failf("multicast filter MAC %s or link status %#x", FormatMAC(f.mac), cfg[cfgStatus:cfgStatus+2])
		return d.Err()
	}
	n.Reset()
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	n.filter = f
	copy(n.cfg[cfgStatus:cfgStatus+2], cfg[cfgStatus:])
	return nil
}

// Quiesce implements pci.Quiescer (the transport calls it after stopping
// the queue goroutines): until Resume, frames from the backend wait in the
// backlog, or are dropped when it is full, and the receive queue and the
// interrupts are left alone.
func (n *Net) Quiesce() {
	n.rxMu.Lock()
	n.rx.paused = true
	n.rxMu.Unlock()
}

// Resume implements pci.Quiescer: frames that waited go to the driver's
// buffers.
func (n *Net) Resume() {
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	n.rx.paused = false
	n.drainLocked()
}
