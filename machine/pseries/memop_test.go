package pseries

import (
	"bytes"
	"math/rand"
	"testing"
)

// refMemop is the element-by-element definition of H_LOGICAL_MEMOP over a
// flat byte slice (addresses are offsets in it): walk backwards when the
// destination starts inside the source, as the spec's memmove rule needs.
func refMemop(mem []byte, dst, src, esize, count, op uint64) {
	step := int64(1) << esize
	n := count << esize
	d, s := int64(dst), int64(src)
	if dst >= src && dst < src+n {
		d += int64(n) - step
		s += int64(n) - step
		step = -step
	}
	for i := uint64(0); i < count; i++ {
		e := int64(1) << esize
		tmp := append([]byte(nil), mem[s:s+e]...)
		for j := int64(0); j < e; j++ {
			if op == memopXor {
				tmp[j] ^= mem[d+j]
			}
		}
		copy(mem[d:d+e], tmp)
		d += step
		s += step
	}
}

func fill(b []byte, seed int64) {
	r := rand.New(rand.NewSource(seed))
	r.Read(b)
}

func TestLogicalMemopMatchesReference(t *testing.T) {
	v := newTestVM(t, 1)
	type mc struct{ dst, src, esize, count, op uint64 }
	var cases []mc
	for esize := uint64(0); esize <= 3; esize++ {
		e := uint64(1) << esize
		for _, op := range []uint64{memopCopy, memopXor} {
			cases = append(cases,
				mc{0x1000, 0x8000, esize, 100, op},        // disjoint
				mc{0x1000 + 8*e, 0x1000, esize, 64, op},   // dst inside src: backwards
				mc{0x1000, 0x1000 + 8*e, esize, 64, op},   // src inside dst: forwards
				mc{0x1000, 0x1000, esize, 33, op},         // same range
				mc{0x1000 + e, 0x1000, esize, 1000, op},   // overlap by all but one element
				mc{0x4000, 0x2000, esize, 0x2000 / e, op}, // exactly adjacent
				mc{0xff000, 0x10, esize, 0x1000 / e, op},  // up to the end of a region
				mc{0x3000, 0x5000, esize, 1, op},          // one element
				mc{0x6000 + 3*e, 0x6000, esize, 77, op},   // overlap closer than a word
				mc{0x6000, 0x6000 + 5*e, esize, 77, op},   // the same, forwards
			)
		}
	}
	for _, c := range cases {
		fill(v.low, int64(c.dst^c.src^c.esize<<8^c.op<<12))
		want := append([]byte(nil), v.low...)
		refMemop(want, c.dst, c.src, c.esize, c.count, c.op)
		args := [9]uint64{c.dst, c.src, c.esize, c.count, c.op}
		if got := v.Hypercall(v.cpus[0], HLogicalMemop, &args); got != HSuccess {
			t.Errorf("%+v: ret %d", c, got)
			continue
		}
		if !bytes.Equal(v.low, want) {
			t.Errorf("%+v: memory differs from the reference", c)
		}
	}
}

func TestLogicalMemopCrossRegion(t *testing.T) {
	v := newTestVM(t, 1)
	fill(v.low, 1)
	args := [9]uint64{testHighBase + 0x100, 0x2000, 3, 512, memopCopy}
	if got := v.Hypercall(v.cpus[0], HLogicalMemop, &args); got != HSuccess {
		t.Fatalf("ret %d", got)
	}
	if !bytes.Equal(v.high[0x100:0x100+4096], v.low[0x2000:0x2000+4096]) {
		t.Fatal("copy from low to high region wrong")
	}
	// XOR of a region with itself clears it.
	args = [9]uint64{testHighBase + 0x100, testHighBase + 0x100, 3, 512, memopXor}
	v.Hypercall(v.cpus[0], HLogicalMemop, &args)
	if !bytes.Equal(v.high[0x100:0x100+4096], make([]byte, 4096)) {
		t.Fatal("self-xor did not clear")
	}
}

