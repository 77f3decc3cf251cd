package qemuopt

// Sizes as QEMU's qemu_strtosz reads them (util/cutils.c): the one size
// parser of petrel run, QMP, memory backends and petrel img. A decimal
// number with an optional fraction, or a hexadecimal number ("0x..."; no
// fraction, a suffix is deprecated, see SizeHexSuffix), and
// an optional one-letter suffix B, K, M, G, T, P, E in either case (powers
// of 1024). A fraction needs a suffix other than B, except for an all-zero
// fraction ("1024.0b"). This is QEMU 7.2's syntax.

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// The two failures of ParseSize; callers such as petrel img tell them
// apart with errors.Is to word their messages as qemu-img does.
var (
	// ErrSizeInvalid: not a size (qemu_strtosz's -EINVAL).
	ErrSizeInvalid = errors.New("invalid size")
	// ErrSizeRange: too large (qemu_strtosz's -ERANGE; ParseSize also
	// refuses 2^63 and more).
	ErrSizeRange = errors.New("size out of range")
)

// suffixShift is the power of two a suffix letter stands for, or -1.
func suffixShift(c byte) int {
	switch c {
	case 'b', 'B':
		return 0
	case 'k', 'K':
		return 10
	case 'm', 'M':
		return 20
	case 'g', 'G':
		return 30
	case 't', 'T':
		return 40
	case 'p', 'P':
		return 50
	case 'e', 'E':
		return 60
	}
	return -1
}

// strtosz reads a size whose unit, when no suffix is given, is the suffix
// letter def (QEMU's -m defaults to 'M'); any value below 2^64.
func strtosz(s string, def byte) (uint64, error) {
	// strtoull skips leading white space and takes a sign; QEMU refuses
	// any '-' in the integral part.
	rest := strings.TrimLeft(s, " \t\n\v\f\r")
	rest = strings.TrimPrefix(rest, "+")
	if strings.HasPrefix(rest, "-") {
		return 0, ErrSizeInvalid
	}
	digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
	intPart, rest := rest[:digits], rest[digits:]
	var val, frac uint64 // frac: the fraction as a 0.64 fixed-point number
	if intPart == "0" && rest != "" && (rest[0] == 'x' || rest[0] == 'X') {
		hex := rest[1:]
		n := len(hex) - len(strings.TrimLeft(hex, "0123456789abcdefABCDEF"))
		if n == 0 {
			return 0, ErrSizeInvalid
		}
		v, err := strconv.ParseUint(hex[:n], 16, 64)
		if err != nil {
			return 0, ErrSizeRange
		}
		val, rest = v, hex[n:]
		// QEMU reads hex with qemu_strtou64 and refuses a fraction after
		// it outright, rather than reading "0x1.8" as a decimal 0.8.
		if strings.HasPrefix(rest, ".") {
			return 0, ErrSizeInvalid
		}
	} else if intPart == "" {
		return 0, ErrSizeInvalid
	} else {
		v, err := strconv.ParseUint(intPart, 10, 64)
		if err != nil {
			return 0, ErrSizeRange
		}
		val = v
	}
	if strings.HasPrefix(rest, ".") {
		n := 1 + len(rest[1:]) - len(strings.TrimLeft(rest[1:], "0123456789"))
		// QEMU converts the fraction with strtod and scales by 2^64;
		// exact decimal digits do the same without rounding surprises
		// (only the first 19 digits can matter).
		f := rest[1:n]
		rest = rest[n:]
		if len(f) > 19 {
			f = f[:19]
		}
		if f != "" {
			num, _ := strconv.ParseUint(f, 10, 64)
			den := uint64(1)
			for range f {
				den *= 10
			}
			frac, _ = bits.Div64(num, 0, den) // num < den
		}
	}
	shift := suffixShift(def)
	if rest != "" {
		if shift = suffixShift(rest[0]); shift < 0 || len(rest) > 1 {
			return 0, ErrSizeInvalid
		}
	}
	if shift == 0 {
		if frac != 0 {
			return 0, ErrSizeInvalid
		}
		return val, nil
	}
	// val.frac * 2^shift as 128.64 fixed point, rounding 0.5 up. hi gets
	// the integer bits shifted out of the top (any of them set is out of
	// range); the fraction's top shift bits join the integer part in lo;
	// rem is the fraction left over, whose top bit is the rounding bit
	// (QEMU rounds the double product to the nearest integer).
	hi := val >> (64 - shift)
	lo := val<<shift | frac>>(64-shift)
	rem := frac << shift
	lo, carry := bits.Add64(lo, rem>>63, 0)
	if hi != 0 || carry != 0 {
		return 0, ErrSizeRange
	}
	return lo, nil
}

// SizeHexSuffix reports a hexadecimal size with a suffix ("0x10k"), which QEMU
// 7.2 accepts with the warning "Using a multiplier suffix on hex numbers is
// deprecated".
func SizeHexSuffix(s string) bool {
	t := strings.TrimPrefix(strings.TrimLeft(s, " \t\n\v\f\r"), "+")
	if len(t) < 3 || t[0] != '0' || (t[1] != 'x' && t[1] != 'X') {
		return false
	}
	last := t[len(t)-1]
	return suffixShift(last) > 0 && !strings.ContainsRune("bBeE", rune(last))
}

// ParseSize reads a size in bytes: "4k", "1.5M", "0x1000", "1024.0b".
// Errors wrap ErrSizeInvalid or ErrSizeRange (2^63 bytes and more).
func ParseSize(s string) (uint64, error) { return ParseSizeUnit(s, 1) }

// ParseSizeUnit is ParseSize with the unit of a number without suffix
// (-m counts MiB): 1 or a power of 1024 up to 2^60.
func ParseSizeUnit(s string, unit uint64) (uint64, error) {
	// strtosz takes the default unit as the suffix letter that means it.
	def := byte(0)
	for i, c := range []byte("BKMGTPE") {
		if unit == 1<<(10*i) {
			def = c
		}
	}
	if def == 0 {
		return 0, fmt.Errorf("size %q: unit %d is not a power of 1024", s, unit)
	}
	v, err := strtosz(s, def)
	if err == nil && v > math.MaxInt64 {
		err = ErrSizeRange
	}
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return v, nil
}

// FormatSize prints a size as QEMU's size_to_str (util/cutils.c): the unit
// keeps the value under 1000, with 3 significant digits ("1 GiB", "1.5 MiB",
// "0.977 MiB"). qemu-img info and snapshot tables use it.
func FormatSize(n int64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	// As size_to_str: e is the binary exponent of n*1024/1000, and
	// (e-1)/10 the power of 1024 that keeps the printed number below
	// 1000 rather than 1024, so 1000 KiB prints as "0.977 MiB".
	_, e := math.Frexp(float64(n) / (1000.0 / 1024.0))
	i := max(0, min((e-1)/10, len(suffixes)-1))
	return fmt.Sprintf("%.3g %sB", float64(n)/float64(int64(1)<<(10*i)), suffixes[i])
}
