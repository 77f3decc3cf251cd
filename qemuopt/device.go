package qemuopt

import (
	"encoding/json"
	"fmt"
)

// DeviceSpec is one -device or device_add: a PCI device for bus 0.
//
// Fields for a driver other than Driver's are always zero: deviceFromOpts
// reads only the driver's own keys (deviceKeys), so a property of another
// driver is an error, not a silently ignored setting.
type DeviceSpec struct {
	// Driver is the device model, one of Drivers().
	Driver string
	// ID is the qdev id ("" = none; QEMU's identifier rule, see ValidID).
	ID string
	// Slot is the PCI slot from addr=, or -1 for the first free one.
	Slot int

	// virtio-blk-pci
	Drive    string // a block node: -blockdev node-name, -drive id, blockdev-add node
	File     string // Petrel extension: open this image for the device alone
	Format   string // with File: qcow2, qed or raw ("" probes)
	ReadOnly bool   // with File
	// Serial is the disk's serial= (VIRTIO_BLK_T_GET_ID's answer, at most
	// 20 bytes reach the guest); "" for none.
	Serial    string
	NumQueues int // 0 = the device's default

	// ivshmem-plain
	Memdev string // an -object memory backend id
	Shm    string // Petrel extension: a POSIX shm name or a file path
	Size   uint64 // with Shm
	// ivshmem-doorbell
	Chardev string // a -chardev socket id
	Socket  string // Petrel extension: the ivshmem server's socket path
	Vectors int    // 1 by default

	// virtio-net-pci
	Netdev string // a -netdev / netdev_add id
	MAC    string // "" = the machine picks 52:54:00:12:34:NN
}

// MaxVectors bounds ivshmem-doorbell's vectors (devices/ivshmem.MaxVectors).
const MaxVectors = 64

// deviceKeys are the properties each driver takes beyond driver, id, bus
// and addr; a property outside its driver's list is an error.
//
// master= and ioeventfd= exist for QEMU command lines that set them: both
// are checked for syntax, and only ioeventfd=off, which Petrel cannot
// serve, is refused.
var deviceKeys = map[string][]string{
	"virtio-blk-pci":   {"drive", "file", "format", "readonly", "serial", "num-queues"},
	"ivshmem-plain":    {"memdev", "shm", "size", "master"},
	"ivshmem-doorbell": {"chardev", "socket", "vectors", "ioeventfd", "master"},
	"virtio-net-pci":   {"netdev", "mac"},
}

// Drivers lists the device models Petrel builds, the keys of deviceKeys
// (a slice, in a fixed order, for help texts and error messages).
func Drivers() []string {
	return []string{"virtio-blk-pci", "ivshmem-plain", "ivshmem-doorbell", "virtio-net-pci"}
}

// ParseDevice reads a -device string: DRIVER,prop=value,...
func ParseDevice(s string) (DeviceSpec, error) {
	o, err := Parse("-device", s, "driver")
	if err != nil {
		return DeviceSpec{}, err
	}
	d, err := deviceFromOpts(o, o.Str("addr"), o.Has("addr"))
	if err != nil {
		return d, fmt.Errorf("-device %q: %w", s, err)
	}
	return d, nil
}

// DeviceFromQMP reads device_add's arguments. A JSON number for addr is a
// devfn (slot*8 + function), as QEMU's pci-devfn property takes it.
func DeviceFromQMP(args map[string]any) (DeviceSpec, error) {
	var addr string
	hasAddr := false
	rest := make(map[string]any, len(args))
	for k, v := range args {
		if k != "addr" {
			rest[k] = v
			continue
		}
		hasAddr = true
		switch x := v.(type) {
		case string:
			addr = x
		case json.Number:
			n, err := x.Int64()
			if err != nil || n < 0 || n >= PCISlots*PCIFunctions {
				return DeviceSpec{}, fmt.Errorf("Property 'addr' has invalid value '%s'", x)
			}
			// devfn = slot<<3 | function (PCI Local Bus 3.0 §3.2.2.3.2).
			addr = fmt.Sprintf("%x.%x", n/PCIFunctions, n%PCIFunctions)
		default:
			return DeviceSpec{}, fmt.Errorf("Property 'addr' expects a PCI address such as '0x5' or '05.0'")
		}
	}
	o, err := FromJSON("device_add", rest)
	if err != nil {
		return DeviceSpec{}, err
	}
	return deviceFromOpts(o, addr, hasAddr)
}

