package qmp

import (
	"time"

	"github.com/petrel-vmm/petrel/qemuopt"
)

// Machine is what a QMP server drives; machine/pcqmp implements it over a
// PC. Methods are called from connection goroutines, possibly concurrently;
// implementations serialise what they must.
type Machine interface {
	// Status reports the run state: "running", "paused", "shutdown".
	Status() string
	// Stop and Cont pause and resume the vCPUs, emitting STOP and RESUME
	// when the state changes.
	Stop() error
	Cont() error
	// PowerDown presses the ACPI power button (the guest decides) and
	// emits POWERDOWN.
	PowerDown() error
	// Quit stops the VM at once; the server emits SHUTDOWN itself.
	Quit()
	QueryPCI() []PCIBus
	QueryBlock() []BlockInfo
	// DeviceAdd hot-plugs a device; it returns once the device is on the
	// bus and the guest has been notified.
	DeviceAdd(spec qemuopt.DeviceSpec) error
	// DeviceDel asks the guest to eject a device. Completion is signalled
	// later by the machine through Server.Emit("DEVICE_DELETED", ...).
	DeviceDel(id string) error
	BlockdevAdd(spec qemuopt.BlockdevSpec) error
	BlockdevDel(nodeName string) error
	// NetdevAdd opens a network backend; NetdevDel closes one no device
	// uses.
	NetdevAdd(spec qemuopt.NetdevSpec) error
	NetdevDel(id string) error
	// QueryRxFilter lists the receive filters of the NICs (of NIC name
	// only, when not empty).
	QueryRxFilter(name string) ([]RxFilterInfo, error)
	// SaveVM, LoadVM and DeleteVM save, load and delete a VM snapshot
	// (QMP snapshot-save/-load/-delete jobs, HMP savevm/loadvm/delvm).
	// They return when the work is done; the server runs them in a job's
	// goroutine or in human-monitor-command, one at a time. The machine
	// emits STOP and RESUME when it pauses and resumes the vCPUs.
	SaveVM(r SnapshotRequest) error
	LoadVM(r SnapshotRequest) error
	DeleteVM(r SnapshotRequest) error
	// VMSnapshots lists the snapshots present on every snapshotted node
	// (HMP info snapshots).
	VMSnapshots() ([]VMSnapshot, error)
}

// SnapshotRequest is one VM snapshot operation, with QEMU's arguments.
type SnapshotRequest struct {
	Tag string
	// VMState names the node that holds the machine state; "" lets the
	// machine pick it (HMP: the first writable node that can hold it).
	VMState string
	// Devices are the node names to snapshot. nil (HMP) means every
	// writable node; an empty, non-nil list (QMP "devices": []) means none.
	Devices []string
	// Overwrite replaces snapshots named Tag (HMP savevm); without it an
	// existing Tag is an error (QMP snapshot-save).
	Overwrite bool
}

// VMSnapshot is one row of HMP info snapshots.
type VMSnapshot struct {
	ID, Tag     string
	VMStateSize int64
	Date        time.Time
	VMClock     time.Duration
}

// RxFilterInfo is one NIC in query-rx-filter, with QEMU's field names.
type RxFilterInfo struct {
	Name              string   `json:"name"`
	Promiscuous       bool     `json:"promiscuous"`
	Multicast         string   `json:"multicast"` // normal, none, all
	Unicast           string   `json:"unicast"`
	VLAN              string   `json:"vlan"`
	BroadcastAllowed  bool     `json:"broadcast-allowed"`
	MulticastOverflow bool     `json:"multicast-overflow"`
	UnicastOverflow   bool     `json:"unicast-overflow"`
	MainMAC           string   `json:"main-mac"`
	VLANTable         []int    `json:"vlan-table"`
	UnicastTable      []string `json:"unicast-table"`
	MulticastTable    []string `json:"multicast-table"`
}

// PCIBus is one entry of query-pci.
type PCIBus struct {
	Bus     int         `json:"bus"`
	Devices []PCIDevice `json:"devices"`
}

// PCIDevice is one device in query-pci, with QEMU's field names.
type PCIDevice struct {
	Bus       int          `json:"bus"`
	Slot      int          `json:"slot"`
	Function  int          `json:"function"`
	ClassInfo PCIClassInfo `json:"class_info"`
	ID        PCIID        `json:"id"`
	IRQ       int          `json:"irq,omitempty"`
	IRQPin    int          `json:"irq_pin,omitempty"`
	QdevID    string       `json:"qdev_id"`
	Regions   []PCIRegion  `json:"regions"`
}

// PCIClassInfo is the class code.
type PCIClassInfo struct {
	Desc  string `json:"desc,omitempty"`
	Class int    `json:"class"`
}

// PCIID holds the vendor and device IDs.
type PCIID struct {
	Device          int `json:"device"`
	Vendor          int `json:"vendor"`
	Subsystem       int `json:"subsystem"`
	SubsystemVendor int `json:"subsystem-vendor"`
}

// PCIRegion is one BAR.
type PCIRegion struct {
	Bar       int    `json:"bar"`
	Type      string `json:"type"` // "io" or "memory"
	Address   uint64 `json:"address"`
	Size      uint64 `json:"size"`
	Prefetch  bool   `json:"prefetch,omitempty"`
	MemType64 bool   `json:"mem_type_64,omitempty"`
}

// BlockInfo is one entry of query-block.
type BlockInfo struct {
	Device    string         `json:"device"`
	Qdev      string         `json:"qdev,omitempty"`
	Locked    bool           `json:"locked"`
	Removable bool           `json:"removable"`
	Type      string         `json:"type"`
	Inserted  *BlockInserted `json:"inserted,omitempty"`
}

// BlockInserted describes the medium of a block device.
type BlockInserted struct {
	File             string     `json:"file"`
	NodeName         string     `json:"node-name"`
	RO               bool       `json:"ro"`
	Drv              string     `json:"drv"`
	BackingFile      string     `json:"backing_file,omitempty"`
	BackingFileDepth int        `json:"backing_file_depth"`
	Encrypted        bool       `json:"encrypted"`
	Cache            BlockCache `json:"cache"`
	Image            ImageInfo  `json:"image"`
}

// BlockCache is the cache mode of a block node.
type BlockCache struct {
	Writeback bool `json:"writeback"`
	Direct    bool `json:"direct"`
	NoFlush   bool `json:"no-flush"`
}

// ImageInfo is the image summary inside query-block.
type ImageInfo struct {
	Filename    string `json:"filename"`
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}
