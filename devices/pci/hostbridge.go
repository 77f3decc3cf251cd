package pci

// Host bridge identity: Red Hat's "QEMU PCIe host bridge" ID, which Linux
// binds no driver to and treats as a plain class 0x0600 bridge.
const (
	VendorRedHat     = 0x1b36
	DeviceHostBridge = 0x0008
	ClassHostBridge  = 0x060000
)

// HostBridge is the function at slot 0 that identifies bus 0's root.
// It has no BARs, no interrupt and no writable register beyond the
// header's standard ones (NewConfigSpace); machine/pc puts it in slot 0.
type HostBridge struct{ cfg *ConfigSpace }

// NewHostBridge returns a host bridge with no BARs.
func NewHostBridge() *HostBridge {
	return &HostBridge{cfg: NewConfigSpace(Header{
		VendorID: VendorRedHat, DeviceID: DeviceHostBridge, Class: ClassHostBridge,
		SubsysVendor: VendorRedHat, SubsysID: 0x1100,
	})}
}

// Config implements Device.
func (h *HostBridge) Config() *ConfigSpace { return h.cfg }
