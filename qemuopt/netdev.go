package qemuopt

import (
	"fmt"
	"net/netip"
	"strings"
)

// NetdevSpec is one -netdev or netdev_add: a host network backend.
type NetdevSpec struct {
	// Type is "tap" or "user".
	Type string
	// ID is id=, an identifier (ValidID); the name -device netdev= and
	// netdev_del use. -nic's netdevs get "__nicN", which no user id can
	// be.
	ID string
	// tap: the interface (created if missing, left as it is otherwise).
	Ifname string
	// user: the network (zero: 10.0.2.0/24) and hostfwd rules as QEMU
	// writes them ([tcp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT).
	Net netip.Prefix
	// HostFwd keeps each rule's text; netdev/user parses it, so that its
	// errors carry the rule as given.
	HostFwd []string
}

// netdevKeys are the keys each type takes beyond type and id.
var netdevKeys = map[string][]string{
	"tap":  {"ifname", "script", "downscript", "vhost"},
	"user": {"net"},
}

// ParseNetdev reads -netdev tap,id=N,ifname=TAP[,script=no,downscript=no][,vhost=off]
// or -netdev user,id=N[,net=CIDR][,hostfwd=RULE]... (hostfwd repeatable).
func ParseNetdev(s string) (NetdevSpec, error) {
	rest, fwd := cutRepeated(s, "hostfwd")
	o, err := Parse("-netdev", rest, "type")
	if err != nil {
		return NetdevSpec{}, err
	}
	n, err := netdevFromOpts(o, fwd)
	if err != nil {
		return n, fmt.Errorf("-netdev %q: %w", s, err)
	}
	return n, nil
}

// NetdevFromQMP reads netdev_add's arguments; hostfwd is QAPI's list of
// {"str": RULE}.
func NetdevFromQMP(args map[string]any) (NetdevSpec, error) {
	rest := make(map[string]any, len(args))
	var fwd []string
	for k, v := range args {
		if k != "hostfwd" {
			rest[k] = v
			continue
		}
		list, ok := v.([]any)
		if !ok {
			return NetdevSpec{}, fmt.Errorf("Invalid parameter type for 'hostfwd', expected: array")
		}
		for _, e := range list {
			m, ok := e.(map[string]any)
			str, ok2 := m["str"].(string)
			if !ok || !ok2 || len(m) != 1 {
				return NetdevSpec{}, fmt.Errorf("Invalid parameter type for 'hostfwd', expected: array of {\"str\": RULE}")
			}
			fwd = append(fwd, str)
		}
	}
	o, err := FromJSON("netdev_add", rest)
	if err != nil {
		return NetdevSpec{}, err
	}
	return netdevFromOpts(o, fwd)
}

// cutRepeated takes every key=value item out of an option string (QEMU
// lets -netdev user repeat hostfwd), returning the rest and the values.
func cutRepeated(s, key string) (rest string, vals []string) {
	var keep []string
	for _, p := range Split(s) {
		if v, ok := strings.CutPrefix(p, key+"="); ok {
			vals = append(vals, v)
			continue
		}
		keep = append(keep, strings.ReplaceAll(p, ",", ",,"))
	}
	return strings.Join(keep, ","), vals
}

// netdevFromOpts checks a netdev's options for its type; fwd are the
// hostfwd rules, taken out before o was built since Parse refuses a
// repeated key.
func netdevFromOpts(o *Opts, fwd []string) (NetdevSpec, error) {
	n := NetdevSpec{Type: o.Str("type"), ID: o.Str("id"), HostFwd: fwd}
	keys, ok := netdevKeys[n.Type]
	if !ok {
		return n, fmt.Errorf("Parameter 'type' does not accept value '%s' (Petrel has tap and user)", n.Type)
	}
	if !ValidID(n.ID) {
		return n, fmt.Errorf("Parameter 'id' expects an identifier")
	}
	has := map[string]bool{}
	for _, k := range keys {
		has[k] = true
	}
	switch n.Type {
	case "tap":
		if n.Ifname = o.Str("ifname"); n.Ifname == "" {
			return n, fmt.Errorf("ifname= is required (Petrel opens an existing or new tap by name)")
		}
		// Petrel runs no scripts: the interface is set up by its owner.
		for _, k := range []string{"script", "downscript"} {
			if v, ok := o.Lookup(k); ok && v != "no" {
				return n, fmt.Errorf("%s=%s: only %s=no is supported (Petrel runs no network scripts)", k, v, k)
			}
		}
		if vhost, err := o.Bool("vhost", false); err != nil {
			return n, err
		} else if vhost {
			return n, fmt.Errorf("vhost=on is not supported (the device model runs in Petrel)")
		}
		if len(fwd) > 0 {
			return n, fmt.Errorf("hostfwd= goes with -netdev user")
		}
	case "user":
		if v, ok := o.Lookup("net"); ok {
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() {
				return n, fmt.Errorf("net=%s: want an IPv4 network such as 10.0.2.0/24", v)
			}
			n.Net = p
		}
	}
	if err := o.Unused("Invalid parameter '%s'"); err != nil {
		return n, err
	}
	return n, nil
}

// ParseNIC reads QEMU's short -nic TYPE[,netdev options][,model=M][,mac=MAC]
// into a netdev and its virtio-net-pci device; index numbers the pair
// (netdev id "__nicINDEX"). The only model is virtio-net-pci ("virtio").
func ParseNIC(s string, index int) (NetdevSpec, DeviceSpec, error) {
	var model, mac string
	var keep []string
	for i, p := range Split(s) {
		if v, ok := strings.CutPrefix(p, "model="); ok && i > 0 {
			model = v
			continue
		}
		if v, ok := strings.CutPrefix(p, "mac="); ok && i > 0 {
			mac = v
			continue
		}
		keep = append(keep, strings.ReplaceAll(p, ",", ",,"))
	}
	if model != "" && model != "virtio-net-pci" && model != "virtio" {
		return NetdevSpec{}, DeviceSpec{}, fmt.Errorf("-nic %q: model=%s: Petrel has virtio-net-pci only", s, model)
	}
	// The id is outside the identifier rule, so no -netdev can take it.
	id := fmt.Sprintf("__nic%d", index)
	// ParseNetdev wants a valid id: it gets a placeholder, replaced below.
	// An id= in s itself is then given twice and refused.
	n, err := ParseNetdev(strings.Join(keep, ",") + ",id=nic")
	if err != nil {
		return n, DeviceSpec{}, fmt.Errorf("-nic %q: %w", s, err)
	}
	n.ID = id
	return n, DeviceSpec{Driver: "virtio-net-pci", Slot: -1, Netdev: id, MAC: mac}, nil
}
