package net

import (
	"encoding/binary"

	"github.com/petrel-vmm/petrel/devices/virtio"
)

// Control queue classes, commands and acks (5.1.6.5).
const (
	CtrlRx          = 0
	CtrlRxPromisc   = 0
	CtrlRxAllmulti  = 1
	CtrlMAC         = 1
	CtrlMACTableSet = 0
	CtrlMACAddrSet  = 1

	AckOK  = 0
	AckErr = 1

	// MACTableEntries is how many unicast plus multicast addresses the
	// filter holds (QEMU's MAC_TABLE_ENTRIES); a longer table turns on
	// promiscuous reception of that kind, as QEMU does.
	MACTableEntries = 64
)

// filter is the receive filter the driver programs through the control
// queue (virtio 1.2, 5.1.6.5.1 "Packet Receive Filtering"): mac is the
// device's own address (VIRTIO_NET_CTRL_MAC_ADDR_SET changes it); promisc
// and allmulti are the RX class switches; uni and multi hold the nUni and
// nMulti addresses of the last MAC_TABLE_SET, together at most
// MACTableEntries. A kind that does not fit in what is left is not stored
// at all; its overflow flag then accepts every address of that kind.
// Guarded by Net.rxMu.
type filter struct {
	mac                        [6]byte
	promisc, allmulti          bool
	uniOverflow, multiOverflow bool
	uni, multi                 [MACTableEntries][6]byte
	nUni, nMulti               int
}

// reset returns the filter to QEMU's power-on state: promiscuous until the
// driver says otherwise, the configured MAC.
func (f *filter) reset(mac [6]byte) { *f = filter{mac: mac, promisc: true} }

// accept applies the filter to a frame's destination (QEMU's
// receive_filter, without VLANs).
func (f *filter) accept(frame []byte) bool {
	if f.promisc {
		return true
	}
	var dst [6]byte
	copy(dst[:], frame)
	if dst[0]&1 != 0 {
		if dst == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} || f.allmulti || f.multiOverflow {
			return true
		}
		for i := range f.nMulti {
			if f.multi[i] == dst {
				return true
			}
		}
		return false
	}
	if dst == f.mac || f.uniOverflow {
		return true
	}
	for i := range f.nUni {
		if f.uni[i] == dst {
			return true
		}
	}
	return false
}

// control serves one control queue command: readable class, command and
// data, then a writable ack byte. It returns the used length.
func (n *Net) control(c *virtio.Chain) uint32 {
	ack := ackByte(c)
	if ack == nil {
		n.Stats.CtrlErrors.Add(1)
		return 0
	}
	st := uint8(AckErr)
	if c.Err == nil && c.ReadLen >= 2 {
		st = n.command(c)
	}
	if st != AckOK {
		n.Stats.CtrlErrors.Add(1)
	}
	ack[0] = st
	return 1
}

// command executes one control command and returns its ack. Commands are
// honoured only under their feature (CTRL_RX, CTRL_MAC_ADDR); anything
// else, and any data length other than the command's, is VIRTIO_NET_ERR
// with nothing changed. The filter is changed under rxMu, so a frame is
// filtered by the old settings or the new, never a mix.
func (n *Net) command(c *virtio.Chain) uint8 {
	var cc [2]byte
	c.Gather(0, cc[:])
	data := c.ReadLen - 2
	f := n.features.Load()
	switch {
	case cc[0] == CtrlRx && f&FeatureCtrlRx != 0 && (cc[1] == CtrlRxPromisc || cc[1] == CtrlRxAllmulti):
		if data != 1 {
			return AckErr
		}
		var on [1]byte
		c.Gather(2, on[:])
		n.rxMu.Lock()
		if cc[1] == CtrlRxPromisc {
			n.filter.promisc = on[0] != 0
		} else {
			n.filter.allmulti = on[0] != 0
		}
		n.rxMu.Unlock()
		return AckOK
	case cc[0] == CtrlMAC && cc[1] == CtrlMACAddrSet && f&FeatureCtrlMACAddr != 0:
		var mac [6]byte
		if data != 6 {
			return AckErr
		}
		c.Gather(2, mac[:])
		if mac[0]&1 != 0 {
			return AckErr
		}
		n.rxMu.Lock()
		n.filter.mac = mac
		n.rxMu.Unlock()
		return AckOK
	case cc[0] == CtrlMAC && cc[1] == CtrlMACTableSet:
		return n.macTableSet(c, data)
	}
	return AckErr
}

// macTableSet parses two struct virtio_net_ctrl_mac {le32 entries; u8
// macs[entries][6]} (unicast, then multicast) that must fill the data
// exactly (5.1.6.5.2), and installs them.
func (n *Net) macTableSet(c *virtio.Chain, data uint64) uint8 {
	var t filter
	off := uint64(2)
	end := off + data
	for k := range 2 {
		if end-off < 4 {
			return AckErr
		}
		var nb [4]byte
		c.Gather(off, nb[:])
		entries := uint64(binary.LittleEndian.Uint32(nb[:]))
		off += 4
		if entries > (end-off)/6 {
			return AckErr
		}
		if entries > MACTableEntries-uint64(t.nUni+t.nMulti) {
			if k == 0 {
				t.uniOverflow = true
			} else {
				t.multiOverflow = true
			}
		} else {
			for i := range entries {
				var m [6]byte
				c.Gather(off+6*i, m[:])
				if k == 0 {
					t.uni[t.nUni] = m
					t.nUni++
				} else {
					t.multi[t.nMulti] = m
					t.nMulti++
				}
			}
		}
		off += 6 * entries
	}
	if off != end {
		return AckErr
	}
	n.rxMu.Lock()
	fl := &n.filter
	fl.uni, fl.nUni, fl.uniOverflow = t.uni, t.nUni, t.uniOverflow
	fl.multi, fl.nMulti, fl.multiOverflow = t.multi, t.nMulti, t.multiOverflow
	n.rxMu.Unlock()
	return AckOK
}

// ackByte returns the last writable byte of a complete chain whose
// writable part is exactly that byte, or nil.
func ackByte(c *virtio.Chain) []byte {
	if !c.Complete || c.WriteLen != 1 {
		return nil
	}
	for i := len(c.Segs) - 1; i >= 0; i-- {
		s := &c.Segs[i]
		if s.Write && s.Len == 1 && s.Buf != nil {
			return s.Buf
		}
		if s.Write && s.Len > 0 {
			return nil
		}
	}
	return nil
}

// FilterState is the receive filter as query-rx-filter reports it.
//
// Unicast and Multicast are copies, in the order the driver gave them;
// the overflow flags are set when the driver's table exceeded
// MACTableEntries (the table then holds none of that kind).
type FilterState struct {
	MAC                [6]byte
	Promisc, Allmulti  bool
	UniOverflow        bool
	MultiOverflow      bool
	Unicast, Multicast [][6]byte
}

// Filter returns the receive filter the driver programmed.
func (n *Net) Filter() FilterState {
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	f := &n.filter
	return FilterState{MAC: f.mac, Promisc: f.promisc, Allmulti: f.allmulti, UniOverflow: f.uniOverflow,
		MultiOverflow: f.multiOverflow, Unicast: append([][6]byte(nil), f.uni[:f.nUni]...),
		Multicast: append([][6]byte(nil), f.multi[:f.nMulti]...)}
}
