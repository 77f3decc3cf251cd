// Package statetest holds the checks every device's saved-state tests
// share: saving and loading a vmstate.Stater, and feeding its decoder
// truncated, extended, bit-flipped and wrongly versioned payloads.
package statetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/petrel-vmm/petrel/vmstate"
)

// Save returns s's saved state.
func Save(s vmstate.Stater) []byte {
	var e vmstate.Enc
	s.SaveState(&e)
	return e.Data()
}

// Load loads b into s.
func Load(s vmstate.Stater, b []byte) error { return s.LoadState(vmstate.NewDec("test", b)) }

// IRQSyncer is a device that drives its interrupt line after a load.
type IRQSyncer interface{ SyncIRQ() }

// Canonical loads b into s. When s accepts it, saving must give b back
// (every field is stored exactly, and what a device cannot hold is
// refused), and SyncIRQ, where s has it, must not panic. It returns the
// load's error.
func Canonical(t testing.TB, s vmstate.Stater, b []byte) error {
	t.Helper()
	if err := Load(s, b); err != nil {
		return err
	}
	if got := Save(s); !bytes.Equal(got, b) {
		t.Fatalf("accepted %x, saves as %x", b, got)
	}
	if y, ok := s.(IRQSyncer); ok {
		y.SyncIRQ()
	}
	return nil
}

// CheckBadInput feeds st, a good state whose version is at most
// maxVersion, damaged to fresh devices from fresh: every truncation, a
// trailing byte, versions 0 and maxVersion+1 must fail as
// vmstate.ErrCorrupt; every single bit flip must load to an error or to a
// state that saves back the same (Canonical), never panic.
func CheckBadInput(t *testing.T, st []byte, maxVersion uint32, fresh func() vmstate.Stater) {
	t.Helper()
	for n := 0; n < len(st); n++ {
		if err := Load(fresh(), st[:n]); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(st), err)
		}
	}
	if err := Load(fresh(), append(bytes.Clone(st), 0)); !errors.Is(err, vmstate.ErrCorrupt) {
		t.Fatalf("a trailing byte: %v", err)
	}
	for _, v := range []uint32{0, maxVersion + 1} {
		b := binary.LittleEndian.AppendUint32(nil, v)
		if err := Load(fresh(), append(b, st[4:]...)); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	for i := 0; i < 8*len(st); i++ {
		b := bytes.Clone(st)
		b[i/8] ^= 1 << (i % 8)
		Canonical(t, fresh(), b)
	}
}

// CheckRefused loads variants of st into fresh devices, each with one
// byte replaced (a case is {offset, value}), and each must fail as
// vmstate.ErrCorrupt: values a device cannot hold.
func CheckRefused(t *testing.T, st []byte, fresh func() vmstate.Stater, cases [][2]int) {
	t.Helper()
	for _, c := range cases {
		b := bytes.Clone(st)
		b[c[0]] = byte(c[1])
		if err := Load(fresh(), b); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Errorf("byte %d = %#x: %v", c[0], c[1], err)
		}
	}
}
