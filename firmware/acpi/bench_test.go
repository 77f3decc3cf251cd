package acpi

import "testing"

func BenchmarkBuildPC(b *testing.B) {
	cfg := PCConfig{CPUs: 8, HotplugSlots: 0xfffffffe}
	for b.Loop() {
		t, err := BuildPC(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := t.Place(PCTablesBase, PCTablesLimit); err != nil {
			b.Fatal(err)
		}
	}
}
