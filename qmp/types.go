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
	// QueryPCI and QueryBlock answer query-pci and query-block; they
	// cannot fail, and an empty machine returns empty lists.
	QueryPCI() []PCIBus
	QueryBlock() []BlockInfo
	// DeviceAdd hot-plugs a device; it returns once the device is on the
	// bus and the guest has been notified.
	DeviceAdd(spec qemuopt.DeviceSpec) error
	// DeviceDel asks the guest to eject a device. Completion is signalled
	// later by the machine through Server.Emit("DEVICE_DELETED", ...).
	DeviceDel(id string) error
	// BlockdevAdd opens an image as a named block node; BlockdevDel closes
	// a node no device uses. Neither emits an event, as in QEMU.
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
	// Tag is the snapshot's name (QMP "tag", HMP's argument); LoadVM and
	// DeleteVM look snapshots up by it.
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
	// ID is the snapshot's ID in its image (the qcow2 snapshot table's
	// unique ID string, decimal in practice); Tag its name. HMP prints
	// "--" for the ID, since it may differ between nodes.
	ID, Tag string
	// VMStateSize is the saved machine state's size in bytes (0 for a
	// disk-only snapshot).
	VMStateSize int64
	// Date is the host wall-clock time the snapshot was taken; HMP prints
	// it in the local zone.
	Date time.Time
	// VMClock is the guest's run time when the snapshot was taken (QEMU's
	// vm_clock), printed as HH:MM:SS.mmm.
	VMClock time.Duration
}

// RxFilterInfo is one NIC in query-rx-filter, with QEMU's field names.
type RxFilterInfo struct {
	// Name is the NIC's qdev id (QEMU: the net client's name).
	Name string `json:"name"`
	// Promiscuous is the driver's VIRTIO_NET_CTRL_RX_PROMISC setting.
	Promiscuous bool `json:"promiscuous"`
	// Multicast and Unicast are QEMU's RxState: "normal" (filter by the
	// tables), "none" or "all" (ALLMULTI/ALLUNI).
	Multicast string `json:"multicast"`
	Unicast   string `json:"unicast"`
	// VLAN is "none" (no VLAN filtering), "normal" or "all".
	VLAN string `json:"vlan"`
	// BroadcastAllowed is whether broadcast frames pass (QEMU: false
	// after VIRTIO_NET_CTRL_RX_NOBCAST; Petrel reports true).
	BroadcastAllowed bool `json:"broadcast-allowed"`
	// MulticastOverflow and UnicastOverflow report that the driver gave
	// more addresses than the MAC table holds, so that kind of address is
	// accepted wholesale.
	MulticastOverflow bool `json:"multicast-overflow"`
	UnicastOverflow   bool `json:"unicast-overflow"`
	// MainMAC is the device's own address, "52:54:00:12:34:56" style.
	MainMAC string `json:"main-mac"`
	// The tables are never null: QEMU sends [] for an empty one.
	VLANTable      []int    `json:"vlan-table"`
	UnicastTable   []string `json:"unicast-table"`
	MulticastTable []string `json:"multicast-table"`
}

// PCIBus is one entry of query-pci.
type PCIBus struct {
	// Bus is the bus number; Petrel has bus 0 only.
	Bus     int         `json:"bus"`
	Devices []PCIDevice `json:"devices"`
}

// PCIDevice is one device in query-pci, with QEMU's field names.
type PCIDevice struct {
	// Bus, Slot and Function are the device's address; Petrel's devices
	// are all function 0.
	Bus       int          `json:"bus"`
	Slot      int          `json:"slot"`
	Function  int          `json:"function"`
	ClassInfo PCIClassInfo `json:"class_info"`
	ID        PCIID        `json:"id"`
	// IRQ is the Interrupt Line register (the legacy IRQ the INTx pin is
	// routed to), omitted when 0.
	IRQ int `json:"irq,omitempty"`
	// IRQPin is the Interrupt Pin register, 1-4 for INTA#-INTD#, omitted
	// when 0 (no INTx).
	IRQPin int `json:"irq_pin,omitempty"`
	// QdevID is the device's id= ("" for a device given none).
	QdevID  string      `json:"qdev_id"`
	Regions []PCIRegion `json:"regions"`
}

// PCIClassInfo is the class code.
type PCIClassInfo struct {
	// Desc is QEMU's name for the class ("SCSI controller"), omitted
	// for classes it has no name for.
	Desc string `json:"desc,omitempty"`
	// Class is the base class and subclass, (config bytes 0x0b<<8) |
	// 0x0a, without the programming interface byte (QEMU's convention).
	Class int `json:"class"`
}

// PCIID holds the vendor and device IDs and the subsystem IDs (config
// space offsets 0x00, 0x02, 0x2c and 0x2e).
type PCIID struct {
	Device          int `json:"device"`
	Vendor          int `json:"vendor"`
	Subsystem       int `json:"subsystem"`
	SubsystemVendor int `json:"subsystem-vendor"`
}

// PCIRegion is one BAR.
type PCIRegion struct {
	// Bar is the BAR's index, 0-5; a 64-bit BAR has the lower index of
	// its pair.
	Bar  int    `json:"bar"`
	Type string `json:"type"` // "io" or "memory"
	// Address is the guest-physical (or I/O port) address the BAR holds
	// now; Size is in bytes.
	Address uint64 `json:"address"`
	Size    uint64 `json:"size"`
	// Prefetch and MemType64 are memory BARs' type bits; QEMU omits
	// them for I/O BARs, and so does omitempty here.
	Prefetch  bool `json:"prefetch,omitempty"`
	MemType64 bool `json:"mem_type_64,omitempty"`
}

// BlockInfo is one entry of query-block.
type BlockInfo struct {
	// Device is the block node's name (QEMU: the BlockBackend's name).
	Device string `json:"device"`
	// Qdev is the id of the device using the node, if any.
	Qdev string `json:"qdev,omitempty"`
	// Locked and Removable concern removable media, which Petrel's disks
	// are not: always false.
	Locked    bool `json:"locked"`
	Removable bool `json:"removable"`
	// Type is a deprecated legacy field, "unknown" as QEMU reports it for
	// virtio disks.
	Type     string         `json:"type"`
	Inserted *BlockInserted `json:"inserted,omitempty"`
}

// BlockInserted describes the medium of a block device.
type BlockInserted struct {
	// File is the image's host path as it was opened.
	File     string `json:"file"`
	NodeName string `json:"node-name"`
	RO       bool   `json:"ro"`
	// Drv is the format driver: "qcow2", "qed" or "raw".
	Drv string `json:"drv"`
	// BackingFile is the backing image's file name, omitted without one;
	// BackingFileDepth counts the images below this one in the chain.
	BackingFile      string     `json:"backing_file,omitempty"`
	BackingFileDepth int        `json:"backing_file_depth"`
	Encrypted        bool       `json:"encrypted"`
	Cache            BlockCache `json:"cache"`
	Image            ImageInfo  `json:"image"`
}

// BlockCache is the cache mode of a block node.
type BlockCache struct {
	// Writeback is the guest-visible write cache; Direct is O_DIRECT on
	// the host file (cache=none); NoFlush means flushes are ignored
	// (cache=unsafe).
	Writeback bool `json:"writeback"`
	Direct    bool `json:"direct"`
	NoFlush   bool `json:"no-flush"`
}

// ImageInfo is the image summary inside query-block.
type ImageInfo struct {
	Filename string `json:"filename"`
	Format   string `json:"format"`
	// VirtualSize is the disk's size as the guest sees it, in bytes.
	VirtualSize int64 `json:"virtual-size"`
}
