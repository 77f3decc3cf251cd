package blk

import (
	"encoding/binary"

	"github.com/petrel-vmm/petrel/devices/virtio"
)

// HandleChain implements virtio.Backend: it serves one request. The chain
// is device-readable header (type le32, reserved le32, sector le64) and
// data, then device-writable data and a final status byte; the driver may
// split those across descriptors any way it likes (5.2.6.4), so everything
// is addressed by offset within the readable or writable bytes.
func (b *Blk) HandleChain(_ int, c *virtio.Chain) uint32 {
	var status []byte
	if c.Complete {
		status = statusByte(c)
	}
	if status == nil {
		b.Errors.Add(1)
		return 0 // nowhere to report anything
	}
	if c.Err != nil || c.ReadLen < headerSize {
		return b.finish(status, StatusIOErr, 0)
	}
	var hdr [headerSize]byte
	c.Gather(0, hdr[:])
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	switch typ {
	case TypeIn:
		n := c.WriteLen - 1
		if !b.rangeOK(sector, n) {
			return b.finish(status, StatusIOErr, 0)
		}
		if err := b.transfer(c, false, int64(sector*SectorSize), n); err != nil {
			return b.finish(status, StatusIOErr, 0)
		}
		return b.finish(status, StatusOK, uint32(n))
	case TypeOut:
		n := c.ReadLen - headerSize
		if b.readOnly || !b.rangeOK(sector, n) {
			return b.finish(status, StatusIOErr, 0)
		}
		if err := b.transfer(c, true, int64(sector*SectorSize), n); err != nil {
			return b.finish(status, StatusIOErr, 0)
		}
		return b.finish(status, StatusOK, 0)
	case TypeFlush:
		if !b.readOnly {
			if err := b.img.Flush(); err != nil {
				return b.finish(status, StatusIOErr, 0)
			}
		}
		return b.finish(status, StatusOK, 0)
	case TypeGetID:
		n := min(uint64(IDBytes), c.WriteLen-1)
		c.Scatter(0, b.serial[:n])
		return b.finish(status, StatusOK, uint32(n))
	case TypeDiscard, TypeWriteZeroes:
		return b.finish(status, b.discardOrZero(c, typ == TypeWriteZeroes), 0)
	default:
		return b.finish(status, StatusUnsupp, 0)
	}
}

// finish stores the status and returns the used length: data written plus
// the status byte.
func (b *Blk) finish(status []byte, s uint8, written uint32) uint32 {
	status[0] = s
	if s != StatusOK {
		b.Errors.Add(1)
	}
	return written + 1
}

// rangeOK reports whether n bytes at sector are whole sectors inside the disk.
func (b *Blk) rangeOK(sector, n uint64) bool {
	capacity := b.Capacity()
	return n%SectorSize == 0 && sector <= capacity && n/SectorSize <= capacity-sector
}

// discardOrZero runs the discard / write-zeroes segments (5.2.6.2).
func (b *Blk) discardOrZero(c *virtio.Chain, zero bool) uint8 {
	payload := c.ReadLen - headerSize
	if payload == 0 || payload%segmentSize != 0 || payload/segmentSize > MaxDiscardSegs {
		return StatusUnsupp
	}
	if b.readOnly {
		return StatusIOErr
	}
	for off := uint64(headerSize); off < c.ReadLen; off += segmentSize {
		var seg [segmentSize]byte
		c.Gather(off, seg[:])
		sector := binary.LittleEndian.Uint64(seg[0:])
		num := binary.LittleEndian.Uint32(seg[8:])
		flags := binary.LittleEndian.Uint32(seg[12:])
		// Discard takes no flags; write-zeroes only UNMAP (QEMU answers
		// UNSUPP to anything else).
		if flags&^unmapFlag != 0 || (!zero && flags != 0) {
			return StatusUnsupp
		}
		if num > MaxDiscardSectors || !b.rangeOK(sector, uint64(num)*SectorSize) {
			return StatusIOErr
		}
		off, n := int64(sector*SectorSize), int64(num)*SectorSize
		var err error
		if zero {
			err = b.img.WriteZeroes(off, n, flags&unmapFlag != 0)
		} else {
			err = b.img.Discard(off, n)
		}
		if err != nil {
			return StatusIOErr
		}
	}
	return StatusOK
}

// transfer moves n data bytes between the image at pos and the chain's
// buffers: the readable bytes after the header (write) or the writable
// bytes before the status (read). Each descriptor's guest memory is passed
// to the image directly, without a bounce buffer.
func (b *Blk) transfer(c *virtio.Chain, write bool, pos int64, n uint64) error {
	skip := uint64(0)
	if write {
		skip = headerSize
	}
	for i := range c.Segs {
		s := &c.Segs[i]
		if s.Write == write || n == 0 {
			continue
		}
		l := uint64(s.Len)
		if skip >= l {
			skip -= l
			continue
		}
		buf := s.Buf[skip:min(l, skip+n)]
		skip = 0
		var err error
		if write {
			_, err = b.img.WriteAt(buf, pos)
		} else {
			var got int
			got, err = b.img.ReadAt(buf, pos)
			if got == len(buf) {
				err = nil // io.ReaderAt may say EOF with a full read
			}
		}
		if err != nil {
			return err
		}
		pos += int64(len(buf))
		n -= uint64(len(buf))
	}
	return nil
}

// statusByte returns the last writable byte of the chain, or nil if there
// is none the device can reach.
func statusByte(c *virtio.Chain) []byte {
	for i := len(c.Segs) - 1; i >= 0; i-- {
		s := &c.Segs[i]
		if !s.Write {
			return nil
		}
		if s.Len == 0 {
			continue
		}
		if s.Buf == nil {
			return nil
		}
		return s.Buf[s.Len-1 : s.Len]
	}
	return nil
}
