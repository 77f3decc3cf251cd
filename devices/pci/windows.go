package pci

import "fmt"

// Window is an address window BARs are assigned from: [Base, Base+Size).
// Base and Size are in bytes (ports for the I/O window); Size 0 is an
// absent window.
type Window struct{ Base, Size uint64 }

// Windows are the three BAR windows. The machine owns them (machine/pc's
// memory map in docs/ARCHITECTURE.md) and hands them to NewBus; the bus
// assigns BARs from them and its host bridge declares them in _CRS, so the
// guest's view and the allocator cannot disagree.
type Windows struct {
	// IO holds I/O BARs; Mem64, above 4 GiB, prefetchable 64-bit BARs of
	// Large64 or more; Mem32, below 4 GiB, every other memory BAR, a
	// 64-bit one falling back to Mem64 when Mem32 is full.
	IO, Mem32, Mem64 Window
}

// Check reports whether w can be declared by the host bridge's _CRS (AML):
// the I/O window must lie above the configuration ports (the bridge also
// forwards 0-0xcf7) and below 64 KiB, the 32-bit window below 4 GiB, and
// the 64-bit window, if any (Size 0 = none), above 4 GiB without wrapping.
func (w Windows) Check() error {
	io, m32, m64 := w.IO, w.Mem32, w.Mem64
	switch {
	case io.Size == 0 || io.Base < ConfigPort+ConfigLen || io.Base+io.Size > 0x10000:
		return fmt.Errorf("pci i/o window %#x+%#x is not within %#x-0xffff", io.Base, io.Size, ConfigPort+ConfigLen)
	case m32.Size == 0 || m32.Base+m32.Size > 1<<32 || m32.Base+m32.Size < m32.Base:
		return fmt.Errorf("pci 32-bit window %#x+%#x is not below 4 GiB", m32.Base, m32.Size)
	case m64.Size != 0 && (m64.Base < 1<<32 || m64.Base+m64.Size < m64.Base):
		return fmt.Errorf("pci 64-bit window %#x+%#x is not above 4 GiB", m64.Base, m64.Size)
	}
	return nil
}
