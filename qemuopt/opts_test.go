package qemuopt

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for in, want := range map[string][]string{
		"file=a,,b.img,id=x": {"file=a,b.img", "id=x"},
		"a":                  {"a"},
		"":                   {""},
		"a,":                 {"a", ""},
		",,,":                {",", ""},
	} {
		if got := Split(in); strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
			t.Errorf("Split(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"4096": 4096, "4k": 4096, "4K": 4096, "1.5M": 3 << 19, "2g": 2 << 30,
		"1T": 1 << 40, "1P": 1 << 50, "7E": 7 << 60, "512b": 512, "0": 0, "0.5K": 512, "1.M": 1 << 20, " 1": 1, "0x1000": 4096, "1024.0b": 1024}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "1.5", "1.5B", "1x", "-1", "1..5M", "8E", "99999999999999999999", "1. ", "0x"} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, accepted", in, n)
		}
	}
	if n, err := ParseSizeUnit("512", 1<<20); err != nil || n != 512<<20 {
		t.Errorf("ParseSizeUnit(512, MiB) = %d, %v", n, err)
	}
}

func TestParsePCIAddr(t *testing.T) {
	for in, want := range map[string][2]int{"5": {5, 0}, "0x5": {5, 0}, "05.0": {5, 0}, "0x1f.0": {31, 0}, "1F": {31, 0}, "3.7": {3, 7}} {
		if s, f, err := ParsePCIAddr(in); err != nil || s != want[0] || f != want[1] {
			t.Errorf("ParsePCIAddr(%q) = %d.%d, %v", in, s, f, err)
		}
	}
	for _, in := range []string{"", "0x20", "zz", "3.8", "-1", "3.", "1.1.1"} {
		if _, _, err := ParsePCIAddr(in); err == nil {
			t.Errorf("ParsePCIAddr(%q) accepted", in)
		}
	}
}

func TestParseBool(t *testing.T) {
	for _, v := range []string{"on", "yes", "true", "y", "1"} {
		if b, err := ParseBool(v); err != nil || !b {
			t.Errorf("%q: %v %v", v, b, err)
		}
	}
	for _, v := range []string{"off", "no", "false", "n", "0"} {
		if b, err := ParseBool(v); err != nil || b {
			t.Errorf("%q: %v %v", v, b, err)
		}
	}
	if _, err := ParseBool("maybe"); err == nil {
		t.Error("maybe accepted")
	}
}

// The command line and QMP produce the same spec for the same settings.
func TestDeviceCommandLineAndQMPAgree(t *testing.T) {
	for _, tc := range []struct{ cmdline, qmp string }{
		{"virtio-blk-pci,drive=d0,addr=0x6,serial=S,,1,id=disk1,num-queues=2",
			`{"driver":"virtio-blk-pci","drive":"d0","addr":"0x6","serial":"S,1","id":"disk1","num-queues":2}`},
		{"virtio-blk-pci,file=/x.img,readonly=on,format=raw",
			`{"driver":"virtio-blk-pci","file":"/x.img","readonly":true,"format":"raw"}`},
		{"ivshmem-plain,memdev=mb,addr=05.0,master=on",
			`{"driver":"ivshmem-plain","memdev":"mb","addr":40,"master":"on"}`},
		{"ivshmem-plain,shm=ivs,size=4M", `{"driver":"ivshmem-plain","shm":"ivs","size":"4M"}`},
		{"ivshmem-doorbell,chardev=c,vectors=4,ioeventfd=on,bus=pci.0",
			`{"driver":"ivshmem-doorbell","chardev":"c","vectors":"4","ioeventfd":true,"bus":"pci.0"}`},
	} {
		a, err := ParseDevice(tc.cmdline)
		if err != nil {
			t.Fatalf("%s: %v", tc.cmdline, err)
		}
		var args map[string]any
		dec := json.NewDecoder(strings.NewReader(tc.qmp))
		dec.UseNumber()
		if err := dec.Decode(&args); err != nil {
			t.Fatal(err)
		}
		b, err := DeviceFromQMP(args)
		if err != nil {
			t.Fatalf("%s: %v", tc.qmp, err)
		}
		if a != b {
			t.Errorf("-device %s = %+v\ndevice_add %s = %+v", tc.cmdline, a, tc.qmp, b)
		}
	}
	d, _ := ParseDevice("ivshmem-doorbell,socket=/s")
	if d.Vectors != 1 || d.Slot != -1 {
		t.Errorf("defaults %+v", d)
	}
}

