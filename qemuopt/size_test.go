package qemuopt

import (
	"errors"
	"strings"
	"testing"
)

// The expectations are what qemu-img 7.2 (Debian 1:7.2+dfsg-7+deb12u18)
// printed for `qemu-img create -f raw x SIZE`: "size=N" or the invalid or
// out-of-range message.
func TestSizeLikeQemuImg(t *testing.T) {
	for in, want := range map[string]uint64{
		"0": 0, "512": 512, "1k": 1024, "1K": 1024, "1g": 1 << 30, "2M": 2 << 20,
		"1.5M": 3 << 19, "1024.0b": 1024, "0x10": 16, "0X1f": 31, "0x10k": 16384,
		"1E": 1 << 60, "7E": 7 << 60, "0.5k": 512, "5.": 5, " 5": 5, "+5": 5,
		"9223372036854775807": 1<<63 - 1, "1.0000000001k": 1024,
		"0.0009765625k": 1, "0.00048828125k": 1, "0.000488281249k": 0,
		"18446744073709551615": 1<<64 - 1, "15.5E": 31 << 59, "1.5e": 3 << 59,
	} {
		got, err := strtosz(in, 'B')
		if err != nil || got != want {
			t.Errorf("strtosz(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1.5b", "0x1.5", "1e3", "0.1", ".5k", "-1", "-0",
		"1kb", "1.5", "abc", "0x", "1Q", "1..5M", "k", " ", "+-5", "1.5e3"} {
		if v, err := strtosz(bad, 'B'); !errors.Is(err, ErrSizeInvalid) {
			t.Errorf("strtosz(%q) = %d, %v; want ErrSizeInvalid", bad, v, err)
		}
	}
	for _, big := range []string{"16E", "99999999999999999999", "0x10000000000000000", "16384P"} {
		if v, err := strtosz(big, 'B'); !errors.Is(err, ErrSizeRange) {
			t.Errorf("strtosz(%q) = %d, %v; want ErrSizeRange", big, v, err)
		}
	}
}

func TestSizeDefaultUnit(t *testing.T) {
	if v, err := strtosz("512", 'M'); err != nil || v != 512<<20 {
		t.Errorf("strtosz(512, M) = %d, %v", v, err)
	}
	if v, err := strtosz("4k", 'M'); err != nil || v != 4096 {
		t.Errorf("strtosz(4k, M) = %d, %v", v, err)
	}
}

func TestSizeHexSuffix(t *testing.T) {
	for s, want := range map[string]bool{"0x10k": true, "0X1M": true, "0x1e": false, "0x1b": false, "16k": false, "0x10": false} {
		if SizeHexSuffix(s) != want {
			t.Errorf("SizeHexSuffix(%q) = %v", s, !want)
		}
	}
}

// FuzzSize: any string gives a value or ErrSizeInvalid/ErrSizeRange, never a
// panic, and a plain decimal byte count reads back as itself.
func FuzzSize(f *testing.F) {
	for _, s := range []string{"1k", "1.5M", "0x10k", "1024.0b", "16E", "99999999999999999999", "0.000488281249k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := strtosz(s, 'B')
		if err != nil && !errors.Is(err, ErrSizeInvalid) && !errors.Is(err, ErrSizeRange) {
			t.Fatalf("strtosz(%q): unexpected error %v", s, err)
		}
		if err == nil && s != "" && strings.Trim(s, "0123456789") == "" {
			if w, err := strtosz(s+"b", 'B'); err != nil || w != v {
				t.Fatalf("strtosz(%q) = %d but strtosz(%q) = %d, %v", s, v, s+"b", w, err)
			}
		}
	})
}

func TestFormatSize(t *testing.T) {
	// Around the unit boundaries: 1000 of a unit already prints in the next.
	for n, want := range map[int64]string{
		0: "0 B", 999: "999 B", 1000: "0.977 KiB", 1024: "1 KiB", 4096: "4 KiB",
		1 << 60: "1 EiB", 0x7fffffffffffffff: "8 EiB", 1536 << 20: "1.5 GiB",
	} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
