package pci

import (
	"bytes"
	"testing"

	"github.com/petrel-vmm/petrel/firmware/aml"
)

// The host bridge's _CRS declares the windows the bus was given, and
// windows _CRS cannot declare make encoding fail.
func TestBridgeCRSFollowsWindows(t *testing.T) {
	w := Windows{IO: Window{Base: 0x1000, Size: 0x1000}, Mem32: Window{Base: 0x8000_0000, Size: 0x1000_0000}}
	got, err := aml.Encode(NewBus(nil, w).AML(nil))
	if err != nil {
		t.Fatal(err)
	}
	producer := aml.AddressFlags{MinFixed: true, MaxFixed: true}
	want, err := aml.Encode(aml.Name{Path: "_CRS", Value: aml.ResourceTemplate{
		aml.WordBusNumber{AddressFlags: producer, Max: 0xff, Length: 0x100},
		aml.IO{Decode16: true, Min: 0xcf8, Max: 0xcf8, Align: 1, Length: 8},
		aml.WordIO{AddressFlags: producer, ISARanges: aml.EntireRange, Max: 0xcf7, Length: 0xcf8},
		aml.WordIO{AddressFlags: producer, ISARanges: aml.EntireRange, Min: 0x1000, Max: 0x1fff, Length: 0x1000},
		// No QWordMemory: the 64-bit window is empty.
		aml.DWordMemory{AddressFlags: producer, MemoryFlags: aml.MemoryFlags{Cache: aml.NonCacheable, ReadWrite: true},
			Min: 0x8000_0000, Max: 0x8fff_ffff, Length: 0x1000_0000},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, want) {
		t.Fatal("host bridge _CRS does not carry the bus's windows")
	}
	for _, bad := range []Windows{
		{IO: Window{Base: 0x100, Size: 0x100}, Mem32: w.Mem32},
		{IO: Window{Base: 0xc000, Size: 0x8000}, Mem32: w.Mem32},
		{IO: w.IO, Mem32: Window{Base: 0xf000_0000, Size: 0x2000_0000}},
		{IO: w.IO, Mem32: w.Mem32, Mem64: Window{Base: 0x1000, Size: 0x1000}},
		{IO: w.IO},
	} {
		if bad.Check() == nil {
			t.Errorf("Check accepts %+v", bad)
		}
		if _, err := aml.Encode(NewBus(nil, bad).AML(nil)); err == nil {
			t.Errorf("_CRS of windows %+v encoded", bad)
		}
	}
	if err := testWindows.Check(); err != nil {
		t.Errorf("the PC's windows: %v", err)
	}
}

// Each _PRT entry routes its slot's INTA# to INTxGSI, the GSI the machine
// wires the slot's interrupt line to.
func TestBridgePRTIsINTxGSI(t *testing.T) {
	got, err := aml.Encode(NewBus(nil, testWindows).AML(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{0, 7, 8, 31} {
		entry, err := aml.Encode(aml.Package{aml.Integer(s<<16 | 0xffff), aml.Zero, aml.Zero, aml.Integer(16 + s%8)})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(got, entry) || INTxGSI(s) != uint32(16+s%8) {
			t.Errorf("slot %d: _PRT entry or INTxGSI is not 16 + slot%%8", s)
		}
	}
}