func TestDeviceErrors(t *testing.T) {
	for in, want := range map[string]string{
		"e1000":                                   "not a valid device model",
		"virtio-blk-pci,addr=0x20":                "invalid value",
		"virtio-blk-pci,addr=3.1":                 "only function 0",
		"virtio-blk-pci,bogus=1":                  "Property 'virtio-blk-pci.bogus' not found",
		"virtio-blk-pci,memdev=m":                 "Property 'virtio-blk-pci.memdev' not found",
		"virtio-blk-pci,id=1a":                    "identifier",
		"ivshmem-doorbell,vectors=many":           "expects an integer",
		"ivshmem-doorbell,vectors=65":             "want 1..64",
		"virtio-blk-pci,drive=a,file=b":           "not both",
		"virtio-blk-pci,drive=a,format=raw":       "go with file",
		"virtio-blk-pci,file=a,format=vmdk":       "want qcow2",
		"virtio-blk-pci,drive=a,drive=b":          "twice",
		"virtio-blk-pci,bus=pci.1":                "Bus 'pci.1' not found",
		"ivshmem-plain,memdev=m,size=4M":          "goes with shm",
		"ivshmem-doorbell,socket=s,ioeventfd=off": "not supported",
	} {
		if _, err := ParseDevice(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDevice(%q): %v, want %q", in, err, want)
		}
	}
	if _, err := DeviceFromQMP(map[string]any{"driver": "virtio-blk-pci", "addr": json.Number("9")}); err == nil ||
		!strings.Contains(err.Error(), "only function 0") {
		t.Errorf("devfn 9 (slot 1 function 1): %v", err)
	}
}

func TestDrive(t *testing.T) {
	d, err := ParseDisk("a,,b.qcow2,readonly=on,cache=none,serial=S1,id=d0")
	if err != nil || d != (DriveSpec{Path: "a,b.qcow2", ReadOnly: true, DirectIO: true, Serial: "S1", ID: "d0"}) {
		t.Fatalf("%+v %v", d, err)
	}
	d, err = ParseDrive("file=b.img,if=none,format=raw,cache=unsafe,id=d1")
	if err != nil || d != (DriveSpec{Path: "b.img", Format: "raw", NoSync: true, ID: "d1", NoDevice: true}) {
		t.Fatalf("%+v %v", d, err)
	}
	for _, in := range []string{"format=raw", "a.img,format=vmdk", "a.img,bogus=1", "file=a,if=ide", "if=virtio",
		"file=a,readonly=maybe", "file=a,if=none", "file=a,cache=sometimes", "file=a,media=cdrom"} {
		_, err1 := ParseDrive(in)
		_, err2 := ParseDisk(in)
		if err1 == nil || err2 == nil {
			t.Errorf("%q accepted (-drive: %v, -disk: %v)", in, err1, err2)
		}
	}
}

