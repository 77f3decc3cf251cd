package vmm

import "testing"

func TestIoeventfdArg(t *testing.T) {
	v := uint64(7)
	a, err := ioeventfdArg(5, 0xc010, 2, true, &v)
	if err != nil || a.Flags != ioeventfdPIO|ioeventfdDatamatch || a.Datamatch != 7 || a.Len != 2 || a.FD != 5 {
		t.Fatalf("%+v, %v", a, err)
	}
	if _, err := ioeventfdArg(5, 0, 3, false, nil); err == nil {
		t.Fatal("size 3 accepted")
	}
	if _, err := ioeventfdArg(5, 0, 0, false, &v); err == nil {
		t.Fatal("datamatch with size 0 accepted")
	}
}
