package user

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
)

// hostResolver is where the gateway's port 53 goes, over UDP and TCP
// alike: the first IP address among the nameserver lines of path (the
// host's /etc/resolv.conf, resolv.conf(5)), else 127.0.0.1:53, the
// resolver's own default. The guest's DNS messages (RFC 1035 4.2.1 over
// UDP, 4.2.2 over TCP with the length prefix) pass through unread: the
// NAT flow is the forwarder, as under slirp, so nothing here parses them.
func hostResolver(path string) netip.AddrPort {
	def := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 53)
	f, err := os.Open(path)
	if err != nil {
		return def
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		return netip.AddrPortFrom(a.Unmap(), 53)
	}
	return def
}