func TestBlockdev(t *testing.T) {
	want := BlockdevSpec{NodeName: "n1", Format: "qcow2", Filename: "/a,b.qcow2", ReadOnly: true, DirectIO: true}
	for _, in := range []string{
		"driver=qcow2,node-name=n1,file.driver=file,file.filename=/a,,b.qcow2,read-only=on,cache.direct=on",
		`{"driver":"qcow2","node-name":"n1","file":{"driver":"file","filename":"/a,b.qcow2"},"read-only":true,"cache":{"direct":true}}`,
	} {
		if b, err := ParseBlockdev(in); err != nil || b != want {
			t.Errorf("ParseBlockdev(%s) = %+v, %v", in, b, err)
		}
	}
	b, err := BlockdevFromQMP(map[string]any{"driver": "raw", "node-name": "r", "file": "/f"})
	if err != nil || b != (BlockdevSpec{NodeName: "r", Format: "raw", Filename: "/f"}) {
		t.Errorf("file as a string: %+v %v", b, err)
	}
	for _, in := range []string{
		"driver=vmdk,node-name=n,file.driver=file,file.filename=f",
		"driver=raw,node-name=1n,file.driver=file,file.filename=f",
		"driver=raw,node-name=n,file.driver=nbd,file.filename=f",
		"driver=raw,node-name=n,file.driver=file",
		"driver=raw,node-name=n,file.driver=file,file.filename=f,bogus=1",
		"driver=raw,node-name=n,file.driver=file,file.filename=f,discard=ignore",
		`{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"f"}} {}`,
		`{"driver":"raw","node-name":"n","file":[1]}`,
	} {
		if _, err := ParseBlockdev(in); err == nil {
			t.Errorf("ParseBlockdev(%s) accepted", in)
		}
	}
}

func TestObjectAndChardev(t *testing.T) {
	o, err := ParseObject("memory-backend-file,id=mb,share,mem-path=/dev/shm/x,size=4M")
	if err != nil || o != (ObjectSpec{Type: "memory-backend-file", ID: "mb", Size: 4 << 20, MemPath: "/dev/shm/x"}) {
		t.Fatalf("%+v %v", o, err)
	}
	for _, in := range []string{"memory-backend-file,id=mb,mem-path=/x,size=4M", "memory-backend-shm,id=mb,size=4M,share=off",
		"memory-backend-ram,id=mb,size=4M", "memory-backend-shm,size=4M", "memory-backend-shm,id=m", "memory-backend-shm,id=m,size=4M,x=1"} {
		if _, err := ParseObject(in); err == nil {
			t.Errorf("ParseObject(%q) accepted", in)
		}
	}
	c, err := ParseChardev("socket,id=c0,path=/tmp/s")
	if err != nil || c != (ChardevSpec{ID: "c0", Path: "/tmp/s"}) {
		t.Fatalf("%+v %v", c, err)
	}
	for _, in := range []string{"pty,id=c", "socket,id=c", "socket,path=/p", "socket,id=c,path=/p,server=on"} {
		if _, err := ParseChardev(in); err == nil {
			t.Errorf("ParseChardev(%q) accepted", in)
		}
	}
}

// FuzzParseOptions feeds one string to every parser: each returns a spec
// or an error, never a panic, and a device spec it accepts is in range.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		"virtio-blk-pci,drive=d0,addr=0x6,serial=a,,b", "ivshmem-plain,shm=x,size=1.5M",
		"file=a.img,if=none,id=d,cache=none", "driver=qcow2,node-name=n,file.driver=file,file.filename=f",
		`{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"f"},"cache":{"direct":true}}`,
		"memory-backend-file,id=m,share,mem-path=/p,size=4M", "socket,id=c,path=/s", "8E", "0x1f.7",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDevice(s); err == nil && (d.Slot < -1 || d.Slot >= PCISlots || d.Driver == "") {
			t.Fatalf("ParseDevice(%q) = %+v", s, d)
		}
		ParseDrive(s)
		ParseDisk(s)
		ParseBlockdev(s)
		ParseObject(s)
		ParseChardev(s)
		if n, err := ParseSize(s); err == nil && n > 1<<63-1 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		ParsePCIAddr(s)
		// Split and re-join with escaping is the identity.
		parts := Split(s)
		for i, p := range parts {
			parts[i] = strings.ReplaceAll(p, ",", ",,")
		}
		if j := strings.Join(parts, ","); j != s {
			t.Fatalf("Split(%q) re-joined is %q", s, j)
		}
	})
}