func TestLogicalMemopBadArguments(t *testing.T) {
	v := newTestVM(t, 1)
	end := uint64(testLowSize)
	cases := map[string][9]uint64{
		"esize 4":               {0x1000, 0x2000, 4, 1, memopCopy},
		"op 2":                  {0x1000, 0x2000, 0, 1, 2},
		"dst misaligned":        {0x1001, 0x2000, 1, 1, memopCopy},
		"src misaligned":        {0x1000, 0x2004, 3, 1, memopXor},
		"dst past RAM":          {end, 0x2000, 0, 1, memopCopy},
		"src past RAM":          {0x1000, end, 0, 1, memopCopy},
		"dst runs off RAM":      {end - 8, 0x2000, 3, 2, memopCopy},
		"src runs into hole":    {0x1000, end - 4, 2, 2, memopXor},
		"dst in the hole":       {end + 0x1000, 0x2000, 0, 1, memopCopy},
		"count overflows":       {0x1000, 0x2000, 3, 1 << 61, memopCopy},
		"count wraps to small":  {0x1000, 0x2000, 1, 1<<63 + 4, memopCopy},
		"huge count":            {0x1000, 0x2000, 0, ^uint64(0), memopXor},
		"address wraps":         {^uint64(0) - 3, 0x2000, 0, 8, memopCopy},
		"high bits not ignored": {0xc000000000001000, 0x2000, 0, 1, memopCopy},
	}
	fill(v.low, 7)
	fill(v.high, 8)
	low, high := append([]byte(nil), v.low...), append([]byte(nil), v.high...)
	for name, args := range cases {
		a := args
		if got := v.Hypercall(v.cpus[0], HLogicalMemop, &a); got != HParameter {
			t.Errorf("%s: ret %d, want H_PARAMETER", name, got)
		}
		if !bytes.Equal(v.low, low) || !bytes.Equal(v.high, high) {
			t.Fatalf("%s: memory changed by a failed call", name)
		}
	}
	// count 0 is a successful no-op.
	a := [9]uint64{0x1000, 0x2000, 0, 0, memopCopy}
	if got := v.Hypercall(v.cpus[0], HLogicalMemop, &a); got != HSuccess || !bytes.Equal(v.low, low) {
		t.Fatalf("count 0: ret %d", got)
	}
}

func TestLogicalLoadStore(t *testing.T) {
	v := newTestVM(t, 1)
	for _, nr := range []uint64{HLogicalCIStore, HLogicalCacheStore} {
		for _, c := range []struct {
			size, addr, val uint64
			want            []byte
		}{
			{1, 0x100, 0x1234, []byte{0x34}},
			{2, 0x102, 0xabcd, []byte{0xab, 0xcd}},
			{4, 0x104, 0x11223344, []byte{0x11, 0x22, 0x33, 0x44}},
			{8, 0x108, 0x0102030405060708, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
			{8, testHighBase + 0xff8, 0xa1a2a3a4a5a6a7a8, []byte{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8}},
		} {
			args := [9]uint64{c.size, c.addr, c.val}
			if got := v.Hypercall(v.cpus[0], nr, &args); got != HSuccess {
				t.Fatalf("store %+v: %d", c, got)
			}
			b, _ := v.mem.Slice(c.addr, c.size)
			if !bytes.Equal(b, c.want) {
				t.Fatalf("store %+v: memory % x", c, b)
			}
			load := HLogicalCILoad
			if nr == HLogicalCacheStore {
				load = HLogicalCacheLoad
			}
			args = [9]uint64{c.size, c.addr}
			if got := v.Hypercall(v.cpus[0], uint64(load), &args); got != HSuccess {
				t.Fatalf("load %+v: %d", c, got)
			}
			if mask := uint64(1)<<(8*c.size) - 1; c.size < 8 && args[0] != c.val&mask || c.size == 8 && args[0] != c.val {
				t.Fatalf("load %+v: got %#x", c, args[0])
			}
		}
	}
	snapshot := append([]byte(nil), v.low...)
	for _, bad := range [][2]uint64{{3, 0x100}, {0, 0x100}, {16, 0x100}, {4, 0x102}, {8, 0x104}, {2, testLowSize}, {8, testLowSize - 4}, {1, ^uint64(0)}} {
		for _, nr := range []uint64{HLogicalCILoad, HLogicalCIStore, HLogicalCacheLoad, HLogicalCacheStore} {
			args := [9]uint64{bad[0], bad[1], 0xff}
			if got := v.Hypercall(v.cpus[0], nr, &args); got != HParameter {
				t.Errorf("hcall %#x size %d addr %#x: %d, want H_PARAMETER", nr, bad[0], bad[1], got)
			}
		}
	}
	if !bytes.Equal(snapshot, v.low) {
		t.Fatal("failed stores changed memory")
	}
	for _, nr := range []uint64{HLogicalICBI, HLogicalDCBF} {
		if got := v.Hypercall(v.cpus[0], nr, &[9]uint64{0x100}); got != HSuccess {
			t.Errorf("cache op %#x: %d", nr, got)
		}
		if got := v.Hypercall(v.cpus[0], nr, &[9]uint64{testLowSize + 5}); got != HParameter {
			t.Errorf("cache op %#x outside RAM: %d", nr, got)
		}
	}
}
