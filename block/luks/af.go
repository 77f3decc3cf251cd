package luks

import (
	"encoding/binary"
	"hash"
)

// The anti-forensic splitter of LUKS1 (the LUKS On-Disk Format
// Specification, "AF-Splitting"): a key of n bytes is stored as stripes
// blocks of n bytes, all but the last random, so that destroying any part
// of the material destroys the key.

// diffuse replaces buf by H(0||block0) H(1||block1) ... with each block the
// digest's size and the block index a big-endian uint32; the last partial
// block takes its digest's first bytes.
func diffuse(h func() hash.Hash, buf []byte) {
	d := h()
	ds := d.Size()
	var idx [4]byte
	for i, off := uint32(0), 0; off < len(buf); i, off = i+1, off+ds {
		end := min(off+ds, len(buf))
		d.Reset()
		binary.BigEndian.PutUint32(idx[:], i)
		d.Write(idx[:])
		d.Write(buf[off:end])
		copy(buf[off:end], d.Sum(nil))
	}
}

// afMerge recovers the key from stripes blocks of len(key) bytes in
// material.
func afMerge(h func() hash.Hash, material []byte, stripes int, key []byte) {
	n := len(key)
	block := make([]byte, n)
	for i := 0; i < stripes; i++ {
		xorInto(block, material[i*n:(i+1)*n])
		if i < stripes-1 {
			diffuse(h, block)
		}
	}
	copy(key, block)
}

// afSplit stores key as stripes blocks: random ones (from random), then
// the last chosen so that afMerge gives the key back.
func afSplit(h func() hash.Hash, key []byte, stripes int, random []byte) []byte {
	n := len(key)
	out := make([]byte, n*stripes)
	copy(out, random[:n*(stripes-1)])
	block := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(block, out[i*n:(i+1)*n])
		diffuse(h, block)
	}
	last := out[(stripes-1)*n:]
	copy(last, block)
	xorInto(last, key)
	return out
}

func xorInto(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}
