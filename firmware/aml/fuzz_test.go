package aml

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// decodePkgLength is an independent reader of 20.2.4 PkgLength.
func decodePkgLength(b []byte) (n, size int, err error) {
	if len(b) == 0 {
		return 0, 0, errors.New("empty")
	}
	follow := int(b[0] >> 6)
	if follow == 0 {
		return int(b[0] & 0x3f), 1, nil
	}
	if b[0]&0x30 != 0 || len(b) < 1+follow {
		return 0, 0, errors.New("bad lead byte")
	}
	n = int(b[0] & 0xf)
	for i := 1; i <= follow; i++ {
		n |= int(b[i]) << (4 + 8*(i-1))
	}
	return n, 1 + follow, nil
}

// decodeName is an independent reader of 20.2.2 NameString; it returns the
// path with padded segments ("\_SB_.PCI0") and the bytes consumed.
func decodeName(b []byte) (string, int, error) {
	var prefix strings.Builder
	i := 0
	for i < len(b) && (b[i] == '\\' || b[i] == '^') {
		prefix.WriteByte(b[i])
		i++
	}
	if i >= len(b) {
		return "", 0, errors.New("truncated")
	}
	count := 1
	switch b[i] {
	case 0:
		return prefix.String(), i + 1, nil
	case dualNamePrefix:
		count, i = 2, i+1
	case multiNamePrefix:
		if i+1 >= len(b) {
			return "", 0, errors.New("truncated")
		}
		count, i = int(b[i+1]), i+2
	}
	segs := make([]string, count)
	for k := range segs {
		if i+4 > len(b) {
			return "", 0, errors.New("truncated segment")
		}
		segs[k] = string(b[i : i+4])
		i += 4
	}
	return prefix.String() + strings.Join(segs, "."), i, nil
}

func padPath(p string) string {
	head := len(p) - len(strings.TrimLeft(p, `\^`))
	rest := p[head:]
	if rest == "" {
		return p
	}
	segs := strings.Split(rest, ".")
	for i, s := range segs {
		segs[i] = s + strings.Repeat("_", 4-len(s))
	}
	return p[:head] + strings.Join(segs, ".")
}

// FuzzScopeEncoding encodes Scope(path){Name(B, Buffer(data...))} for any
// path and buffer size: the builder must either refuse the name or produce
// bytes an independent decoder reads back exactly (name, both PkgLengths,
// buffer size and contents).
func FuzzScopeEncoding(f *testing.F) {
	f.Add(`\_SB.PCI0`, uint32(10), []byte{1, 2, 3})
	f.Add(`^^A.B.C`, uint32(4090), []byte{0xff})
	f.Add(`\`, uint32(0), []byte{})
	f.Add(`X`, uint32(70000), []byte("petrel"))
	f.Add(`\_SB.a`, uint32(1), []byte{0})
	f.Fuzz(func(t *testing.T, path string, size uint32, pattern []byte) {
		size %= 1 << 18
		if len(pattern) == 0 {
			pattern = []byte{0x5a}
		}
		data := bytes.Repeat(pattern, int(size)/len(pattern)+1)[:size]
		out, err := Encode(Scope{path, []Term{Name{"B", Buffer(data)}}})
		if err != nil {
			return
		}
		if out[0] != scopeOp {
			t.Fatalf("scope opcode %#x", out[0])
		}
		n, sz, err := decodePkgLength(out[1:])
		if err != nil || n != len(out)-1 {
			t.Fatalf("scope PkgLength %d (%v), want %d", n, err, len(out)-1)
		}
		name, used, err := decodeName(out[1+sz:])
		if err != nil || name != padPath(path) {
			t.Fatalf("name %q (%v), want %q", name, err, padPath(path))
		}
		rest := out[1+sz+used:]
		if !bytes.HasPrefix(rest, []byte{nameOp, 'B', '_', '_', '_', bufferOp}) {
			t.Fatalf("bad Name/Buffer prefix % x", rest[:min(len(rest), 8)])
		}
		rest = rest[6:]
		n, sz, err = decodePkgLength(rest)
		if err != nil || n != len(rest) {
			t.Fatalf("buffer PkgLength %d (%v), want %d", n, err, len(rest))
		}
		var e Encoder
		Integer(size).AppendAML(&e)
		if !bytes.HasPrefix(rest[sz:], e.buf) || !bytes.Equal(rest[sz+len(e.buf):], data) {
			t.Fatal("buffer size or contents differ")
		}
	})
}
