package user

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// guestDialTimeout bounds the handshake with the guest for one forwarded
// connection (a guest not listening answers with a reset at once).
const guestDialTimeout = 20 * time.Second

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
// through the stack; in the guest it comes from the gateway, as under
// slirp.
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
	u.track.spawn(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // Close closed the listener
			}
			if !u.track.spawn(func() { u.forwardConn(c, guest) }) {
				c.Close()
			}
		}
	})
	return nil
}

// forwardConn connects one accepted host connection to guest and splices
// the two; a guest that refuses makes the host side close at once.
func (u *User) forwardConn(host net.Conn, guest netip.AddrPort) {
	ctx, cancel := context.WithTimeout(u.ctx, guestDialTimeout)
	g, err := gonet.DialContextTCP(ctx, u.stack,
		tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(guest.Addr().As4()), Port: guest.Port()}, ipv4.ProtocolNumber)
	cancel()
	if err != nil {
		host.Close()
		return
	}
	u.splice(g, host)
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
