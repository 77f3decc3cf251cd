// Package tap is the tap network backend (QEMU's -netdev tap): frames go
// through a Linux tap interface opened on /dev/net/tun with a virtio net
// header, so checksum and segmentation offloads pass between the guest
// and the host kernel untouched.
package tap

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/petrel-vmm/petrel/netdev"
	"golang.org/x/sys/unix"
)

// Tap is an open tap interface.
type Tap struct {
	// FDLink moves the frames, each led by the virtio net header, and
	// owns the tun fd (closed by Close).
	*netdev.FDLink
	// id is the -netdev id; ifname the host interface.
	id, ifname string
}

// Open attaches to (or creates) the tap interface ifname: IFF_TAP,
// IFF_NO_PI and IFF_VNET_HDR with the 12-byte virtio 1.x header, offloads
// off until the guest negotiates them. The interface is brought up by
// whoever owns it (no script is run).
func Open(id, ifname string) (*Tap, error) {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap %q: interface name empty or longer than %d bytes", ifname, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", ifname, err)
	}
	if err := setup(fd, ifname); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", ifname, err)
	}
	l, err := netdev.NewFDLink(fd, "tap "+ifname, true)
	if err != nil {
		return nil, err
	}
	return &Tap{FDLink: l, id: id, ifname: ifname}, nil
}

// setup configures a fresh /dev/net/tun fd. TUNSETIFF creates the
// interface when it does not exist (which needs CAP_NET_ADMIN) or attaches
// to an existing one its owner (TUNSETOWNER) lets us open. The order
// matters: the vnet header size and endianness must be set before the
// first frame is read, and offloads start off because the guest has not
// negotiated any yet (a GSO frame it cannot take must never reach it).
func setup(fd int, ifname string) error {
	features, err := unix.IoctlGetUint32(fd, unix.TUNGETFEATURES)
	if err != nil {
		return fmt.Errorf("TUNGETFEATURES: %w", err)
	}
	if features&unix.IFF_VNET_HDR == 0 {
		return errors.New("kernel tap driver lacks IFF_VNET_HDR")
	}
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, netdev.VnetHdrLen); err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}
	// virtio 1.x headers are little-endian; on a big-endian host the tap
	// must be told (TUNSETVNETLE), on a little-endian one it is native.
	if !littleEndianHost() {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
			return fmt.Errorf("TUNSETVNETLE: %w", err)
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	return nil
}

// littleEndianHost reports the host's byte order, which decides whether
// the tap must be told that vnet headers are little-endian.
func littleEndianHost() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// ID implements netdev.Backend.
func (t *Tap) ID() string { return t.id }

// Ifname is the interface name.
func (t *Tap) Ifname() string { return t.ifname }

// SetOffloads implements netdev.Backend with TUNSETOFFLOAD: the kernel
// then hands the guest partially checksummed and GSO frames of the kinds
// it accepts.
func (t *Tap) SetOffloads(o netdev.Offloads) error {
	flags := 0
	if o.Csum {
		flags |= unix.TUN_F_CSUM
		if o.TSO4 {
			flags |= unix.TUN_F_TSO4
		}
		if o.TSO6 {
			flags |= unix.TUN_F_TSO6
		}
		// The flags mirror the guest's negotiated features (virtio 1.2,
		// 5.1.3.1 "Feature bit requirements": GUEST_TSO4/6, GUEST_ECN
		// and GUEST_UFO need GUEST_CSUM); none is set without Csum, since
		// the kernel sends GSO frames only to a reader that accepts
		// partial checksums.
		if o.ECN && (o.TSO4 || o.TSO6) {
			flags |= unix.TUN_F_TSO_ECN
		}
		if o.UFO {
			flags |= unix.TUN_F_UFO
		}
	}
	var err error
	if cerr := t.Control(func(fd uintptr) { err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", t.ifname, flags, err)
	}
	return nil
}
