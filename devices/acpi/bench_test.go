package acpi

import (
	"sync"
	"testing"
)

// Guest register accesses sit on the vCPU exit path: they must not allocate.
func TestAccessesDoNotAllocate(t *testing.T) {
	g := NewGPE(&recLine{})
	h, err := NewHotplug(g, 0xfffffffe, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	b1, b4 := make([]byte, 1), make([]byte, 4)
	allocs := testing.AllocsPerRun(1000, func() {
		g.Read(GPE0Base, 0, b1)
		g.Write(GPE0Base, 2, b1)
		g.Write(GPE0Base, 0, b1)
		h.Read(HotplugBase, HotplugUpOffset, b4)
		h.Read(HotplugBase, HotplugRemovableOffset, b4)
		h.Write(HotplugBase, HotplugEjectOffset, b4)
		h.Read(HotplugBase, 1, b1) // odd access
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per access round", allocs)
	}
}

func BenchmarkGPEStatusRead(b *testing.B) {
	g := NewGPE(nil)
	d := make([]byte, 1)
	for b.Loop() {
		g.Read(GPE0Base, 0, d)
	}
}

func BenchmarkHotplugUpRead(b *testing.B) {
	h, _ := NewHotplug(NewGPE(nil), 0xfffffffe, nil)
	d := make([]byte, 4)
	for b.Loop() {
		h.Read(HotplugBase, HotplugUpOffset, d)
	}
}

func BenchmarkPlugEject(b *testing.B) {
	h, _ := NewHotplug(NewGPE(&recLine{}), 0xfffffffe, func(int) {})
	d := []byte{0x08, 0, 0, 0}
	for b.Loop() {
		_ = h.Plug(3)
		h.Write(HotplugBase, HotplugEjectOffset, d)
	}
}

// Host Plug/Unplug and guest accesses run on different goroutines (QMP and
// vCPUs); run under -race. Every plugged slot is ejected exactly once per
// guest eject write that names it, and the SCI follows status & enable.
func TestConcurrentHostAndGuest(t *testing.T) {
	line := &recLine{}
	g := NewGPE(line)
	var ejects [HotplugSlots]int
	var mu sync.Mutex
	h, err := NewHotplug(g, 0xfffffffe, func(s int) { mu.Lock(); ejects[s]++; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	g.Write(GPE0Base, 2, []byte{1 << GPEPCIHotplug})
	const rounds = 2000
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			_ = h.Plug(1 + i%31)
			_ = h.Unplug(1 + (i+7)%31)
			g.PressPowerButton()
		}
	}()
	go func() {
		defer wg.Done()
		d := make([]byte, 4)
		for i := 0; i < rounds; i++ {
			h.Read(HotplugBase, HotplugUpOffset, d)
			g.Write(GPE0Base, 0, []byte{1 << GPEPCIHotplug})
			h.Write(HotplugBase, HotplugEjectOffset, []byte{0, 0, 0, 0x80}) // slot 31
		}
	}()
	wg.Wait()
	if ejects[31] != rounds {
		t.Fatalf("slot 31 ejected %d times, want %d", ejects[31], rounds)
	}
	s, e := g.Status()
	if lv, _ := line.last(); lv != (s&e != 0) || g.Asserted() != lv {
		t.Fatalf("SCI %v with status %#x enable %#x", lv, s, e)
	}
}
