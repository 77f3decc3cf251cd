package net

import (
	"github.com/petrel-vmm/petrel/devices/virtio"
)

// transmit sends the frame in chain c (5.1.6.2): device-readable header
// and frame, no writable buffer. A bad chain or header drops the frame and
// counts it; the chain is returned to the driver either way. With a vnet
// header backend the guest's buffers go to the backend as they are (one
// writev, no copy); otherwise the header is left out.
//
// With no copy, the header the backend reads is guest memory read again
// after CheckTx: a driver rewriting it in between gets what the backend's
// own checks allow (a tap's kernel side validates every vnet header from
// user space), never more than a malformed frame of its own.
func (n *Net) transmit(c *virtio.Chain) {
	if c.Err != nil || c.WriteLen != 0 || c.ReadLen < hdrLen {
		n.Stats.TxDropped.Add(1)
		return
	}
	frameLen := c.ReadLen - hdrLen
	if frameLen > uint64(n.maxTx.Load()) {
		n.Stats.TxDropped.Add(1)
		return
	}
	var hb [hdrLen]byte
	c.Gather(0, hb[:])
	if CheckTx(DecodeHdr(hb[:]), int(frameLen), n.features.Load()) != nil {
		n.Stats.TxDropped.Add(1)
		return
	}
	skip := uint64(0)
	if !n.be.VnetHdr() {
		skip = hdrLen
	}
	segs := n.txSegs[:0]
	for i := range c.Segs {
		b := c.Segs[i].Buf
		if uint64(len(b)) <= skip {
			skip -= uint64(len(b))
			continue
		}
		segs = append(segs, b[skip:])
		skip = 0
	}
	err := n.be.Send(segs)
	clear(segs) // no references into guest memory outlive the request
	if err != nil {
		n.Stats.TxDropped.Add(1)
		return
	}
	n.Stats.TxFrames.Add(1)
}
