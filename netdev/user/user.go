// Package user is the user-mode network backend (QEMU's -netdev user,
// slirp): no privileges, no host interface. The guest's frames go to a
// TCP/IP stack in this process (gVisor's netstack through
// github.com/containers/gvisor-tap-vsock), which serves DHCP and DNS at the
// gateway and turns the guest's TCP and UDP flows into host sockets (NAT).
// The gateway address also reaches the host's loopback, as slirp's
// 10.0.2.2 does, and hostfwd rules carry host ports into the guest.
package user

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"github.com/containers/gvisor-tap-vsock/pkg/virtualnetwork"
	"github.com/petrel-vmm/petrel/netdev"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// init silences gvisor-tap-vsock's logger, a process-wide setting: any
// other user of logrus in the process is silenced too (Petrel has none).
func init() {
	// gvisor-tap-vsock logs every connection teardown (a guest going away,
	// a closed netdev) at error level; Petrel counts frames itself.
	logrus.SetLevel(logrus.FatalLevel)
}

// Addresses inside the network, as host numbers of the subnet (slirp's).
const (
	gatewayHost = 2  // router, DNS, and the host's loopback
	firstLease  = 15 // the first address DHCP hands out (10.0.2.15)
	// DefaultNet is the network without net=, slirp's default.
	DefaultNet = "10.0.2.0/24"
	// gatewayMAC is slirp's gateway address (52:55, then 10.0.2.2's
	// bytes), kept whatever net= is.
	gatewayMAC = "52:55:0a:00:02:02"
	// mtu is the stack's MTU, which its DHCP server also hands out, and
	// the one the NIC offers the driver (VIRTIO_NET_F_MTU): nothing on
	// this network is a real Ethernet, and frames cost per frame (a
	// system call each way and a pass through the stack), so as
	// slirp4netns and passt do, 65520 rather than 1500. TCP to the guest
	// follows the MSS the guest announces, so a guest at 1500 still works.
	mtu           = 65520
	reservedLease = "reserved" // never a client MAC: keeps .1-.14 out of the pool
)

// Forward is one hostfwd rule: connections to the host's HostAddr go to
// GuestAddr in the guest (TCP only).
type Forward struct {
	HostAddr  netip.AddrPort // zero address: every host interface
	GuestAddr netip.AddrPort // zero address: the first DHCP address
}

// Config is -netdev user's options.
type Config struct {
	// ID is the -netdev id, for errors and netdev.Backend.ID.
	ID  string
	Net netip.Prefix // zero: 10.0.2.0/24
	// HostFwd are the parsed hostfwd rules (ParseHostFwd), each a host
	// listener opened by Open.
	HostFwd []Forward
}

// User is a running user-mode network.
type User struct {
	// FDLink is the NIC's end of the socket pair: frames without a vnet
	// header, one per SOCK_SEQPACKET message.
	*netdev.FDLink
	id string
	// vn is the netstack with its DHCP, DNS and NAT services.
	vn *virtualnetwork.VirtualNetwork
	// gateway is the network's .2, guest its first DHCP lease (.15).
	gateway netip.Addr
	guest   netip.Addr
	// peer is the stack's end of the socket pair, served by AcceptBess.
	peer net.Conn
	// cancel stops AcceptBess's context.
	cancel context.CancelFunc
	// listeners are the hostfwd listeners, in rule order.
	listeners []net.Listener
	// wg counts the AcceptBess and accept-loop goroutines, which Close
	// waits for. The splice goroutines of forwarded connections are not
	// counted: a connection in progress outlives Close until either side
	// ends it.
	wg sync.WaitGroup
}

// Open starts a user-mode network.
func Open(c Config) (*User, error) {
	if !c.Net.IsValid() {
		c.Net = netip.MustParsePrefix(DefaultNet)
	}
	if !c.Net.Addr().Is4() || c.Net.Bits() > 24 || c.Net.Bits() < 8 {
		return nil, fmt.Errorf("netdev user %s: net=%s: want an IPv4 network of /8 to /24", c.ID, c.Net)
	}
	c.Net = c.Net.Masked()
	u := &User{id: c.ID, gateway: hostAddr(c.Net, gatewayHost), guest: hostAddr(c.Net, firstLease)}
	// Static leases to a MAC no client has keep .1-.14 (but the gateway)
	// out of the DHCP pool, so the guest gets .15 as under slirp, and
	// hostfwd's default guest address is right.
	leases := map[string]string{}
	for i := 1; i < firstLease; i++ {
		if i != gatewayHost {
			leases[hostAddr(c.Net, i).String()] = reservedLease
		}
	}
	vn, err := virtualnetwork.New(&types.Configuration{
		MTU:               mtu,
		Subnet:            c.Net.String(),
		GatewayIP:         u.gateway.String(),
		GatewayMacAddress: gatewayMAC,
		DHCPStaticLeases:  leases,
		NAT:               map[string]string{u.gateway.String(): "127.0.0.1"},
		Protocol:          types.BessProtocol,
	})
	if err != nil {
		return nil, fmt.Errorf("netdev user %s: %w", c.ID, err)
	}
	u.vn = vn
	// One SOCK_SEQPACKET pair carries one frame per message: the stack
	// serves one end, the NIC the other.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netdev user %s: socketpair: %w", c.ID, err)
	}
	for _, fd := range fds {
		// Room for a burst of full frames each way.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	pf := fdFile(fds[1], "netdev user stack end")
	u.peer, err = net.FileConn(pf)
	pf.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("netdev user %s: %w", c.ID, err)
	}
	if u.FDLink, err = netdev.NewFDLink(fds[0], "netdev user "+c.ID, false); err != nil {
		u.peer.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		vn.AcceptBess(ctx, u.peer) // returns when either end closes
	}()
	for _, f := range c.HostFwd {
		if err := u.forward(f); err != nil {
			u.Close()
			return nil, fmt.Errorf("netdev user %s: hostfwd %v: %w", c.ID, f.HostAddr, err)
		}
	}
	return u, nil
}

