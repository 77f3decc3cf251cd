package pseries

import (
	"encoding/binary"
	"sync"
)

// ConfigHeader is a plain configuration space: bytes plus a mask of the
// bits the guest may write. It is what a device without side effects on
// config access needs.
type ConfigHeader struct {
	mu    sync.Mutex
	size  uint32
	data  [4096]byte
	wmask [4096]byte
}

// NewConfigHeader makes a type 0 header with the given IDs and class
// (class<<8 | prog-if, 24 bits). The command register's I/O, memory, bus
// master and INTx-disable bits and the interrupt line are writable.
func NewConfigHeader(vendor, device uint16, class uint32, extended bool) *ConfigHeader {
	c := &ConfigHeader{size: 256}
	if extended {
		c.size = 4096
	}
	binary.LittleEndian.PutUint16(c.data[0x00:], vendor)
	binary.LittleEndian.PutUint16(c.data[0x02:], device)
	c.data[0x09] = byte(class)
	c.data[0x0a] = byte(class >> 8)
	c.data[0x0b] = byte(class >> 16)
	binary.LittleEndian.PutUint16(c.wmask[0x04:], 0x0407) // command
	c.wmask[0x3c] = 0xff                                  // interrupt line
	return c
}

func (c *ConfigHeader) ConfigSize() uint32 { return c.size }

func (c *ConfigHeader) ReadConfig(reg uint32, size int) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var v uint32
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint32(c.data[reg+uint32(i)])
	}
	return v
}

func (c *ConfigHeader) WriteConfig(reg uint32, size int, val uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < size; i++ {
		r := reg + uint32(i)
		b := byte(val >> (8 * i))
		c.data[r] = c.data[r]&^c.wmask[r] | b&c.wmask[r]
	}
}