// deviceFromOpts builds a DeviceSpec from parsed properties, shared by
// -device and device_add. addr comes apart from o because device_add may
// give it as a number (DeviceFromQMP has already turned that into
// "SLOT.FN"). Only function 0 is accepted: Petrel's devices are
// single-function. bus= may name the root bus only (pci.0 or pcie.0, the
// names QEMU's i440fx and q35 machines give it).
func deviceFromOpts(o *Opts, addr string, hasAddr bool) (d DeviceSpec, err error) {
	d = DeviceSpec{Driver: o.Str("driver"), Slot: -1}
	keys, ok := deviceKeys[d.Driver]
	if !ok {
		return d, fmt.Errorf("'%s' is not a valid device model name", d.Driver)
	}
	o.used["addr"] = true
	if id, ok := o.Lookup("id"); ok {
		if !ValidID(id) {
			return d, fmt.Errorf("Parameter 'id' expects an identifier")
		}
		d.ID = id
	}
	if bus, ok := o.Lookup("bus"); ok && bus != "pci.0" && bus != "pcie.0" {
		return d, fmt.Errorf("Bus '%s' not found", bus)
	}
	if hasAddr {
		slot, fn, err := ParsePCIAddr(addr)
		if err != nil {
			return d, err
		}
		if fn != 0 {
			return d, fmt.Errorf("Property 'addr' has invalid value '%s': only function 0 is supported", addr)
		}
		d.Slot = slot
	}
	// Only the driver's own keys are read; Unused names any other.
	has := map[string]bool{}
	for _, k := range keys {
		has[k] = true
	}
	str := func(k string) string {
		if !has[k] {
			return ""
		}
		return o.Str(k)
	}
	d.Drive, d.File, d.Format, d.Serial = str("drive"), str("file"), str("format"), str("serial")
	d.Memdev, d.Shm, d.Chardev, d.Socket = str("memdev"), str("shm"), str("chardev"), str("socket")
	d.Netdev, d.MAC = str("netdev"), str("mac")
	if has["readonly"] {
		if d.ReadOnly, err = o.Bool("readonly", false); err != nil {
			return d, err
		}
	}
	if has["master"] {
		// master=on makes this peer the one whose memory survives
		// migration; with no migration both values behave the same.
		if _, err = o.Bool("master", false); err != nil {
			return d, err
		}
	}
	if has["ioeventfd"] {
		// Petrel always uses ioeventfds for doorbells; off cannot be served.
		on, err := o.Bool("ioeventfd", true)
		if err != nil {
			return d, err
		}
		if !on {
			return d, fmt.Errorf("Property 'ivshmem-doorbell.ioeventfd': off is not supported")
		}
	}
	if has["num-queues"] {
		if d.NumQueues, err = o.Int("num-queues", 0, 1, 64); err != nil {
			return d, err
		}
	}
	if has["vectors"] {
		if d.Vectors, err = o.Int("vectors", 1, 1, MaxVectors); err != nil {
			return d, err
		}
	}
	if has["size"] {
		if d.Size, err = o.Size("size"); err != nil {
			return d, err
		}
	}
	if err := o.Unused("Property '" + d.Driver + ".%s' not found"); err != nil {
		return d, err
	}
	switch {
	case d.Drive != "" && d.File != "":
		return d, fmt.Errorf("give drive or file, not both")
	case d.Memdev != "" && d.Shm != "":
		return d, fmt.Errorf("give memdev or shm, not both")
	case d.Chardev != "" && d.Socket != "":
		return d, fmt.Errorf("give chardev or socket, not both")
	case d.Format != "" && d.File == "", d.ReadOnly && d.File == "":
		return d, fmt.Errorf("format= and readonly= go with file=; a drive= node has its own")
	case d.Size != 0 && d.Shm == "":
		return d, fmt.Errorf("size= goes with shm=; a memdev= backend has its own size")
	}
	if d.Driver == "virtio-net-pci" && d.Netdev == "" {
		return d, fmt.Errorf("netdev= is required (a -netdev id)")
	}
	if d.Format != "" {
		if err := checkFormat(d.Format); err != nil {
			return d, err
		}
	}
	if d.Driver == "ivshmem-doorbell" && d.Vectors == 0 {
		d.Vectors = 1
	}
	return d, nil
}

// ValidID follows QEMU's id rule: a letter, then letters, digits, '-', '.'
// and '_', at most 128 characters.
func ValidID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_'):
		default:
			return false
		}
	}
	return true
}

// checkFormat accepts the image formats block/all can open; "" (probe) is
// the caller's business.
func checkFormat(f string) error {
	switch f {
	case "qcow2", "qed", "raw":
		return nil
	}
	return fmt.Errorf("format %q: want qcow2, qed or raw", f)
}