// hostAddr is host number n of network p (p's address plus n); Open keeps
// n within the network by requiring a /24 or larger.
func hostAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ID implements netdev.Backend.
func (u *User) ID() string { return u.id }

// Gateway is the router, DNS server and host-loopback address.
func (u *User) Gateway() netip.Addr { return u.gateway }

// GuestAddr is the first address DHCP hands out.
func (u *User) GuestAddr() netip.Addr { return u.guest }

// MaxFrame implements netdev.Backend: the stack's MTU plus an Ethernet
// and a VLAN header.
func (u *User) MaxFrame() int { return mtu + 18 }

// MTU is the network's MTU (the NIC offers it with VIRTIO_NET_F_MTU).
func (u *User) MTU() int { return mtu }

// SetOffloads implements netdev.Backend: frames carry no virtio header, so
// the NIC offers no offloads and there is nothing to set.
func (u *User) SetOffloads(netdev.Offloads) error { return nil }

// HostFwdAddrs are the host addresses the hostfwd rules listen on (a rule
// with port 0 gets one chosen by the kernel).
func (u *User) HostFwdAddrs() []net.Addr {
	var a []net.Addr
	for _, l := range u.listeners {
		a = append(a, l.Addr())
	}
	return a
}

// forward listens on the host and splices each connection to the guest
// through the stack.
func (u *User) forward(f Forward) error {
	host := ":" + strconv.Itoa(int(f.HostAddr.Port()))
	if f.HostAddr.Addr().IsValid() && !f.HostAddr.Addr().IsUnspecified() {
		host = f.HostAddr.String()
	}
	guest := f.GuestAddr
	if !guest.Addr().IsValid() || guest.Addr().IsUnspecified() {
		guest = netip.AddrPortFrom(u.guest, guest.Port())
	}
	l, err := net.Listen("tcp", host)
	if err != nil {
		return err
	}
	u.listeners = append(u.listeners, l)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go u.splice(c, guest.String())
		}
	}()
	return nil
}

// splice connects a forwarded host connection to guest through the stack
// and copies both ways until both directions end; each direction's EOF is
// passed on as a half-close, so protocols that shut down writing first
// (an HTTP client, netcat) still get their answer. A guest that refuses
// the connection makes the host side close at once.
func (u *User) splice(host net.Conn, guest string) {
	defer host.Close()
	g, err := u.vn.DialContextTCP(context.Background(), guest)
	if err != nil {
		return
	}
	defer g.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(g, host)
		closeWrite(g)
		close(done)
	}()
	io.Copy(host, g)
	closeWrite(host)
	<-done
}

// closeWrite half-closes c if it supports it (TCP on both sides does).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// Close implements netdev.Backend: listeners and the NIC's end of the
// link close, which ends the stack's serving of it. gvisor-tap-vsock has no
// way to stop its stack and services; they stay idle.
func (u *User) Close() error {
	var errs []error
	for _, l := range u.listeners {
		errs = append(errs, l.Close())
	}
	u.cancel()
	errs = append(errs, u.FDLink.Close())
	u.peer.Close()
	u.wg.Wait()
	return errors.Join(errs...)
}

// ParseHostFwd parses QEMU's hostfwd value
// [tcp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT.
func ParseHostFwd(s string) (Forward, error) {
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Forward{}, fmt.Errorf("hostfwd %q: want tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT", s)
	}
	if proto != "" && proto != "tcp" {
		return Forward{}, fmt.Errorf("hostfwd %q: only tcp is supported", s)
	}
	hostPart, guestPart, ok := strings.Cut(rest, "-")
	if !ok {
		return Forward{}, fmt.Errorf("hostfwd %q: no '-' between host and guest", s)
	}
	h, err := parseAddrPort(hostPart)
	if err != nil {
		return Forward{}, fmt.Errorf("hostfwd %q: host side: %w", s, err)
	}
	g, err := parseAddrPort(guestPart)
	if err != nil {
		return Forward{}, fmt.Errorf("hostfwd %q: guest side: %w", s, err)
	}
	if g.Port() == 0 {
		return Forward{}, fmt.Errorf("hostfwd %q: guest port 0", s)
	}
	return Forward{HostAddr: h, GuestAddr: g}, nil
}

// parseAddrPort reads one side of a hostfwd rule, "[ADDR]:PORT" with an
// IPv4 ADDR; an empty ADDR is the zero Addr, which Forward's fields define.
func parseAddrPort(s string) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: want [ADDR]:PORT", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", port, err)
	}
	var a netip.Addr
	if host != "" {
		if a, err = netip.ParseAddr(host); err != nil || !a.Is4() {
			return netip.AddrPort{}, fmt.Errorf("address %q: not IPv4", host)
		}
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}
