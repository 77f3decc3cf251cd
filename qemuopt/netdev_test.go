package qemuopt

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseNetdev(t *testing.T) {
	n, err := ParseNetdev("user,id=n0,net=10.1.0.0/16,hostfwd=tcp::5555-:22,hostfwd=tcp:127.0.0.1:8080-:80")
	if err != nil {
		t.Fatal(err)
	}
	if n.Type != "user" || n.ID != "n0" || n.Net.String() != "10.1.0.0/16" || len(n.HostFwd) != 2 ||
		n.HostFwd[1] != "tcp:127.0.0.1:8080-:80" {
		t.Fatalf("%+v", n)
	}
	n, err = ParseNetdev("tap,id=t0,ifname=tap0,script=no,downscript=no,vhost=off")
	if err != nil || n.Type != "tap" || n.Ifname != "tap0" {
		t.Fatalf("%+v %v", n, err)
	}
	for _, bad := range []string{
		"tap,id=t0", // no ifname
		"tap,id=t0,ifname=x,script=/etc/qemu-ifup",
		"tap,id=t0,ifname=x,vhost=on",
		"tap,id=t0,ifname=x,hostfwd=tcp::1-:2",
		"user,id=n0,net=fe80::/64",
		"user,id=n0,smb=/tmp",
		"user",
		"bridge,id=b0",
		"socket,id=s0,listen=:1234",
	} {
		if _, err := ParseNetdev(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestNetdevFromQMP(t *testing.T) {
	var args map[string]any
	dec := json.NewDecoder(strings.NewReader(`{"type":"user","id":"h1","hostfwd":[{"str":"tcp::2222-:22"}]}`))
	dec.UseNumber()
	if err := dec.Decode(&args); err != nil {
		t.Fatal(err)
	}
	n, err := NetdevFromQMP(args)
	if err != nil || n.ID != "h1" || len(n.HostFwd) != 1 || n.HostFwd[0] != "tcp::2222-:22" {
		t.Fatalf("%+v %v", n, err)
	}
	if _, err := NetdevFromQMP(map[string]any{"type": "user", "id": "h", "hostfwd": "tcp::1-:2"}); err == nil {
		t.Error("hostfwd as a string accepted")
	}
}

func TestParseNIC(t *testing.T) {
	n, d, err := ParseNIC("user,model=virtio-net-pci,mac=52:54:00:00:00:09,hostfwd=tcp::1-:2", 1)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "__nic1" || n.Type != "user" || len(n.HostFwd) != 1 || d.Driver != "virtio-net-pci" ||
		d.Netdev != "__nic1" || d.MAC != "52:54:00:00:00:09" || d.Slot != -1 {
		t.Fatalf("%+v %+v", n, d)
	}
	if _, _, err := ParseNIC("user,model=e1000", 0); err == nil {
		t.Error("model=e1000 accepted")
	}
	d2, err := ParseDevice("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:57,addr=4,id=nic0")
	if err != nil || d2.Netdev != "n0" || d2.Slot != 4 || d2.MAC != "52:54:00:12:34:57" {
		t.Fatalf("%+v %v", d2, err)
	}
	if _, err := ParseDevice("virtio-net-pci,mac=52:54:00:12:34:57"); err == nil {
		t.Error("virtio-net-pci without netdev accepted")
	}
}
